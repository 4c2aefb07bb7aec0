// The bubble of one attachment, on the customer's side of the list, through its states:
//   uploading  name, size, a progress bar with percent, speed and time left, Cancel
//   done       the file as a link to its download URL; becomes the delivered message when
//              the server echoes the message that carries it (see deliver()); "not sent"
//              and Send again when that echo does not come
//   error      what went wrong in the customer's words, the error code in small print,
//              Try again (unless trying again cannot help) and Dismiss
//   cancelled  "Upload cancelled", Dismiss

import { h, icon, safeUrl } from "./dom.js";
import { formatBytes, formatEta, formatSpeed } from "./format.js";
import { metaLine, thumbnail } from "./log.js";

/** Codes for which trying the same file again cannot help. */
const FINAL_CODES = new Set([
  "file_type_invalid",
  "file_size_invalid",
  "file_extension_blocked",
  "file_empty",
  "file_content_invalid",
  "file_name_invalid",
  "file_name_too_long",
  "attachments_disabled",
  "feature_unavailable",
  "session_expired",
  "session_not_found",
  "session_ended",
  "invalid_input",
]);

const CONNECTION_LOST = "The connection was lost while sending this file. Check your connection, then try again.";

/**
 * What to tell the customer about a failed attachment: `{ code, message, final }`. chunkup's
 * attachment refusals (`file_type_invalid`, `session_expired`...) are already in words a
 * customer understands; its other errors (`network`, `http_status`...) are written for
 * developers, so the widget says what they mean for the customer instead. `code` stays
 * chunkup's, shown in small print for support; `final` when trying again cannot help.
 */
export function customerError(error) {
  const code = typeof error?.code === "string" ? error.code : "error";
  const cause = error?.cause?.code;
  const tooLarge = error?.status === 413;
  const words = {
    network: CONNECTION_LOST,
    timeout: CONNECTION_LOST,
    retries_exhausted:
      cause === "network" || cause === "timeout"
        ? CONNECTION_LOST
        : "The chat service could not take this file right now. Please try again later.",
    http_status: tooLarge ? "This file is too large to send here." : "The chat service refused this file. Please try again later.",
    read_failed: "This file could not be read. It may have been moved or changed: choose it again.",
    invalid_input: "This file can't be sent here.",
    worker_failed: "Something went wrong while sending this file. Please try again.",
    protocol: "Something went wrong while sending this file. Please try again.",
  };
  const message =
    words[code] ?? (typeof error?.message === "string" && error.message ? error.message : "Something went wrong. Please try again.");
  return { code, message, final: FINAL_CODES.has(code) || tooLarge };
}

let counter = 0;

export class UploadBubble {
  /**
   * @param {File} file
   * @param {{ onCancel(): void, onRetry(): void, onDismiss(): void, onAnnounce?(text: string): void }} handlers
   */
  constructor(file, handlers) {
    this.file = file;
    this.handlers = handlers;
    this.attachmentId = null;
    const id = `upload-${(counter += 1)}`;
    const isImage = /^image\//i.test(file.type);
    this.previewUrl = isImage ? URL.createObjectURL(file) : null;

    this.nameEl = h("span", { class: "attachment-name", id: `${id}-name`, title: file.name }, file.name);
    this.fileEl = h(
      "span",
      { class: "attachment" },
      this.previewUrl ? thumbnail(this.previewUrl) : icon("file", 20),
      h("span", { class: "attachment-text" }, this.nameEl, h("span", { class: "attachment-size" }, formatBytes(file.size))),
    );
    this.bar = h("progress", { max: 100, value: 0, "aria-labelledby": `${id}-label ${id}-name` });
    this.stats = h("span", { class: "upload-stats", "aria-hidden": "true" }, "Preparing…");
    this.progressEl = h(
      "div",
      { class: "upload-progress" },
      h("span", { class: "visually-hidden", id: `${id}-label` }, "Upload progress of"),
      this.bar,
      this.stats,
    );
    this.statusEl = h("p", { class: "upload-status", hidden: true });
    this.errorEl = h("p", { class: "upload-error", hidden: true });
    this.codeEl = h("code", { class: "upload-error-code", hidden: true });
    this.actions = h("div", { class: "upload-actions" });
    this.meta = metaLine("inbound");
    this.el = h(
      "li",
      { class: "message upload", id, dataset: { state: "uploading" } },
      this.meta,
      h("div", { class: "bubble" }, this.fileEl, this.progressEl, this.statusEl, this.errorEl, this.codeEl, this.actions),
    );
  }

