// chunkup: the one message protocol between the page and chunkup's Worker, both sides.
//
// The page keeps only what must live there: the caller's callbacks (onProgress, headers(),
// target(), attachFile's session), its AbortSignal and its socket. Everything else runs in
// a dedicated module Worker that this file starts lazily, reuses across uploads and ends
// when idle. Rust decides what runs where (src/web/worker.rs); this file only carries calls.
//
// How a call crosses: the page "packs" the arguments of `uploadFile`, `sha256File` or
// `attachFile` for postMessage. A File or Blob travels as is (structured clone: a handle,
// no copy). A function becomes a stand-in `{ [MARK]: "fn", id }`, which the other side
// turns into a proxy that posts a call and returns a promise of the answer; an AbortSignal
// becomes `{ [MARK]: "signal", id, aborted }`, mirrored by an AbortController on the other
// side; an Error becomes `{ [MARK]: "error", ... }` so that its `code`, `status` and
// `cause` survive; `Headers` becomes a Map (Headers cannot be cloned). The same packing
// serves both directions, so a listener the Worker passes to the page's `subscribe` is a
// function like any other.
//
// Messages ({ t: type, ... }):
//   page → worker   init {module}  run {job, name, args}  reply {job, call, ok, value}  abort {job, id}
//   worker → page   ready  failed {message}  call {job, id, call, args}  done {job, value}  fail {job, error}
// and `call`/`reply` also go page → worker for functions the Worker passed to the page.

import { bounded, kindOf } from "./io.js";

const MARK = "__chunkup";
/** The Worker is ended after this long without a job (it starts again on demand). */
const IDLE_MS = 30_000;
/** A job's callbacks stay callable this long after it settled: a clean-up request sent
 * after an abort (a tus DELETE) still asks for its headers. */
const LINGER_MS = 60_000;
/** A Worker that has not said it is ready by then is treated as unavailable. */
const START_TIMEOUT_MS = 20_000;
/** The package's exports the page may run in the Worker. */
const RUNNABLE = ["uploadFile", "sha256File", "attachFile"];

// ------------------------------------------------------------------ scheduling

const tasks = [];
let taskChannel = null;

/**
 * Resolves in a new macrotask, so that the event loop can run input, rendering and other
 * messages first. A promise chain (microtasks) would not: it keeps the same task going.
 * MessageChannel rather than setTimeout, which browsers clamp to 4 ms or more.
 */
export function nextTask() {
  return new Promise((resolve) => {
    if (typeof MessageChannel !== "function") {
      setTimeout(resolve, 0);
      return;
    }
    if (!taskChannel) {
      taskChannel = new MessageChannel();
      taskChannel.port1.onmessage = () => tasks.shift()?.();
    }
    tasks.push(resolve);
    taskChannel.port2.postMessage(0);
  });
}

/** True on a page's main thread (where work must be moved off or paced). */
export function onMainThread() {
  return typeof document !== "undefined";
}

// ------------------------------------------------------------------ packing

/** One side's record of a job: its functions the other side may call, its signals. */
class Job {
  constructor(id) {
    this.id = id;
    this.nextId = 0;
    this.callables = new Map(); // id → { fn, self }
    this.controllers = new Map(); // signal id → AbortController (the mirroring side)
    this.unwatch = []; // removes abort listeners (the watching side)
    this.ended = false; // the page side: the job settled, its Worker functions are gone
  }
}

