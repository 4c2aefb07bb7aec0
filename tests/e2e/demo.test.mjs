// End-to-end test of the demo page (www/) against the reference server, in the engine
// CHUNKUP_ENGINE names (see engines.mjs).
//
//   CHUNKUP_ENGINE=firefox node --test tests/e2e/demo.test.mjs
//
// Environment:
//   CHUNKUP_SERVER_URL  base URL of a running chunkup-server (e.g. http://127.0.0.1:8080/).
//                       If unset, the test starts target/server/chunkup-server itself
//                       (its log: target/test-logs/demo-test-server.log) and stops it at the end.
//   CHUNKUP_ENGINE      chromium (default), firefox or webkit.
//
// Writes test-results/demo-<engine>.png (a screenshot after the successful upload).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { engine, eventually, openBrowser } from "./engines.mjs";
import { startProxy } from "./proxy.mjs";
import { logDir, randomTestFile, root, startReferenceServer, stop } from "../../scripts/lib.mjs";

const RESULTS = path.join(root, "test-results");
const MiB = 1024 * 1024;
const FILE_SIZE = 64 * MiB;
const UPLOAD_TIMEOUT_MS = 5 * 60 * 1000;

let base; // server base URL, with a trailing slash
let server = null; // set when this file started the server
let page;
let tmpDir;
let bigFile; // { path, sha256 }

// ------------------------------------------------------------------ helpers

const url = (p) => new URL(p, base).href;

async function getFaults() {
  const res = await fetch(url("/__faults"), { cache: "no-store" });
  assert.equal(res.status, 200, "GET /__faults");
  return await res.json();
}

async function putFaults(spec) {
  const res = await fetch(url("/__faults"), { method: "PUT", body: spec });
  assert.ok(res.ok, `PUT /__faults ${JSON.stringify(spec)} -> ${res.status}`);
}

const injectedTotal = (faults) =>
  Object.values(faults.injected ?? {}).reduce((sum, n) => sum + (Number(n) || 0), 0);

/** Opens the demo (from `origin`, the server or a proxy) and waits until the package has loaded. */
async function openDemo(origin = base) {
  await page.goto(new URL("/", origin).href);
  const ready = await page.waitFor(() => document.body.dataset.ready, null, {
    message: "the demo did not finish loading within 30 s",
  });
  if (ready !== "true") {
    assert.fail(`the demo could not load the package: ${await text("#error")}`);
  }
  // The switch is enabled once GET /__faults has answered.
  await page.waitFor(() => !document.querySelector("#faults").disabled, null, { message: "the faults switch stayed disabled" });
}

/** Clicks the faults switch so that it ends up `on`, waiting until its PUT was answered. */
async function setFaultsSwitch(on) {
  if ((await page.evaluate(() => document.querySelector("#faults").checked)) === on) return;
  await page.click("#faults");
  await page.waitFor(
    (want) => {
      const el = document.querySelector("#faults");
      return el.checked === want && !el.hasAttribute("aria-busy");
    },
    on,
    { message: `the faults switch did not turn ${on ? "on" : "off"}` },
  );
}

const text = (sel) => page.evaluate((s) => (document.querySelector(s)?.textContent ?? "").trim(), sel);
const enabled = (sel) => page.evaluate((s) => !document.querySelector(s).disabled, sel);
const chunkRows = () => page.evaluate(() => document.querySelectorAll("#chunks tr").length);

/** Picks an option of the chunk-size <select>, as a person would. */
function selectChunkSize(mib) {
  return page.evaluate((value) => {
    const select = document.querySelector("#chunk-size");
    select.value = value;
    select.dispatchEvent(new Event("input", { bubbles: true }));
    select.dispatchEvent(new Event("change", { bubbles: true }));
    return select.value === value;
  }, String(mib));
}

// ------------------------------------------------------------------ setup

before(async () => {
  base = process.env.CHUNKUP_SERVER_URL;
  if (!base) {
    server = await startReferenceServer([], { log: path.join(logDir, "demo-test-server.log") });
    base = server.url;
  }
  if (!base.endsWith("/")) base += "/";

  tmpDir = mkdtempSync(path.join(os.tmpdir(), "chunkup-e2e-"));
  bigFile = await randomTestFile(tmpDir, "random-64MiB.bin", FILE_SIZE);

  page = await openBrowser();
});

