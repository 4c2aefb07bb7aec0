// End-to-end test of the chat widget (widget/, built into widget/dist) against the reference
// server, in the engine CHUNKUP_ENGINE names (see engines.mjs): the guest WebSocket (Genesys
// Cloud Web Messaging style), attachFile's presigned upload, and the server's record of the
// attachment. What the widget sent is read from the server's log of the session.
//
//   npx vite build --config widget/vite.config.js && node --test tests/e2e/widget.test.mjs
//
// Environment:
//   CHUNKUP_SERVER_URL  base URL of a running chunkup-server that serves the widget at
//                       /widget/ (started with --widget widget/dist). If unset, the test starts
//                       target/server/chunkup-server itself with --widget widget/dist.
//   CHUNKUP_ENGINE      chromium (default), firefox or webkit.
//
// Writes test-results/widget-<engine>.png (after the upload), widget-blocked-<engine>.png,
// widget-not-sent-<engine>.png (an attachment's message not confirmed), and in Chromium
// widget-unavailable-chromium.png (chunkup failed to load).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { engine, openBrowser } from "./engines.mjs";

import { logDir, startReferenceServer, stop } from "../../scripts/lib.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const RESULTS = path.join(ROOT, "test-results");
const WIDGET_DIST = path.join(ROOT, "widget", "dist");
const FILE_SIZE = 20 * 1000 * 1000; // 20 MB, counted as the server counts (1 KB = 1000 bytes)
const UPLOAD_TIMEOUT_MS = 3 * 60 * 1000;

let base; // server base URL, with a trailing slash
let server = null; // set when this file started the server
let page;
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

let sessions = 0;

/**
 * Opens the widget as a new visitor (a deployment id of its own, so no guest token is
 * reused from sessionStorage) and waits for the SessionResponse and the paperclip. Resolves to a function
 * that reads the server's log of what this session sent (the `action` of every request).
 * `query`: more of the widget's query parameters ("&echoWaitMs=2000").
 */
async function openWidget(query = "") {
  sessions += 1;
  const deploymentId = `e2e-${engine}-${process.pid}-${sessions}`;
  await page.goto(new URL(`widget/?deploymentId=${deploymentId}${query}`, base).href);
  try {
    await page.waitFor(() => document.body.dataset.session === "ready", null);
  } catch (error) {
    const state = await page.evaluate(() => [document.body.dataset.session, document.querySelector("#chat-connection-text")?.textContent]);
    throw new Error(`no SessionResponse: body[data-session="${state[0]}"], status "${state[1]}"`, { cause: error });
  }
  // The paperclip is enabled once the SessionResponse allows attachments (the tests put files
  // straight into the hidden <input>; chunkup itself loads when a file comes).
  await page.waitFor(() => !document.querySelector("#attach").disabled, null, { message: "the paperclip stayed disabled" });
  const token = await page.evaluate((key) => sessionStorage.getItem(key), `chunkup-widget:token:${deploymentId}`);
  assert.ok(token, "the widget keeps its guest token in sessionStorage");
  return async () => {
    const res = await fetch(new URL(`guest/sessions/${encodeURIComponent(token)}`, base), { cache: "no-store" });
    assert.equal(res.status, 200, "GET /guest/sessions/{token}");
    return (await res.json()).requests;
  };
}

/**
 * Page-side: the first message carrying an attachment that the page sends on a WebSocket
 * is dropped; `window.lastSocket` is the socket of the latest send.
 */
function loseFirstAttachmentMessage() {
  const send = WebSocket.prototype.send;
  let lost = false;
  WebSocket.prototype.send = function (data) {
    window.lastSocket = this;
    if (!lost && typeof data === "string" && JSON.parse(data).message?.content?.length) {
      lost = true;
      return undefined;
    }
    return send.call(this, data);
  };
}

/** chunkup's files as Vite names them in widget/dist: its glue, its wasm, its Worker. */
const CHUNKUP_FILE = /\/chunkup[-_][^/]*$/;
/** chunkup's glue alone (the module the widget imports). */
const CHUNKUP_GLUE = /\/chunkup-[^/]*\.js$/;

