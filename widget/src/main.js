// The chat widget: a guest session over the WebSocket, the message list, the composer, and
// attachments through chunkup (validate, upload with progress, send the message), which
// the widget loads only when a customer reaches for the paperclip or drags a file in.
//
// Query parameters: ?deploymentId=<id> (default "chunkup-demo"), ?ws=<WebSocket URL>
// (default ws(s)://<this host>/guest/v1), ?echoWaitMs=<ms> (see ECHO_WAIT_MS).

import { h } from "./dom.js";
import { formatBytes } from "./format.js";
import { ChatLog, messageElement, messageTime } from "./log.js";
import { GuestSession, guestSocketUrl, guestToken } from "./session.js";
import { UploadBubble, customerError } from "./upload.js";

const DEFAULT_DEPLOYMENT_ID = "chunkup-demo";

const $ = (id) => document.getElementById(id);
const chat = $("chat");
const launcher = $("chat-launcher");
const log = new ChatLog($("chat-log"));
const form = $("chat-form");
const input = $("chat-input");
const sendButton = $("chat-send");
const attachButton = $("attach");
const attachHint = $("attach-hint");
const fileInput = $("attach-input");
const connectionText = $("chat-connection-text");
const announcer = $("chat-announcer");

const params = new URLSearchParams(location.search);
const deploymentId = params.get("deploymentId") || DEFAULT_DEPLOYMENT_ID;
const session = new GuestSession({
  url: guestSocketUrl(location, deploymentId),
  deploymentId,
  token: guestToken(deploymentId),
});

/** Upload bubbles waiting for the echo of the message that carries their attachment. */
const awaitingEcho = new Map();
/**
 * How long the echo of the message carrying an upload may take before its bubble says it
 * was not sent and offers to send it again. The service echoes a message it took within a
 * second or two, and a refusal of it (a rate limit, say) carries no request id that would
 * tell it from a refusal of another request.
 */
const ECHO_WAIT_MS = Number(params.get("echoWaitMs")) || 20_000;
const seenMessageIds = new Set();

// chunkup (its JavaScript and WebAssembly) loads only when a customer reaches for the
// paperclip or drags a file over the panel: most visitors never attach anything, and they
// download none of it. The load starts before the file picker opens, so it has usually
// ended by the time a file is picked. A load that failed (a dropped connection) is tried
// again at the next reach, or with the bubble's Try again: the wasm always, the script
// where the browser fetches again a module that failed (Chromium does; an engine that
// keeps the failure needs the page reloaded, which the bubble's message says).
let library = null;
function loadLibrary() {
  library ??= import("chunkup")
    .then(async (chunkup) => {
      await chunkup.default();
      return chunkup;
    })
    .catch((error) => {
      console.error("chat: attachments are unavailable, chunkup did not load", error);
      library = null;
      throw error;
    });
  return library;
}

// ------------------------------------------------------------------ session

session.addEventListener("statechange", render);
session.subscribe((message) => {
  if (message.class === "SessionResponse" && message.code === 200) render();
  else if (message.class === "StructuredMessage" && message.body) receive(message.body);
  else if (message.type === "response" && message.class === "string" && REFUSALS[message.code]) refused(REFUSALS[message.code]);
});

/** Texts sent and not yet echoed by the server, oldest first. */
const unconfirmedTexts = [];

/**
 * The refusals (guest API codes) that only a text message gets, and why, for the customer.
 * Others of the same shape answer chunkup's own requests (onAttachment, deleteAttachment),
 * which reach their bubbles through chunkup: no request id tells them apart, so the widget
 * acts only on these.
 */
const REFUSALS = {
  4011: "it is too long. Shorten it and try again.",
  4013: "it carries too much extra information.",
};

/**
 * A text message was refused: the oldest still waiting for its echo. Say so, and give the
 * text back to the composer when it is empty, so nothing typed is lost.
 */
function refused(reason) {
  const text = unconfirmedTexts.shift();
  if (text === undefined) return;
  const notice = h("li", { class: "notice", role: "note" }, `Your message was not sent: ${reason}`);
  log.add(notice, { follow: true });
  announce(`Your message was not sent: ${reason}`);
  if (!input.value) {
    input.value = text;
    autosize();
  }
}
session.connect();

const STATE_TEXT = {
  connecting: "Connecting…",
  ready: "Online",
  reconnecting: "Reconnecting…",
};

function render() {
  const { state } = session;
  document.body.dataset.session = state;
  connectionText.textContent = STATE_TEXT[state] ?? (session.reason || "Offline");
  // While reconnecting, messages are queued by the session and go out once it is back.
  const live = state === "ready" || state === "reconnecting";
  input.disabled = !live;
  sendButton.disabled = !live;

  const media = allowedMedia();
  attachButton.hidden = live && session.sessionResponse !== undefined && media.types.length === 0;
  attachButton.disabled = !(live && media.types.length > 0);
  if (media.types.length) fileInput.accept = media.types.join(",");
  attachHint.textContent = media.summary;
  attachButton.title = media.summary ? `Attach a file (${media.summary})` : "Attach a file";
}

