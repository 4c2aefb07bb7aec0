// Never losing an upload, end to end, in the engine CHUNKUP_ENGINE names (engines.mjs):
// a page reloaded mid-upload continues where the server stood (fewer than two chunks'
// worth sent twice, measured by the server); the demo page says "Resumed at N %"; an upload
// survives the reference server being stopped and started again on the same data
// directory; and (Chromium, whose offline emulation WebDriver lacks) an offline browser
// waits without spending retries.
//
//   node --test tests/e2e/resume.test.mjs   (CHUNKUP_SERVER_URL: a running server, else one is started)

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { engine, openBrowser } from "./engines.mjs";
import { freePort, logDir, randomTestFile, root, serverBinary, startReferenceServer, startServer, stop } from "../../scripts/lib.mjs";

const MiB = 1024 * 1024;
const CHUNK = MiB;
const started = [];
let base;
let page;
let tmp;
let file; // { path, size, sha256 }


/** Opens `url`, loads chunkup, and adds a file input the test picks files with. */
async function openPage(url) {
  await page.goto(url);
  await page.evaluate(async () => {
    document.body.insertAdjacentHTML("beforeend", '<input type="file" id="resume-file">');
    window.chunkup = await import("/pkg/chunkup.js");
    await window.chunkup.default();
  });
  await page.setInputFiles("#resume-file", file.path);
}

before(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), "chunkup-resume-"));
  file = await randomTestFile(tmp, "holiday.bin", 12 * MiB + 5);
  base = process.env.CHUNKUP_SERVER_URL;
  if (!base) {
    const server = await startReferenceServer([], { log: path.join(logDir, "resume-server.log") });
    started.push(server);
    base = server.url;
  }
  page = await openBrowser();
});

after(async () => {
  await page?.close();
  await Promise.all(started.map(stop));
  rmSync(tmp, { recursive: true, force: true });
});

/** Starts the upload of the picked file in the page (not awaited); `window.upload` settles. */
function startUpload(endpoint, extra = {}) {
  return page.evaluate(
    ({ endpoint, chunkSize, extra }) => {
      window.progress = [];
      window.upload = window.chunkup
        .uploadFile(document.getElementById("resume-file").files[0], (p) => window.progress.push({ phase: p.phase, uploaded: p.bytesUploaded, url: p.url }), {
          endpoint,
          chunkSize,
          retry: { attempts: 30, baseDelayMs: 50, maxDelayMs: 1000 },
          progressIntervalMs: 0,
          ...extra,
        })
        .then((result) => ({ result }), (error) => ({ error: { code: error.code, message: error.message } }));
    },
    { endpoint, chunkSize: CHUNK, extra },
  );
}

async function info(url) {
  const response = await fetch(`${url}/info`);
  return response.json();
}

test("a page reloaded mid-upload continues where the server stood, sending fewer than two chunks again", async () => {
  const endpoint = new URL("faults/latency:120/files/", base).href;
  await openPage(base);
  await startUpload(endpoint);
  // Reload once a few chunks are on the server: the upload is cut off mid-chunk.
  await page.waitFor(() => window.progress.some((p) => p.uploaded >= 4 * 1024 * 1024), null, {
    timeout: 120_000,
    message: "four chunks were never acknowledged",
  });
  const before = await page.evaluate(() => window.progress.at(-1).uploaded);
  // The Web Lock the upload holds its record with. A page being reloaded may still hold it
  // when the new page asks: the new page holds it for a second here, which the upload waits
  // out, and then continues.
  const lockName = await page.evaluate(async () => (await navigator.locks.query()).held.find((lock) => lock.name.startsWith("chunkup:"))?.name);
  assert.ok(lockName, "the upload holds a lock on its record");
  await openPage(base);
  await page.evaluate((name) => {
    navigator.locks.request(name, () => new Promise((resolve) => setTimeout(resolve, 1000)));
  }, lockName);
  await startUpload(endpoint);
  const outcome = await page.evaluate(() => window.upload);
  assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
  const { result } = outcome;
  assert.equal(result.sha256, file.sha256);
  assert.ok(result.resumedFrom >= before, `resumed from ${result.resumedFrom}, ${before} were acknowledged before the reload`);
  assert.equal(result.chunks.reduce((sum, c) => sum + c.length, 0), file.size, "the chunks cover the file");
  const phases = await page.evaluate(() => [...new Set(window.progress.map((p) => p.phase))]);
  assert.ok(phases.includes("resuming"), phases.join());
  const stored = await info(result.url);
  assert.equal(stored.sha256, file.sha256);
  // What the server read, kept or not, across both page loads: the file, plus what was
  // on its way when the page went away.
  const sentTwice = stored.received - file.size;
  console.log(`resume after a reload (${engine}): ${sentTwice} bytes sent twice, resumed from ${result.resumedFrom} of ${file.size}`);
  assert.ok(sentTwice >= 0 && sentTwice < 2 * CHUNK, `${sentTwice} bytes were sent twice`);
});

