// A Genesys Cloud Web Messaging style guest session over one WebSocket: JSON envelopes
// `{ type, class, code, body }` in, `{ action, token, ... }` out. It implements the
// `GuestSession` that chunkup's `attachFile` expects (token, send, subscribe,
// sessionResponse) and reconnects, with the same token, when the socket drops.

const RECONNECT_BASE_MS = 1000;
const RECONNECT_MAX_MS = 30_000;
const MAX_QUEUED = 100;

/**
 * States, also dispatched as `statechange` events:
 *   connecting    first connection, not configured yet
 *   ready         SessionResponse received; messages go out at once
 *   reconnecting  the socket dropped; retrying with backoff (sends are queued)
 *   ended         the server ended the session (SessionExpiredEvent, ConnectionClosedEvent)
 *   failed        the server refused configureSession; no retry
 */
export class GuestSession extends EventTarget {
  /** The guest token, sent in every request. */
  token;
  /** The last SessionResponse body (allowedMedia, blockedExtensions, ...). */
  sessionResponse = undefined;
  /** See the states above. */
  state = "connecting";
  /** When state is "failed" or "ended": a short reason for the customer. */
  reason = "";

  #url;
  #deploymentId;
  #ws = null;
  #listeners = new Set();
  #queue = [];
  #attempt = 0;
  #timer = null;
  #stopped = false;

  constructor({ url, deploymentId, token }) {
    super();
    this.#url = url;
    this.#deploymentId = deploymentId;
    this.token = token;
    this.send = this.send.bind(this);
    this.subscribe = this.subscribe.bind(this);
  }

  /** Back online while reconnecting: try at once rather than at the end of the backoff. */
  #onOnline = () => {
    if (this.state === "reconnecting" && !this.#stopped) this.#reconnectNow();
  };

  /** Ended or failed: nothing can be sent on this session any more. */
  get over() {
    return this.state === "ended" || this.state === "failed";
  }

  /** Opens the socket (again). */
  connect() {
    this.#stopped = false;
    // The same function each time: added once however often connect() runs.
    globalThis.addEventListener?.("online", this.#onOnline);
    clearTimeout(this.#timer);
    let ws;
    try {
      ws = new WebSocket(this.#url);
    } catch (error) {
      console.error("chat: cannot open the WebSocket", error);
      this.#fail("The chat address is not valid.");
      return;
    }
    this.#ws = ws;
    ws.addEventListener("open", () => {
      ws.send(
        JSON.stringify({
          action: "configureSession",
          token: this.token,
          deploymentId: this.#deploymentId,
          journeyContext: {
            customer: { id: this.token, idType: "cookie" },
            customerSession: { id: "", type: "web" },
          },
        }),
      );
    });
    ws.addEventListener("message", (event) => this.#receive(ws, event));
    ws.addEventListener("close", () => this.#closed(ws));
  }

  /** Stops for good (no reconnect, not even when the browser comes back online). */
  close() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    globalThis.removeEventListener?.("online", this.#onOnline);
    this.#ws?.close(1000);
  }

  /**
   * JSON-serialises and sends `message`. Until the session is configured (first connect
   * or reconnect) messages are queued and go out right after the SessionResponse.
   */
  send(message) {
    const text = JSON.stringify(message);
    if (this.state === "ready" && this.#ws?.readyState === WebSocket.OPEN) {
      this.#ws.send(text);
      return;
    }
    if (this.over) {
      throw Object.assign(new Error("The chat is not connected."), { code: "not_connected" });
    }
    if (this.#queue.length >= MAX_QUEUED) this.#queue.shift();
    this.#queue.push(text);
  }

  /** Calls `listener` with every parsed incoming envelope; returns the unsubscribe function. */
  subscribe(listener) {
    const entry = { listener };
    this.#listeners.add(entry);
    return () => this.#listeners.delete(entry);
  }

  #receive(ws, event) {
    if (ws !== this.#ws) return;
    if (typeof event.data !== "string") return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      console.warn("chat: ignoring a message that is not JSON");
      return;
    }
    if (!message || typeof message !== "object") return;

    if (message.class === "SessionResponse" && message.code === 200) {
      this.sessionResponse = message.body ?? {};
      this.#attempt = 0;
      this.#setState("ready");
      const queued = this.#queue.splice(0);
      for (const text of queued) ws.send(text);
    } else if (this.state !== "ready" && message.type === "response" && message.code >= 400) {
      // configureSession refused (unknown deployment, bad token, ...).
      console.error("chat: session refused", message.code, message.body);
      this.#fail("The chat is not available right now.");
    } else if (message.class === "SessionExpiredEvent") {
      this.#end("Your chat session has expired.");
    } else if (message.class === "ConnectionClosedEvent") {
      this.#end("The chat was closed.");
    }

    for (const { listener } of [...this.#listeners]) {
      try {
        listener(message);
      } catch (error) {
        console.error("chat: a message listener threw", error);
      }
    }
  }

  #closed(ws) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    if (this.#stopped || this.state === "failed" || this.state === "ended") return;
    this.#setState(this.sessionResponse === undefined ? "connecting" : "reconnecting");
    // Full jitter, capped exponential backoff.
    const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** this.#attempt);
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.connect(), Math.max(250, Math.random() * ceiling));
  }

  #reconnectNow() {
    if (this.#ws) return;
    clearTimeout(this.#timer);
    this.connect();
  }

  #fail(reason) {
    this.reason = reason;
    this.#stopped = true;
    this.#setState("failed");
    this.#ws?.close();
  }

  #end(reason) {
    this.reason = reason;
    this.#stopped = true;
    this.#setState("ended");
    this.#ws?.close(1000);
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new Event("statechange"));
  }
}

/** The guest token for this deployment, kept in sessionStorage so a reload resumes the session. */
export function guestToken(deploymentId) {
  const key = `chunkup-widget:token:${deploymentId}`;
  try {
    let token = sessionStorage.getItem(key);
    if (!token) {
      token = uuid();
      sessionStorage.setItem(key, token);
    }
    return token;
  } catch {
    return uuid(); // storage blocked: a session per page load
  }
}

/** A v4 UUID; `crypto.randomUUID` needs a secure context, `getRandomValues` does not. */
function uuid() {
  if (globalThis.crypto?.randomUUID) {
    try {
      return crypto.randomUUID();
    } catch {
      // not a secure context
    }
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * The guest WebSocket URL: `?ws=` from the page's query (absolute, or relative to the page;
 * http(s) is turned into ws(s)), else `/guest/v1` on this origin. `deploymentId` is added
 * unless the URL already has one.
 */
export function guestSocketUrl(location, deploymentId) {
  const params = new URLSearchParams(location.search);
  const url = new URL(params.get("ws") || "/guest/v1", location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (!url.searchParams.has("deploymentId")) url.searchParams.set("deploymentId", deploymentId);
  return url.href;
}
