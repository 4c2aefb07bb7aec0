// `npm run bench`: chunkup beside its peers, side by side in one run, in headless Chromium.
//
// For each file size (BENCH_SIZES_MIB, MiB, default "256,1024") a file of pseudo-random bytes
// is written to disk and picked with an <input type=file>, as a customer would pick it; then
//
//   uploads, 8 MiB chunks, to @tus/server (file store, no checksum extension) and to the
//   reference server's /files/ (which verifies `Upload-Checksum: sha256` when sent):
//     chunkup uploadFile, default mode and `worker: false` (in-page mode; "n/a" while the
//       build refuses the option as invalid_input);
//     tus-js-client (hashes nothing, sends no checksum): the peer the ratios refer to;
//     one plain fetch PATCH of the whole file, no hashing: the ceiling of the server;
//   every upload is checked (the server's /files/<id>/info sha256 must be the file's, which
//   Node computed while writing it) and then deleted, so the disk does not fill;
//
//   object storage, to one Garage node (scripts/garage.mjs) through the reference server as
//     the widget's backend (it signs with rusty-s3): one plain presigned PUT of the whole
//     file, no hashing (the peer: the store's ceiling), and chunkup `protocol: "s3"`, 8 MiB
//     parts each with a signed x-amz-checksum-sha256 that Garage verifies, parallelUploads
//     1 and 4; every object read back and hashed by the server;
//
//   the web-messaging attachment flow, against the reference server's emulator of the
//     Genesys guest API (its size and type limits opened up): chunkup attachFile in both
//     modes, from a session over the guest WebSocket that the page opens first (inside the
//     timing, a few ms) to the UploadSuccessEvent, which the server sends once it has read
//     the stored file back and hashed it; no peer (no other library does this flow), so
//     only long tasks and memory compare; the server's attachment record is checked;
//
//   control: nothing but a 10 s wait in the page (as long as the longer jobs), measured
//   like the rest: the memory the tree gains on its own (about 0: see the wait below);
//
//   hashing on the page: chunkup sha256File; hash-wasm createSHA256() fed every piece of
//   file.stream() on the main thread (the peer); WebCrypto digest per 8 MiB slice (chunk
//   digests only: WebCrypto has no incremental API, so it gives no whole-file digest).
//
// The page is a blank one (the file input and the peers' bundles) served by a small static
// server in this script, on its own loopback origin: uploads are cross-origin to both servers
// (both answer CORS), as from a chat widget embedded in a customer's site.
//
// Each figure runs BENCH_RUNS times (default 2), in interleaved rounds so that drift on the
// shared machine hits every row alike. All in one browser, but every measurement in a fresh
// browser context (its own renderer process, closed afterwards) after a forced GC, so one
// measurement's garbage and caches do not land in the next, and only once the RSS of the
// browser's processes has stopped moving (lib.mjs settleProcessTree: Chromium warms a new
// context's processes up for a few seconds, by up to 29 MiB). Per measurement:
//   MB/s        file bytes / the page's wall time (performance.now() around the call),
//               1 MB = 10^6 B; the ratio compares medians with the block's peer;
//   long tasks  main-thread long tasks (PerformanceObserver "longtask", each > 50 ms) that
//               started during the measurement: how many, and the longest;
//   memory      peak minus the value just before the measurement, summed over the browser's
//               process tree as it was at the start: RSS (VmRSS, sampled every 100 ms), and
//               PSS of anonymous and shared memory (Pss_Anon + Pss_Shmem from smaps_rollup,
//               every second: it is expensive to read). A process Chromium starts meanwhile
//               (a spare renderer, say) would add its whole RSS: it is named in the table's
//               note (and the JSON's `processesStarted`) with its peak RSS instead, not
//               counted. RSS counts a page shared between Chromium's processes once per
//               process; PSS splits it between them. File-backed pages are left out of the
//               PSS because other Chromiums on a shared machine share them and move it
//               (the RSS counts them: some 9 MiB of Chromium's own program that chunkup's
//               jobs run for the first time in a fresh renderer, per `npm run anatomy`).
// Then the package's size (raw and gzip -9) beside the peers' minified browser bundles.
// The same figures go to target/bench/bench-<timestamp>.json, rewritten after each file size.
// The machine is shared and noisy: quote the ratios within one run, not absolute figures.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { gzipSync } from "node:zlib";
import { launchChromium } from "../tests/e2e/chromium.mjs";
import {
  buildServer,
  launchedBrowserPid,
  openGuestLimits,
  processesMemory,
  processRole,
  processTree,
  root,
  settleProcessTree,
  startReferenceServer,
  startTusNodeServer,
  stop,
  writeRandomFile,
} from "./lib.mjs";
import { findGarage, startGarage } from "./garage.mjs";

