// The live event stream: one WebSocket to /api/v1/stream, authenticated by its first frame,
// resumed with `since` (the last position handled) after every drop, so nothing is missed
// and nothing comes twice. Reconnects by itself: with backoff after a close, at once when
// the network comes back or the page becomes visible, and after a sleep (a timer that fires
// far too late means the machine slept; the socket may be dead without knowing it).

const CLOSE_UNAUTHORIZED = 4401;
const TICK_MS = 5_000;
const SLEPT_MS = 20_000;
const MAX_BACKOFF_MS = 15_000;

export class Stream {
  // onEvent(event) for each event in order; onStatus("connecting" | "live" | "offline" |
  // "waiting"); onUnauthorized() when the server refuses the token.
  constructor({ token, onEvent, onStatus, onUnauthorized }) {
    this.token = token;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onUnauthorized = onUnauthorized;
    this.position = 0;
    this.socket = null;
    this.failures = 0;
    this.retryTimer = null;
    this.stopped = true;
    this.lastTick = Date.now();
    this.listeners = {
      online: () => this.reconnectNow(),
      offline: () => this.dropped("offline"),
      visibilitychange: () => {
        if (document.visibilityState === "visible" && !this.isOpen()) this.reconnectNow();
      },
    };
  }

  start(position) {
    this.position = position;
    this.stopped = false;
    window.addEventListener("online", this.listeners.online);
    window.addEventListener("offline", this.listeners.offline);
    document.addEventListener("visibilitychange", this.listeners.visibilitychange);
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.listeners.online);
    window.removeEventListener("offline", this.listeners.offline);
    document.removeEventListener("visibilitychange", this.listeners.visibilitychange);
    clearInterval(this.ticker);
    clearTimeout(this.retryTimer);
    this.closeSocket();
  }

  isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  // Ephemeral frames (typing); false when there is no open socket to carry them.
  send(frame) {
    if (!this.isOpen()) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.stopped) return;
    if (!navigator.onLine) return this.onStatus("offline");
    this.closeSocket();
    this.onStatus("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/api/v1/stream`);
    this.socket = socket;
    socket.onopen = () => {
      // The token goes in a frame, never in the URL (URLs end up in logs).
      socket.send(JSON.stringify({ type: "auth", token: this.token, since: this.position }));
      this.failures = 0;
      this.onStatus("live");
    };
    socket.onmessage = (message) => this.received(socket, message.data);
    socket.onclose = (close) => this.closed(socket, close.code);
  }

  received(socket, data) {
    if (socket !== this.socket) return;
    const event = JSON.parse(data);
    if (event.type === "error") return; // e.g. a frame this server does not take
    this.onEvent(event);
    if (typeof event.pos === "number" && event.pos > this.position) this.position = event.pos;
  }

  closed(socket, code) {
    if (socket !== this.socket) return;
    this.socket = null;
    if (this.stopped) return;
    if (code === CLOSE_UNAUTHORIZED) return this.onUnauthorized();
    this.dropped(navigator.onLine ? "waiting" : "offline");
  }

  // The connection is gone: retry later (backoff with jitter), or when back online.
  dropped(status) {
    this.closeSocket();
    this.onStatus(status);
    if (status === "offline" || this.stopped) return;
    const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.failures);
    this.failures += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), backoff * (0.5 + Math.random() / 2));
  }

  reconnectNow() {
    this.failures = 0;
    this.connect();
  }

  closeSocket() {
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      if (socket.readyState <= WebSocket.OPEN) socket.close(1000);
    }
  }

  tick() {
    const now = Date.now();
    const slept = now - this.lastTick > SLEPT_MS;
    this.lastTick = now;
    if (slept && !this.stopped) this.reconnectNow();
  }
}
