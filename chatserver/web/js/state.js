// What the client knows, and how API answers and stream events change it. Every change is
// idempotent by message id and read-mark value, so an event seen twice (a replay racing a
// fetch) changes nothing the second time. Views subscribe with `on(kind, callback)`.

import { api } from "./api.js";

const TYPING_MS = 5_000;

export const state = {
  me: null,
  users: new Map(), // id -> user
  conversations: new Map(), // peer id -> conversation (ConversationOut)
  nextPage: null, // `before` for the next page of conversations
  unreadElsewhere: 0, // unread in conversations not loaded (past the first pages)
  histories: new Map(), // peer id -> History
  blocks: new Set(),
  typing: new Map(), // peer id -> time the typing notice expires
  openPeer: null,
};

const listeners = new Map();
export function on(kind, callback) {
  if (!listeners.has(kind)) listeners.set(kind, []);
  listeners.get(kind).push(callback);
}
export function emit(kind, detail) {
  for (const callback of listeners.get(kind) || []) callback(detail);
}

export function reset() {
  state.me = null;
  for (const map of [state.users, state.conversations, state.histories, state.typing]) map.clear();
  state.blocks.clear();
  state.nextPage = null;
  state.unreadElsewhere = 0;
  state.openPeer = null;
}

export const peerOf = (m) => (m.sent_by === state.me.id ? m.received_by : m.sent_by);
export const isMine = (m) => m.sent_by === state.me.id;

// ------------------------------------------------------------------ messages of one conversation

export class History {
  constructor(peer) {
    this.peer = peer;
    this.messages = new Map(); // id -> message
    this.hasOlder = true;
    this.loaded = false;
    this.pending = new Map(); // Idempotency-Key -> {key, body, state, error}
    this.early = new Map(); // messages that came before the first page did
  }

  ids() {
    return [...this.messages.keys()].sort((a, b) => a - b);
  }

  oldestId() {
    let oldest = null;
    for (const id of this.messages.keys()) if (oldest === null || id < oldest) oldest = id;
    return oldest;
  }

  newestIncomingId() {
    let newest = 0;
    for (const m of this.messages.values()) if (!isMine(m) && m.id > newest) newest = m.id;
    return newest;
  }

  // A message from outside the history's pages (the stream, the conversation list, the
  // delivery fetch). The history stays one unbroken run of messages: before its first page
  // arrives a message waits for it, and one older than the oldest loaded is left for
  // scroll-back to bring.
  upsert(m) {
    if (!this.loaded) {
      this.early.set(m.id, m);
      return m;
    }
    if (this.hasOlder && m.id < this.oldestId()) return m;
    return this.store(m);
  }

  // A page of history: the latest page first, then older ones.
  addPage(messages, pageSize) {
    for (const m of messages) this.store(m);
    this.hasOlder = messages.length === pageSize;
    if (!this.loaded) {
      this.loaded = true;
      for (const m of this.early.values()) this.upsert(m);
      this.early.clear();
    }
  }

  // Keep the most complete copy: a later state of the same message never goes back.
  store(m) {
    const known = this.messages.get(m.id);
    if (known && known.received_at && !m.received_at) m = { ...m, received_at: known.received_at };
    if (known && known.deleted_at && !m.deleted_at) return known;
    this.messages.set(m.id, m);
    return m;
  }
}

export function history(peer) {
  if (!state.histories.has(peer)) state.histories.set(peer, new History(peer));
  return state.histories.get(peer);
}

// ------------------------------------------------------------------ conversations

export function unreadTotal() {
  let total = state.unreadElsewhere;
  for (const c of state.conversations.values()) total += c.unread_count;
  return total;
}

export function sortedConversations() {
  return [...state.conversations.values()].sort((a, b) => b.last_message.id - a.last_message.id);
}

export function rememberUser(user) {
  if (user) state.users.set(user.id, user);
}

export function putConversation(c) {
  rememberUser(c.user);
  const known = state.conversations.get(c.user_id);
  if (known && known.last_message.id > c.last_message.id) c.last_message = known.last_message;
  state.conversations.set(c.user_id, c);
  const h = state.histories.get(c.user_id);
  if (h) h.upsert(c.last_message);
  emit("conversation", c.user_id);
}

export function addConversationPage(page, first) {
  if (first) {
    state.conversations.clear();
    state.unreadElsewhere = page.unread_total;
  }
  for (const c of page.conversations) {
    state.unreadElsewhere -= c.unread_count;
    putConversation(c);
  }
  state.nextPage = page.next;
  emit("conversations");
}