const MiB = 1024 * 1024;
const CHUNK = 8 * MiB;
const SAMPLE_MS = 100; // RSS
const PSS_SAMPLE_MS = 1000; // PSS costs ~100 ms of kernel time per sample here
const TREE_MS = 1000; // how often the browser's process tree is listed again

const sizesMiB = (process.env.BENCH_SIZES_MIB ?? "256,1024").split(",").map((s) => Number(s.trim()));
const runs = Number(process.env.BENCH_RUNS ?? 2);
if (!sizesMiB.every((n) => Number.isInteger(n) && n > 0) || !(Number.isInteger(runs) && runs > 0)) {
  throw new Error("BENCH_SIZES_MIB must list whole MiB counts (e.g. 256,1024), BENCH_RUNS a whole number ≥ 1");
}

/** A peer library's browser bundle in node_modules (a dev dependency), and its version. */
function peerBundle(name, file) {
  const dir = path.join(root, "node_modules", name);
  let version;
  try {
    ({ version } = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")));
  } catch {
    throw new Error(`${name} is missing from node_modules: run \`npm run setup\``);
  }
  return { name, version, file: `${name}/${file}`, path: path.join(dir, file) };
}
const tusJs = peerBundle("tus-js-client", "dist/tus.min.js");
const hashWasm = peerBundle("hash-wasm", "dist/sha256.umd.min.js");
const tusServerVersion = JSON.parse(
  readFileSync(path.join(root, "node_modules", "@tus", "server", "package.json"), "utf8"),
).version;

// The page is blank but for the file input, the peers' bundles (UMD: classic scripts that
// define the globals `tus` and `hashwasm`) and page-kit.js (the s3 hooks and the guest
// session a widget's page would have), so nothing of the demo runs beside a measurement.
const PAGE_HTML = `<!doctype html><meta charset="utf-8"><title>chunkup bench</title>
<script src="/peers/${tusJs.file}"></script>
<script src="/peers/${hashWasm.file}"></script>
<script src="/page-kit.js"></script>
<input type="file" id="file">`;

const TYPES = { ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };

/**
 * Serves the bench page, pkg/ and the peers' bundles on loopback. The page needs a real
 * loopback origin: Chrome's Local Network Access refuses fetches to 127.0.0.1 from a page
 * it cannot place there (one fulfilled by playwright's page.route, say). Uploads are thus
 * cross-origin to both servers (both answer CORS), as from a widget embedded in a site.
 */
function startStaticServer() {
  const files = new Map([
    [`/peers/${tusJs.file}`, tusJs.path],
    [`/peers/${hashWasm.file}`, hashWasm.path],
    ["/page-kit.js", path.join(root, "scripts", "page-kit.js")],
  ]);
  const pkg = path.join(root, "pkg");
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, "http://localhost");
    const headers = { "Cache-Control": "no-cache" };
    if (pathname === "/") {
      res.writeHead(200, { ...headers, "Content-Type": "text/html; charset=utf-8" }).end(PAGE_HTML);
      return;
    }
    let file = files.get(pathname);
    let body;
    try {
      if (!file && pathname.startsWith("/pkg/")) {
        file = path.join(pkg, decodeURIComponent(pathname.slice("/pkg/".length)));
        if (!file.startsWith(pkg + path.sep)) file = undefined; // no way out of pkg/
      }
      body = file && readFileSync(file); // read per request, as the reference server does
    } catch {
      body = undefined; // missing file or malformed escape
    }
    if (!body) {
      res.writeHead(404, headers).end();
      return;
    }
    res.writeHead(200, { ...headers, "Content-Type": TYPES[path.extname(file)] ?? "application/octet-stream" }).end(body);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

/**
 * Runs in the page (serialised by playwright): loads chunkup, starts the long-task observer
 * and defines the jobs as `window.kit`. The peers' bundles are already on the page.
 */
async function installKit() {
  const chunkup = await import("/pkg/chunkup.js");
  await chunkup.default();
  const file = document.getElementById("file").files[0];
  const tusHeaders = { "Tus-Resumable": "1.0.0" };

  const longTasks = [];
  const observer = new PerformanceObserver((list) => longTasks.push(...list.getEntries()));
  observer.observe({ type: "longtask", buffered: false });

  // Every job gets the same kind of progress callback (counting calls), as an app would pass one.
  const jobs = {
    async chunkup({ endpoint, chunkSize, extra }) {
      let calls = 0;
      const result = await chunkup.uploadFile(file, () => { calls += 1; }, { endpoint, chunkSize, ...extra });
      return { url: result.url, sha256: result.sha256, checksum: result.checksum, progressCalls: calls };
    },
    tusJsClient({ endpoint, chunkSize }) {
      return new Promise((resolve, reject) => {
        let calls = 0;
        const upload = new window.tus.Upload(file, {
          endpoint,
          chunkSize,
          retryDelays: null, // fail the run rather than retry quietly: nothing should fail here
          storeFingerprintForResuming: false, // no localStorage bookkeeping in the figure
          metadata: { filename: file.name, filetype: file.type },
          onProgress: () => { calls += 1; },
          onSuccess: () => resolve({ url: upload.url, progressCalls: calls }),
          onError: reject,
        });
        upload.start();
      });
    },
    async plainPatch({ endpoint }) {
      const created = await fetch(endpoint, {
        method: "POST",
        headers: { ...tusHeaders, "Upload-Length": String(file.size) },
      });
      if (created.status !== 201) throw new Error(`POST answered ${created.status}`);
      const url = new URL(created.headers.get("Location"), endpoint).href;
      const done = await fetch(url, {
        method: "PATCH",
        body: file,
        headers: { ...tusHeaders, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream" },
      });
      if (done.status !== 204) throw new Error(`PATCH answered ${done.status}`);
      return { url };
    },
    async chunkupS3({ base, parallelUploads }) {
      const backend = window.chunkupPageKit.s3Hooks(base);
      let calls = 0;
      const result = await chunkup.uploadFile(file, () => { calls += 1; }, {
        protocol: "s3",
        chunkSize: 8 * 1024 * 1024,
        parallelUploads,
        resume: false,
        s3: backend.hooks,
      });
      return { key: backend.created(), sha256: result.sha256, checksum: result.checksum, progressCalls: calls };
    },
    async plainPut({ base }) {
      const presigned = await fetch(new URL("presign", base), {
        method: "POST",
        body: JSON.stringify({ fileName: file.name, fileSize: file.size }),
      });
      if (!presigned.ok) throw new Error(`presign answered ${presigned.status}`);
      const { url, headers, key } = await presigned.json();
      const done = await fetch(url, { method: "PUT", body: file, headers });
      if (!done.ok) throw new Error(`PUT answered ${done.status}`);
      return { key };
    },
    async idle() {
      await new Promise((resolve) => setTimeout(resolve, 10_000));
      return {};
    },
    async attachFile({ base, extra }) {
      const { session, close } = await window.chunkupPageKit.openGuestSession(base, "bench");
      try {
        let calls = 0;
        const result = await chunkup.attachFile(session, file, () => { calls += 1; }, extra);
        return { attachmentId: result.attachmentId, sha256: result.sha256, progressCalls: calls };
      } finally {
        close();
      }
    },
    async sha256File() {
      return { sha256: await chunkup.sha256File(file) };
    },
    async hashWasm() {
      // As hash-wasm's README streams: one hasher, init(), update() per piece, digest().
      const hasher = await window.hashwasm.createSHA256();
      hasher.init();
      const reader = file.stream().getReader();
      for (let piece = await reader.read(); !piece.done; piece = await reader.read()) hasher.update(piece.value);
      return { sha256: hasher.digest("hex") };
    },
    async webCrypto({ chunkSize }) {
      let digests = 0;
      for (let at = 0; at < file.size; at += chunkSize) {
        await crypto.subtle.digest("SHA-256", await file.slice(at, at + chunkSize).arrayBuffer());
        digests += 1;
      }
      return { digests };
    },
  };

  window.kit = {
    async run(job, args) {
      const t0 = performance.now();
      let outcome;
      try {
        outcome = await jobs[job](args);
      } catch (error) {
        return { error: { code: error?.code ?? null, message: String(error?.message ?? error) } };
      }
      const t1 = performance.now();
      // Long-task entries are delivered asynchronously: give the last ones a moment to arrive.
      await new Promise((resolve) => setTimeout(resolve, 250));
      longTasks.push(...observer.takeRecords());
      const during = longTasks.filter((entry) => entry.startTime >= t0 && entry.startTime <= t1);
      return { ms: t1 - t0, outcome, longTasks: during.map((entry) => entry.duration) };
    },
  };
}

// ---- the run -------------------------------------------------------------------------------

// Built here too because `npm run bench` builds only the package (a no-op when up to date).
await buildServer();

// The files, @tus/server's store and the reference server's data: all removed at the end.
const work = mkdtempSync(path.join(os.tmpdir(), "chunkup-bench-"));
const tusDir = path.join(work, "tus-store");
const referenceDir = path.join(work, "reference-data");
mkdirSync(tusDir);
mkdirSync(referenceDir);
const jsonPath = path.join(root, "target", "bench", `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
let server;
let tusServer;
let pageServer;
let browser;
let garage;

try {
  // One Garage node (Garage installed: `npm run setup`) is the reference server's object store.
  garage = await startGarage({ nodes: 1, logDir: work });
  server = await startReferenceServer(["--data-dir", referenceDir, ...garage.serverArgs(), ...openGuestLimits], {
    log: path.join(work, "reference.log"),
    env: { ...process.env, ...garage.serverEnv },
  });
  tusServer = await startTusNodeServer(tusDir, { log: path.join(work, "tus-node.log") });
  pageServer = await startStaticServer();
  browser = await launchChromium();
  const lab = {
    browser,
    browserPid: launchedBrowserPid(),
    pageUrl: `http://127.0.0.1:${pageServer.address().port}/`,
  };
  const garageVersion = execFileSync(findGarage(), ["--version"], { encoding: "utf8" }).match(/\d+\.\d+\.\d+/)?.[0] ?? "?";
  const endpoints = {
    tus: tusServer.url,
    reference: new URL("/files/", server.url).href,
    store: { base: server.url, version: garageVersion },
    guest: server.url,
  };

  const report = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, loadAverage: os.loadavg(), node: process.version, chromium: browser.version() },
    config: {
      sizesMiB,
      runs,
      chunkSize: CHUNK,
      rssSampleMs: SAMPLE_MS,
      pssSampleMs: PSS_SAMPLE_MS,
      isolation: "fresh browser context (own renderer) per measurement, full GC before it, then a wait until the process tree's RSS settles",
    },
    peers: { "tus-js-client": tusJs.version, "hash-wasm": hashWasm.version, "@tus/server": tusServerVersion, garage: garageVersion },
    files: [],
    packageSizes: packageSizes(),
    packageFingerprint: packageFingerprint(),
  };
  console.log(
    `\nchunkup bench: headless Chromium ${report.machine.chromium}, ${report.machine.cpus} cores ` +
      `(load ${report.machine.loadAverage[0].toFixed(1)}), ${runs} run(s) per figure, ` +
      `a fresh browser context per measurement, servers on loopback`,
  );

  for (const mib of sizesMiB) {
    const bytes = mib * MiB;
    const file = path.join(work, `bench-${mib}MiB.bin`);
    process.stdout.write(`\nwriting a ${mib} MiB file ... `);
    const sha256 = await writeRandomFile(file, bytes);
    console.log(`sha256 ${sha256}`);

    const rows = rowsFor(endpoints);
    for (let round = 1; round <= runs; round += 1) {
      for (const row of rows) {
        if (row.unsupported) continue;
        const label = `  [${round}/${runs}] ${row.block} · ${row.name}`;
        const m = await measure(lab, row, file);
        if (m.error) {
          // `worker` is a new option: a build without it refuses it as invalid input.
          if (row.optional && m.error.code === "invalid_input") {
            row.unsupported = m.error.message;
            console.log(`${label}: n/a (option not supported by this build)`);
            continue;
          }
          throw new Error(`${row.block} · ${row.name}: ${m.error.code ?? "error"}: ${m.error.message}`);
        }
        await check(row, m.outcome, { sha256, bytes });
        const result = {
          ms: round1(m.ms),
          mbps: row.control ? null : round1(bytes / m.ms / 1000),
          longTasks: { count: m.longTasks.length, longestMs: round1(Math.max(0, ...m.longTasks)) },
          rssGrowthMiB: round1(m.memory.rss),
          pssAnonShmemGrowthMiB: m.memory.pssAnonShmem == null ? null : round1(m.memory.pssAnonShmem),
          memory: m.memory.detail,
          checksum: m.outcome.checksum ?? null,
          progressCalls: m.outcome.progressCalls ?? null,
        };
        row.runs.push(result);
        console.log(
          `${label}: ${result.mbps == null ? "–" : result.mbps.toFixed(0)} MB/s, ${result.longTasks.count} long tasks, ` +
            `+${result.rssGrowthMiB.toFixed(0)} MiB RSS`,
        );
      }
    }
    rmSync(file, { force: true });

    const summary = summarise(rows);
    report.files.push({ sizeMiB: mib, bytes, sha256, rows: summary });
    printTable(mib, summary);
    writeJson(report); // after each size, so a failure later keeps what was measured
  }

  printSizes(report.packageSizes);
  // Other work may rebuild pkg/ meanwhile; figures from two builds must not be quoted as one.
  report.packageChangedDuringRun = packageFingerprint() !== report.packageFingerprint;
  if (report.packageChangedDuringRun) console.log("\nWARNING: pkg/ changed during this run: its figures mix builds; run again.");
  writeJson(report);
  console.log(`\nfigures as JSON: ${path.relative(root, jsonPath)}`);
} finally {
  await browser?.close();
  pageServer?.close();
  await stop(tusServer);
  await stop(server);
  await garage?.stop();
  rmSync(work, { recursive: true, force: true });
}