  /** (Re)starts: progress bar at zero, Cancel. */
  uploading() {
    this.#state("uploading");
    this.phase = null;
    this.bar.value = 0;
    this.stats.textContent = "Preparing…";
    this.progressEl.hidden = false;
    this.#show(this.statusEl, "");
    this.#show(this.errorEl, "");
    this.#show(this.codeEl, "");
    this.cancelButton = this.#button("Cancel", "upload-cancel", () => {
      // aria-disabled, not disabled: a disabled button loses the keyboard focus, which
      // then could not follow to Dismiss.
      if (this.cancelButton.getAttribute("aria-disabled") === "true") return;
      this.cancelButton.setAttribute("aria-disabled", "true");
      this.cancelButton.firstChild.textContent = "Cancelling…";
      this.handlers.onCancel();
    });
    this.#replaceActions([this.cancelButton]);
  }

  /** A chunkup progress object. */
  progress(p) {
    if (this.el.dataset.state !== "uploading") return;
    // Waits are told to screen readers too (the stats line is visual only), once per wait.
    if (p.phase !== this.phase) {
      this.phase = p.phase;
      if (p.phase === "retrying") this.handlers.onAnnounce?.(`${this.file.name}: not through yet, retrying`);
      else if (p.phase === "offline") this.handlers.onAnnounce?.(`${this.file.name}: offline, waiting for the network`);
    }
    const percent = Math.max(0, Math.min(100, Number(p.percent) || 0));
    this.bar.value = percent;
    // Floor, so 100 % shows only once the server has confirmed every byte.
    const parts = [`${p.phase === "done" ? 100 : Math.floor(percent)}%`];
    if (p.phase === "starting") {
      parts[0] = "Preparing…";
    } else if (p.phase === "retrying") {
      const seconds = Math.ceil((Number(p.retryInMs) || 0) / 1000);
      // A dropped connection or a busy service (a rate limit before the upload): both wait.
      parts.push(seconds > 0 ? `retrying in ${seconds} s` : "retrying");
    } else if (p.phase === "offline") {
      parts.push("offline, waiting for the network");
    } else if (p.phase === "uploading") {
      parts.push(formatSpeed(p.bytesPerSecond), formatEta(p.etaSeconds));
    } else if (p.phase === "verifying") {
      parts.push("checking the file…");
    }
    this.stats.textContent = parts.filter(Boolean).join(" · ");
  }

  /** Uploaded: the file becomes a link; the message carrying it is on its way. */
  done(result) {
    this.attachmentId = result.attachmentId;
    this.el.dataset.attachmentId = result.attachmentId;
    this.#state("done");
    this.progressEl.hidden = true;
    this.#show(this.statusEl, "Uploaded · sending…");
    this.#link(result.downloadUrl);
    this.#clearActions();
  }

  /**
   * The message carrying the file went out: "sending…" until its echo, or until `waitMs`
   * pass and `onNoEcho` is called.
   */
  sending(waitMs, onNoEcho) {
    this.queued();
    this.echoTimer = setTimeout(onNoEcho, waitMs);
  }

  /**
   * The message carrying the file waits for the chat to reconnect: "sending…", with
   * nothing to press (a Send again now would only queue another copy).
   */
  queued() {
    clearTimeout(this.echoTimer);
    delete this.el.dataset.sent;
    this.#show(this.statusEl, "Uploaded · sending…");
    this.#clearActions();
  }

  /** The server echoed the message carrying this attachment: this bubble is that message. */
  deliver({ id, text, attachment, time }) {
    clearTimeout(this.echoTimer);
    delete this.el.dataset.sent;
    this.#clearActions();
    if (id) this.el.dataset.messageId = id;
    this.el.dataset.direction = "inbound";
    if (attachment?.url) this.#link(attachment.url);
    if (text) this.fileEl.before(h("p", { class: "message-text" }, text));
    this.#show(this.statusEl, "");
    this.meta.replaceWith((this.meta = metaLine("inbound", { time })));
  }

  /**
   * Uploaded, but the message that carries the file did not go out, or was not confirmed
   * (`why`): Send again calls `onSendAgain` (none when sending cannot help), and Dismiss.
   */
  notSent(why, onSendAgain) {
    clearTimeout(this.echoTimer);
    this.el.dataset.sent = "no";
    this.#show(this.statusEl, `Uploaded, but not sent: ${why}.`);
    const buttons = [this.#button("Dismiss", "upload-dismiss", this.handlers.onDismiss)];
    if (onSendAgain) buttons.unshift(this.#button("Send again", "upload-resend", onSendAgain));
    this.#replaceActions(buttons);
    this.handlers.onAnnounce?.(`${this.file.name} was not sent: ${why}.`);
  }

  /**
   * An error as `customerError` words it, or the widget's own (`unavailable`,
   * `session_ended`): `{ code, message, final? }`, the message readable by the customer, the
   * code shown in small print for support.
   */
  fail(error) {
    const code = typeof error?.code === "string" ? error.code : "error";
    const message =
      typeof error?.message === "string" && error.message ? error.message : "Something went wrong. Please try again.";
    this.phase = null;
    this.#state("error");
    this.progressEl.hidden = true;
    this.#show(this.statusEl, "");
    this.#show(this.errorEl, message);
    this.#show(this.codeEl, code);
    this.errorEl.prepend(icon("alert", 16), " ");
    const buttons = [];
    if (!error?.final && !FINAL_CODES.has(code)) buttons.push(this.#button("Try again", "upload-retry", this.handlers.onRetry));
    buttons.push(this.#button("Dismiss", "upload-dismiss", this.handlers.onDismiss));
    this.#replaceActions(buttons);
  }

  /** Cancelled by the customer. */
  cancelled() {
    this.#state("cancelled");
    this.progressEl.hidden = true;
    this.#show(this.statusEl, "Upload cancelled");
    this.#replaceActions([this.#button("Dismiss", "upload-dismiss", this.handlers.onDismiss)]);
  }

  remove() {
    clearTimeout(this.echoTimer);
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.el.remove();
  }

  #state(state) {
    this.el.dataset.state = state;
    this.el.setAttribute("aria-busy", String(state === "uploading"));
  }

  #show(el, text) {
    el.textContent = text;
    el.hidden = !text;
  }

  #button(label, className, onClick) {
    return h(
      "button",
      { type: "button", class: `small-button ${className}`, onclick: onClick },
      label,
      h("span", { class: "visually-hidden" }, ` ${this.file.name}`),
    );
  }

  /** New buttons; focus follows if it was on one of the old ones (e.g. Cancel). */
  #replaceActions(buttons) {
    const hadFocus = this.actions.contains(document.activeElement);
    this.actions.replaceChildren(...buttons);
    if (hadFocus) buttons[0]?.focus();
  }

  /** No buttons; focus that was on one goes to the file's link. */
  #clearActions() {
    const hadFocus = this.actions.contains(document.activeElement);
    this.actions.replaceChildren();
    if (hadFocus && this.fileEl.tagName === "A") this.fileEl.focus();
  }

  /** The file name becomes (or points to) a link to `url`. */
  #link(url) {
    const safe = safeUrl(url);
    if (!safe) return; // leave the name as text
    if (this.fileEl.tagName !== "A") {
      const link = h("a", { class: "attachment attachment-link", target: "_blank", rel: "noopener noreferrer" });
      link.append(...this.fileEl.childNodes, h("span", { class: "visually-hidden" }, " (opens in a new tab)"));
      this.fileEl.replaceWith(link);
      this.fileEl = link;
    }
    this.fileEl.href = safe;
    this.fileEl.dataset.attachmentId = this.attachmentId;
  }
}
