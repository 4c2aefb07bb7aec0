// The message list: StructuredMessages as bubbles (inbound = the customer's, on the right;
// outbound = the agent's, on the left), attachments as links or thumbnails.

import { h, icon, safeUrl } from "./dom.js";
import { formatBytes, formatTime } from "./format.js";

export class ChatLog {
  constructor(list) {
    this.list = list;
    // Stick to the end while the customer has not scrolled up, also when bubbles grow
    // (progress turning into a link, an error, an image loading).
    this.atEnd = true;
    list.addEventListener("scroll", () => {
      this.atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
    }, { passive: true });
    const follow = () => {
      if (this.atEnd) this.scrollToEnd();
    };
    new MutationObserver(follow).observe(list, { childList: true, subtree: true, characterData: true, attributes: true });
    new ResizeObserver(follow).observe(list);
    list.addEventListener("load", follow, true); // images
  }

  /** Appends an item; with `follow`, scrolls to it even if the customer had scrolled up. */
  add(item, { follow = false } = {}) {
    if (follow) this.atEnd = true;
    this.list.append(item);
    if (this.atEnd) this.scrollToEnd();
  }

  scrollToEnd() {
    this.list.scrollTop = this.list.scrollHeight;
  }
}

/** "You" or the agent's nickname, and the time: first in the DOM (screen readers hear who spoke), shown under the bubble. */
export function metaLine(direction, { nickname, time } = {}) {
  const who = direction === "inbound" ? "You" : nickname || "Agent";
  return h(
    "p",
    { class: "meta" },
    h("span", { class: "meta-who" }, who),
    time ? h("time", { class: "meta-time", datetime: time.toISOString() }, formatTime(time)) : null,
  );
}

/** One message from the server. */
export function messageElement({ id, direction, text, attachments, nickname, time }) {
  return h(
    "li",
    { class: "message", dataset: { direction, ...(id ? { messageId: id } : {}) } },
    metaLine(direction, { nickname, time }),
    h(
      "div",
      { class: "bubble" },
      text ? h("p", { class: "message-text" }, text) : null,
      attachments.length
        ? h("ul", { class: "attachments" }, attachments.map((a) => h("li", {}, attachmentElement(a))))
        : null,
    ),
  );
}

/** `content[].attachment` ({ id, url, filename, mime, mediaType, fileSize }) as a link. */
export function attachmentElement(attachment) {
  const url = safeUrl(attachment.url);
  const name = attachment.filename || attachment.fileName || "Attachment";
  const size = Number.isFinite(attachment.fileSize) ? formatBytes(attachment.fileSize) : "";
  const isImage =
    attachment.mediaType === "Image" || /^image\//i.test(String(attachment.mime ?? attachment.fileType ?? ""));
  const label = h(
    "span",
    { class: "attachment-text" },
    h("span", { class: "attachment-name", title: name }, name),
    size ? h("span", { class: "attachment-size" }, size) : null,
  );
  if (!url) {
    return h("span", { class: "attachment attachment-unavailable" }, icon("file", 20), label, h("span", { class: "visually-hidden" }, " (not available)"));
  }
  return h(
    "a",
    {
      class: `attachment attachment-link${isImage ? " attachment-image" : ""}`,
      href: url,
      target: "_blank",
      rel: "noopener noreferrer",
      dataset: attachment.id ? { attachmentId: attachment.id } : {},
    },
    isImage ? thumbnail(url) : icon("file", 20),
    label,
    h("span", { class: "visually-hidden" }, " (opens in a new tab)"),
  );
}

/** An image preview that quietly disappears if the image cannot be shown. */
export function thumbnail(src) {
  const img = h("img", { class: "attachment-thumb", src, alt: "", loading: "lazy", decoding: "async" });
  img.addEventListener("error", () => img.replaceWith(icon("image", 20)), { once: true });
  return img;
}

/** A Genesys `channel.time` (ISO 8601) as a Date; now when missing or invalid. */
export function messageTime(value) {
  const date = value ? new Date(value) : new Date();
  return Number.isNaN(date.getTime()) ? new Date() : date;
}