function isPlainObject(value) {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Turns `value` into something postMessage can carry, registering functions and signals. */
function pack(side, job, value, self, seen = new Map()) {
  if (typeof value === "function") {
    const id = job.nextId++;
    job.callables.set(id, { fn: value, self });
    return { [MARK]: "fn", id };
  }
  if (value === null || typeof value !== "object") return value;
  if (seen.has(value)) return seen.get(value);
  // By tag, not instanceof: a signal or Headers made in an iframe's realm counts too.
  const kind = kindOf(value);
  if (kind === "AbortSignal") {
    const id = job.nextId++;
    const onAbort = () => side.post({ t: "abort", job: job.id, id });
    value.addEventListener("abort", onAbort);
    job.unwatch.push(() => value.removeEventListener("abort", onAbort));
    return { [MARK]: "signal", id, aborted: value.aborted };
  }
  if (kind === "Headers") return new Map(value);
  if (value instanceof Error) {
    const packed = { [MARK]: "error", name: value.name, message: value.message, props: {} };
    seen.set(value, packed);
    for (const key of Object.keys(value)) packed.props[key] = pack(side, job, value[key], value, seen);
    return packed;
  }
  if (Array.isArray(value)) {
    const packed = [];
    seen.set(value, packed);
    for (const item of value) packed.push(pack(side, job, item, value, seen));
    return packed;
  }
  if (!isPlainObject(value)) return value; // File, Blob, Map, ArrayBuffer...: cloned as they are
  const packed = {};
  seen.set(value, packed);
  for (const key of Object.keys(value)) packed[key] = pack(side, job, value[key], value, seen);
  return packed;
}

/** The inverse of `pack`, on the receiving side: stand-ins become proxies and mirrors. */
function unpack(side, job, value, seen = new Map()) {
  if (value === null || typeof value !== "object") return value;
  if (seen.has(value)) return seen.get(value);
  if (Array.isArray(value)) {
    const out = [];
    seen.set(value, out);
    for (const item of value) out.push(unpack(side, job, item, seen));
    return out;
  }
  if (!isPlainObject(value)) return value;
  switch (value[MARK]) {
    case "fn": {
      const { id } = value;
      return (...args) => side.call(job, id, args);
    }
    case "signal": {
      const controller = new AbortController();
      if (value.aborted) controller.abort();
      job.controllers.set(value.id, controller);
      return controller.signal;
    }
    case "error": {
      const error = new Error(value.message);
      error.name = value.name;
      seen.set(value, error);
      for (const key of Object.keys(value.props)) error[key] = unpack(side, job, value.props[key], seen);
      return error;
    }
    default: {
      const out = {};
      seen.set(value, out);
      for (const key of Object.keys(value)) out[key] = unpack(side, job, value[key], seen);
      return out;
    }
  }
}

// ------------------------------------------------------------------ one side of the channel

/** What both sides share: the port, the jobs, calls across and their answers. */
class Side {
  constructor(port) {
    this.port = port;
    this.jobs = new Map();
    this.calls = new Map(); // call id → { resolve, reject }
    this.nextCall = 0;
  }

  post(message) {
    this.port.postMessage(message);
  }

  /**
   * Calls the other side's function `id` of `job`; resolves to what it returned. Once the
   * job has ended, it resolves to undefined without asking: a widget that still calls the
   * Worker's listener for its socket gets no answer to wait for, and nothing piles up.
   */
  call(job, id, args) {
    if (job.ended) return Promise.resolve(undefined);
    const call = this.nextCall++;
    return new Promise((resolve, reject) => {
      this.calls.set(call, { resolve, reject, job });
      try {
        this.post({ t: "call", job: job.id, id, call, args: pack(this, job, args, null) });
      } catch (error) {
        this.calls.delete(call);
        reject(error);
      }
    });
  }

  /** Answers a call from the other side to one of our functions. */
  async answer({ job: jobId, id, call, args }) {
    const job = this.jobs.get(jobId) ?? new Job(jobId);
    const entry = job.callables.get(id);
    let value;
    try {
      if (!entry) throw new Error("this upload has ended");
      value = await entry.fn.apply(entry.self, unpack(this, job, args));
    } catch (error) {
      this.reply(jobId, call, false, () => pack(this, job, error, null), String(error));
      return;
    }
    // A value that cannot be cloned is answered as null: on the same thread it would have
    // been refused as unusable too.
    this.reply(jobId, call, true, () => pack(this, job, value, null), null);
  }

  reply(job, call, ok, packValue, fallback) {
    try {
      this.post({ t: "reply", job, call, ok, value: packValue() });
    } catch {
      this.post({ t: "reply", job, call, ok, value: fallback });
    }
  }

  settle({ call, ok, value }) {
    const pending = this.calls.get(call);
    if (!pending) return;
    this.calls.delete(call);
    const answer = unpack(this, pending.job, value);
    if (ok) pending.resolve(answer);
    else pending.reject(answer);
  }

  abort({ job, id }) {
    this.jobs.get(job)?.controllers.get(id)?.abort();
  }

  /** Handles the messages both sides understand; false for the rest. */
  receive(message) {
    switch (message.t) {
      case "call":
        this.answer(message);
        return true;
      case "reply":
        this.settle(message);
        return true;
      case "abort":
        this.abort(message);
        return true;
      default:
        return false;
    }
  }
}

// ------------------------------------------------------------------ page side

let host = null; // the running Worker and its jobs, once started
let unavailable = false; // a Worker could not be started here: run on the page from now on
let nextJob = 0;

class Host extends Side {
  constructor(worker) {
    super(worker);
    this.worker = worker;
    this.running = new Map(); // job id → { resolve, reject }
    this.idleTimer = null;
    this.ready = new Promise((resolve) => {
      const fail = () => {
        clearTimeout(timer);
        resolve(false);
      };
      const timer = setTimeout(fail, START_TIMEOUT_MS);
      worker.onerror = (event) => {
        event.preventDefault?.();
        this.crashed(event.message || "chunkup's Worker failed");
        fail();
      };
      worker.onmessage = ({ data }) => {
        if (data.t === "ready") {
          clearTimeout(timer);
          resolve(true);
          // Idle from the start: the call that started it may have been aborted meanwhile,
          // and then no job comes to end it. run() stops the clock.
          this.idle();
        } else if (data.t === "failed") {
          fail();
        } else {
          this.dispatch(data);
        }
      };
    });
  }

  dispatch(message) {
    if (this.receive(message)) return;
    const running = this.running.get(message.job);
    if (!running) return;
    if (message.t === "fail" && typeof message.error?.props?.code !== "string") {
      // Not one of chunkup's errors: the Worker's wasm broke (a panic traps) or could not
      // answer. Its instance may be in any state: ended as after a crash, so that the next
      // call starts a new one (and the uploads it held give their resume records back).
      this.crashed(String(message.error?.message ?? "it could not answer"));
      return;
    }
    this.finish(message.job);
    const job = this.jobs.get(message.job);
    if (message.t === "done") running.resolve(unpack(this, job, message.value));
    else running.reject(unpack(this, job, message.error));
  }

  /**
   * Posts the job; a promise of its outcome, or null when its arguments cannot be posted
   * (something structured clone refuses, such as a Proxy among the options): the caller
   * then runs it on the page, where they need no copy.
   */
  run(name, args) {
    const job = new Job(nextJob++);
    this.jobs.set(job.id, job);
    clearTimeout(this.idleTimer);
    let settle;
    const outcome = new Promise((resolve, reject) => (settle = { resolve, reject }));
    this.running.set(job.id, settle);
    try {
      this.post({ t: "run", job: job.id, name, args: pack(this, job, args, null) });
    } catch {
      this.finish(job.id);
      return null;
    }
    return outcome;
  }

  /** The job settled: stop watching its signal now, forget its callbacks a little later. */
  finish(jobId) {
    this.running.delete(jobId);
    const job = this.jobs.get(jobId);
    if (job) {
      job.ended = true;
      for (const unwatch of job.unwatch) unwatch();
      setTimeout(() => this.jobs.delete(jobId), LINGER_MS);
    }
    this.idle();
  }

  /** With no job running, ends the Worker in IDLE_MS unless one comes. */
  idle() {
    if (this.running.size > 0) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.end(), IDLE_MS);
  }

  end() {
    if (this.running.size > 0) return;
    this.worker.terminate();
    if (host === this) host = null;
  }

  /**
   * The Worker died (a crash, not an upload error): fail what it was running with an
   * `Error` that has no `code`, which src/web/worker.rs turns into `worker_failed`, and
   * end the calls into it that will never be answered.
   */
  crashed(message) {
    for (const [jobId, running] of this.running) {
      this.finish(jobId);
      running.reject(new Error(message));
    }
    for (const { resolve } of this.calls.values()) resolve(undefined);
    this.calls.clear();
    this.worker.terminate();
    if (host === this) host = null;
  }
}

