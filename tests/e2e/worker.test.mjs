// chunkup's two ways of running, side by side against the reference server, in the engine
// CHUNKUP_ENGINE names (chromium, firefox or webkit; see engines.mjs): in its Worker (the
// default) and on the page (`worker: false`, or where no Worker can start). Both must give
// the same results, progress and errors; the Worker must really be where the file is read
// and hashed; a page can run several uploads at once; and a page whose
// Content-Security-Policy forbids Workers still uploads, on the page. Then what differs
// between engines: how often upload progress comes, what Blob.stream() gives, and timers in
// a hidden page.
//
//   CHUNKUP_ENGINE=firefox node --test tests/e2e/worker.test.mjs
//   (CHUNKUP_SERVER_URL: a running server, else one is started)

import assert from "node:assert/strict";
import path from "node:path";
import { readdirSync } from "node:fs";
import { after, before, test } from "node:test";

import { engine, eventually, installFileHelpers, openBrowser } from "./engines.mjs";
import { startProxy } from "./proxy.mjs";
import { logDir, root, startReferenceServer, stop } from "../../scripts/lib.mjs";

let base;
let server;
let page;

/** Page-side helpers: the scenarios (files and hashes come from installFileHelpers). */
function installHelpers() {
  const errorOf = (error) => ({
    name: error.name,
    code: error.code,
    message: error.message,
    status: error.status,
    retryable: error.retryable,
    cause: error.cause ? { code: error.cause.code, status: error.cause.status } : undefined,
  });
  /**
   * What an upload looked like from the page: the result without its timing and URL,
   * the chunk acknowledgements and phase changes the progress calls told, whether percent
   * ever went back, the last call, and the error if it failed.
   */
  window.observe = async (run) => {
    const progress = [];
    let result;
    let error;
    try {
      result = await run((p) => progress.push(p));
    } catch (thrown) {
      error = errorOf(thrown);
    }
    const phases = progress.map((p) => p.phase).filter((phase, i, all) => phase !== all[i - 1]);
    const chunks = progress.filter((p) => p.chunk).map((p) => p.chunk);
    const last = progress.at(-1);
    if (result && typeof result === "object") {
      const { durationMs, url, ...stable } = result;
      result = { ...stable, url: url?.replace(/\/[^/]+$/, "/<id>") };
    }
    let wentBack = false;
    for (let i = 1; i < progress.length; i += 1) wentBack ||= progress[i].percent < progress[i - 1].percent;
    return {
      result,
      error,
      phases,
      chunks,
      wentBack,
      last: last && { phase: last.phase, percent: last.percent, bytesUploaded: last.bytesUploaded },
      uploadUrl: progress.find((p) => p.url)?.url,
    };
  };
}

before(async () => {
  base = process.env.CHUNKUP_SERVER_URL;
  if (!base) {
    server = await startReferenceServer([], { log: path.join(logDir, "worker-test-server.log") });
    base = server.url;
  }
  page = await openBrowser();
  await openPackage(base);
});

after(async () => {
  await page?.close();
  await stop(server);
});

/** Loads `url` and the package in the page, with the helpers. */
async function openPackage(url) {
  await page.goto(url);
  await page.evaluate(async () => {
    window.chunkup = await import("/pkg/chunkup.js");
    await window.chunkup.default();
  });
  await page.evaluate(installFileHelpers);
  await page.evaluate(installHelpers);
}

/** Runs the page function `scenario` once per mode and returns both records. */
async function inBothModes(scenario, arg = {}) {
  const worker = await page.evaluate(scenario, { ...arg, worker: true });
  const onPage = await page.evaluate(scenario, { ...arg, worker: false });
  return { worker, onPage };
}

async function info(url) {
  const response = await fetch(`${url}/info`);
  return response.status === 200 ? response.json() : { status: response.status };
}

