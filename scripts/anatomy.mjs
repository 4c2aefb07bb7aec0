// `npm run anatomy -- JOB...`: where the CPU and the memory of one job go, in headless
// Chromium, one job at a time (no peers beside it: for ratios, see `npm run bench`).
//
// For each job, on a file of ANATOMY_MIB MiB (default 256) picked from disk, in a fresh
// browser context on a page of the reference server:
//   - MB/s (file bytes / the page's wall time);
//   - CPU seconds of every process: the browser's, each by its role (browser, network
//     service, renderers...), and the reference server's (not Garage's, for s3 and attach);
//   - peak RSS growth of each of the browser's processes there at the start (measured once
//     their RSS has settled: lib.mjs settleProcessTree), whole and of each kind (anonymous,
//     file-backed, shared), each at its own peak, so the kinds need not add up to the
//     whole; the page's JavaScript heap (performance.memory) and chunkup's wasm memory;
//   - with ANATOMY_TRACE=1, a trace of the page's main thread: its longest tasks by CPU
//     (thread time) and by wall time, each with both, which tells a task that worked long
//     from one that waited for a core; and for each task over 50 ms, how long the kernel
//     kept that thread runnable but not running (its runqueue wait, from
//     /proc/PID/task/TID/schedstat sampled every 25 ms, so the window is a little wider
//     than the task), and which threads of the machine ran most in that window (this
//     script's own sampling among them: node/node).
// Jobs (ANATOMY_WORKER=1 runs chunkup's in its Worker, else `worker: false`):
//   upload   chunkup uploadFile to the reference server's /files/ (tus), 8 MiB chunks
//   s3       chunkup uploadFile, protocol "s3", parallelUploads 4, to one Garage node (the
//            reference server signs, as the widget's backend would; its hooks run on the page)
//   attach   chunkup attachFile over a session with the reference server's guest API
//            emulator (one presigned PUT, then the server's verdict)
//   xhr      what tus-js-client does: POST, then one XMLHttpRequest PATCH per 8 MiB slice
//   sha256   chunkup sha256File
//   read     Blob.stream() read with a BYOB reader into one reused 1 MiB buffer, nothing else
//   slices   file.slice(at, at + 1 MiB).arrayBuffer() for every MiB
//   default  Blob.stream() read with a default reader
// The machine is shared and noisy: run a job several times before quoting a figure.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { launchChromium } from "../tests/e2e/chromium.mjs";
import {
  launchedBrowserPid,
  logDir,
  openGuestLimits,
  processRole,
  processRss,
  processTree,
  root,
  settleProcessTree,
  startReferenceServer,
  startStoreStack,
  stop,
  writeRandomFile,
} from "./lib.mjs";

const MiB = 1024 * 1024;
const mib = Number(process.env.ANATOMY_MIB ?? 256);
const inWorker = process.env.ANATOMY_WORKER === "1";
const tracing = process.env.ANATOMY_TRACE === "1";
const JOBS = ["upload", "s3", "attach", "xhr", "sha256", "read", "slices", "default"];
const jobs = process.argv.slice(2);
if (!jobs.length || !jobs.every((job) => JOBS.includes(job)) || !(Number.isInteger(mib) && mib > 0)) {
  console.error(`usage: [ANATOMY_MIB=256] [ANATOMY_WORKER=1] [ANATOMY_TRACE=1] node scripts/anatomy.mjs ${JOBS.join("|")}...`);
  process.exit(2);
}