/** What the SessionResponse allows: MIME types for `accept`, and a summary for people. */
function allowedMedia() {
  const inbound = session.sessionResponse?.allowedMedia?.inbound;
  const types = (Array.isArray(inbound?.fileTypes) ? inbound.fileTypes : [])
    .map((entry) => (typeof entry === "string" ? entry : entry?.type))
    .filter((type) => typeof type === "string" && type);
  const names = types.map((type) => {
    if (type === "*/*") return "any file";
    const [major, minor] = type.split("/");
    if (minor === "*") return `${major}s`;
    return (minor ?? type).replace(/^(x-|vnd\.)/, "").toUpperCase();
  });
  const parts = [];
  if (names.length) parts.push(names.join(", "));
  const maxKB = Number(inbound?.maxFileSizeKB);
  if (maxKB > 0) parts.push(`up to ${formatBytes(maxKB * 1000)}`);
  return { types, summary: parts.join("; ") };
}

// ------------------------------------------------------------------ messages

function receive(body) {
  if (body.id) {
    if (seenMessageIds.has(body.id)) return;
    seenMessageIds.add(body.id);
  }
  const direction = body.direction === "Inbound" ? "inbound" : body.direction === "Outbound" ? "outbound" : null;
  if (!direction) return;
  const text = typeof body.text === "string" ? body.text : "";
  const attachments = (Array.isArray(body.content) ? body.content : [])
    .filter((item) => item?.contentType === "Attachment" && item.attachment)
    .map((item) => item.attachment);
  if (!text.trim() && attachments.length === 0) return; // typing indicators, receipts, events
  const time = messageTime(body.channel?.time);
  if (direction === "inbound" && attachments.length === 0) {
    const waiting = unconfirmedTexts.indexOf(text);
    if (waiting >= 0) unconfirmedTexts.splice(waiting, 1);
  }

  // The echo of a message we sent with a fresh upload: the upload bubble becomes the message.
  const bubble = direction === "inbound" && attachments.length === 1 ? awaitingEcho.get(attachments[0].id) : undefined;
  if (bubble) {
    awaitingEcho.delete(attachments[0].id);
    bubble.deliver({ id: body.id, text, attachment: attachments[0], time });
    announce(`${bubble.file.name} sent`);
    return;
  }
  log.add(
    messageElement({ id: body.id, direction, text, attachments, nickname: body.channel?.from?.nickname, time }),
    { follow: direction === "inbound" },
  );
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || sendButton.disabled) return;
  try {
    session.send({ action: "onMessage", token: session.token, message: { type: "Text", text } });
  } catch (error) {
    announce(error.message);
    return;
  }
  unconfirmedTexts.push(text);
  input.value = "";
  autosize();
});

