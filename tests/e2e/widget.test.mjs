// End-to-end test of the chat widget (widget/, built into widget/dist) against the reference
// server: the guest WebSocket (Genesys Cloud Web Messaging style), attachFile's presigned
// upload, and the server's record of the attachment.
//
//   npx vite build --config widget/vite.config.js && node --test tests/e2e/widget.test.mjs
//
// Environment:
//   CHUNKUP_SERVER_URL  base URL of a running chunkup-server that serves the widget at
//                       /widget/ (started with --widget widget/dist). If unset, the test starts
//                       target/release/chunkup-server itself with --widget widget/dist.
//   CHROMIUM_PATH       Chromium executable (default /usr/bin/chromium).
//
// Writes test-results/widget.png (after the upload) and test-results/widget-blocked.png.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { launchChromium } from "./chromium.mjs";

import { logDir, startReferenceServer, stop } from "../../scripts/lib.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const RESULTS = path.join(ROOT, "test-results");
const WIDGET_DIST = path.join(ROOT, "widget", "dist");
const FILE_SIZE = 20 * 1000 * 1000; // 20 MB, counted as the server counts (1 KB = 1000 bytes)
const UPLOAD_TIMEOUT_MS = 3 * 60 * 1000;

let base; // server base URL, with a trailing slash
let server = null; // set when this file started the server
let browser;
let tmpDir;
let report; // { path, sha256 }

/** Deterministic pseudo-random bytes (xorshift32), framed like a PDF. */
function pdfLikeBytes(size, seed) {
  const buf = Buffer.alloc(size);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, Math.floor(size / 4));
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i += 1) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  buf.write("%PDF-1.7\n", 0, "latin1");
  buf.write("\n%%EOF\n", size - 7, "latin1");
  return buf;
}

const parse = (payload) => {
  try {
    return JSON.parse(typeof payload === "string" ? payload : payload.toString("utf8"));
  } catch {
    return null;
  }
};

/**
 * Opens the widget and waits for the SessionResponse. Records the WebSocket frames (parsed)
 * and the HTTP requests, and reports page errors as diagnostics.
 */
async function openWidget(t, viewport = { width: 1100, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const sent = [];
  const received = [];
  const requests = [];
  const problems = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", (frame) => sent.push(parse(frame.payload)));
    ws.on("framereceived", (frame) => received.push(parse(frame.payload)));
  });
  page.on("request", (request) => requests.push({ method: request.method(), url: request.url() }));
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("console", (msg) => {
    if (["error", "warning"].includes(msg.type())) problems.push(`console.${msg.type()}: ${msg.text()}`);
  });
  t.after(async () => {
    for (const line of problems.slice(0, 20)) t.diagnostic(`browser ${line}`);
    await context.close();
  });

  await page.goto(new URL("widget/", base).href);
  try {
    await page.waitForSelector('body[data-session="ready"]', { timeout: 30_000 });
  } catch (error) {
    const state = await page.getAttribute("body", "data-session");
    const text = await page.textContent("#chat-connection-text").catch(() => "");
    throw new Error(`no SessionResponse: body[data-session="${state}"], status "${text}"`, { cause: error });
  }
  return { page, sent, received, requests };
}

before(async () => {
  base = process.env.CHUNKUP_SERVER_URL;
  if (!base) {
    if (!existsSync(path.join(WIDGET_DIST, "index.html"))) {
      throw new Error(`${WIDGET_DIST} is missing: build it with npx vite build --config widget/vite.config.js`);
    }
    server = await startReferenceServer([], { log: path.join(logDir, "widget-server.log") });
    base = server.url;
  }
  if (!base.endsWith("/")) base += "/";
  const res = await fetch(new URL("widget/", base));
  assert.equal(res.status, 200, `GET ${new URL("widget/", base)}: is the server serving widget/dist (--widget)?`);

  tmpDir = mkdtempSync(path.join(os.tmpdir(), "chunkup-widget-"));
  const bytes = pdfLikeBytes(FILE_SIZE, 0x5eed);
  report = { path: path.join(tmpDir, "report.pdf"), sha256: createHash("sha256").update(bytes).digest("hex") };
  writeFileSync(report.path, bytes);

  browser = await launchChromium();
});

after(async () => {
  await browser?.close().catch(() => {});
  await stop(server).catch(() => {});
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
});