test("tus: the same result, chunks and progress in the Worker and on the page", async () => {
  const { worker, onPage } = await inBothModes(async ({ worker }) => {
    const file = window.fileOf(3 * 1024 * 1024 + 5, "report.bin");
    let headerCalls = 0;
    const record = await window.observe((onProgress) =>
      window.chunkup.uploadFile(file, onProgress, {
        worker,
        endpoint: "/files/",
        chunkSize: 1024 * 1024,
        metadata: { conversation: "c-1" },
        headers: async () => {
          headerCalls += 1;
          return { "X-Request-Id": `r-${headerCalls}` };
        },
        progressIntervalMs: 0,
      }),
    );
    return { ...record, headerCalls, expected: await window.sha256(file) };
  });
  assert.equal(worker.error, undefined, JSON.stringify(worker.error));
  assert.equal(worker.result.sha256, worker.expected);
  assert.equal(worker.result.checksum, "sha256");
  assert.equal(worker.chunks.length, 4);
  assert.deepEqual(worker.phases, ["starting", "uploading", "done"]);
  assert.equal(worker.wentBack, false);
  assert.deepEqual(worker.last, { phase: "done", percent: 100, bytesUploaded: 3 * 1024 * 1024 + 5 });
  // headers() runs on the page before every request: OPTIONS, POST, four PATCHes.
  assert.equal(worker.headerCalls, 6);
  const stored = await info(worker.uploadUrl);
  assert.equal(stored.sha256, worker.expected);
  assert.deepEqual(stored.metadata.conversation, "c-1");
  const { uploadUrl: a, ...workerRest } = worker;
  const { uploadUrl: b, ...pageRest } = onPage;
  assert.deepEqual(pageRest, workerRest);
});

test("range and put: the same results in both modes", async () => {
  const { worker, onPage } = await inBothModes(async ({ worker }) => {
    const file = window.fileOf(600 * 1024, "clip.bin", "video/mp4");
    const session = await fetch("/range/", { method: "POST", headers: { "X-Upload-Content-Length": String(file.size) } });
    const range = await window.observe((onProgress) =>
      window.chunkup.uploadFile(file, onProgress, { worker, protocol: "range", endpoint: session.headers.get("Location"), chunkSize: 256 * 1024 }),
    );
    const presigned = await (
      await fetch("/presign", { method: "POST", body: JSON.stringify({ fileName: "clip.mp4", fileType: "video/mp4", fileSize: file.size }) })
    ).json();
    const put = await window.observe((onProgress) =>
      window.chunkup.uploadFile(file, onProgress, { worker, protocol: "put", endpoint: presigned.url, headers: presigned.headers }),
    );
    return { range, put: { ...put, result: { ...put.result, url: undefined } }, expected: await window.sha256(file) };
  });
  for (const record of [worker.range, worker.put]) {
    assert.equal(record.error, undefined, JSON.stringify(record.error));
    assert.equal(record.result.sha256, worker.expected);
    assert.equal(record.wentBack, false);
    assert.equal(record.last.percent, 100);
  }
  delete worker.range.uploadUrl;
  delete onPage.range.uploadUrl;
  delete worker.put.uploadUrl;
  delete onPage.put.uploadUrl;
  assert.deepEqual(onPage, worker);
});

test("the same errors in both modes: bad input, a headers() that throws, an HTTP refusal", async () => {
  const { worker, onPage } = await inBothModes(async ({ worker }) => {
    const file = window.fileOf(1000);
    const attempt = (options) => window.observe((onProgress) => window.chunkup.uploadFile(file, onProgress, { worker, ...options }));
    return {
      badChunkSize: await attempt({ endpoint: "/files/", chunkSize: 0 }),
      unknownOption: await attempt({ endpoint: "/files/", chunksize: 10 }),
      notAFile: await window.observe(() => window.chunkup.uploadFile("file.txt", null, { worker, endpoint: "/files/" })),
      headersThrow: await attempt({
        endpoint: "/files/",
        headers: () => {
          throw new TypeError("no token today");
        },
      }),
      headersReject: await attempt({ endpoint: "/files/", headers: async () => Promise.reject(new Error("token service down")) }),
      refused: await attempt({ endpoint: "/faults/500:1/files/", retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 } }),
      notFound: await attempt({ endpoint: "/nowhere/" }),
      hashBadInput: await window.observe(() => window.chunkup.sha256File(file, { worker, workers: 2 })),
    };
  });
  assert.equal(worker.badChunkSize.error.code, "invalid_input");
  assert.match(worker.unknownOption.error.message, /options\.chunksize is not an option/);
  assert.equal(worker.notAFile.error.code, "invalid_input");
  assert.deepEqual(
    { code: worker.headersThrow.error.code, message: worker.headersThrow.error.message },
    { code: "headers_failed", message: "the headers callback failed: TypeError: no token today" },
  );
  assert.equal(worker.headersReject.error.message, "the headers callback failed: token service down");
  assert.deepEqual(worker.refused.error.cause, { code: "http_status", status: 500 });
  assert.equal(worker.refused.error.code, "retries_exhausted");
  assert.equal(worker.notFound.error.code, "http_status");
  assert.ok([404, 405].includes(worker.notFound.error.status), `status ${worker.notFound.error.status}`);
  assert.equal(worker.hashBadInput.error.code, "invalid_input");
  for (const record of Object.values(worker)) assert.equal(record.error.name, "ChunkupError");
  assert.deepEqual(onPage, worker);
});