/** One measurement in a fresh browser context: wall time, long tasks, memory growth. */
async function measure({ browser, browserPid, pageUrl }, row, file) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(pageUrl);
    await page.setInputFiles("#file", file);
    await page.evaluate(installKit);
    // A full GC through the DevTools protocol (what window.gc() does under --expose-gc,
    // without another launch flag), then a wait until Chromium has finished warming up the
    // new context's processes (see settleProcessTree).
    const cdp = await context.newCDPSession(page);
    await cdp.send("HeapProfiler.collectGarbage");
    const settle = await settleProcessTree(browserPid);

    const sampler = startMemorySampler(browserPid);
    let memory;
    const result = await page
      .evaluate(([job, args]) => window.kit.run(job, args), [row.job, row.args])
      .finally(() => { memory = sampler.stop(); });
    memory.detail.settleMs = settle.ms;
    memory.detail.settled = settle.settled;
    // What is left after a GC of the page (JSON only): a leak stays, garbage that the page's
    // GC had not yet collected goes (a Worker's heap is not collected by this).
    if (!result.error) {
      await cdp.send("HeapProfiler.collectGarbage");
      await sleep(300);
      const after = processesMemory(memory.measured);
      memory.detail.afterGcRssGrowthMiB = round1((after.rss - memory.before.rss) / 1024);
    }
    return { ...result, memory };
  } finally {
    await context.close();
  }
}

