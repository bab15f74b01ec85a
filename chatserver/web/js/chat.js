// One open conversation: its history (newest at the bottom, older pages on scrolling up),
// live updates, the composer (send, reply, edit; Enter sends, Shift+Enter is a new line),
// message states (pending, sent, delivered, read), retries, typing and blocking.

import { api, ApiError } from "./api.js";
import { $, confirmAction, el, excerpt, fill, randomKey, srOnly, timeEl } from "./dom.js";
import { applyMessage, history, isMine, on, peerOf, putConversation, state } from "./state.js";

const PAGE_SIZE = 50;
const NEAR_TOP_PX = 120;
const AT_BOTTOM_PX = 48;
const TYPING_EVERY_MS = 2_100;

const view = {
  peer: null,
  elements: new Map(), // message id -> <article>
  pending: new Map(), // Idempotency-Key -> <article>
  loadingOlder: null,
  composer: { mode: "new", id: null }, // or "reply" / "edit" of message `id`
  typingSent: 0,
  typingTimer: null,
  readAsked: new Map(), // peer -> highest up_to_id asked for
};

// sendFrame(frame): over the stream when it is open; false when it is not.
export function setUpChat(sendFrame) {
  view.sendFrame = sendFrame;
  on("message", (m) => {
    const shown = view.peer === peerOf(m) && history(view.peer).messages.get(m.id);
    if (shown) showMessage(shown); // not when it is outside the loaded run of history
  });
  on("read", (peer) => peer === view.peer && refreshStates());
  on("conversation", (peer) => {
    if (peer !== view.peer) return;
    renderHead();
    markRead();
  });
  on("presence", (peer) => peer === view.peer && renderHead());
  on("typing", (peer) => peer === view.peer && renderTyping());
  on("blocks", () => view.peer && renderHead());
  setUpComposer();
  $("older").addEventListener("click", () => loadOlder());
  // Scrolling up to the top of the loaded history (where the "older" button is) loads more.
  const nearTop = new IntersectionObserver(
    (entries) => entries.some((entry) => entry.isIntersecting) && loadOlder(),
    { root: $("log"), rootMargin: `${NEAR_TOP_PX}px 0px 0px 0px` },
  );
  nearTop.observe($("older"));
  $("block").addEventListener("click", toggleBlock);
  document.addEventListener("visibilitychange", markRead);
}

// ------------------------------------------------------------------ opening

export async function openConversation(peer, messageId = null) {
  if (view.peer !== peer) {
    view.peer = state.openPeer = peer;
    view.elements.clear();
    view.pending.clear();
    $("messages").replaceChildren();
    resetComposer();
    $("typing").textContent = "";
    $("older").hidden = true;
    $("conversation").hidden = false;
    $("pick").hidden = true;
    renderHead();
    try {
      await loadFirstPage(peer);
    } catch (error) {
      view.peer = state.openPeer = null; // opening it again tries again
      $("messages").replaceChildren(el("p", { class: "hint" }, `Could not load the conversation: ${error.message}`));
      return;
    }
  }
  if (messageId !== null) await showAndFocus(peer, messageId);
  markRead();
}

export function closeConversation() {
  view.peer = state.openPeer = null;
  $("conversation").hidden = true;
  $("pick").hidden = false;
}

async function loadFirstPage(peer) {
  const h = history(peer);
  if (!state.users.has(peer) && !state.conversations.has(peer)) {
    try {
      state.users.set(peer, await api.user(peer));
    } catch {
      // a deleted account: the history still shows
    }
    renderHead();
  }
  if (!h.loaded) h.addPage((await api.history(peer, null, PAGE_SIZE)).messages, PAGE_SIZE);
  if (view.peer !== peer) return;
  for (const id of h.ids()) showMessage(h.messages.get(id), false);
  for (const item of h.pending.values()) showPending(item);
  renderOlderControls(h);
  scrollToBottom();
}

