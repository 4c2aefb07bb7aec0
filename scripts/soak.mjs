#!/usr/bin/env node
// `npm run soak`: many uploads through injected faults, and proof that none was lost.
//
//   node scripts/soak.mjs [--short]
//
// Starts the reference server with fault injection (429 with Retry-After, 503, resets
// part-way through a body, a flipped byte in checksummed bodies, added latency) and
// @tus/server behind the reference server's fault-injecting proxy (the same faults but
// `corrupt`: @tus/server verifies no checksum, so a flipped byte would be stored, not
// refused). Both shares are set so that at least 30 % of write requests meet a fault.
// Headless Chromium then runs N uploads with chunkup's `uploadFile` (tus, 64 KiB chunks,
// the default Worker mode, a few at a time), alternating between the two servers, with
// sizes at chunk boundaries (0, 1, c-1, c, c+1, 2c, 3c+17) and random sizes up to 1 MiB.
// Every upload's file is generated from a seed, hashed here, and compared with what the
// server stored (`GET <upload URL>/info`, answered by both servers).
//
// Prints uploads, faults injected (by kind, per server), failed (uploadFile rejected),
// lost (resolved, but the server does not hold the whole file), corrupted (the stored
// bytes' SHA-256 differs from the file's); exits non-zero unless all three are 0.
//
// Environment: SOAK_N (uploads; default 1000, or 50 with --short), SOAK_PARALLEL
// (uploads at a time, default 6), SOAK_SEED (files and faults, default 1).
// Logs: target/test-logs/soak-*.log. Needs the package in pkg/ (`npm run soak` builds
// it) and builds the server itself.

import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { launchChromium } from "../tests/e2e/chromium.mjs";
import {
  buildServer,
  logDir,
  root,
  startFaultProxy,
  startReferenceServer,
  startTusNodeServer,
  stop,
} from "./lib.mjs";

const KiB = 1024;
const CHUNK = 64 * KiB;
const BOUNDARY_SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17];
const MAX_RANDOM_SIZE = 1024 * KiB;
// Per-request probabilities. Reference server, on a PATCH: 1 - 0.9·0.9·0.88 = 29 % status
// faults or resets, then corrupt on 12 % of the rest: about 37 %; on a POST (no body, so no
// reset or corrupt) 19 %; HEADs meet 429 and 503 as well. Proxy, on a PATCH:
// 1 - 0.9·0.88·0.78 = 38 %; POST 21 %; reads pass untouched.
const REFERENCE_FAULTS = "429:0.1,503:0.1,reset:0.12,corrupt:0.12,latency:5,retry-after:1";
const PROXY_FAULTS = "429:0.1,503:0.12,reset:0.22,latency:5,retry-after:1";
// Generous, since the point is that nothing is lost: 20 failures in a row without progress.
const RETRY = { attempts: 20, baseDelayMs: 20, maxDelayMs: 2000 };
const KINDS = ["429", "500", "503", "reset", "corrupt"];