// A conversation the list does not have yet (its first message, or past the loaded pages):
// fetched once; messages arriving meanwhile are applied to it when it comes.
const fetching = new Map(); // peer id -> messages that arrived during the fetch
async function fetchConversation(peer, m) {
  if (fetching.has(peer)) return fetching.get(peer).push(m);
  fetching.set(peer, [m]);
  try {
    const c = await api.conversation(peer);
    if (!state.conversations.has(peer)) putConversation(c);
  } catch {
    // gone again (an account deleted meanwhile): nothing to list
  }
  const waiting = fetching.get(peer);
  fetching.delete(peer);
  if (state.conversations.has(peer)) for (const m of waiting) applyMessage(m);
  emit("conversations");
}

// ------------------------------------------------------------------ events

export function applyMessage(m) {
  const peer = peerOf(m);
  if (state.histories.has(peer)) m = history(peer).upsert(m);
  emit("message", m);
  const c = state.conversations.get(peer);
  if (!c) return void fetchConversation(peer, m);
  if (m.id > c.last_message.id) {
    c.last_message = m;
    if (!isMine(m) && m.id > c.last_read_id) c.unread_count += 1;
    if (!isMine(m)) clearTyping(peer);
    emit("conversations");
  } else if (m.id === c.last_message.id) {
    c.last_message = m;
  }
  emit("conversation", peer);
}

function applyReceived(event) {
  const h = state.histories.get(event.by);
  const c = state.conversations.get(event.by);
  for (const id of event.message_ids) {
    const m = h?.messages.get(id);
    if (m && !m.received_at) {
      m.received_at = event.at;
      emit("message", m);
    }
    if (c && c.last_message.id === id) c.last_message.received_at ||= event.at;
  }
}

function applyRead(event) {
  if (event.of === state.me.id) {
    const c = state.conversations.get(event.by);
    if (c && event.up_to_id > c.peer_last_read_id) {
      c.peer_last_read_id = event.up_to_id;
      emit("read", event.by);
    }
    return;
  }
  const c = state.conversations.get(event.of);
  if (!c || event.up_to_id <= c.last_read_id) return;
  c.last_read_id = event.up_to_id;
  if (event.up_to_id >= c.last_message.id) c.unread_count = 0;
  else refreshConversation(event.of); // read up to the middle (elsewhere): ask for the count
  emit("conversation", event.of);
  emit("conversations");
}

export async function refreshConversation(peer) {
  try {
    putConversation(await api.conversation(peer));
    emit("conversations");
  } catch {
    // no such conversation (any more)
  }
}

function applyDeleted(event) {
  const tombstone = (m) => ({ ...m, message: null, deleted_at: event.at });
  for (const h of state.histories.values()) {
    const m = h.messages.get(event.message_id);
    if (m) {
      h.messages.set(m.id, tombstone(m));
      emit("message", h.messages.get(m.id));
    }
  }
  for (const c of state.conversations.values()) {
    if (c.last_message.id === event.message_id) {
      c.last_message = tombstone(c.last_message);
      emit("conversation", c.user_id);
    }
  }
}

function applyTyping(event) {
  state.typing.set(event.user_id, Date.now() + TYPING_MS);
  emit("typing", event.user_id);
  setTimeout(() => {
    if ((state.typing.get(event.user_id) || 0) <= Date.now()) clearTyping(event.user_id);
  }, TYPING_MS + 50);
}

function clearTyping(peer) {
  if (state.typing.delete(peer)) emit("typing", peer);
}

function applyPresence(event) {
  const user = state.users.get(event.user_id);
  if (!user) return;
  user.online = event.online;
  user.last_seen_at = event.last_seen_at;
  const c = state.conversations.get(event.user_id);
  if (c && c.user) Object.assign(c.user, { online: event.online, last_seen_at: event.last_seen_at });
  emit("presence", event.user_id);
  emit("conversation", event.user_id);
}

// One stream event. `reset` is the caller's: it means "refetch everything".
export function applyEvent(event) {
  switch (event.type) {
    case "message":
    case "edited":
      return applyMessage(event.message);
    case "received":
      return applyReceived(event);
    case "read":
      return applyRead(event);
    case "deleted":
      return applyDeleted(event);
    case "typing":
      return applyTyping(event);
    case "presence":
      return applyPresence(event);
    default:
      return undefined; // a newer server's event this client does not know
  }
}