test("abort mid-chunk: rejected with aborted, and the partial upload is deleted, in both modes", async () => {
  const { worker, onPage } = await inBothModes(async ({ worker }) => {
    const file = window.fileOf(2 * 1024 * 1024, "big.bin");
    const controller = new AbortController();
    const record = await window.observe((onProgress) =>
      window.chunkup.uploadFile(
        file,
        (p) => {
          onProgress(p);
          // Abort once a chunk is acknowledged: the next one is then on its way.
          if (p.chunk) controller.abort();
        },
        { worker, endpoint: "/faults/latency:150/files/", chunkSize: 256 * 1024, signal: controller.signal },
      ),
    );
    return record;
  });
  for (const record of [worker, onPage]) {
    assert.equal(record.error.code, "aborted");
    assert.equal(record.error.retryable, false);
    const { status } = await eventually(() => info(record.uploadUrl), (r) => r.status === 404);
    assert.equal(status, 404, "the DELETE reached the server");
  }
  assert.deepEqual(onPage.error, worker.error);
  assert.deepEqual(onPage.chunks.slice(0, 1), worker.chunks.slice(0, 1));
});

test("put: target() renews an expired URL the same way in both modes", async () => {
  const { worker, onPage } = await inBothModes(async ({ worker }) => {
    const file = window.fileOf(300 * 1024, "photo.jpg", "image/jpeg");
    const presign = async (expired) =>
      (await fetch("/presign", { method: "POST", body: JSON.stringify({ fileName: "photo.jpg", fileType: "image/jpeg", fileSize: file.size, expired }) })).json();
    let calls = 0;
    const record = await window.observe((onProgress) =>
      window.chunkup.uploadFile(file, onProgress, {
        worker,
        protocol: "put",
        endpoint: "https://placeholder.invalid/",
        target: async () => {
          calls += 1;
          const { url, headers } = await presign(calls === 1);
          return { url, headers };
        },
        retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 },
      }),
    );
    // Each mode's file goes under its own key.
    const uploadUrl = record.uploadUrl?.replace(/\/[^/]+$/, "/<id>");
    return { ...record, uploadUrl, calls, expected: await window.sha256(file) };
  });
  assert.equal(worker.error, undefined, JSON.stringify(worker.error));
  assert.equal(worker.calls, 2);
  assert.equal(worker.result.retries, 1);
  assert.equal(worker.result.sha256, worker.expected);
  // A URL target() supplied (without its query; its key is <id>), not the endpoint given
  // first. (Which of the two: tests/browser.rs.)
  assert.match(worker.result.url, /^https?:\/\/[^?]+\/<id>$/);
  assert.doesNotMatch(worker.result.url, /placeholder/);
  assert.deepEqual(onPage, worker);
});