after(async () => {
  // Each step on its own, so that one failure does not leak the others.
  if (base) await putFaults("none").catch(() => {});
  await page?.close().catch(() => {});
  await stop(server).catch(() => {});
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ tests

describe("demo page", () => {
  test("uploads 64 MiB through injected faults and the hashes match", { timeout: 10 * 60 * 1000 }, async (t) => {
    await putFaults("none"); // start from a known state; the page reads it on load
    await openDemo();

    const faultsBefore = await getFaults();
    await setFaultsSwitch(true);
    const on = await getFaults();
    assert.match(String(on.spec), /429/, `faults spec after switching on: ${JSON.stringify(on.spec)}`);

    assert.ok(await selectChunkSize(8), "8 MiB chunks selected");
    await page.setInputFiles("#file", bigFile.path);
    await page.waitFor(() => !document.querySelector("#start").disabled, null, { message: "#start stayed disabled after picking the file" });
    await page.click("#start");
    assert.equal(await enabled("#abort"), true, "#abort is enabled during the upload");

    // Done when the verdict is set, failed when an error shows up.
    await page.waitFor(
      () =>
        document.querySelector("#verdict").textContent.trim() !== "" ||
        document.querySelector("#error").textContent.trim() !== "",
      null,
      { timeout: UPLOAD_TIMEOUT_MS, interval: 250, message: "the upload neither finished nor failed" },
    );
    const error = await text("#error");
    assert.equal(error, "", `the upload failed: ${error}`);

    const clientSha = await text("#client-sha256");
    const serverSha = await text("#server-sha256");
    assert.equal(await text("#verdict"), "match");
    assert.match(clientSha, /^[0-9a-f]{64}$/);
    assert.equal(clientSha, serverSha, "client and server SHA-256");
    assert.equal(clientSha, bigFile.sha256, "client SHA-256 and Node's SHA-256 of the file");

    const result = await page.evaluate(() => window.__lastResult);
    assert.equal(result.size, FILE_SIZE);
    assert.equal(result.sha256, bigFile.sha256);
    // 8 chunks of 8 MiB, unless a connection broke mid-chunk and the server kept part of one.
    assert.ok(result.chunks.length >= FILE_SIZE / (8 * MiB), `${result.chunks.length} chunks`);
    assert.equal(
      result.chunks.reduce((sum, c) => sum + c.length, 0),
      FILE_SIZE,
      "the chunks cover the file",
    );

    // The server's own view, independently of the page.
    const info = await (await fetch(new URL(`${result.url.replace(/\/+$/, "")}/info`, base))).json();
    assert.equal(info.sha256, bigFile.sha256, "server /info sha256");
    assert.equal(info.size, FILE_SIZE);
    assert.equal(info.offset, FILE_SIZE);

    const rows = await chunkRows();
    assert.ok(rows >= 8, `chunk log has ${rows} rows, expected >= 8`);
    assert.equal(rows, result.chunks.length);
    const firstRowHash = await page.evaluate(() => document.querySelector("#chunks tr:first-child code").title);
    assert.equal(firstRowHash, result.chunks[0].sha256, "chunk 0 hash in the table (title)");

    const afterUpload = await getFaults();
    const injected = injectedTotal(afterUpload) - injectedTotal(faultsBefore);
    const byKind = Object.fromEntries(
      Object.entries(afterUpload.injected ?? {}).map(([k, n]) => [k, n - (faultsBefore.injected?.[k] ?? 0)]),
    );
    t.diagnostic(`faults injected during the upload: ${JSON.stringify(byKind)}; client retries: ${result.retries}`);
    assert.ok(injected > 0, `expected injected faults, got ${JSON.stringify(byKind)}`);

    assert.equal(await enabled("#abort"), false, "#abort is disabled after the upload");

    await page.screenshot(path.join(RESULTS, `demo-${engine}.png`));

    await setFaultsSwitch(false);
    const off = await getFaults();
    assert.ok(["", "none"].includes(String(off.spec ?? "").trim()), `faults spec after switching off: ${off.spec}`);
  });

  test("Abort stops the upload and the server forgets it", { timeout: 3 * 60 * 1000 }, async (t) => {
    await putFaults("latency:200");
    // The upload URL is not on the page: the demo is opened through a proxy that sees the
    // creation request's answer (the upload runs in chunkup's Worker, out of the page's sight).
    const proxy = await startProxy(base);
    t.after(async () => {
      await putFaults("none").catch(() => {});
      await proxy.close();
    });
    await openDemo(proxy.url);

    assert.ok(await selectChunkSize(1), "1 MiB chunks selected");
    await page.setInputFiles("#file", bigFile.path);
    await page.waitFor(() => !document.querySelector("#start").disabled, null, { message: "#start stayed disabled after picking the file" });
    await page.click("#start");

    await page.waitFor(() => document.querySelectorAll("#chunks tr").length > 0, null, {
      timeout: 60_000,
      message: "no chunk was acknowledged within 60 s",
    });
    await page.click("#abort");

    await page.waitFor(() => document.querySelector("#status").textContent.includes("Upload aborted."), null, {
      message: "no \"Upload aborted.\" within 30 s of the abort",
    });
    // The user's own Abort is said in the status, not shown as an error.
    assert.equal(await text("#error"), "", "no error after an abort");
    assert.equal(await text("#verdict"), "", "no verdict after an abort");
    assert.equal(await enabled("#abort"), false, "#abort is disabled after the abort");
    assert.equal(await enabled("#start"), true, "#start is enabled again");
    const rows = await chunkRows();
    assert.ok(rows >= 1 && rows < 64, `chunk log has ${rows} rows after the abort`);

    const created = proxy.requests.filter((r) => r.method === "POST" && r.status === 201);
    assert.equal(created.length, 1, `one upload created: ${JSON.stringify(proxy.requests.slice(0, 10))}`);
    assert.ok(created[0].location, "POST response has a Location header");
    const uploadUrl = new URL(created[0].location, base).href;

    // The client terminates the upload (DELETE) after an abort.
    const infoUrl = `${uploadUrl.replace(/\/+$/, "")}/info`;
    const status = await eventually(async () => (await fetch(infoUrl, { cache: "no-store" })).status, (s) => s === 404);
    assert.equal(status, 404, `${infoUrl} after the abort`);
    assert.ok(proxy.requests.some((r) => r.method === "DELETE" && r.path === new URL(uploadUrl).pathname), "the DELETE went out");
  });
});