async function loadOlder() {
  const peer = view.peer;
  const h = peer && history(peer);
  if (!h || !h.loaded || !h.hasOlder || view.loadingOlder) return view.loadingOlder;
  view.loadingOlder = (async () => {
    try {
      const page = await api.history(peer, h.oldestId(), PAGE_SIZE);
      h.addPage(page.messages, PAGE_SIZE);
      const log = $("log");
      const fromBottom = log.scrollHeight - log.scrollTop;
      for (const m of page.messages) showMessage(h.messages.get(m.id), false);
      log.scrollTop = log.scrollHeight - fromBottom; // keep what the reader looks at in place
      renderOlderControls(h);
    } catch {
      // offline: the next scroll (or the button) tries again
    } finally {
      view.loadingOlder = null;
    }
  })();
  return view.loadingOlder;
}

function renderOlderControls(h) {
  $("older").hidden = !h.hasOlder;
  $("history-start").hidden = h.hasOlder;
}

// A search result: load older pages until the message is there, then show and focus it.
async function showAndFocus(peer, messageId) {
  const h = history(peer);
  while (!h.messages.has(messageId) && h.hasOlder && view.peer === peer) await loadOlder();
  const article = view.elements.get(messageId);
  if (!article) return;
  article.classList.add("found");
  article.setAttribute("tabindex", "-1");
  article.scrollIntoView({ block: "center" });
  article.focus();
}

// ------------------------------------------------------------------ the header

function renderHead() {
  const peer = view.peer;
  const c = state.conversations.get(peer);
  const user = c ? c.user : state.users.get(peer);
  $("peer-name").textContent = user ? user.username : "deleted account";
  let presence = "";
  if (user?.online) presence = "online";
  else if (user?.last_seen_at) presence = `last seen ${new Date(user.last_seen_at).toLocaleString()}`;
  $("peer-state").textContent = presence;
  const blocked = state.blocks.has(peer);
  $("block").textContent = blocked ? "Unblock" : "Block";
  $("block").hidden = !user;
  $("blocked-note").hidden = !blocked;
  $("blocked-note").textContent = blocked ? `You blocked ${user.username}: they cannot send you messages.` : "";
}

function renderTyping() {
  const typing = (state.typing.get(view.peer) || 0) > Date.now();
  const name = $("peer-name").textContent;
  $("typing").textContent = typing ? `${name} is typing…` : "";
}

async function toggleBlock() {
  const peer = view.peer;
  const blocked = state.blocks.has(peer);
  try {
    if (blocked) await api.unblock(peer);
    else await api.block(peer);
    if (blocked) state.blocks.delete(peer);
    else state.blocks.add(peer);
    renderHead();
    $("block").focus();
  } catch (error) {
    $("blocked-note").hidden = false;
    $("blocked-note").textContent = `Could not ${blocked ? "unblock" : "block"}: ${error.message}`;
  }
}

// ------------------------------------------------------------------ messages

function stateText(m) {
  const c = state.conversations.get(view.peer);
  if (c && m.id <= c.peer_last_read_id) return "Read";
  return m.received_at ? "Delivered" : "Sent";
}

function quote(m) {
  if (!m.reply_to) return null;
  const original = history(view.peer).messages.get(m.reply_to);
  let text = "an earlier message";
  if (original) {
    const who = isMine(original) ? "You" : $("peer-name").textContent;
    text = original.message === null ? "message deleted" : `${who}: ${excerpt(original.message, 80)}`;
  }
  return el(
    "a",
    { class: "quote", href: `#/c/${view.peer}/m/${m.reply_to}` },
    srOnly("In reply to "),
    text,
  );
}

function actions(m) {
  if (m.message === null) return null;
  const buttons = [el("button", { type: "button", onclick: () => startReply(m.id) }, "Reply")];
  if (isMine(m)) {
    buttons.push(el("button", { type: "button", onclick: () => startEdit(m.id) }, "Edit"));
    buttons.push(el("button", { type: "button", onclick: () => removeMessage(m.id) }, "Delete"));
  }
  return el("div", { class: "actions" }, ...buttons);
}

function articleContent(m) {
  const mine = isMine(m);
  const deleted = m.message === null;
  return [
    srOnly(mine ? "You: " : `${$("peer-name").textContent}: `),
    quote(m),
    el("p", { class: deleted ? "text deleted" : "text" }, deleted ? "message deleted" : m.message),
    el(
      "p",
      { class: "meta" },
      timeEl(m.sent_at),
      m.edited_at && !deleted ? el("span", { class: "edited" }, " · edited") : null,
      mine && !deleted ? el("span", { class: "state" }, ` · ${stateText(m)}`) : null,
    ),
    actions(m),
  ];
}