test("the Worker reads and hashes the file: the page never opens its stream", async () => {
  const outcome = await page.evaluate(async () => {
    const file = window.fileOf(1024 * 1024 + 3);
    const original = Blob.prototype.stream;
    let pageReads = 0;
    Blob.prototype.stream = function stream() {
      pageReads += 1;
      return original.call(this);
    };
    const NativeWorker = window.Worker;
    const started = [];
    window.Worker = class extends NativeWorker {
      constructor(url, options) {
        super(url, options);
        started.push(options?.name);
      }
    };
    try {
      const inWorker = await window.chunkup.uploadFile(file, null, { endpoint: "/files/", chunkSize: 256 * 1024 });
      const hashed = await window.chunkup.sha256File(file);
      const readsInWorkerMode = pageReads;
      const onPage = await window.chunkup.uploadFile(file, null, { endpoint: "/files/", worker: false });
      return { readsInWorkerMode, readsOnPage: pageReads - readsInWorkerMode, started, same: inWorker.sha256 === onPage.sha256 && hashed === onPage.sha256 };
    } finally {
      Blob.prototype.stream = original;
      window.Worker = NativeWorker;
    }
  });
  assert.equal(outcome.readsInWorkerMode, 0, "no file read on the page in Worker mode");
  assert.ok(outcome.readsOnPage >= 1, "in-page mode reads on the page");
  assert.ok(outcome.same);
  // The Worker started before this test (by earlier ones) is reused: none, or one, is new.
  assert.ok(outcome.started.every((name) => name === "chunkup") && outcome.started.length <= 1);
});

test("several uploads and a hash at once, from one page, through one Worker", async () => {
  const outcome = await page.evaluate(async () => {
    const files = [1, 2, 3].map((i) => window.fileOf(i * 700 * 1024 + i, `f${i}.bin`, "application/octet-stream", i));
    const results = await Promise.all([
      ...files.map((file) => window.chunkup.uploadFile(file, null, { endpoint: "/files/", chunkSize: 256 * 1024 })),
      window.chunkup.sha256File(files[2]),
    ]);
    const expected = await Promise.all(files.map((f) => window.sha256(f)));
    return { got: [...results.slice(0, 3).map((r) => r.sha256), results[3]], expected: [...expected, expected[2]] };
  });
  assert.deepEqual(outcome.got, outcome.expected);
});

test("put: the bytes on their way are reported as they leave (upload progress), in the Worker", async (t) => {
  // Throttled by the server, so that the body takes seconds to leave: more than the socket
  // buffers take at once (several MB on loopback, reported sent at the first event).
  const record = await page.evaluate(async () => {
    const size = 24 * 1000 * 1000;
    const file = window.fileOf(size, "video.mp4", "video/mp4");
    const presigned = await (
      await fetch("/faults/bandwidth:4MB/presign", { method: "POST", body: JSON.stringify({ fileName: "video.mp4", fileType: "video/mp4", fileSize: size }) })
    ).json();
    const sent = [];
    const uploaded = [];
    const record = await window.observe((onProgress) =>
      window.chunkup.uploadFile(
        file,
        (p) => {
          onProgress(p);
          sent.push(p.bytesSent);
          uploaded.push(p.bytesUploaded);
        },
        { protocol: "put", endpoint: presigned.url, headers: presigned.headers, progressIntervalMs: 0 },
      ),
    );
    return { ...record, size, sent, uploaded, expected: await window.sha256(file) };
  });
  assert.equal(record.error, undefined, JSON.stringify(record.error));
  assert.equal(record.result.sha256, record.expected);
  const inFlight = [...new Set(record.sent.filter((n) => n > 0 && n < record.size))];
  const shown = inFlight.length > 8 ? [...inFlight.slice(0, 4), "…", ...inFlight.slice(-2)] : inFlight;
  t.diagnostic(`${engine}: ${record.sent.length} progress calls, ${inFlight.length} counts of bytes in flight: ${shown.join(", ")}`);
  assert.ok(inFlight.length >= 2, `bytes in flight reported ${inFlight.length} times: ${shown}`);
  for (let i = 1; i < inFlight.length; i += 1) assert.ok(inFlight[i] > inFlight[i - 1], "bytesSent grows");
  assert.ok(record.uploaded.every((n) => n === 0 || n === record.size), "bytesUploaded moves only when the server answered");
  assert.equal(record.wentBack, false);
  assert.deepEqual(record.last, { phase: "done", percent: 100, bytesUploaded: record.size });
});