test("the same file sent with other metadata (another conversation) is a new upload, not the earlier one continued", async () => {
  const endpoint = new URL("faults/latency:120/files/", base).href;
  await openPage(base);
  await startUpload(endpoint, { metadata: { conversation: "A" } });
  await page.waitFor(() => window.progress.some((p) => p.uploaded >= 2 * 1024 * 1024), null, {
    timeout: 120_000,
    message: "two chunks were never acknowledged",
  });
  const first = await page.evaluate(() => window.progress.find((p) => p.url).url);
  await openPage(base);
  await startUpload(endpoint, { metadata: { conversation: "B" } });
  const outcome = await page.evaluate(() => window.upload);
  assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
  assert.equal(outcome.result.resumedFrom, 0);
  assert.notEqual(outcome.result.url, first);
  const stored = await info(outcome.result.url);
  assert.equal(stored.metadata.conversation, "B");
  assert.equal(stored.sha256, file.sha256);
});

test("two uploads of the same file at once (as from two tabs) do not continue one upload together", async () => {
  const endpoint = new URL("faults/latency:120/files/", base).href;
  await openPage(base);
  const outcome = await page.evaluate(async (endpoint) => {
    const file = document.getElementById("resume-file").files[0];
    const options = { endpoint, chunkSize: 1024 * 1024, progressIntervalMs: 0, retry: { attempts: 30, baseDelayMs: 50, maxDelayMs: 1000 } };
    let firstUrl;
    let acknowledged;
    const chunkAcknowledged = new Promise((resolve) => (acknowledged = resolve));
    const first = window.chunkup.uploadFile(
      file,
      (p) => {
        firstUrl ??= p.url;
        if (p.chunk) acknowledged();
      },
      options,
    );
    // The first upload's record is stored once the server knows it; the second starts then.
    await chunkAcknowledged;
    const second = window.chunkup.uploadFile(file, null, options);
    const [a, b] = await Promise.all([first, second]);
    return { firstUrl, a: { url: a.url, sha256: a.sha256 }, b: { url: b.url, sha256: b.sha256, resumedFrom: b.resumedFrom } };
  }, endpoint);
  assert.equal(outcome.a.url, outcome.firstUrl);
  assert.notEqual(outcome.b.url, outcome.a.url, "the second upload is one of its own");
  assert.equal(outcome.b.resumedFrom, 0);
  assert.equal(outcome.a.sha256, file.sha256);
  assert.equal(outcome.b.sha256, file.sha256);
  for (const { url } of [outcome.a, outcome.b]) assert.equal((await info(url)).sha256, file.sha256);
});

test("an IndexedDB that never answers holds no upload up", { timeout: 120_000 }, async () => {
  await openPage(base);
  // A wedged store: open() returns a request that never fires an event.
  await page.evaluate(() => {
    indexedDB.open = () => ({});
  });
  await startUpload(new URL("files/", base).href, { worker: false });
  const outcome = await page.evaluate(() => window.upload);
  assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
  assert.equal(outcome.result.sha256, file.sha256);
  assert.equal(outcome.result.resumedFrom, 0);
});

