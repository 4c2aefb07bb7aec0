// Interop: chunkup, in the engine CHUNKUP_ENGINE names (see engines.mjs), uploading to
// @tus/server (npm, file store), a tus implementation other than our own. The stored bytes are read from the store's directory
// and hashed here, so "uploaded" means "the server holds exactly the file".
//
//   node --test tests/e2e/interop.test.mjs
//
// Environment (scripts/test.mjs sets them; without them the test starts both servers):
//   CHUNKUP_SERVER_URL  reference server, used only to serve the page and /pkg/
//   TUS_NODE_URL        @tus/server creation URL;  TUS_NODE_DIR  its file-store directory
//   CHUNKUP_ENGINE      chromium (default), firefox or webkit

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { eventually, openBrowser } from "./engines.mjs";

import { startReferenceServer, startTusNodeServer, stop } from "../../scripts/lib.mjs";

const MiB = 1024 * 1024;
const started = [];
let pageUrl;
let tusUrl;
let tusDir;
let page;

before(async () => {
  pageUrl = process.env.CHUNKUP_SERVER_URL;
  if (!pageUrl) {
    const server = await startReferenceServer([]);
    started.push(server);
    pageUrl = server.url;
  }
  tusUrl = process.env.TUS_NODE_URL;
  tusDir = process.env.TUS_NODE_DIR;
  if (!tusUrl) {
    tusDir = mkdtempSync(path.join(os.tmpdir(), "chunkup-interop-"));
    const server = await startTusNodeServer(tusDir);
    started.push(server);
    tusUrl = server.url;
  }
  page = await openBrowser();
  await page.goto(pageUrl);
  await page.evaluate(async () => {
    const chunkup = await import("/pkg/chunkup.js");
    await chunkup.default();
    window.chunkup = chunkup;
  });
});

after(async () => {
  await page?.close();
  await Promise.all(started.map(stop));
  if (!process.env.TUS_NODE_DIR && tusDir) rmSync(tusDir, { recursive: true, force: true });
});

/** Uploads `size` deterministic bytes from the page; returns the result or `{ error }`. */
function uploadInPage(size, options) {
  return page.evaluate(
    async ({ size, options }) => {
      const bytes = new Uint8Array(size);
      let x = 2463534242;
      for (let i = 0; i < size; i += 1) {
        x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
        bytes[i] = x & 255;
      }
      const digest = await crypto.subtle.digest("SHA-256", bytes);
      const expected = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
      const progress = [];
      const controller = new AbortController();
      if (options.abortAfterFirstChunk) {
        options = { ...options, signal: controller.signal };
        delete options.abortAfterFirstChunk;
      }
      try {
        const result = await window.chunkup.uploadFile(
          new File([bytes], "interop.bin", { type: "application/x-test" }),
          (p) => {
            progress.push({ uploaded: p.bytesUploaded, percent: p.percent, phase: p.phase, url: p.url });
            if (p.chunk && options.signal) controller.abort();
          },
          options,
        );
        return { result, expected, progress };
      } catch (error) {
        return { error: { code: error.code, message: error.message }, expected, progress };
      }
    },
    { size, options },
  );
}

function storedFile(uploadUrl) {
  const id = new URL(uploadUrl).pathname.split("/").pop();
  return path.join(tusDir, id);
}

test("uploads to @tus/server in chunks and the stored bytes are the file's", async () => {
  const size = 5 * MiB + 321;
  const { result, expected, progress, error } = await uploadInPage(size, {
    endpoint: tusUrl,
    chunkSize: MiB,
    metadata: { conversationId: "interop" },
  });
  assert.equal(error, undefined, JSON.stringify(error));
  assert.equal(result.sha256, expected);
  assert.equal(result.size, size);
  assert.equal(result.checksum, null, "@tus/server has no checksum extension");
  assert.equal(result.chunks.length, 6);
  const stored = readFileSync(storedFile(result.url));
  assert.equal(stored.length, size);
  assert.equal(createHash("sha256").update(stored).digest("hex"), expected);
  const meta = JSON.parse(readFileSync(`${storedFile(result.url)}.json`, "utf8"));
  assert.equal(meta.metadata.filename, "interop.bin");
  assert.equal(meta.metadata.filetype, "application/x-test");
  assert.equal(meta.metadata.conversationId, "interop");
  let last = -1;
  for (const p of progress) {
    assert.ok(p.uploaded >= last, "bytesUploaded never decreases");
    last = p.uploaded;
  }
  assert.equal(progress.at(-1).percent, 100);
});

test("an empty file creates a complete upload on @tus/server", async () => {
  const { result, expected, error } = await uploadInPage(0, { endpoint: tusUrl });
  assert.equal(error, undefined, JSON.stringify(error));
  assert.equal(result.sha256, expected);
  assert.equal(readFileSync(storedFile(result.url)).length, 0);
});

test("abort deletes the partial upload on @tus/server (termination)", async () => {
  const { error, progress } = await uploadInPage(8 * MiB, {
    endpoint: tusUrl,
    chunkSize: MiB,
    abortAfterFirstChunk: true,
  });
  assert.equal(error?.code, "aborted");
  const url = progress.find((p) => p.url)?.url;
  assert.ok(url, "the upload URL was reported in progress");
  const file = storedFile(url);
  const exists = await eventually(() => existsSync(file), (e) => !e);
  assert.equal(exists, false, "the stored file was deleted");
});