test("an in-memory Blob is read in pieces, whatever the engine's stream gives at once", async () => {
  // WebKit's Blob.stream() is not a byte stream, and gives an in-memory Blob as one chunk of
  // its whole size; chunkup hands it on in pieces, so that the wasm memory Rust copies them
  // into (which never shrinks) does not grow by the file's size. Measured on the page, whose
  // wasm memory the package's init() returns.
  const growth = await page.evaluate(async () => {
    const wasm = await window.chunkup.default(); // already initialised: the same instance
    const before = wasm.memory.buffer.byteLength;
    const blob = new Blob([window.fileOf(1024 * 1024), new Uint8Array(63 * 1024 * 1024)]);
    const hash = await window.chunkup.sha256File(blob, { worker: false });
    return { hash, expected: await window.sha256(blob), grew: wasm.memory.buffer.byteLength - before };
  });
  assert.equal(growth.hash, growth.expected);
  assert.ok(growth.grew < 16 * 1024 * 1024, `wasm memory grew by ${growth.grew} bytes hashing a 64 MiB Blob`);
});

// Headless Chromium keeps every page visible (a minimized window included), so there this
// case cannot be set up; Firefox and WebKit hide a minimized window's page and throttle its
// timers as they do a background tab's.
if (engine !== "chromium") {
  test("uploads finish in a hidden page, whose timers are throttled, in both modes", async (t) => {
    await page.minimize();
    t.after(() => page.restore());
    await page.waitFor(() => document.visibilityState === "hidden", null, { message: "the minimized page is not hidden" });
    const { worker, onPage } = await inBothModes(async ({ worker }) => {
      // A timer that would fire every 10 ms: how often it did shows the throttling.
      let ticks = 0;
      let timer;
      const tick = () => {
        ticks += 1;
        timer = setTimeout(tick, 10);
      };
      tick();
      const file = window.fileOf(1024 * 1024 + 9, "hidden.bin");
      const visibility = new Set([document.visibilityState]);
      const started = performance.now();
      const record = await window.observe((onProgress) =>
        window.chunkup.uploadFile(
          file,
          (p) => {
            visibility.add(document.visibilityState);
            onProgress(p);
          },
          // Half the requests fail: the backoff waits are page or Worker timers.
          { worker, endpoint: "/faults/503:0.5/files/", chunkSize: 256 * 1024, retry: { attempts: 20, baseDelayMs: 10, maxDelayMs: 50 } },
        ),
      );
      clearTimeout(timer);
      visibility.add(document.visibilityState);
      const seconds = (performance.now() - started) / 1000;
      return { ...record, visibility: [...visibility], ticksPerSecond: Math.round(ticks / seconds), seconds: Math.round(seconds * 10) / 10, expected: await window.sha256(file) };
    });
    for (const [mode, record] of [["Worker", worker], ["page", onPage]]) {
      t.diagnostic(`${engine}, ${mode}: ${record.seconds} s, ${record.result?.retries} retries, a 10 ms timer fired ${record.ticksPerSecond} times a second`);
      assert.equal(record.error, undefined, JSON.stringify(record.error));
      assert.equal(record.result.sha256, record.expected);
      assert.ok(record.result.retries > 0, "backoff waits happened while hidden");
      assert.deepEqual(record.visibility, ["hidden"], "the page stayed hidden throughout");
      assert.equal(record.last.percent, 100);
    }
  });
}

/**
 * Page-side: from now on, every Worker the page starts is recorded in `window.workersStarted`;
 * with `holdInit`, the first message chunkup posts to it (the wasm module) is held back
 * until `window.releaseInit()`, as if its script were still loading.
 */
function recordWorkers({ holdInit = false } = {}) {
  window.workersStarted = [];
  window.releaseInit = null;
  window.Worker = class extends window.Worker {
    constructor(url, options) {
      super(url, options);
      window.workersStarted.push(this);
    }

    postMessage(message, ...rest) {
      if (holdInit && message?.t === "init") {
        holdInit = false;
        window.releaseInit = () => super.postMessage(message, ...rest);
        return;
      }
      super.postMessage(message, ...rest);
    }
  };
}

/** Page-side: counts the file reads made on the page (in Worker mode, there are none). */
function countPageReads() {
  const original = Blob.prototype.stream;
  window.pageReads = 0;
  Blob.prototype.stream = function stream() {
    window.pageReads += 1;
    return original.call(this);
  };
}

