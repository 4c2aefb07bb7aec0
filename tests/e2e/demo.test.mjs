// End-to-end test of the demo page (www/) against the reference server.
//
//   node --test tests/e2e/
//
// Environment:
//   CHUNKUP_SERVER_URL  base URL of a running chunkup-server (e.g. http://127.0.0.1:8080/).
//                       If unset, the test starts target/release/chunkup-server itself
//                       (CHUNKUP_SERVER_BIN overrides that path) and stops it at the end.
//   CHROMIUM_PATH       Chromium executable (default /usr/bin/chromium).
//
// Writes test-results/demo.png (a screenshot after the successful upload).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { launchChromium } from "./chromium.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const RESULTS = path.join(ROOT, "test-results");
const MiB = 1024 * 1024;
const FILE_SIZE = 64 * MiB;
const UPLOAD_TIMEOUT_MS = 5 * 60 * 1000;

let base; // server base URL, with a trailing slash
let serverProc = null; // set when this file started the server
let serverLog = "";
let browser;
let tmpDir;
let bigFile; // { path, sha256 }

// ------------------------------------------------------------------ helpers

/** Deterministic pseudo-random bytes (xorshift32), fast enough for 64 MiB. */
function pseudoRandomBytes(size, seed) {
  const buf = new Uint8Array(size);
  const words = new Uint32Array(buf.buffer, 0, Math.floor(size / 4));
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i += 1) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length * 4; i < size; i += 1) buf[i] = (i * 31) & 0xff;
  return buf;
}

async function startServer() {
  const bin = process.env.CHUNKUP_SERVER_BIN || path.join(ROOT, "target/release/chunkup-server");
  const args = ["--port", "0", "--www", "www", "--pkg", "pkg"];
  const proc = spawn(bin, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  serverProc = proc;
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`chunkup-server did not print its address within 30 s:\n${serverLog}`));
    }, 30_000);
    const onData = (chunk) => {
      serverLog += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(serverLog);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    proc.stdout.setEncoding("utf8").on("data", onData);
    proc.stderr.setEncoding("utf8").on("data", (c) => {
      serverLog += c;
    });
    proc.on("error", (err) => {
      clearTimeout(timer);
      reject(
        new Error(
          `could not start ${bin} (${err.message}); build it with ` +
            "`cargo build --release -p chunkup-server` or set CHUNKUP_SERVER_URL",
        ),
      );
    });
    proc.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`chunkup-server exited early (${signal ?? code}):\n${serverLog}`));
    });
  });
}

async function stopServer() {
  const proc = serverProc;
  serverProc = null;
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  // chunkup-server shuts down cleanly (removing its temporary data dir) on SIGINT.
  proc.kill("SIGINT");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

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

/** Opens the demo and waits until the package has loaded. */
async function openDemo(t) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    // Failed requests are expected while faults are injected; the page reports real errors itself.
    if (!["error", "warning"].includes(msg.type()) || msg.text().startsWith("Failed to load resource")) return;
    problems.push(`console.${msg.type()}: ${msg.text()}`);
  });
  t.after(async () => {
    for (const line of problems.slice(0, 20)) t.diagnostic(`browser ${line}`);
    await context.close();
  });
  await page.goto(url("/"));
  await page.waitForSelector("body[data-ready]", { timeout: 30_000 });
  const ready = await page.getAttribute("body", "data-ready");
  if (ready !== "true") {
    assert.fail(`the demo could not load the package: ${await page.textContent("#error")}`);
  }
  // The switch is enabled once GET /__faults has answered.
  await page.waitForSelector("#faults:not([disabled])", { timeout: 30_000 });
  return page;
}

/** Clicks the faults switch so that it ends up `on`, waiting for the PUT. */
async function setFaultsSwitch(page, on) {
  if ((await page.isChecked("#faults")) === on) return;
  const [res] = await Promise.all([
    page.waitForResponse(
      (r) => r.request().method() === "PUT" && new URL(r.url()).pathname === "/__faults",
    ),
    page.click("#faults"),
  ]);
  assert.ok(res.ok(), `PUT /__faults from the page -> ${res.status()}`);
  await page.waitForFunction(
    (want) => {
      const el = document.querySelector("#faults");
      return el.checked === want && !el.hasAttribute("aria-busy");
    },
    on,
  );
}

const text = async (page, sel) => ((await page.textContent(sel)) ?? "").trim();

// ------------------------------------------------------------------ setup

before(async () => {
  if (process.env.CHUNKUP_SERVER_URL) {
    base = process.env.CHUNKUP_SERVER_URL;
  } else {
    base = await startServer();
  }
  if (!base.endsWith("/")) base += "/";

  tmpDir = mkdtempSync(path.join(os.tmpdir(), "chunkup-e2e-"));
  const bytes = pseudoRandomBytes(FILE_SIZE, 0xc0ffee);
  bigFile = {
    path: path.join(tmpDir, "random-64MiB.bin"),
    sha256: createHash("sha256").update(bytes).digest("hex"),
  };
  writeFileSync(bigFile.path, bytes);

  browser = await launchChromium();
});

