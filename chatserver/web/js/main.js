// The web client's entry: signing up and in, loading what the person has, the event
// stream, and the place in the app, kept in the URL's hash so a reload returns there:
// #/signup, #/login, #/ (conversations), #/c/<user id>, #/c/<user id>/m/<message id>.

import { api, ApiError, token, whenUnauthorized } from "./api.js";
import { closeConversation, openConversation, setUpChat } from "./chat.js";
import { $, confirmAction } from "./dom.js";
import { clearList, setUpList, updateTitle } from "./list.js";
import { Stream } from "./stream.js";
import { addConversationPage, applyEvent, emit, on, reset, state } from "./state.js";

const STATUS_TEXT = {
  connecting: "Connecting…",
  live: "Connected",
  waiting: "Connection lost, reconnecting…",
  offline: "Offline, waiting for the network…",
};
const ACK_DELAY_MS = 200;

let stream = null;

// ------------------------------------------------------------------ signing up and in

function showAuth(which) {
  $("loading").hidden = true;
  $("shell").hidden = true;
  $("auth").hidden = false;
  $("signup").hidden = which !== "signup";
  $("login").hidden = which !== "login";
  const form = $(which);
  form.querySelector("input").focus();
  document.title = which === "signup" ? "Sign up · Chat" : "Log in · Chat";
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

async function submitAuth(form, work) {
  const error = form.querySelector("[data-error]");
  const button = form.querySelector("button[type=submit]");
  error.textContent = "";
  button.disabled = true;
  try {
    const answer = await work(formData(form));
    token.set(answer.token);
    form.reset();
    if (!location.hash.startsWith("#/c/")) history_replace("#/");
    await start();
  } catch (failure) {
    error.textContent = failure instanceof ApiError ? failure.describe() : String(failure);
  } finally {
    button.disabled = false;
  }
}

function history_replace(hash) {
  window.history.replaceState(null, "", hash);
}

function setUpAuth() {
  $("signup").addEventListener("submit", (event) => {
    event.preventDefault();
    submitAuth($("signup"), async (data) => {
      await api.signUp(data);
      return api.logIn({ username: data.username, password: data.password });
    });
  });
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    submitAuth($("login"), (data) => api.logIn(data));
  });
}

// ------------------------------------------------------------------ the signed-in app

async function start() {
  try {
    state.me = await api.me();
  } catch (error) {
    if (error.status === 401 || error.status === 404) return signedOut("login");
    $("loading").textContent = `The server does not answer (${error.message}); retrying…`;
    return void setTimeout(start, 3000);
  }
  $("me-name").textContent = state.me.username;
  $("auth").hidden = true;
  $("loading").hidden = true;
  $("shell").hidden = false;
  let position;
  try {
    position = await loadEverything();
  } catch (error) {
    $("connection").textContent = `Could not load your conversations (${error.message}); retrying…`;
    return void setTimeout(() => location.reload(), 5000);
  }
  stream = new Stream({
    token: token.get(),
    onEvent: handleEvent,
    onStatus: (status) => ($("connection").textContent = STATUS_TEXT[status]),
    onUnauthorized: () => signedOut("login"),
  });
  stream.start(position);
  await route();
  document.body.dataset.ready = "true";
}

// The position first, then what it covers: events after it replay onto fresh data, and
// applying one twice changes nothing.
async function loadEverything() {
  const { next } = await api.position();
  const [page, blocks] = await Promise.all([
    api.conversations(),
    api.blocks().catch(() => ({ blocks: [] })),
  ]);
  addConversationPage(page, true);
  performance.mark("conversations-ready");
  state.blocks = new Set(blocks.blocks.map((b) => b.user_id));
  emit("blocks");
  acknowledge();
  return next;
}

function handleEvent(event) {
  if (event.type === "reset") return void refetch(event.pos);
  applyEvent(event);
  const m = event.message;
  if (event.type === "message" && m.received_by === state.me.id && !m.received_at) acknowledge();
}

// The stream cannot replay from where we were: start over from its current position.
async function refetch(position) {
  state.histories.clear();
  const open = state.openPeer;
  closeConversation();
  try {
    await loadEverything();
  } catch {
    return void location.reload(); // start over, from the server's current state
  }
  stream.position = Math.max(stream.position, position);
  if (open !== null) await openConversation(open);
}

// Delivered: fetching the messages sent to me marks them received for their senders.
let ackTimer = null;
function acknowledge() {
  clearTimeout(ackTimer);
  ackTimer = setTimeout(async () => {
    try {
      for (;;) {
        const page = await api.fetchUnreceived();
        for (const m of page.messages) {
          const h = state.histories.get(m.sent_by);
          if (h) h.upsert(m);
        }
        if (page.messages.length < 100) break;
      }
    } catch {
      // offline: the next message or reconnect tries again
    }
  }, ACK_DELAY_MS);
}

function signedOut(which) {
  clearTimeout(ackTimer);
  if (stream) stream.stop();
  stream = null;
  token.clear();
  reset();
  clearList();
  closeConversation();
  updateTitle();
  history_replace(`#/${which}`);
  showAuth(which);
}

function setUpAccount() {
  $("logout").addEventListener("click", async () => {
    await api.logOut().catch(() => {});
    signedOut("login");
  });
  $("delete-account").addEventListener("click", async () => {
    const yes = await confirmAction({
      title: "Delete your account?",
      text: "Your account, your tokens and the messages sent to you are deleted for good. " +
        "Messages you sent stay with the people you sent them to.",
      action: "Delete my account",
    });
    if (!yes) return;
    try {
      await api.deleteAccount();
      signedOut("signup");
    } catch (error) {
      $("connection").textContent = `Could not delete the account: ${error.message}`;
    }
  });
}

// ------------------------------------------------------------------ where we are

async function route() {
  const hash = location.hash || "#/";
  if (!state.me) return showAuth(hash === "#/login" ? "login" : "signup");
  const match = hash.match(/^#\/c\/(\d+)(?:\/m\/(\d+))?$/);
  document.body.classList.toggle("at-chat", Boolean(match));
  if (!match) return closeConversation();
  await openConversation(Number(match[1]), match[2] ? Number(match[2]) : null);
  if (!match[2]) $("message-input").focus();
}

function boot() {
  setUpAuth();
  setUpAccount();
  setUpList();
  setUpChat((frame) => stream !== null && stream.send(frame));
  whenUnauthorized(() => signedOut("login"));
  window.addEventListener("hashchange", () => route());
  on("conversations", updateTitle);
  if (token.get()) start();
  else route();
}

boot();
