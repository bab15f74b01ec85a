// The sidebar: the conversation list (kept in place, entry by entry, so keyboard focus
// survives live updates), finding people by username, and searching messages.

import { api, ApiError } from "./api.js";
import { $, el, excerpt, fill, shortTime, srOnly, timeEl } from "./dom.js";
import { addConversationPage, on, peerOf, sortedConversations, state, unreadTotal } from "./state.js";

const SEARCH_DELAY_MS = 250;
const entries = new Map(); // peer id -> <li>

export function setUpList() {
  on("conversations", renderList);
  on("conversation", (peer) => renderEntry(peer));
  on("presence", (peer) => renderEntry(peer));
  $("more-conversations").addEventListener("click", loadMore);
  $("find").addEventListener("submit", (event) => {
    event.preventDefault();
    findPerson($("find-input").value.trim());
  });
  setUpSearch();
}

export function clearList() {
  entries.clear();
  $("conversation-list").replaceChildren();
  $("find-result").replaceChildren();
  $("find-input").value = $("search-input").value = "";
  $("search-results").hidden = true;
}

function userName(c) {
  return c.user ? c.user.username : "deleted account";
}

function lastLine(m) {
  if (m.message === null) return "message deleted";
  return (m.sent_by === state.me.id ? "You: " : "") + excerpt(m.message, 60);
}

function entryContent(c) {
  const online = c.user?.online;
  const unread = c.unread_count;
  return [
    el(
      "span",
      { class: "entry-top" },
      el("span", { class: "name" }, userName(c)),
      online ? el("span", { class: "dot", title: "online" }, srOnly(" online")) : null,
      timeEl(c.last_message.sent_at),
    ),
    el(
      "span",
      { class: "entry-bottom" },
      el("span", { class: c.last_message.message === null ? "last deleted" : "last" }, lastLine(c.last_message)),
      unread > 0
        ? el("span", { class: "badge" }, el("span", { "aria-hidden": "true" }, String(unread)), srOnly(` ${unread} unread`))
        : null,
    ),
  ];
}

function renderEntry(peer) {
  const c = state.conversations.get(peer);
  const li = entries.get(peer);
  if (!c || !li) return;
  const link = li.firstChild;
  fill(link, entryContent(c));
  link.classList.toggle("unread", c.unread_count > 0);
  if (peer === state.openPeer) link.setAttribute("aria-current", "page");
  else link.removeAttribute("aria-current");
  updateTitle();
}

function newEntry(c) {
  const link = el("a", { href: `#/c/${c.user_id}`, class: "entry" });
  const li = el("li", {}, link);
  entries.set(c.user_id, li);
  return li;
}

// Reorders (and adds) entries only where the order changed: moving a focused node loses focus.
function renderList() {
  const list = $("conversation-list");
  const focused = document.activeElement;
  let at = list.firstChild;
  for (const c of sortedConversations()) {
    const li = entries.get(c.user_id) || newEntry(c);
    renderEntry(c.user_id);
    if (li !== at) list.insertBefore(li, at);
    else at = at.nextSibling;
  }
  if (focused && focused !== document.activeElement && list.contains(focused)) focused.focus();
  $("no-conversations").hidden = state.conversations.size > 0;
  $("more-conversations").hidden = state.nextPage === null;
  updateTitle();
}

export function updateTitle() {
  const total = unreadTotal();
  document.title = total > 0 ? `(${total}) Chat` : "Chat";
}

async function loadMore() {
  if (state.nextPage === null) return;
  addConversationPage(await api.conversations(state.nextPage), false);
}

// ------------------------------------------------------------------ find people

async function findPerson(username) {
  const out = $("find-result");
  if (!username) return out.replaceChildren();
  out.replaceChildren(el("p", { class: "hint" }, "Looking…"));
  try {
    const user = await api.findUser(username);
    state.users.set(user.id, { ...state.users.get(user.id), ...user });
    out.replaceChildren(personCard(user));
  } catch (error) {
    const text = error instanceof ApiError && error.status === 404
      ? `No one is called “${username}”.`
      : `Could not look that up: ${error.message}`;
    out.replaceChildren(el("p", { class: "hint" }, text));
  }
}

function personCard(user) {
  if (user.id === state.me.id) return el("p", { class: "hint" }, "That is you.");
  return el(
    "p",
    { class: "person" },
    el("span", { class: "name" }, user.username),
    user.online ? el("span", { class: "dot", title: "online" }, srOnly(" online")) : null,
    el("a", { href: `#/c/${user.id}`, class: "button", onclick: () => {
      $("find-input").value = "";
      $("find-result").replaceChildren();
    } }, `Message ${user.username}`),
  );
}

// ------------------------------------------------------------------ search messages

function setUpSearch() {
  let timer = null;
  let asked = 0;
  const input = $("search-input");
  const run = async () => {
    const q = input.value.trim();
    const ticket = ++asked; // only the latest query's answer is shown
    if (!q) return void ($("search-results").hidden = true);
    try {
      const page = await api.search(q);
      if (ticket === asked) showResults(q, page);
    } catch (error) {
      if (ticket === asked) showResults(q, null, error);
    }
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(run, SEARCH_DELAY_MS);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      input.value = "";
      run();
    }
  });
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    run();
  });
}

function showResults(q, page, error) {
  $("search-results").hidden = false;
  const list = $("search-list");
  if (error) {
    $("search-summary").textContent = `Search failed: ${error.message}`;
    return list.replaceChildren();
  }
  const count = page.meta.count;
  $("search-summary").textContent = `${count} ${count === 1 ? "message" : "messages"} match “${q}”`;
  list.replaceChildren(...page.messages.map(resultItem));
}

function resultItem(m) {
  const peer = peerOf(m);
  const name = state.users.get(peer)?.username || `user ${peer}`;
  const who = m.sent_by === state.me.id ? `You to ${name}` : name;
  return el(
    "li",
    {},
    el(
      "a",
      { href: `#/c/${peer}/m/${m.id}`, class: "entry" },
      el("span", { class: "entry-top" }, el("span", { class: "name" }, who), el("time", { datetime: m.sent_at }, shortTime(m.sent_at))),
      el("span", { class: "last" }, excerpt(m.message || "", 100)),
    ),
  );
}