/**
 * Samples the memory of a process tree from now until stop(): RSS every SAMPLE_MS, PSS
 * every PSS_SAMPLE_MS only (reading it costs the kernel about 100 ms for Chromium's tree
 * here, CPU the measurement would miss), both once more at the end, of the processes that
 * were in the tree at the start (`measured`). The tree is listed again every TREE_MS: a
 * process that ended counts 0 from then on; one that started is not summed but followed on
 * its own, and listed in `detail.processesStarted` with its role and peak RSS. stop()
 * returns the peak minus the first sample, in MiB, the first sample (KiB), the pids
 * measured, and in `detail` what the sampling saw and cost.
 */
function startMemorySampler(rootPid) {
  const started = performance.now();
  let pids = processTree(rootPid);
  const processesBefore = pids.length;
  // Only the processes there at the start are measured: one Chromium starts meanwhile (a
  // spare renderer, say) would add its whole RSS to the growth. Each is listed instead.
  const measured = new Set(pids);
  const newcomers = new Map(); // pid -> { kind, peakKiB }
  const before = processesMemory(pids, { pss: true });
  const peak = { ...before };
  let listedAt = started;
  let pssAt = started;
  let samples = 1;
  let pssSamples = 1;
  let costMs = performance.now() - started;
  const take = (last = false) => {
    const at = performance.now();
    if (at - listedAt >= TREE_MS || last) {
      const tree = processTree(rootPid);
      pids = tree.filter((pid) => measured.has(pid));
      for (const pid of tree.filter((pid) => !measured.has(pid) && !newcomers.has(pid))) {
        newcomers.set(pid, { kind: processRole(pid), peakKiB: 0 });
      }
      listedAt = at;
    }
    const withPss = last || at - pssAt >= PSS_SAMPLE_MS;
    const now = processesMemory(pids, { pss: withPss });
    for (const [pid, newcomer] of newcomers) newcomer.peakKiB = Math.max(newcomer.peakKiB, processesMemory([pid]).rss);
    samples += 1;
    peak.rss = Math.max(peak.rss, now.rss);
    if (withPss) {
      pssAt = at;
      pssSamples += 1;
      // A sample that could not be read leaves the peak as it was.
      if (now.pssAnonShmem != null) peak.pssAnonShmem = Math.max(peak.pssAnonShmem ?? 0, now.pssAnonShmem);
    }
    costMs += performance.now() - at;
  };
  const timer = setInterval(take, SAMPLE_MS);
  return {
    stop() {
      clearInterval(timer);
      take(true);
      return {
        before,
        measured: [...measured],
        rss: (peak.rss - before.rss) / 1024,
        pssAnonShmem: before.pssAnonShmem == null ? null : (peak.pssAnonShmem - before.pssAnonShmem) / 1024,
        detail: {
          beforeRssMiB: round1(before.rss / 1024),
          beforePssMiB: before.pss == null ? null : round1(before.pss / 1024),
          beforePssAnonShmemMiB: before.pssAnonShmem == null ? null : round1(before.pssAnonShmem / 1024),
          samples,
          pssSamples,
          processesBefore,
          processesAfter: processTree(rootPid).length,
          processesStarted: [...newcomers.values()].map(({ kind, peakKiB }) => ({ kind, peakRssMiB: round1(peakKiB / 1024) })),
          samplerMs: Math.round(costMs),
        },
      };
    },
  };
}