// Insert or update one message in id order (older pages before, pending sends after).
function showMessage(m, follow = true) {
  let article = view.elements.get(m.id);
  const log = $("log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < AT_BOTTOM_PX;
  if (!article && isMine(m)) claimPending(m);
  if (!article) {
    article = el("article", { class: isMine(m) ? "msg mine" : "msg theirs", "data-id": m.id });
    view.elements.set(m.id, article);
    $("messages").insertBefore(article, placeFor(m.id));
  }
  const focused = article.contains(document.activeElement) ? document.activeElement.textContent : null;
  fill(article, articleContent(m));
  if (focused) [...article.querySelectorAll("button")].find((b) => b.textContent === focused)?.focus();
  for (const [id, other] of view.elements) {
    const o = history(view.peer).messages.get(id);
    if (o && o.reply_to === m.id && other !== article) fill(other, articleContent(o));
  }
  if (follow && (atBottom || isMine(m))) scrollToBottom();
}

function placeFor(id) {
  let place = view.pending.values().next().value || null;
  for (const [otherId, article] of view.elements) {
    if (otherId > id && (place === null || otherId < Number(place.dataset.id || Infinity))) place = article;
  }
  return place;
}

function refreshStates() {
  const h = history(view.peer);
  for (const [id, article] of view.elements) {
    const m = h.messages.get(id);
    const span = article.querySelector(".state");
    if (m && span) span.textContent = ` · ${stateText(m)}`;
  }
}

function scrollToBottom() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

// ------------------------------------------------------------------ read marks

async function markRead() {
  const peer = view.peer;
  const c = peer && state.conversations.get(peer);
  if (!c || document.visibilityState !== "visible") return;
  const upTo = c.last_message.id;
  const wanted = c.unread_count > 0 || history(peer).newestIncomingId() > c.last_read_id;
  if (!wanted || (view.readAsked.get(peer) || 0) >= upTo) return;
  view.readAsked.set(peer, upTo);
  try {
    putConversation(await api.markRead(peer, upTo));
  } catch {
    view.readAsked.delete(peer); // try again with the next change
  }
}

// ------------------------------------------------------------------ sending

// The stream can bring my message before its POST answers: the pending copy with the same
// text stands aside for it (and comes back, as failed, if the POST then fails), so the
// message never shows twice.
function claimPending(m) {
  for (const item of history(view.peer).pending.values()) {
    const sameReply = (item.body.reply_to || null) === (m.reply_to || null);
    if (item.state === "pending" && !item.matchedId && item.body.message === m.message && sameReply) {
      item.matchedId = m.id;
      view.pending.get(item.key)?.remove();
      view.pending.delete(item.key);
      return;
    }
  }
}

function showPending(item) {
  if (item.matchedId && item.state === "pending") return;
  let article = view.pending.get(item.key);
  if (!article) {
    article = el("article", { class: "msg mine pending" });
    view.pending.set(item.key, article);
    $("messages").append(article);
  }
  const failed = item.state === "failed";
  article.classList.toggle("failed", failed);
  fill(
    article,
    srOnly("You: "),
    el("p", { class: "text" }, item.body.message),
    el("p", { class: "meta", role: failed ? "alert" : null }, failed ? `Not sent: ${item.error}` : item.note || "Sending…"),
    failed
      ? el(
          "div",
          { class: "actions shown" },
          el("button", { type: "button", onclick: () => attempt(item) }, "Retry"),
          el("button", { type: "button", onclick: () => discard(item) }, "Discard"),
        )
      : null,
  );
}

function dropPending(item) {
  history(item.peer).pending.delete(item.key);
  const article = view.pending.get(item.key);
  if (article && item.peer === view.peer) {
    const hadFocus = article.contains(document.activeElement);
    article.remove();
    view.pending.delete(item.key);
    if (hadFocus) $("message-input").focus();
  }
}

function discard(item) {
  dropPending(item);
}

// Send (or retry) one message: the same Idempotency-Key every time, so a retry of a send
// that did reach the server answers with that message instead of storing a second one.
async function attempt(item) {
  item.state = "pending";
  item.note = null;
  if (item.peer === view.peer) showPending(item);
  try {
    const sent = await api.send(item.body, item.key, (ms) => {
      item.note = `Sending is paused for ${Math.ceil(ms / 1000)} s (too many messages)…`;
      if (item.peer === view.peer) showPending(item);
    });
    dropPending(item);
    applyMessage(sent);
  } catch (error) {
    item.state = "failed";
    item.matchedId = null;
    item.error = error instanceof ApiError ? error.describe() : String(error);
    if (item.peer === view.peer) showPending(item);
  }
}

function send(text) {
  const body = { user_id: view.peer, message: text };
  if (view.composer.mode === "reply") body.reply_to = view.composer.id;
  const item = { key: randomKey(), peer: view.peer, body, state: "pending" };
  history(view.peer).pending.set(item.key, item);
  showPending(item);
  scrollToBottom();
  attempt(item);
}

async function saveEdit(id, text) {
  try {
    applyMessage(await api.edit(id, text));
    return true;
  } catch (error) {
    composerError(`Not saved: ${error instanceof ApiError ? error.describe() : error}`);
    return false;
  }
}

async function removeMessage(id) {
  const yes = await confirmAction({
    title: "Delete this message?",
    text: "It is deleted for both of you. This cannot be undone.",
    action: "Delete message",
  });
  if (!yes) return;
  try {
    await api.remove(id);
    const h = history(view.peer);
    const m = h.messages.get(id);
    if (m && !m.deleted_at) {
        applyMessage({ ...m, message: null, deleted_at: new Date().toISOString() });
    }
    $("message-input").focus();
  } catch (error) {
    composerError(`Not deleted: ${error.message}`);
  }
}

// ------------------------------------------------------------------ the composer

function setUpComposer() {
  const input = $("message-input");
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape" && view.composer.mode !== "new") {
      resetComposer();
    }
  });
  input.addEventListener("input", () => {
    autosize();
    if (input.value.trim() && view.composer.mode !== "edit") sendTyping();
  });
  $("composer-cancel").addEventListener("click", () => {
    resetComposer();
    input.focus();
  });
}