after(async () => {
  // Each step on its own, so that one failure does not leak the others.
  if (base) await putFaults("none").catch(() => {});
  await browser?.close().catch(() => {});
  await stopServer().catch(() => {});
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ tests

describe("demo page", () => {
  test("uploads 64 MiB through injected faults and the hashes match", { timeout: 10 * 60 * 1000 }, async (t) => {
    await putFaults("none"); // start from a known state; the page reads it on load
    const page = await openDemo(t);

    const faultsBefore = await getFaults();
    await setFaultsSwitch(page, true);
    const on = await getFaults();
    assert.match(String(on.spec), /429/, `faults spec after switching on: ${JSON.stringify(on.spec)}`);

    await page.selectOption("#chunk-size", "8");
    await page.setInputFiles("#file", bigFile.path);
    await page.click("#start");
    assert.equal(await page.isEnabled("#abort"), true, "#abort is enabled during the upload");

    // Done when the verdict is set, failed when an error shows up.
    await page.waitForFunction(
      () =>
        document.querySelector("#verdict").textContent.trim() !== "" ||
        document.querySelector("#error").textContent.trim() !== "",
      null,
      { timeout: UPLOAD_TIMEOUT_MS, polling: 250 },
    );
    const error = await text(page, "#error");
    assert.equal(error, "", `the upload failed: ${error}`);

    const clientSha = await text(page, "#client-sha256");
    const serverSha = await text(page, "#server-sha256");
    assert.equal(await text(page, "#verdict"), "match");
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

    const rows = await page.locator("#chunks tr").count();
    assert.ok(rows >= 8, `chunk log has ${rows} rows, expected >= 8`);
    assert.equal(rows, result.chunks.length);
    const firstRowHash = await page.getAttribute("#chunks tr:first-child code", "title");
    assert.equal(firstRowHash, result.chunks[0].sha256, "chunk 0 hash in the table (title)");

    const afterUpload = await getFaults();
    const injected = injectedTotal(afterUpload) - injectedTotal(faultsBefore);
    const byKind = Object.fromEntries(
      Object.entries(afterUpload.injected ?? {}).map(([k, n]) => [k, n - (faultsBefore.injected?.[k] ?? 0)]),
    );
    t.diagnostic(`faults injected during the upload: ${JSON.stringify(byKind)}; client retries: ${result.retries}`);
    assert.ok(injected > 0, `expected injected faults, got ${JSON.stringify(byKind)}`);

    assert.equal(await page.isEnabled("#abort"), false, "#abort is disabled after the upload");

    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, "demo.png"), fullPage: true });

    await setFaultsSwitch(page, false);
    const off = await getFaults();
    assert.ok(["", "none"].includes(String(off.spec ?? "").trim()), `faults spec after switching off: ${off.spec}`);
  });

  test("Abort stops the upload and the server forgets it", { timeout: 3 * 60 * 1000 }, async (t) => {
    await putFaults("latency:200");
    t.after(() => putFaults("none").catch(() => {}));
    const page = await openDemo(t);

    // The upload URL is not in the progress events: read it off the creation response.
    const created = page.waitForResponse(
      (r) => r.request().method() === "POST" && r.status() === 201,
      { timeout: 60_000 },
    );

    await page.selectOption("#chunk-size", "1");
    await page.setInputFiles("#file", bigFile.path);
    await page.click("#start");

    const createdRes = await created;
    const location = await createdRes.headerValue("location");
    assert.ok(location, "POST response has a Location header");
    const uploadUrl = new URL(location, createdRes.url()).href;

    await page.waitForSelector("#chunks tr", { timeout: 60_000 });
    await page.click("#abort");

    await page.waitForFunction(() => document.querySelector("#error").textContent.trim() !== "", null, {
      timeout: 30_000,
    });
    const error = await text(page, "#error");
    assert.match(error, /\baborted\b/, `#error: ${error}`);
    assert.equal(await page.textContent("#error .error-code"), "aborted");
    assert.equal(await text(page, "#verdict"), "", "no verdict after an abort");
    assert.equal(await page.isEnabled("#abort"), false, "#abort is disabled after the abort");
    assert.equal(await page.isEnabled("#start"), true, "#start is enabled again");
    const rows = await page.locator("#chunks tr").count();
    assert.ok(rows >= 1 && rows < 64, `chunk log has ${rows} rows after the abort`);

    // The client terminates the upload (DELETE) after an abort.
    const infoUrl = `${uploadUrl.replace(/\/+$/, "")}/info`;
    const deadline = Date.now() + 10_000;
    let status;
    for (;;) {
      status = (await fetch(infoUrl, { cache: "no-store" })).status;
      if (status === 404 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(status, 404, `${infoUrl} after the abort`);
  });
});