// ---- what is measured ----------------------------------------------------------------------

/** The rows of one file size, in the order of the table. `peer` marks each block's reference. */
function rowsFor(endpoints) {
  const rows = [];
  const add = (block, name, job, args, extra = {}) => rows.push({ block, name, job, args, runs: [], ...extra });
  const uploads = [
    ["tus", `@tus/server ${tusServerVersion} (file store, no checksums)`, endpoints.tus],
    ["reference", "reference server /files/ (verifies Upload-Checksum: sha256)", endpoints.reference],
  ];
  for (const [target, block, endpoint] of uploads) {
    const args = { endpoint, chunkSize: CHUNK };
    add(block, "chunkup uploadFile (default)", "chunkup", { ...args, extra: {} }, { upload: true });
    add(block, "chunkup uploadFile, worker: false", "chunkup", { ...args, extra: { worker: false } }, { upload: true, optional: true });
    add(block, `tus-js-client ${tusJs.version}`, "tusJsClient", args, {
      upload: true,
      peer: true,
      note: target === "reference" ? "hashes nothing, sends no checksum" : "hashes nothing",
    });
    add(block, "one plain PATCH, whole file (ceiling)", "plainPatch", args, { upload: true, note: "no hashing, no checksum" });
  }
  if (endpoints.store) {
    const block = `Garage ${endpoints.store.version} (1 node), S3 multipart through the reference server's signer`;
    const args = { base: endpoints.store.base };
    add(block, "one plain presigned PUT, whole file", "plainPut", args, {
      object: true,
      peer: true,
      note: "no hashing, no checksum",
    });
    for (const parallelUploads of [1, 4]) {
      add(block, `chunkup s3, parallelUploads ${parallelUploads}`, "chunkupS3", { ...args, parallelUploads }, { object: true });
    }
  }
  if (endpoints.guest) {
    // No peer: what matters here is that the page stays free (long tasks) and memory.
    const block = "Genesys guest API emulator (reference server): attachFile, one presigned PUT";
    const args = { base: endpoints.guest };
    add(block, "chunkup attachFile (default)", "attachFile", { ...args, extra: {} }, { attachment: true });
    add(block, "chunkup attachFile, worker: false", "attachFile", { ...args, extra: { worker: false } }, { attachment: true, optional: true });
  }
  // Nothing but a wait, measured like the rest: what the tree grows by on its own.
  add("control", "nothing: a 10 s wait in the page", "idle", {}, { control: true, note: "no file work" });
  const hashing = "hashing on the page";
  add(hashing, "chunkup sha256File", "sha256File", {}, { hash: true });
  add(hashing, `hash-wasm ${hashWasm.version}, file.stream(), main thread`, "hashWasm", {}, { hash: true, peer: true });
  add(hashing, "WebCrypto digest per 8 MiB slice", "webCrypto", { chunkSize: CHUNK }, {
    note: "chunk digests only, no whole-file digest",
  });
  return rows;
}