function autosize() {
  const input = $("message-input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

async function submit() {
  const input = $("message-input");
  const text = input.value;
  if (!text.trim() || !view.peer) return;
  if (view.composer.mode === "edit") {
    if (!(await saveEdit(view.composer.id, text))) return;
  } else {
    send(text);
  }
  input.value = "";
  autosize();
  resetComposer();
  input.focus();
}

// At most one notice per TYPING_EVERY_MS (the server relays one per pair every 2 s); a
// keystroke inside the window sends one when it ends, so a long burst keeps the notice alive.
function sendTyping() {
  const wait = view.typingSent + TYPING_EVERY_MS - Date.now();
  if (wait > 0) {
    view.typingTimer ||= setTimeout(() => {
      view.typingTimer = null;
      if ($("message-input").value.trim() && view.composer.mode !== "edit") sendTyping();
    }, wait);
    return;
  }
  view.typingSent = Date.now();
  if (!view.sendFrame({ type: "typing", to: view.peer })) api.typing(view.peer).catch(() => {});
}

function setContext(text) {
  $("composer-context").hidden = false;
  $("composer-context-text").textContent = text;
}

function composerError(text) {
  setContext(text);
  $("composer-context").classList.add("error");
}

function resetComposer() {
  if (view.composer.mode === "edit") $("message-input").value = "";
  view.composer = { mode: "new", id: null };
  $("composer-context").hidden = true;
  $("composer-context").classList.remove("error");
  $("message-input").setAttribute("aria-label", "Message");
}

function startReply(id) {
  const m = history(view.peer).messages.get(id);
  if (!m || m.message === null) return;
  view.composer = { mode: "reply", id };
  const who = isMine(m) ? "yourself" : $("peer-name").textContent;
  setContext(`Replying to ${who}: ${excerpt(m.message, 80)}`);
  $("message-input").focus();
}

function startEdit(id) {
  const m = history(view.peer).messages.get(id);
  if (!m || m.message === null) return;
  view.composer = { mode: "edit", id };
  setContext(`Editing your message (Escape cancels)`);
  const input = $("message-input");
  input.value = m.message;
  autosize();
  input.focus();
}