/** Runs in the page: one job on the picked file; the page-side figures. */
async function runJob([job, worker, piece]) {
  const file = document.getElementById("file").files[0];
  const chunkup = window.chunkup;
  const wasm = window.chunkupWasm;
  const heapBefore = performance.memory.usedJSHeapSize;
  const wasmBefore = wasm.memory.buffer.byteLength;
  let heapPeak = heapBefore;
  const heapTimer = setInterval(() => (heapPeak = Math.max(heapPeak, performance.memory.usedJSHeapSize)), 50);
  const started = performance.now();
  if (job === "upload") {
    await chunkup.uploadFile(file, () => {}, { endpoint: "/files/", chunkSize: 8 * piece, worker });
  } else if (job === "s3") {
    const backend = window.chunkupPageKit.s3Hooks(`${location.origin}/`);
    await chunkup.uploadFile(file, () => {}, { protocol: "s3", chunkSize: 8 * piece, parallelUploads: 4, resume: false, worker, s3: backend.hooks });
  } else if (job === "attach") {
    const { session, close } = await window.chunkupPageKit.openGuestSession(`${location.origin}/`, "anatomy");
    try {
      await chunkup.attachFile(session, file, () => {}, { worker });
    } finally {
      close();
    }
  } else if (job === "sha256") {
    await chunkup.sha256File(file, { worker });
  } else if (job === "xhr") {
    const created = await fetch("/files/", { method: "POST", headers: { "Tus-Resumable": "1.0.0", "Upload-Length": String(file.size) } });
    const url = new URL(created.headers.get("Location"), location.href).href;
    for (let at = 0; at < file.size; at += 8 * piece) {
      await new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open("PATCH", url);
        xhr.setRequestHeader("Tus-Resumable", "1.0.0");
        xhr.setRequestHeader("Upload-Offset", String(at));
        xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
        xhr.upload.onprogress = () => {};
        xhr.onload = () => (xhr.status === 204 ? resolve() : reject(new Error(`PATCH answered ${xhr.status}`)));
        xhr.onerror = () => reject(new Error("PATCH failed"));
        xhr.send(file.slice(at, at + 8 * piece));
      });
    }
  } else if (job === "read") {
    const reader = file.stream().getReader({ mode: "byob" });
    let spare = new ArrayBuffer(piece);
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(spare, 0, piece));
      if (done) break;
      spare = value.buffer;
    }
  } else if (job === "slices") {
    for (let at = 0; at < file.size; at += piece) await file.slice(at, at + piece).arrayBuffer();
  } else if (job === "default") {
    const reader = file.stream().getReader();
    while (!(await reader.read()).done);
  }
  const ms = performance.now() - started;
  clearInterval(heapTimer);
  return { ms, heapGrowth: heapPeak - heapBefore, wasmGrowth: wasm.memory.buffer.byteLength - wasmBefore };
}

/** The parts of lib.mjs's processRss, the whole first. */
const RSS_PARTS = ["total", "anon", "file", "shmem"];