/**
 * Starts chunkup's Worker if it is not running, handing it the page's compiled wasm
 * module; resolves to false where a Worker cannot run (Content-Security-Policy, no module
 * Workers), and from then on without trying again.
 */
export async function workerAvailable(module, signal) {
  if (unavailable) return false;
  if (!host) {
    let worker;
    try {
      worker = new Worker(new URL("../../../../chunkup_worker.js", import.meta.url), {
        type: "module",
        name: "chunkup",
      });
      host = new Host(worker);
      worker.postMessage({ t: "init", module });
    } catch {
      worker?.terminate();
      host = null;
      unavailable = true;
      return false;
    }
  }
  const current = host;
  // `ready` never rejects: a rejection here is the signal firing.
  const ready = await bounded(current.ready, 0, signal).catch(() => undefined);
  // Aborted while the Worker starts: the caller sees its signal and rejects at once; the
  // start goes on for the next call.
  if (ready === undefined) return false;
  if (ready) return true;
  unavailable = true;
  if (host === current) host = null;
  current.worker.terminate();
  return false;
}

/**
 * Runs the export `name` with `args` in the Worker: a promise that settles as the export
 * does there, or null when the job could not be handed over (the Worker ended meanwhile,
 * or the arguments cannot be posted), to run it on the page instead.
 */
export function runInWorker(name, args) {
  return host ? host.run(name, Array.from(args)) : null;
}

// ------------------------------------------------------------------ worker side

/**
 * The Worker's message loop (chunkup_worker.js calls it): instantiates the wasm module the
 * page sent, then runs each job with the package's own exports, which find themselves off
 * the main thread and do the work here.
 */
export function serveWorker(init, exports) {
  const side = new Side(self);
  self.onmessage = async ({ data }) => {
    if (side.receive(data)) return;
    if (data.t === "init") {
      try {
        await init({ module_or_path: data.module });
        side.post({ t: "ready" });
      } catch (error) {
        side.post({ t: "failed", message: String(error?.message ?? error) });
      }
      return;
    }
    if (data.t !== "run") return;
    const job = new Job(data.job);
    side.jobs.set(job.id, job);
    let outcome;
    try {
      if (!RUNNABLE.includes(data.name)) throw new Error(`${data.name} cannot run in the Worker`);
      const value = await exports[data.name](...unpack(side, job, data.args));
      outcome = { t: "done", job: job.id, value: pack(side, job, value, null) };
    } catch (error) {
      outcome = { t: "fail", job: job.id, error: pack(side, job, error, null) };
    }
    try {
      side.post(outcome);
    } catch (error) {
      // An outcome that cannot be posted still settles the page's promise.
      side.post({ t: "fail", job: job.id, error: { [MARK]: "error", name: "Error", message: String(error?.message ?? error), props: {} } });
    }
    setTimeout(() => side.jobs.delete(job.id), LINGER_MS);
  };
}
