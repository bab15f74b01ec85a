// Small DOM helpers. Text is only ever set with textContent: nothing a user typed is parsed
// as HTML anywhere in the client.

export const $ = (id) => document.getElementById(id);

// el("p", {class: "x", "aria-label": "y"}, "text", child, …): an element with attributes
// (false/null ones left out), event handlers (on* keys) and children (strings become text).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

// node.replaceChildren(...children) without the null/false ones (absent optional parts).
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((child) => child !== null && child !== false));
  return node;
}

export function srOnly(text) {
  return el("span", { class: "sr-only" }, text);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

// "14:03" today, "3 Dec" before.
export function shortTime(iso) {
  const date = new Date(iso);
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? timeFormat.format(date)
    : dateFormat.format(date);
}

export function fullTime(iso) {
  return fullFormat.format(new Date(iso));
}

export function timeEl(iso) {
  return el("time", { datetime: iso, title: fullTime(iso) }, shortTime(iso));
}

// One line of a message for lists and quotes.
export function excerpt(text, max = 80) {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > max ? line.slice(0, max - 1) + "…" : line;
}

// Random Idempotency-Keys from getRandomValues (crypto.randomUUID needs a secure context).
export function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// A modal confirmation (the page's one <dialog>): resolves true when confirmed.
export function confirmAction({ title, text, action }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action;
  const returnFocus = document.activeElement;
  return new Promise((resolve) => {
    const finish = (answer) => {
      $("confirm-ok").onclick = $("confirm-cancel").onclick = dialog.onclose = null;
      if (dialog.open) dialog.close();
      if (returnFocus && returnFocus.isConnected) returnFocus.focus();
      resolve(answer);
    };
    $("confirm-ok").onclick = () => finish(true);
    $("confirm-cancel").onclick = () => finish(false);
    dialog.onclose = () => finish(false); // Escape
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}