const short = process.argv.includes("--short");
if (process.argv.includes("--help")) {
  console.log("usage: node scripts/soak.mjs [--short]   (env SOAK_N, SOAK_PARALLEL, SOAK_SEED)");
  process.exit(0);
}
const count = (name, fallback) => {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number, not ${JSON.stringify(raw)}`);
  return n;
};
const N = count("SOAK_N", short ? 50 : 1000);
const PARALLEL = Math.max(1, count("SOAK_PARALLEL", 6));
const SEED = count("SOAK_SEED", 1);

/**
 * `size` pseudo-random bytes from `seed` (xorshift32, four bytes per step). The page runs
 * this very function (its source is sent there), so Node and the page make the same file.
 */
function fillBytes(size, seed) {
  const bytes = new Uint8Array(size);
  const words = new Uint32Array(bytes.buffer, 0, size >>> 2);
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  for (let i = 0; i < words.length; i += 1) words[i] = next();
  for (let i = words.length * 4; i < size; i += 1) bytes[i] = next() & 255;
  return bytes;
}

/** The soak's own sizes: every fifth upload a boundary size, the rest random. */
function sizeOf(index, random) {
  if (index % 5 === 0) return BOUNDARY_SIZES[(index / 5) % BOUNDARY_SIZES.length];
  return random() % (MAX_RANDOM_SIZE + 1);
}

function seededRandom(seed) {
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** Write requests and those that met a fault, from a server's or the proxy's log. */
function writeShare(log) {
  let writes = 0;
  let faulted = 0;
  for (const line of readFileSync(log, "utf8").split("\n")) {
    const m = /^(POST|PATCH|PUT|DELETE) \/files\S* (?:\d{3}|---) \d+ms(.*)$/.exec(line);
    if (!m) continue;
    writes += 1;
    if (/\bfault=/.test(m[2])) faulted += 1;
  }
  return { writes, faulted };
}

async function injected(base) {
  const res = await fetch(new URL("__faults", base));
  if (!res.ok) throw new Error(`GET ${new URL("__faults", base)}: ${res.status}`);
  return (await res.json()).injected;
}

const describeCounts = (counts) =>
  KINDS.filter((k) => counts[k]).map((k) => `${k}: ${counts[k]}`).join(", ") || "none";

const servers = [];
let browser;
const tusDir = mkdtempSync(path.join(os.tmpdir(), "chunkup-soak-tus-"));
const cleanUp = async () => {
  await browser?.close().catch(() => {});
  await Promise.all(servers.map(stop));
  rmSync(tusDir, { recursive: true, force: true });
};
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]]) {
  process.on(signal, () => cleanUp().then(() => process.exit(code)));
}

const started = performance.now();
try {
  if (!existsSync(path.join(root, "pkg", "chunkup.js"))) {
    throw new Error("pkg/ is missing: run `npm run build` (or `npm run soak`, which builds it)");
  }
  await buildServer();

  const logs = {
    reference: path.join(logDir, "soak-reference.log"),
    proxy: path.join(logDir, "soak-proxy.log"),
    tusNode: path.join(logDir, "soak-tus-node.log"),
  };
  const reference = await startReferenceServer(["--faults", REFERENCE_FAULTS, "--seed", String(SEED)], {
    log: logs.reference,
  });
  servers.push(reference);
  const tusNode = await startTusNodeServer(tusDir, { log: logs.tusNode });
  servers.push(tusNode);
  const proxy = await startFaultProxy(tusNode.url, PROXY_FAULTS, { seed: SEED, log: logs.proxy });
  servers.push(proxy);
  const targets = [
    { name: "reference server", endpoint: new URL("files/", reference.url).href, base: reference.url,
      spec: REFERENCE_FAULTS, log: logs.reference, uploads: 0 },
    { name: "@tus/server via the proxy", endpoint: new URL("files/", proxy.url).href, base: proxy.url,
      spec: PROXY_FAULTS, log: logs.proxy, uploads: 0 },
  ];

  browser = await launchChromium();
  const page = await browser.newPage();
  page.on("pageerror", (error) => console.error(`soak: page error: ${error.message}`));
  // An empty page on the reference server's origin, so /pkg/ and /files/ are same-origin.
  const pageUrl = new URL("__soak.html", reference.url).href;
  await page.route(pageUrl, (route) =>
    route.fulfill({ contentType: "text/html", body: "<!doctype html><title>chunkup soak</title>" }),
  );
  await page.goto(pageUrl);
  await page.unroute(pageUrl);
  await page.evaluate(`window.fillBytes = ${fillBytes.toString()};`);
  await page.evaluate(async () => {
    const chunkup = await import("/pkg/chunkup.js");
    await chunkup.default();
    window.chunkup = chunkup;
  });

  const random = seededRandom(SEED);
  const jobs = Array.from({ length: N }, (_, index) => ({
    index,
    target: targets[index % 2],
    size: sizeOf(index, random),
    fileSeed: (SEED * 1_000_003 + index) >>> 0,
  }));
  const failed = [];
  const lost = [];
  const corrupted = [];
  const clientHashWrong = [];
  let retries = 0;
  let done = 0;
  const every = Math.max(50, Math.ceil(N / 10));

  const uploadOne = async ({ index, target, size, fileSeed }) => {
    const expected = sha256(fillBytes(size, fileSeed));
    target.uploads += 1;
    const result = await page.evaluate(
      async ({ endpoint, size, fileSeed, options }) => {
        const file = new File([window.fillBytes(size, fileSeed)], `soak-${fileSeed}.bin`, {
          type: "application/octet-stream",
        });
        try {
          const r = await window.chunkup.uploadFile(file, null, { endpoint, ...options });
          return { url: r.url, sha256: r.sha256, retries: r.retries };
        } catch (e) {
          return {
            error: { code: e.code ?? e.name, message: String(e.message), status: e.status ?? null,
                     cause: e.cause?.code ?? null },
          };
        }
      },
      { endpoint: target.endpoint, size, fileSeed, options: { chunkSize: CHUNK, retry: RETRY, timeoutMs: 30_000 } },
    );
    const what = `#${index} ${size} B to ${target.name}`;
    if (result.error) {
      failed.push(`${what}: ${JSON.stringify(result.error)}`);
      return;
    }
    retries += result.retries;
    if (result.sha256 !== expected) clientHashWrong.push(`${what}: chunkup says ${result.sha256}`);
    let info = null;
    try {
      const res = await fetch(`${result.url}/info`, { cache: "no-store" });
      info = res.ok ? await res.json() : { status: res.status };
    } catch (error) {
      info = { error: error.message };
    }
    if (info.size !== size || info.offset !== size) {
      const { size: held, offset, status, error } = info;
      lost.push(`${what}: the server holds ${JSON.stringify({ size: held, offset, status, error })}`);
    } else if (info.sha256 !== expected) {
      corrupted.push(`${what}: stored ${info.sha256}, file ${expected}`);
    }
  };

  console.log(
    `soak: ${N} uploads of 0 B to 1 MiB in ${CHUNK / KiB} KiB chunks, ${PARALLEL} at a time, ` +
      `alternating between the reference server and @tus/server via the fault proxy (seed ${SEED})`,
  );
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(PARALLEL, N) }, async () => {
      while (next < jobs.length) {
        await uploadOne(jobs[next++]);
        done += 1;
        if (done % every === 0 && done < N) {
          const seconds = ((performance.now() - started) / 1000).toFixed(0);
          console.log(`soak: ${done}/${N} (${seconds} s; failed ${failed.length}, lost ${lost.length}, corrupted ${corrupted.length})`);
        }
      }
    }),
  );

  const totals = Object.fromEntries(KINDS.map((k) => [k, 0]));
  const perTarget = [];
  for (const target of targets) {
    const counts = await injected(target.base);
    for (const k of KINDS) totals[k] += counts[k] ?? 0;
    perTarget.push({ target, counts });
  }
  // Stopped before reading the logs, so every request line is written.
  await Promise.all(servers.map(stop));
  for (const { target, counts } of perTarget) {
    const { writes, faulted } = writeShare(target.log);
    const share = writes ? ((100 * faulted) / writes).toFixed(1) : "0";
    console.log(
      `  ${target.name}: ${target.uploads} uploads, faults ${target.spec}\n` +
        `    ${writes} write requests, ${faulted} of them faulted (${share} %); ` +
        `injected (reads included): ${describeCounts(counts)}`,
    );
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const faults = KINDS.reduce((sum, k) => sum + totals[k], 0);
  console.log(
    `soak: uploads ${N}, faults injected ${faults} (${describeCounts(totals)}), retries ${retries}, ` +
      `failed ${failed.length}, lost ${lost.length}, corrupted ${corrupted.length}, ${seconds} s`,
  );
  for (const [label, list] of [["failed", failed], ["lost", lost], ["corrupted", corrupted],
                               ["wrong client hash", clientHashWrong]]) {
    for (const line of list.slice(0, 10)) console.log(`  ${label}: ${line}`);
    if (list.length > 10) console.log(`  ${label}: ... and ${list.length - 10} more`);
  }
  if (failed.length || lost.length || corrupted.length || clientHashWrong.length) {
    console.error(`soak: FAILED (logs: ${logDir})`);
    process.exitCode = 1;
  }
} catch (error) {
  console.error(`soak failed: ${error.message}\n(logs: ${logDir})`);
  process.exitCode = 1;
} finally {
  await cleanUp();
}