// Enter sends, Shift+Enter starts a new line (not while an IME is composing).
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
input.addEventListener("input", autosize);

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 120)}px`;
}

// ------------------------------------------------------------------ attachments

// Loading starts as the pointer or focus reaches the paperclip, a moment before the click.
for (const type of ["pointerenter", "focus", "click"]) {
  attachButton.addEventListener(type, () => loadLibrary().catch(() => {}));
}
attachButton.addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => {
  const files = [...(fileInput.files ?? [])];
  fileInput.value = ""; // so that picking the same file again fires `change` again
  // A file picked while chunkup still loads waits for it in its bubble ("Preparing…").
  for (const file of files) attach(file);
});

// A file dropped beside the panel must not make the browser open it in this tab (leaving
// the chat, and any upload in flight).
for (const type of ["dragover", "drop"]) {
  document.addEventListener(type, (event) => {
    if (event.dataTransfer?.types.includes("Files")) event.preventDefault();
  });
}

// Files dropped on the panel are attached too.
chat.addEventListener("dragover", (event) => {
  if (attachButton.disabled || !event.dataTransfer?.types.includes("Files")) return;
  event.preventDefault();
  loadLibrary().catch(() => {});
});
chat.addEventListener("drop", (event) => {
  if (attachButton.disabled || !event.dataTransfer?.files.length) return;
  event.preventDefault();
  for (const file of event.dataTransfer.files) attach(file);
});

/** What the bubble says when chunkup could not be loaded (a dropped connection). */
const UNAVAILABLE = {
  code: "unavailable",
  message: "Attachments could not be loaded. Check your connection, then try again or reload the page.",
};

/** `promise`, or a rejection as soon as `signal` aborts (a load cannot be stopped, only left). */
function unlessAborted(promise, signal) {
  return new Promise((resolve, reject) => {
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    promise.then(resolve, reject);
  });
}

function attach(file) {
  let controller = null;
  const bubble = new UploadBubble(file, {
    onCancel: () => controller?.abort(),
    onRetry: () => start(),
    onDismiss: () => {
      if (bubble.attachmentId) awaitingEcho.delete(bubble.attachmentId);
      bubble.remove();
      // The paperclip, or where typing goes when the chat no longer takes files.
      (attachButton.disabled ? (input.disabled ? $("chat-log") : input) : attachButton).focus();
    },
    onAnnounce: announce,
  });
  log.add(bubble.el, { follow: true });
  start();

  // One attempt: chunkup (the bubble says "Preparing…" while it loads, if it has not yet),
  // the file's check, the upload, the message that carries the file.
  async function start() {
    controller = new AbortController();
    const { signal } = controller;
    if (session.over) {
      // Nothing can be sent on a chat that is over: no Try again that cannot help.
      bubble.fail({ code: "session_ended", message: `${session.reason || "The chat has ended."} Start a new chat to send files.` });
      announce(`${file.name} cannot be sent: the chat has ended.`);
      return;
    }
    bubble.uploading();
    let chunkup = null;
    try {
      chunkup = await unlessAborted(loadLibrary(), signal);
    } catch {
      // Cancelled, or the load failed: told apart below.
    }
    if (signal.aborted) {
      cancelled();
      return;
    }
    if (!chunkup) {
      bubble.fail(UNAVAILABLE);
      announce(`${file.name} cannot be attached: attachments are unavailable.`);
      return;
    }

    let problem;
    try {
      problem = chunkup.validateAttachment(session.sessionResponse, file);
    } catch (error) {
      problem = error;
    }
    if (problem) {
      bubble.fail(problem);
      announce(`${file.name} cannot be attached. ${problem.message ?? ""}`);
      return;
    }

    announce(`Uploading ${file.name}`);
    let result;
    try {
      result = await chunkup.attachFile(session, file, (p) => bubble.progress(p), { signal });
    } catch (error) {
      if (signal.aborted || error?.code === "aborted") {
        cancelled();
      } else {
        console.error("chat: upload failed", error);
        const problem = customerError(error);
        bubble.fail(problem);
        announce(`${file.name} was not sent. ${problem.message}`);
      }
      return;
    }
    if (signal.aborted) {
      // Cancel came as the upload finished: keep the customer's decision.
      try {
        session.send({ action: "deleteAttachment", token: session.token, attachmentId: result.attachmentId });
      } catch {
        // disconnected; the server expires unsent attachments
      }
      cancelled();
      return;
    }
    bubble.done(result);
    // The file goes on its own: whatever the customer is typing meanwhile stays theirs.
    send(chunkup.buildAttachmentMessage(session.token, "", [result.attachmentId]));
  }

  /** Sends the message that carries the uploaded file, and waits for its echo. */
  function send(message) {
    const id = bubble.attachmentId;
    awaitingEcho.set(id, bubble);
    try {
      session.send(message);
    } catch (error) {
      // The chat has ended: nothing can be sent on it any more.
      console.error("chat: could not send the attachment message", error);
      bubble.notSent("the chat has ended", null);
      return;
    }
    // ECHO_WAIT_MS from when the session is ready: a message queued while the socket
    // reconnects goes out only then, and is not said unsent while it waits.
    const waitForEcho = () => {
      if (awaitingEcho.get(id) !== bubble) return; // delivered, or dismissed
      if (session.over) {
        bubble.notSent("the chat has ended", null);
      } else if (session.state !== "ready") {
        bubble.queued();
        session.addEventListener("statechange", waitForEcho, { once: true });
      } else {
        bubble.sending(ECHO_WAIT_MS, () => {
          if (awaitingEcho.get(id) !== bubble) return;
          if (session.state === "ready") bubble.notSent("the chat service did not confirm it", () => send(message));
          else waitForEcho();
        });
      }
    };
    waitForEcho();
  }

  function cancelled() {
    bubble.cancelled();
    announce("Upload cancelled");
  }
}

function announce(text) {
  // Cleared first so that the same text twice is announced twice.
  announcer.textContent = "";
  requestAnimationFrame(() => {
    announcer.textContent = text;
  });
}

// ------------------------------------------------------------------ open / minimise

function minimise() {
  chat.hidden = true;
  launcher.hidden = false;
  launcher.setAttribute("aria-expanded", "false");
  launcher.focus();
}
$("chat-minimise").addEventListener("click", minimise);
// Escape minimises the chat, as it closes other popups (not while an IME is composing).
chat.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !event.isComposing) minimise();
});
launcher.addEventListener("click", () => {
  chat.hidden = false;
  launcher.hidden = true;
  launcher.setAttribute("aria-expanded", "true");
  log.scrollToEnd();
  input.focus();
});

render();
// A local greeting, styled like an agent's message but not one (no data-direction).
const greeting = messageElement({
  direction: "outbound",
  text: "Hi! How can we help? You can attach a file with the paperclip.",
  attachments: [],
  nickname: "Acme support",
});
delete greeting.dataset.direction;
greeting.classList.add("greeting");
log.add(greeting);