test("a Worker that dies mid-upload fails it with worker_failed; the next call starts a new one", async (t) => {
  t.after(() => openPackage(base)); // a page without the recording, for later tests
  await openPackage(base);
  await page.evaluate(recordWorkers, {});
  const outcome = await page.evaluate(async () => {
    const file = window.fileOf(2 * 1024 * 1024, "big.bin");
    const record = await window.observe((onProgress) =>
      window.chunkup.uploadFile(
        file,
        (p) => {
          onProgress(p);
          // What the browser does when a Worker's script throws at top level or its
          // memory runs out: an error event on the Worker object.
          if (p.chunk?.index === 0) window.workersStarted[0].onerror(new ErrorEvent("error", { message: "simulated crash" }));
        },
        { endpoint: "/faults/latency:150/files/", chunkSize: 256 * 1024 },
      ),
    );
    const again = await window.chunkup.uploadFile(file, null, { endpoint: "/files/", chunkSize: 256 * 1024 });
    return { error: record.error, workers: window.workersStarted.length, sha256: again.sha256, expected: await window.sha256(file) };
  });
  assert.deepEqual(outcome.error, {
    name: "ChunkupError",
    code: "worker_failed",
    message: "chunkup's Worker stopped: simulated crash",
    retryable: true,
  });
  assert.equal(outcome.workers, 2, "a new Worker ran the next upload");
  assert.equal(outcome.sha256, outcome.expected);
});

test("a job that fails with something other than chunkup's error ends its Worker; the next call starts a new one", async (t) => {
  // The bridge module (the glue imports it from among wasm-bindgen's snippets), to post a
  // job the Worker cannot run, as a wasm that broke would answer: a plain Error.
  const [snippets] = readdirSync(path.join(root, "pkg", "snippets"));
  const bridgeUrl = `/pkg/snippets/${snippets}/src/js/bridge.js`;
  t.after(() => openPackage(base));
  await openPackage(base);
  await page.evaluate(recordWorkers, {});
  const outcome = await page.evaluate(async (bridgeUrl) => {
    const file = window.fileOf(100 * 1024, "a.bin");
    await window.chunkup.uploadFile(file, null, { endpoint: "/files/" });
    const bridge = await import(bridgeUrl);
    const failed = await bridge.runInWorker("notAnExport", []).then(
      () => "resolved",
      (error) => error.message,
    );
    const again = await window.chunkup.uploadFile(file, null, { endpoint: "/files/" });
    return { failed, workers: window.workersStarted.length, ok: again.sha256 === (await window.sha256(file)) };
  }, bridgeUrl);
  assert.match(outcome.failed, /notAnExport cannot run in the Worker/);
  assert.equal(outcome.workers, 2, "the broken Worker was ended and a new one started");
  assert.ok(outcome.ok);
});

test("a retry bound given alone moves the other's default along", async () => {
  const outcome = await page.evaluate(async () => {
    const file = window.fileOf(10 * 1024, "a.bin");
    const upload = (retry) => window.chunkup.uploadFile(file, null, { endpoint: "/files/", retry }).then(() => "ok", (error) => error.code);
    return [await upload({ maxDelayMs: 100 }), await upload({ baseDelayMs: 60000 }), await upload({ baseDelayMs: 10, maxDelayMs: 5 })];
  });
  assert.deepEqual(outcome, ["ok", "ok", "invalid_input"]);
});

test("an abort while the Worker is still starting rejects at once, and the Worker starts for the next call", async (t) => {
  t.after(() => openPackage(base));
  await openPackage(base);
  await page.evaluate(recordWorkers, { holdInit: true });
  await page.evaluate(countPageReads);
  const outcome = await page.evaluate(async () => {
    const file = window.fileOf(300 * 1024, "a.bin");
    const controller = new AbortController();
    const upload = window.chunkup.uploadFile(file, null, { endpoint: "/files/", signal: controller.signal });
    while (!window.releaseInit) await new Promise((resolve) => setTimeout(resolve, 10));
    controller.abort();
    // The Worker has not been given its wasm yet: only the abort can settle the call.
    const code = await upload.then(() => "resolved", (error) => error.code);
    window.releaseInit();
    const result = await window.chunkup.uploadFile(file, null, { endpoint: "/files/" });
    return { code, workers: window.workersStarted.length, pageReads: window.pageReads, sha256: result.sha256, expected: await window.sha256(file) };
  });
  assert.equal(outcome.code, "aborted");
  assert.equal(outcome.workers, 1);
  assert.equal(outcome.pageReads, 0, "the next upload ran in that Worker");
  assert.equal(outcome.sha256, outcome.expected);
});