/** Fails the run unless the measurement produced the file's bytes or hash; deletes uploads. */
async function check(row, outcome, { sha256, bytes }) {
  if (row.object) {
    const info = await (await fetch(new URL(`s3/objects/${outcome.key}/info`, row.args.base))).json();
    if (info.sha256 !== sha256 || info.size !== bytes) {
      throw new Error(`${row.block} · ${row.name}: the store holds something else (${JSON.stringify(info).slice(0, 200)})`);
    }
    if (outcome.sha256 !== undefined && outcome.sha256 !== sha256) {
      throw new Error(`${row.block} · ${row.name}: result.sha256 is not the file's`);
    }
  } else if (row.upload) {
    const url = new URL(outcome.url, row.args.endpoint).href;
    try {
      const info = await (await fetch(`${url}/info`)).json();
      if (info.sha256 !== sha256 || info.size !== bytes || !info.complete) {
        throw new Error(`${row.block} · ${row.name}: the server holds something else (${JSON.stringify(info).slice(0, 200)})`);
      }
      if (outcome.sha256 !== undefined && outcome.sha256 !== sha256) {
        throw new Error(`${row.block} · ${row.name}: result.sha256 is not the file's`);
      }
    } finally {
      // Termination: both servers delete the stored file. Never mind a failure here: the
      // whole work directory goes at the end anyway.
      await fetch(url, { method: "DELETE", headers: { "Tus-Resumable": "1.0.0" } }).catch(() => {});
    }
  } else if (row.attachment) {
    const info = await (await fetch(new URL(`guest/attachments/${outcome.attachmentId}`, row.args.base))).json();
    if (info.sha256 !== sha256 || info.size !== bytes) {
      throw new Error(`${row.block} · ${row.name}: the server holds something else (${JSON.stringify(info).slice(0, 200)})`);
    }
    if (outcome.sha256 !== sha256) throw new Error(`${row.block} · ${row.name}: result.sha256 is not the file's`);
  } else if (row.hash && outcome.sha256 !== sha256) {
    throw new Error(`${row.name}: got ${outcome.sha256}, the file's is ${sha256}`);
  } else if (row.job === "webCrypto" && outcome.digests !== Math.ceil(bytes / CHUNK)) {
    throw new Error(`${row.name}: ${outcome.digests} digests`);
  }
}