/** The path of every resource the page has fetched since it loaded, in order. */
function pathsFetched() {
  return page.evaluate(() => performance.getEntriesByType("resource").map((entry) => new URL(entry.name).pathname));
}

async function chunkupFilesFetched() {
  return (await pathsFetched()).filter((pathname) => CHUNKUP_FILE.test(pathname));
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

  page = await openBrowser();
});

after(async () => {
  await page?.close().catch(() => {});
  await stop(server).catch(() => {});
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
});

describe("chat widget", () => {
  test("a text message is sent and echoed", { timeout: 60_000 }, async () => {
    const sentActions = await openWidget();
    const text = `Hello from the widget test ${Date.now()}`;
    await page.type("#chat-input", `${text}\uE007`); // typed, then Enter
    await page.waitFor(
      (want) => [...document.querySelectorAll('#chat-log [data-direction="inbound"] .message-text')].some((el) => el.textContent.includes(want)),
      text,
      { timeout: 30_000, message: "the message was not echoed within 30 s" },
    );
    assert.equal(await page.evaluate(() => document.querySelector("#chat-input").value), "", "the text box is cleared");
    assert.deepEqual(await sentActions(), ["configureSession", "onMessage"]);
  });

  test("a message the service refuses (too long) is said, and its text is given back", { timeout: 60_000 }, async () => {
    await openWidget();
    assert.equal(await page.evaluate(() => document.querySelector("#chat-input").maxLength), 4000);
    // Past the composer's limit (set from script, as a paste into an older widget would).
    const long = "x".repeat(4001);
    await page.evaluate((text) => {
      const input = document.querySelector("#chat-input");
      input.value = text;
      document.querySelector("#chat-form").requestSubmit();
    }, long);
    const notice = await page.waitFor(() => document.querySelector("#chat-log .notice")?.textContent, null, {
      timeout: 30_000,
      message: "no notice of the refused message",
    });
    assert.match(notice, /not sent: it is too long/);
    assert.equal(await page.evaluate(() => document.querySelector("#chat-input").value.length), long.length, "the text is back in the composer");
  });

  test("an attachment whose message is not confirmed says so, and Send again sends it", { timeout: 120_000 }, async () => {
    const sentActions = await openWidget("&echoWaitMs=2000");
    // The first message carrying an attachment is lost on its way: no echo comes, as for a
    // message the service refused (nothing ties a refusal to its request).
    await page.evaluate(loseFirstAttachmentMessage);
    const file = path.join(tmpDir, "unconfirmed.pdf");
    writeFileSync(file, pdfLikeBytes(100_000, 0xec));
    await page.setInputFiles("#attach-input", file);
    const status = await page.waitFor(
      () => document.querySelector("#chat-log .upload .upload-resend") && document.querySelector("#chat-log .upload .upload-status").textContent,
      null,
      { timeout: 60_000, message: "no Send again after the message went unconfirmed" },
    );
    assert.equal(status, "Uploaded, but not sent: the chat service did not confirm it.");
    assert.ok(await page.evaluate(() => document.querySelector("#chat-log .upload .upload-dismiss")), "Dismiss beside Send again");
    await page.screenshot(path.join(RESULTS, `widget-not-sent-${engine}.png`));
    await page.click("#chat-log .upload .upload-resend");
    await page.waitFor(() => document.querySelector('#chat-log .upload[data-direction="inbound"]'), null, {
      message: "the message sent again was not echoed",
    });
    // Past another echoWaitMs: the wait ended with the echo.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal(await page.evaluate(() => document.querySelector("#chat-log .upload .upload-resend")), null, "no Send again once delivered");
    assert.equal(await page.evaluate(() => document.querySelector("#chat-log .upload .upload-status").hidden), true, "no status once delivered");
    assert.deepEqual(await sentActions(), ["configureSession", "onAttachment", "onMessage"], "the message sent again reached the server, once");
  });

  test("Send again while the chat reconnects queues the message once, and says so", { timeout: 120_000 }, async () => {
    const sentActions = await openWidget("&echoWaitMs=2000");
    // As above, the first message carrying an attachment is lost.
    await page.evaluate(loseFirstAttachmentMessage);
    const file = path.join(tmpDir, "queued.pdf");
    writeFileSync(file, pdfLikeBytes(100_000, 0xed));
    await page.setInputFiles("#attach-input", file);
    await page.waitFor(() => document.querySelector("#chat-log .upload .upload-resend"), null, {
      timeout: 60_000,
      message: "no Send again after the message went unconfirmed",
    });
    // The socket drops; the new one's configureSession is held back, so the chat stays
    // reconnecting (no SessionResponse) until it is let through.
    await page.evaluate(() => {
      const send = WebSocket.prototype.send;
      window.heldBack = [];
      WebSocket.prototype.send = function (data) {
        if (window.heldBack && JSON.parse(data).action === "configureSession") {
          window.heldBack.push([this, data]);
          return undefined;
        }
        return send.call(this, data);
      };
      window.lastSocket.close();
    });
    await page.waitFor(() => document.body.dataset.session === "reconnecting", null, { message: "the chat did not start reconnecting" });
    await page.click("#chat-log .upload .upload-resend");
    const queued = await page.evaluate(() => ({
      status: document.querySelector("#chat-log .upload .upload-status").textContent,
      resend: document.querySelector("#chat-log .upload .upload-resend") !== null,
    }));
    assert.deepEqual(queued, { status: "Uploaded · sending…", resend: false }, "queued, with nothing more to press");
    await page.waitFor(() => window.heldBack.length > 0, null, { message: "the chat did not open a new socket" });
    await page.evaluate(() => {
      const held = window.heldBack;
      window.heldBack = null;
      for (const [socket, data] of held) socket.send(data);
    });
    await page.waitFor(() => document.querySelector('#chat-log .upload[data-direction="inbound"]'), null, {
      timeout: 60_000,
      message: "the queued message was not echoed after the reconnect",
    });
    const actions = await sentActions();
    assert.equal(actions.filter((action) => action === "onMessage").length, 1, `sent once: ${actions}`);
  });

  test("a 20 MB PDF is uploaded, sent, and the server holds exactly its bytes", { timeout: UPLOAD_TIMEOUT_MS + 60_000 }, async (t) => {
    const sentActions = await openWidget();
    assert.match(await page.evaluate(() => document.querySelector("#attach-input").accept), /application\/pdf/, "accept of #attach-input");
    // A visitor who attaches nothing downloads nothing of chunkup.
    assert.deepEqual(await chunkupFilesFetched(), [], "chunkup's files fetched before a file was attached");

    // Something half typed when the file is picked stays the customer's: the file goes on
    // its own.
    const draft = "My order number is 12";
    await page.type("#chat-input", draft);
    await page.setInputFiles("#attach-input", report.path);
    await page.waitFor(() => document.querySelector("#chat-log .upload progress"), null, { timeout: 30_000, message: "no upload bubble" });
    const bubbleText = () => page.evaluate(() => [...document.querySelectorAll("#chat-log .upload")].at(-1).textContent);
    assert.match(await bubbleText(), /report\.pdf/);

    // Done, or failed with a message in the bubble.
    const state = await page.waitFor(
      () => {
        const bubble = [...document.querySelectorAll("#chat-log .upload")].at(-1);
        return bubble.dataset.state !== "uploading" && bubble.dataset.state;
      },
      null,
      { timeout: UPLOAD_TIMEOUT_MS, interval: 250, message: "the upload did not end" },
    );
    if (state !== "done") {
      const [error, code] = await page.evaluate(() => {
        const bubble = [...document.querySelectorAll("#chat-log .upload")].at(-1);
        return [bubble.querySelector(".upload-error")?.textContent.trim(), bubble.querySelector(".upload-error-code")?.textContent.trim()];
      });
      assert.fail(`the upload bubble is "${state}": ${error} (${code})`);
    }
    const link = await page.evaluate(() => {
      const a = [...document.querySelectorAll("#chat-log .upload")].at(-1).querySelector("a.attachment-link");
      return a && { id: a.dataset.attachmentId, href: a.getAttribute("href") };
    });
    const attachmentId = link?.id;
    assert.ok(attachmentId, "a.attachment-link has data-attachment-id");
    assert.match(link.href ?? "", /^https?:\/\//, "the link is the download URL");

    // The message that carries the attachment, as echoed by the server (which names the
    // attachments of the message it received).
    await page.waitFor(
      (id) => document.querySelector(`#chat-log [data-direction="inbound"] a.attachment-link[data-attachment-id="${CSS.escape(id)}"]`),
      attachmentId,
      { message: "the message carrying the attachment was not echoed within 30 s" },
    );
    assert.deepEqual(await sentActions(), ["configureSession", "onAttachment", "onMessage"], "one onAttachment, then the message");
    assert.equal(await page.evaluate(() => document.querySelector("#chat-input").value), draft, "the draft is still in the composer");
    assert.equal(
      await page.evaluate((id) => document.querySelector(`#chat-log [data-attachment-id="${CSS.escape(id)}"]`).closest(".message").querySelector(".message-text"), attachmentId),
      null,
      "the attachment's message carries no text",
    );

    // The server's own record, against the bytes hashed here.
    const res = await fetch(new URL(`guest/attachments/${encodeURIComponent(attachmentId)}`, base), { cache: "no-store" });
    assert.equal(res.status, 200, `GET /guest/attachments/${attachmentId}`);
    const record = await res.json();
    t.diagnostic(`server record: ${JSON.stringify(record)}`);
    assert.equal(record.sha256, report.sha256, "server SHA-256 and Node's SHA-256 of the file");
    assert.equal(record.size, FILE_SIZE);
    assert.equal(record.fileName, "report.pdf");
    assert.equal(record.fileType, "application/pdf");
    assert.equal(record.state, "uploaded");
    // The attachment brought chunkup in: its glue and its wasm (the Worker's script too,
    // where the engine starts a Worker).
    const fetched = await chunkupFilesFetched();
    assert.ok(fetched.some((file) => CHUNKUP_GLUE.test(file)), `chunkup's glue among ${JSON.stringify(fetched)}`);
    assert.ok(fetched.some((file) => file.endsWith(".wasm")), `chunkup's wasm among ${JSON.stringify(fetched)}`);

    await page.screenshot(path.join(RESULTS, `widget-${engine}.png`));
  });

  test("a .exe file is refused in the bubble and nothing is uploaded", { timeout: 60_000 }, async () => {
    const sentActions = await openWidget();
    const requestsBefore = (await pathsFetched()).length;

    // Claims to be a PDF, so that only the extension (not the type) can refuse it. A file
    // picked through WebDriver gets its type from its name, so this one is made in the page.
    const picked = await page.evaluate(() => {
      const input = document.querySelector("#attach-input");
      const transfer = new DataTransfer();
      transfer.items.add(new File(["MZ\x90\x00 not really a program"], "invoice.exe", { type: "application/pdf" }));
      input.files = transfer.files;
      const type = input.files[0]?.type; // the widget empties the input once it took the file
      input.dispatchEvent(new Event("change", { bubbles: true }));
      return type;
    });
    assert.equal(picked, "application/pdf");
    await page.waitFor(() => document.querySelector('#chat-log .upload[data-state="error"]'), null, {
      timeout: 30_000,
      message: "no error bubble within 30 s",
    });
    const bubble = await page.evaluate(() => {
      const el = document.querySelector('#chat-log .upload[data-state="error"]');
      const progress = el.querySelector("progress");
      return {
        code: el.querySelector(".upload-error-code")?.textContent.trim(),
        message: el.querySelector(".upload-error")?.textContent.trim() ?? "",
        progressVisible: Boolean(progress && progress.getClientRects().length > 0 && getComputedStyle(progress).visibility !== "hidden"),
        cancelButtons: el.querySelectorAll(".upload-cancel").length,
      };
    });
    assert.equal(bubble.code, "file_extension_blocked");
    assert.ok(bubble.message.length > 0, "the bubble explains the error");
    assert.ok(!bubble.message.includes("file_extension_blocked"), `the message is for people: "${bubble.message}"`);
    assert.equal(bubble.progressVisible, false, "no progress bar");
    assert.equal(bubble.cancelButtons, 0, "no Cancel button");

    await page.screenshot(path.join(RESULTS, `widget-blocked-${engine}.png`));

    await new Promise((resolve) => setTimeout(resolve, 500)); // anything the widget would send goes out by then
    assert.deepEqual(await sentActions(), ["configureSession"], "no onAttachment request");
    // Picking the file loaded chunkup (to check it): nothing else went out.
    const requestsAfter = await pathsFetched();
    assert.deepEqual(
      requestsAfter.slice(requestsBefore).filter((pathname) => !CHUNKUP_FILE.test(pathname)),
      [],
      "no HTTP request after picking the file but for chunkup's own files",
    );
    assert.equal(await page.evaluate(() => document.querySelectorAll("#chat-log a.attachment-link").length), 0, "no attachment link");

    // Dismiss removes the bubble and gives the focus back to the paperclip.
    await page.click('#chat-log .upload[data-state="error"] .upload-dismiss');
    assert.equal(await page.evaluate(() => document.querySelectorAll("#chat-log .upload").length), 0);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "attach");
  });

  // Only playwright (Chromium) can make a request fail on purpose; the widget's code for it
  // is the same in every engine.
  if (engine === "chromium") {
    test("chunkup that fails to load: the bubble says so, and Try again loads it and sends the file", { timeout: 120_000 }, async () => {
      const sentActions = await openWidget();
      const small = path.join(tmpDir, "small.pdf");
      const bytes = pdfLikeBytes(200_000, 0xbad);
      writeFileSync(small, bytes);
      await page.page.route(CHUNKUP_GLUE, (route) => route.abort("connectionreset"));

      await page.setInputFiles("#attach-input", small);
      await page.waitFor(() => document.querySelector('#chat-log .upload[data-state="error"]'), null, {
        timeout: 30_000,
        message: "no error bubble within 30 s",
      });
      const failed = await page.evaluate(() => {
        const el = document.querySelector('#chat-log .upload[data-state="error"]');
        return {
          code: el.querySelector(".upload-error-code")?.textContent.trim(),
          message: el.querySelector(".upload-error")?.textContent.trim(),
          retry: el.querySelectorAll(".upload-retry").length,
        };
      });
      assert.equal(failed.code, "unavailable");
      assert.match(failed.message, /could not be loaded/);
      assert.equal(failed.retry, 1, "a Try again button");
      assert.deepEqual(await sentActions(), ["configureSession"], "nothing was asked of the server");
      await page.screenshot(path.join(RESULTS, "widget-unavailable-chromium.png"));

      await page.page.unroute(CHUNKUP_GLUE);
      await page.click('#chat-log .upload[data-state="error"] .upload-retry');
      await page.waitFor(() => document.querySelector('#chat-log .upload[data-state="done"] a.attachment-link'), null, {
        timeout: 60_000,
        message: "Try again did not upload the file within 60 s",
      });
      const attachmentId = await page.evaluate(() => document.querySelector("#chat-log .upload a.attachment-link").dataset.attachmentId);
      const res = await fetch(new URL(`guest/attachments/${encodeURIComponent(attachmentId)}`, base), { cache: "no-store" });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).sha256, createHash("sha256").update(bytes).digest("hex"));
    });

    test("Cancel while chunkup is still loading cancels at once", { timeout: 60_000 }, async () => {
      const sentActions = await openWidget();
      const small = path.join(tmpDir, "small.pdf");
      writeFileSync(small, pdfLikeBytes(200_000, 0xca));
      const held = [];
      await page.page.route(CHUNKUP_GLUE, (route) => held.push(route)); // never answered while held
      try {
        await page.setInputFiles("#attach-input", small);
        await page.waitFor(() => document.querySelector('#chat-log .upload[data-state="uploading"] .upload-cancel'), null, {
          timeout: 30_000,
          message: "no Cancel button while chunkup loads",
        });
        await page.click('#chat-log .upload[data-state="uploading"] .upload-cancel');
        await page.waitFor(() => document.querySelector('#chat-log .upload[data-state="cancelled"]'), null, {
          timeout: 30_000,
          message: "the bubble was not cancelled while the load hung",
        });
        assert.equal(held.length, 1, "the glue's request was held, unanswered");
        assert.deepEqual(await sentActions(), ["configureSession"], "nothing was asked of the server");
      } finally {
        await page.page.unroute(CHUNKUP_GLUE);
        for (const route of held) await route.abort().catch(() => {});
      }
    });
  }
});