test("an AbortSignal and Headers made in an iframe's realm work as the page's own, in both modes", async () => {
  const { worker, onPage } = await inBothModes(async ({ worker }) => {
    const frame = document.createElement("iframe");
    document.body.append(frame);
    try {
      const { AbortController: FrameAbortController, Headers: FrameHeaders } = frame.contentWindow;
      const file = window.fileOf(300 * 1024, "a.bin");
      // token:100: every request must carry a bearer token, so the Headers must be read.
      const headers = new FrameHeaders({ Authorization: `Bearer ${crypto.randomUUID()}` });
      const result = await window.chunkup.uploadFile(file, null, { worker, endpoint: "/faults/token:100/files/", headers, signal: new FrameAbortController().signal });
      const stopped = new FrameAbortController();
      stopped.abort();
      const aborted = await window.chunkup.uploadFile(file, null, { worker, endpoint: "/files/", signal: stopped.signal }).then(
        () => "resolved",
        (error) => error.code,
      );
      return { ok: result.sha256 === (await window.sha256(file)), aborted };
    } finally {
      frame.remove();
    }
  });
  assert.deepEqual(worker, { ok: true, aborted: "aborted" });
  assert.deepEqual(onPage, worker);
});

test("options that cannot be posted to the Worker run the upload on the page", async (t) => {
  t.after(() => openPackage(base));
  await openPackage(base);
  await page.evaluate(countPageReads);
  const outcome = await page.evaluate(async () => {
    const file = window.fileOf(300 * 1024, "a.bin");
    // A reactive wrapper (a Proxy) around a class instance: readable, but structured clone
    // refuses it.
    class Fields {
      constructor() {
        this.ticket = "42";
      }
    }
    const metadata = new Proxy(new Fields(), {});
    const result = await window.chunkup.uploadFile(file, null, { endpoint: "/files/", metadata });
    return { pageReads: window.pageReads, sha256: result.sha256, expected: await window.sha256(file), url: result.url };
  });
  assert.ok(outcome.pageReads >= 1, "it ran on the page");
  assert.equal(outcome.sha256, outcome.expected);
  const stored = await info(outcome.url);
  assert.equal(stored.metadata?.ticket, "42", "the Proxy's metadata was sent");
});

test("a page whose Content-Security-Policy forbids Workers still uploads, on the page", async (t) => {
  // The page comes with its policy from a proxy in front of the server, so that the package,
  // its Worker script and the uploads are all on the page's origin, as on a real site
  // (a cross-origin Worker would be refused whatever the policy says).
  const proxy = await startProxy(base, {
    pages: {
      "/csp-test.html": {
        headers: {
          "Content-Type": "text/html",
          "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; worker-src 'none'",
        },
        body: "<!doctype html><title>csp</title>",
      },
    },
  });
  t.after(async () => {
    await openPackage(base); // back to the server's own origin for any later test
    await proxy.close();
  });
  await page.goto(new URL("csp-test.html", proxy.url).href);
  const outcome = await page.evaluate(async () => {
    const chunkup = await import("/pkg/chunkup.js");
    await chunkup.default();
    const bytes = new TextEncoder().encode("no worker here ".repeat(10_000));
    const blob = new Blob([bytes]);
    let pageReads = 0;
    const original = Blob.prototype.stream;
    Blob.prototype.stream = function stream() {
      pageReads += 1;
      return original.call(this);
    };
    const result = await chunkup.uploadFile(blob, null, { endpoint: "/files/", chunkSize: 32 * 1024 });
    const hash = await chunkup.sha256File(blob);
    const expected = [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
    return { sha256: result.sha256, hash, expected, pageReads };
  });
  assert.ok(proxy.requests.some((r) => r.method === "PATCH" && r.path.startsWith("/files/")), "the upload went through the page's origin");
  assert.equal(outcome.sha256, outcome.expected);
  assert.equal(outcome.hash, outcome.expected);
  assert.ok(outcome.pageReads >= 2, "the work ran on the page");
});