// ---- reporting -----------------------------------------------------------------------------

function round1(x) {
  return Math.round(x * 10) / 10;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Best, median, ratio of medians to the block's peer, and the worst long tasks and memory. */
function summarise(rows) {
  const out = rows.map((row) => {
    const base = { block: row.block, name: row.name, note: row.note ?? null, peer: !!row.peer, control: !!row.control };
    if (row.unsupported) return { ...base, unsupported: row.unsupported, runs: [] };
    // No rate where there is no file work (the control): its runs carry mbps null.
    const rates = row.runs.map((r) => r.mbps).filter((mbps) => mbps != null);
    const pss = row.runs.map((r) => r.pssAnonShmemGrowthMiB);
    const checksum = row.runs[0]?.checksum;
    return {
      ...base,
      note: row.note ?? (row.job === "chunkup" || row.job === "chunkupS3" ? (checksum ? `checksum ${checksum} per chunk` : "hashes chunks, sends no checksum") : null),
      bestMBps: rates.length ? Math.max(...rates) : null,
      medianMBps: rates.length ? round1(median(rates)) : null,
      longTasksPerRun: row.runs.map((r) => r.longTasks.count),
      longestLongTaskMs: Math.max(...row.runs.map((r) => r.longTasks.longestMs)),
      maxRssGrowthMiB: Math.max(...row.runs.map((r) => r.rssGrowthMiB)),
      maxPssAnonShmemGrowthMiB: pss.includes(null) ? null : Math.max(...pss),
      // Runs measured although the tree was still moving after settleProcessTree's limit.
      unsettledRuns: row.runs.filter((r) => r.memory.settled === false).length,
      // Processes Chromium started during a run: listed, not counted (see startMemorySampler).
      processesStarted: row.runs.flatMap((r) => r.memory.processesStarted ?? []),
      runs: row.runs,
    };
  });
  for (const row of out) {
    const peer = out.find((r) => r.block === row.block && r.peer);
    row.ratioToPeer = row.medianMBps && peer?.medianMBps ? Math.round((row.medianMBps / peer.medianMBps) * 100) / 100 : null;
    row.peerName = peer?.name ?? null;
  }
  return out;
}

/**
 * Prints lines as aligned columns: a string is printed as it is; an array of cells is
 * aligned, its first and last cells to the left, the others to the right. A shorter array
 * (the "n/a" rows) takes no part in the widths: its second cell spans the columns after the first.
 */
function printColumns(lines) {
  const full = lines.filter((l) => Array.isArray(l) && l.length === lines[0].length);
  const widths = lines[0].map((_, i) => Math.max(...full.map((l) => String(l[i]).length)));
  for (const line of lines) {
    if (!Array.isArray(line)) console.log(line);
    else if (line.length < widths.length) console.log(`${line[0].padEnd(widths[0])}  ${line.slice(1).join("  ")}`);
    else {
      const last = line.length - 1;
      const cells = line.map((c, i) => (i === 0 || i === last ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i])));
      console.log(cells.join("  ").trimEnd());
    }
  }
}

