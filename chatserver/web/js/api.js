// The REST API: JSON in and out, the Bearer token, problem+json errors as ApiError.

const TOKEN_KEY = "chat.token";
const MAX_RATE_WAIT_MS = 60_000;

export class ApiError extends Error {
  constructor(status, problem, retryAfter = null) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status; // 0: no answer (offline, server gone)
    this.problem = problem || {};
    this.retryAfter = retryAfter; // seconds, for 429 and 503
  }

  // "username: already taken" lines from the problem's field errors, else its detail.
  describe() {
    const errors = this.problem.errors;
    if (!errors) return this.message;
    return Object.entries(errors)
      .map(([field, reasons]) => `${field}: ${reasons.join(", ")}`)
      .join("; ");
  }
}

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY),
  set: (value) => localStorage.setItem(TOKEN_KEY, value),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

// One request. `headers` adds to the defaults; 401 with a token means it is no longer valid.
export async function request(method, path, { body, headers = {}, query } = {}) {
  const url = query ? `${path}?${new URLSearchParams(query)}` : path;
  const init = { method, headers: { Accept: "application/json", ...headers } };
  const current = token.get();
  if (current) init.headers.Authorization = `Bearer ${current}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, { detail: "No connection to the server" });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  if (response.status === 401 && current) onUnauthorized();
  const retryAfter = Number(response.headers.get("Retry-After")) || null;
  throw new ApiError(response.status, data, retryAfter);
}

// `request`, waiting out 429 answers as long as Retry-After says (bounded).
export async function patiently(method, path, options = {}, onWait = () => {}) {
  let waited = 0;
  for (;;) {
    try {
      return await request(method, path, options);
    } catch (error) {
      if (error.status !== 429 || waited > MAX_RATE_WAIT_MS) throw error;
      const ms = (error.retryAfter || 1) * 1000;
      onWait(ms);
      waited += ms;
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
  }
}

export const api = {
  signUp: (body) => patiently("POST", "/api/v1/users/", { body }),
  logIn: (body) => patiently("POST", "/api/v1/auth/token/", { body }),
  logOut: () => request("DELETE", "/api/v1/auth/token/"),
  deleteAccount: () => request("DELETE", "/api/v1/users/"),
  me: () => request("GET", "/api/v1/users/"),
  user: (userId) => request("GET", "/api/v1/users/", { query: { user_id: userId } }),
  findUser: (username) => request("GET", "/api/v1/users/", { query: { username } }),
  position: () => request("GET", "/api/v1/events"),
  conversations: (before) =>
    request("GET", "/api/v1/conversations/", {
      query: before ? { page_size: 100, before } : { page_size: 100 },
    }),
  conversation: (userId) => request("GET", `/api/v1/conversations/${userId}/`),
  history: (userId, beforeId, pageSize) => {
    const query = { with: userId, page_size: pageSize };
    if (beforeId) query.before_id = beforeId;
    return request("GET", "/api/v1/chats/", { query });
  },
  // Fetching what was sent to me marks it received (delivered) for its sender.
  fetchUnreceived: () =>
    request("GET", "/api/v1/chats/", { query: { unread: true, page_size: 100 } }),
  markRead: (userId, upToId) =>
    request("POST", `/api/v1/conversations/${userId}/read`, { body: { up_to_id: upToId } }),
  send: (body, key, onWait) =>
    patiently("POST", "/api/v1/chats/", { body, headers: { "Idempotency-Key": key } }, onWait),
  edit: (messageId, text) =>
    patiently("PATCH", `/api/v1/chats/${messageId}/`, { body: { message: text } }),
  remove: (messageId) => request("DELETE", `/api/v1/chats/${messageId}/`),
  search: (q) => request("GET", "/api/v1/chats/", { query: { q, page_size: 20 } }),
  typing: (userId) => request("POST", `/api/v1/conversations/${userId}/typing`),
  blocks: () => request("GET", "/api/v1/blocks/"),
  block: (userId) => request("PUT", `/api/v1/blocks/${userId}`),
  unblock: (userId) => request("DELETE", `/api/v1/blocks/${userId}`),
};