describe("chat widget", () => {
  test("a text message is sent and echoed", { timeout: 60_000 }, async (t) => {
    const { page, sent } = await openWidget(t);
    const text = `Hello from the widget test ${Date.now()}`;
    await page.fill("#chat-input", text);
    await page.press("#chat-input", "Enter");
    const echoed = page.locator('#chat-log [data-direction="inbound"] .message-text', { hasText: text });
    await echoed.waitFor({ timeout: 15_000 });
    assert.equal(await page.inputValue("#chat-input"), "", "the text box is cleared");
    const message = sent.find((m) => m?.action === "onMessage");
    assert.equal(message?.message?.text, text);
    assert.equal(message?.message?.type, "Text");
  });

  test("a 20 MB PDF is uploaded, sent, and the server holds exactly its bytes", { timeout: UPLOAD_TIMEOUT_MS + 60_000 }, async (t) => {
    const { page, sent, received } = await openWidget(t);

    const sessionBody = received.find((m) => m?.class === "SessionResponse")?.body;
    const maxKB = sessionBody?.allowedMedia?.inbound?.maxFileSizeKB;
    if (Number.isFinite(maxKB)) {
      assert.ok(
        FILE_SIZE <= maxKB * 1000,
        `the server allows files up to maxFileSizeKB=${maxKB}; this test uploads ${FILE_SIZE / 1000} KB`,
      );
    }
    assert.match((await page.getAttribute("#attach-input", "accept")) ?? "", /application\/pdf/, "accept of #attach-input");

    await page.setInputFiles("#attach-input", report.path);
    const bubble = page.locator("#chat-log .upload").last();
    await page.waitForSelector("#chat-log .upload progress", { state: "attached", timeout: 10_000 });
    assert.match(await bubble.textContent(), /report\.pdf/);

    // Done, or failed with a message in the bubble.
    await page.waitForSelector('#chat-log .upload:not([data-state="uploading"])', { timeout: UPLOAD_TIMEOUT_MS });
    const state = await bubble.getAttribute("data-state");
    if (state !== "done") {
      const error = (await bubble.locator(".upload-error").textContent())?.trim();
      const code = (await bubble.locator(".upload-error-code").textContent())?.trim();
      assert.fail(`the upload bubble is "${state}": ${error} (${code})`);
    }
    const link = bubble.locator("a.attachment-link");
    const attachmentId = await link.getAttribute("data-attachment-id");
    assert.ok(attachmentId, "a.attachment-link has data-attachment-id");
    assert.match((await link.getAttribute("href")) ?? "", /^https?:\/\//, "the link is the download URL");

    // The message that carries the attachment, as echoed by the server.
    const delivered = page.locator(
      `#chat-log [data-direction="inbound"] a.attachment-link[data-attachment-id="${attachmentId}"]`,
    );
    await delivered.waitFor({ timeout: 30_000 });
    const carried = sent.find(
      (m) => m?.action === "onMessage" && m.message?.content?.some((c) => c?.attachment?.id === attachmentId),
    );
    assert.ok(carried, "an onMessage carrying the attachment id was sent");
    assert.equal(sent.filter((m) => m?.action === "onAttachment").length, 1, "one onAttachment request");

    // The server's own record, against the bytes hashed here.
    const res = await fetch(new URL(`guest/attachments/${encodeURIComponent(attachmentId)}`, base), { cache: "no-store" });
    assert.equal(res.status, 200, `GET /guest/attachments/${attachmentId}`);
    const record = await res.json();
    t.diagnostic(`server record: ${JSON.stringify(record)}`);
    assert.equal(record.sha256, report.sha256, "server SHA-256 and Node's SHA-256 of the file");
    assert.equal(record.size, FILE_SIZE);
    assert.equal(record.fileName, "report.pdf");
    assert.equal(record.fileType, "application/pdf");

    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, "widget.png") });
  });

  test("a .exe file is refused in the bubble and nothing is uploaded", { timeout: 60_000 }, async (t) => {
    const { page, sent, requests } = await openWidget(t);
    const requestsBefore = requests.length;

    // Claims to be a PDF, so that only the extension (not the type) can refuse it.
    await page.setInputFiles("#attach-input", {
      name: "invoice.exe",
      mimeType: "application/pdf",
      buffer: Buffer.from("MZ\x90\x00 not really a program"),
    });
    const bubble = page.locator('#chat-log .upload[data-state="error"]');
    await bubble.waitFor({ timeout: 10_000 });
    assert.equal((await bubble.locator(".upload-error-code").textContent())?.trim(), "file_extension_blocked");
    const message = (await bubble.locator(".upload-error").textContent())?.trim() ?? "";
    assert.ok(message.length > 0, "the bubble explains the error");
    assert.ok(!message.includes("file_extension_blocked"), `the message is for people: "${message}"`);
    assert.equal(await bubble.locator("progress").isVisible(), false, "no progress bar");
    assert.equal(await bubble.locator(".upload-cancel").count(), 0, "no Cancel button");

    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, "widget-blocked.png") });

    await page.waitForTimeout(500); // anything the widget would send goes out by then
    assert.deepEqual(sent.filter((m) => m?.action === "onAttachment"), [], "no onAttachment request");
    assert.deepEqual(requests.slice(requestsBefore), [], "no HTTP request after picking the file");
    assert.equal(await page.locator("#chat-log a.attachment-link").count(), 0, "no attachment link");

    // Dismiss removes the bubble and gives the focus back to the paperclip.
    await bubble.locator(".upload-dismiss").click();
    assert.equal(await page.locator("#chat-log .upload").count(), 0);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "attach");
  });
});