function printTable(mib, rows) {
  const fixed = (x, digits = 0) => (x == null ? "–" : x.toFixed(digits));
  console.log(
    `\n${mib} MiB file, ${runs} run(s) per figure. MB/s = 10^6 B/s; ratio = median / the block's peer's median;` +
      `\nlong tasks: count per run and the longest (ms); memory: worst run's peak growth of the browser's process tree` +
      `\n(RSS every 100 ms; PSS a+s = PSS of anonymous + shared memory, every second), of the processes there at` +
      `\nthe start: a process Chromium starts meanwhile is named in the note with its peak RSS, not counted.`,
  );
  const lines = [["", "best MB/s", "median", "ratio", "long tasks", "longest ms", "RSS +MiB", "PSS a+s +MiB", "note"]];
  let block;
  for (const row of rows) {
    if (row.block !== block) {
      block = row.block;
      const peer = rows.find((r) => r.block === block && r.peer);
      lines.push(peer ? `${block} — ratio to ${peer.name.split(",")[0]}` : block);
    }
    const name = `  ${row.name}`;
    if (row.unsupported) {
      lines.push([name, "n/a (option not supported by this build)"]);
      continue;
    }
    lines.push([
      name,
      fixed(row.bestMBps),
      fixed(row.medianMBps),
      fixed(row.ratioToPeer, 2),
      row.longTasksPerRun.join("/"),
      fixed(row.longestLongTaskMs),
      fixed(row.maxRssGrowthMiB),
      fixed(row.maxPssAnonShmemGrowthMiB),
      [row.note, row.unsettledRuns ? `the tree had not settled before ${row.unsettledRuns} run(s)` : null, ...row.processesStarted.map((p) => `not counted: a ${p.kind} process started meanwhile (${fixed(p.peakRssMiB)} MiB RSS)`)]
        .filter(Boolean)
        .join("; "),
    ]);
  }
  printColumns(lines);
}

/** What a page loads of the package: the wasm, and every .js in pkg/ and under pkg/snippets/. */
function packageFiles() {
  const pkg = path.join(root, "pkg");
  return [
    "chunkup_bg.wasm",
    ...readdirSync(pkg).filter((f) => f.endsWith(".js")),
    ...readdirSync(path.join(pkg, "snippets"), { recursive: true })
      .filter((f) => f.endsWith(".js"))
      .map((f) => path.join("snippets", f)),
  ].map((f) => path.join("pkg", f));
}

/** Sizes of the package's wasm and JavaScript, and of the peers' minified browser bundles. */
function packageSizes() {
  const measureFile = (label, file) => {
    const content = readFileSync(file);
    return { file: label, raw: content.length, gzip: gzipSync(content, { level: 9 }).length };
  };
  const chunkup = packageFiles().map((f) => measureFile(f, path.join(root, f)));
  const total = {
    file: "chunkup total (wasm + JS)",
    raw: chunkup.reduce((sum, f) => sum + f.raw, 0),
    gzip: chunkup.reduce((sum, f) => sum + f.gzip, 0),
  };
  const peers = [tusJs, hashWasm].map((p) => measureFile(`${p.file} (${p.version})`, p.path));
  return { chunkup, total, peers };
}

/** A hash of the package's files, to notice a rebuild during the run. */
function packageFingerprint() {
  const hash = createHash("sha256");
  for (const f of packageFiles()) hash.update(f).update(readFileSync(path.join(root, f)));
  return hash.digest("hex");
}

function printSizes({ chunkup, total, peers }) {
  console.log("\npackage size (bytes; gzip -9, each file on its own)");
  printColumns([
    ["", "raw", "gzipped", ""],
    ...[...chunkup, total, ...peers].map((f) => [f.file, f.raw, f.gzip, ""]),
  ]);
}

function writeJson(report) {
  mkdirSync(path.dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
}