/** CPU seconds (user + system) of a process so far: /proc/PID/stat, in Linux's 1/100 s ticks. */
function cpuSeconds(pid) {
  try {
    // After "pid (comm) ", fields from the third on: utime and stime are the 14th and 15th.
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * The page main thread's tasks in a Chromium trace: [{ wallMs, cpuMs, startUs, endUs, tid }],
 * the times in microseconds of CLOCK_MONOTONIC (Chromium's trace clock on Linux, and
 * process.hrtime's), the thread's Linux id.
 */
function mainThreadTasks(tracePath) {
  const trace = JSON.parse(readFileSync(tracePath, "utf8"));
  const events = Array.isArray(trace) ? trace : trace.traceEvents;
  const main = new Set(
    events
      .filter((e) => e.ph === "M" && e.name === "thread_name" && e.args?.name === "CrRendererMain")
      .map((e) => `${e.pid}:${e.tid}`),
  );
  return events
    .filter((e) => e.ph === "X" && e.name === "ThreadControllerImpl::RunTask" && main.has(`${e.pid}:${e.tid}`))
    .map((e) => ({ wallMs: e.dur / 1000, cpuMs: (e.tdur ?? 0) / 1000, startUs: e.ts, endUs: e.ts + e.dur, tid: e.tid }));
}

/**
 * Samples, every 25 ms, the scheduler's account of every thread on the machine
 * (/proc/PID/task/TID/schedstat: nanoseconds run, nanoseconds runnable but waiting), with
 * the CLOCK_MONOTONIC times in microseconds at which the scan of /proc began and ended.
 * `stop()` returns the samples and thread names.
 */
function sampleScheduler() {
  const samples = [];
  const names = new Map();
  const nowUs = () => Number(process.hrtime.bigint() / 1000n);
  const sample = () => {
    const startUs = nowUs();
    const threads = new Map();
    for (const pid of readdirSync("/proc").filter((entry) => /^\d+$/.test(entry))) {
      let tids;
      try {
        tids = readdirSync(`/proc/${pid}/task`);
      } catch {
        continue; // exited
      }
      for (const tid of tids) {
        try {
          const [run, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ").map(Number);
          if (run === 0) continue;
          threads.set(Number(tid), { run, wait });
          if (!names.has(Number(tid))) {
            const comm = (file) => readFileSync(file, "utf8").trim();
            names.set(Number(tid), `${comm(`/proc/${pid}/comm`)}/${comm(`/proc/${pid}/task/${tid}/comm`)}`);
          }
        } catch {
          // exited meanwhile
        }
      }
    }
    samples.push({ startUs, endUs: nowUs(), threads });
  };
  sample();
  const timer = setInterval(sample, 25);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return { samples, names };
    },
  };
}

/**
 * For a task: the samples just around it, its thread's runqueue wait and run time in that
 * window (ms), and the threads that ran most in it.
 */
function schedulerWindow({ samples, names }, task) {
  // Read wholly before the task began, and wholly after it ended.
  const before = samples.findLast((s) => s.endUs <= task.startUs) ?? samples[0];
  const after = samples.find((s) => s.startUs >= task.endUs) ?? samples.at(-1);
  const delta = (tid, field) => ((after.threads.get(tid)?.[field] ?? 0) - (before.threads.get(tid)?.[field] ?? 0)) / 1e6;
  const busiest = [...after.threads.keys()]
    .map((tid) => ({ name: names.get(tid) ?? String(tid), ms: delta(tid, "run") }))
    .filter((t) => t.ms >= 1)
    .sort((a, b) => b.ms - a.ms);
  return {
    windowMs: (after.endUs - before.startUs) / 1000,
    waitMs: delta(task.tid, "wait"),
    runMs: delta(task.tid, "run"),
    busiest,
  };
}

const work = mkdtempSync(path.join(os.tmpdir(), "chunkup-anatomy-"));
const file = path.join(work, `anatomy-${mib}MiB.bin`);
let server;
let store;
let browser;
try {
  await writeRandomFile(file, mib * MiB);
  if (jobs.includes("s3") || jobs.includes("attach")) {
    // The reference server with one Garage node as its object store (Garage: `npm run setup`),
    // which the guest API emulator's attachments go to as well.
    store = await startStoreStack({ nodes: 1, serverArgs: openGuestLimits, logDir: path.join(logDir, "anatomy-store") });
    server = store.server;
  } else {
    server = await startReferenceServer(openGuestLimits, { log: path.join(logDir, "anatomy-server.log") });
  }
  browser = await launchChromium();
  const browserPid = launchedBrowserPid();
  console.log(`anatomy: ${mib} MiB, chunkup ${inWorker ? "in its Worker" : "on the page (worker: false)"}, ${os.cpus().length} cores (load ${os.loadavg()[0].toFixed(1)})`);
  for (const job of jobs) {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(server.url);
      await page.evaluate(async () => {
        document.body.append(Object.assign(document.createElement("input"), { type: "file", id: "file" }));
        window.chunkup = await import("/pkg/chunkup.js");
        window.chunkupWasm = await window.chunkup.default();
      });
      await page.addScriptTag({ path: path.join(root, "scripts", "page-kit.js") });
      await page.setInputFiles("#file", file);
      const cdp = await context.newCDPSession(page);
      await cdp.send("HeapProfiler.collectGarbage");
      const settle = await settleProcessTree(browserPid);
      if (!settle.settled) console.log(`(the browser's memory was still moving after ${settle.ms} ms: measuring anyway)`);

      const pids = processTree(browserPid);
      const cpuBefore = new Map([...pids, server.child.pid].map((pid) => [pid, cpuSeconds(pid)]));
      // A process that exits keeps the peak it had.
      const rssBefore = new Map(pids.map((pid) => [pid, processRss(pid)]).filter(([, rss]) => rss));
      const rssPeak = new Map([...rssBefore].map(([pid, rss]) => [pid, { ...rss }]));
      const sampler = setInterval(() => {
        for (const [pid, peak] of rssPeak) {
          const now = processRss(pid);
          if (!now) continue;
          for (const part of RSS_PARTS) peak[part] = Math.max(peak[part], now[part]);
        }
      }, 100);
      const tracePath = path.join(work, "trace.json");
      let scheduler;
      if (tracing) {
        scheduler = sampleScheduler();
        await browser.startTracing(page, {
          path: tracePath,
          categories: ["devtools.timeline", "disabled-by-default-devtools.timeline", "toplevel", "v8.wasm"],
        });
      }
      let outcome;
      try {
        outcome = await page.evaluate(runJob, [job, inWorker, MiB]);
      } finally {
        clearInterval(sampler);
        if (tracing) {
          await browser.stopTracing();
          scheduler = scheduler.stop();
        }
      }

      console.log(
        `\n${job}: ${((mib * MiB) / outcome.ms / 1000).toFixed(0)} MB/s; page JS heap +${(outcome.heapGrowth / MiB).toFixed(1)} MiB, ` +
          `wasm memory +${(outcome.wasmGrowth / MiB).toFixed(1)} MiB`,
      );
      const cpu = new Map();
      for (const [pid, before] of cpuBefore) {
        const name = pid === server.child.pid ? "reference server" : processRole(pid);
        cpu.set(name, (cpu.get(name) ?? 0) + cpuSeconds(pid) - before);
      }
      const cpuTotal = [...cpu.values()].reduce((a, b) => a + b, 0);
      console.log(
        `  CPU ${cpuTotal.toFixed(2)} s in ${(outcome.ms / 1000).toFixed(2)} s: ` +
          [...cpu].filter(([, s]) => s >= 0.05).map(([name, s]) => `${name} ${s.toFixed(2)}`).join(", "),
      );
      const rss = new Map(); // role → growth of each part's peak, MiB
      for (const [pid, before] of rssBefore) {
        const name = processRole(pid);
        const sum = rss.get(name) ?? { total: 0, anon: 0, file: 0, shmem: 0 };
        for (const part of RSS_PARTS) sum[part] += (rssPeak.get(pid)[part] - before[part]) / 1024;
        rss.set(name, sum);
      }
      const parts = (m) => RSS_PARTS.slice(1).map((part) => `${part} +${m[part].toFixed(1)}`).join(", ");
      console.log(
        `  peak RSS growth: ` +
          [...rss].filter(([, m]) => m.total >= 0.5).map(([name, m]) => `${name} +${m.total.toFixed(1)} MiB (${parts(m)})`).join(", "),
      );
      if (tracing) {
        const tasks = mainThreadTasks(tracePath);
        const show = (list) => list.map((t) => `${t.cpuMs.toFixed(1)}/${t.wallMs.toFixed(1)}`).join(" ");
        const long = tasks.filter((t) => t.wallMs > 50);
        console.log(`  main-thread tasks: ${tasks.length}; CPU/wall ms of the 6 longest by CPU: ${show([...tasks].sort((a, b) => b.cpuMs - a.cpuMs).slice(0, 6))}`);
        console.log(`  over 50 ms of wall time: ${long.length}${long.length ? ` (CPU/wall ms: ${show(long)})` : ""}`);
        for (const task of long) {
          const w = schedulerWindow(scheduler, task);
          const top = w.busiest.slice(0, 5).map((t) => `${t.name} ${t.ms.toFixed(0)}`).join(", ");
          // What is neither run nor runqueue wait, the thread spent blocked (a lock, I/O).
          console.log(
            `    ${task.cpuMs.toFixed(1)}/${task.wallMs.toFixed(1)} ms: in the ${w.windowMs.toFixed(0)} ms around it the thread ` +
              `ran ${w.runMs.toFixed(0)} ms, waited for a core ${w.waitMs.toFixed(0)} ms; ran most: ${top}`,
          );
        }
      }
    } finally {
      await context.close();
    }
  }
} finally {
  await browser?.close();
  if (store) await store.stop();
  else await stop(server);
  rmSync(work, { recursive: true, force: true });
}