test("the demo page says where a reloaded upload continued", async () => {
  const demo = async () => {
    await page.goto(base);
    await page.waitFor(() => document.body.dataset.ready === "true", null, { message: "the demo did not load" });
    await page.evaluate(() => {
      const endpoint = document.getElementById("endpoint");
      endpoint.value = "/faults/latency:150/files/";
      document.getElementById("chunk-size").value = "1";
    });
    await page.setInputFiles("#file", file.path);
    await page.waitFor(() => !document.querySelector("#start").disabled, null, { message: "#start stayed disabled" });
    await page.click("#start");
  };
  await demo();
  await page.waitFor(() => Number(document.getElementById("progress").value) >= 30, null, { timeout: 120_000 });
  await demo();
  const verdict = await page.waitFor(() => document.getElementById("verdict").textContent, null, {
    timeout: 120_000,
    message: "the resumed upload did not finish",
  });
  assert.equal(verdict, "match", "the server's copy is the file");
  assert.match(await page.evaluate(() => document.getElementById("status").textContent), /Resumed at \d+ %/);
  await page.screenshot(path.join(root, "test-results", `resume-demo-${engine}.png`));
});

test("an upload survives the server being stopped and started again on the same data directory", async () => {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(tmp, "data-"));
  const args = ["--port", String(port), "--data-dir", dataDir, "--www", path.join(root, "www"), "--pkg", path.join(root, "pkg")];
  const start = () => startServer(serverBinary, args, /chunkup-server listening on (\S+)/, { log: path.join(logDir, `restart-server-${engine}.log`) });
  let server = await start();
  try {
    await openPage(server.url);
    // 400 ms per request: the nine chunks left take seconds, so the kill comes mid-upload
    // even on a loaded machine.
    await startUpload("/faults/latency:400/files/", { resume: false });
    await page.waitFor(() => window.progress.some((p) => p.uploaded >= 3 * 1024 * 1024), null, { timeout: 120_000 });
    server.child.kill("SIGKILL");
    await new Promise((resolve) => server.child.once("exit", resolve));
    // Down for a while: requests fail, the client backs off and keeps trying.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    server = await start();
    const outcome = await page.evaluate(() => window.upload);
    assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
    assert.equal(outcome.result.sha256, file.sha256);
    assert.ok(outcome.result.retries >= 1, "the outage was ridden out with retries");
    const stored = await info(outcome.result.url);
    assert.equal(stored.sha256, file.sha256, "the server holds exactly the file");
  } finally {
    await stop(server);
  }
});

if (engine === "chromium") {
  // Offline emulation (navigator.onLine, the online event, refused requests) is Chromium's
  // DevTools; WebDriver has no such command.
  test("offline: the upload waits for the network without spending retries, in both modes", async () => {
    for (const worker of [true, false]) {
      await openPage(base);
      // Seconds of chunks left when the network goes; retries to spare if a request fails
      // before the Worker hears of it (what is asserted is that none is spent waiting).
      await startUpload(new URL("faults/latency:300/files/", base).href, { worker, resume: false, retry: { attempts: 10, baseDelayMs: 50, maxDelayMs: 100 } });
      await page.waitFor(() => window.progress.some((p) => p.uploaded >= 2 * 1024 * 1024), null, { timeout: 60_000 });
      const context = page.page.context();
      await context.setOffline(true);
      await new Promise((resolve) => setTimeout(resolve, 3000));
      await context.setOffline(false);
      const outcome = await page.evaluate(() => window.upload);
      assert.equal(outcome.error, undefined, `${worker ? "Worker" : "page"}: ${JSON.stringify(outcome.error)}`);
      assert.equal(outcome.result.sha256, file.sha256);
      const phases = await page.evaluate(() => window.progress.map((p) => p.phase));
      assert.ok(phases.includes("offline"), `${worker ? "Worker" : "page"}: ${[...new Set(phases)].join()}`);
      assert.ok(outcome.result.retries <= 2, "the offline wait spent no retry");
    }
  });
}
