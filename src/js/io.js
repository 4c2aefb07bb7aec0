// chunkup: every wait of an upload, the part of the browser glue that is simpler (and far
// smaller once shipped) in JavaScript than in Rust. Rust (src/web/) decides what to do and
// awaits the promises made here; each takes the upload's AbortSignal, so an abort ends
// whatever is pending at once, and each failure rejects with a plain `{ kind, detail }`
// that src/web/io.rs turns into chunkup's error (kinds: aborted, timeout, network, header,
// refused, threw, rejected).
//
// Nothing here sees a header value or token in an error: details are the browser's own
// words about the failure, never the request.

const failure = (kind, detail = "") => ({ kind, detail });
const aborted = () => failure("aborted");

/**
 * What built-in kind `value` is ("File", "Blob", "AbortSignal", "Headers", "Map", "Object"...),
 * by its tag rather than `instanceof`, so that one from another realm counts too: a widget
 * in an iframe hands its page's files, signals and headers to chunkup loaded in the iframe,
 * or the other way round.
 */
export function kindOf(value) {
  return Object.prototype.toString.call(value).slice(8, -1);
}

/** The message of a thrown value: "Name: message" for errors, the text of a string. */
export function describe(thrown) {
  if (thrown instanceof Error) {
    return !thrown.name || thrown.name === "Error" ? thrown.message : `${thrown.name}: ${thrown.message}`;
  }
  return typeof thrown === "string" ? thrown : "an unknown JavaScript error";
}

/**
 * Settles like `promise`, or rejects with `aborted` when `signal` fires or `timeout` after
 * `timeoutMs` (0 = never); `onEnd` runs either way (clean-up of what the promise waited on).
 */
export function bounded(promise, timeoutMs, signal, onEnd = () => {}) {
  if (signal?.aborted) {
    onEnd();
    // Nothing will await `promise` now: its failure is no one's (and no console's) concern.
    promise.catch(() => {});
    return Promise.reject(aborted());
  }
  return new Promise((resolve, reject) => {
    let timer;
    const end = (settle, value) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      onEnd();
      settle(value);
    };
    const onAbort = () => end(reject, aborted());
    signal?.addEventListener("abort", onAbort);
    if (timeoutMs > 0) timer = setTimeout(() => end(reject, failure("timeout")), timeoutMs);
    promise.then((value) => end(resolve, value), (error) => end(reject, error));
  });
}

/** Waits `ms` milliseconds, unless aborted first. */
export function sleep(ms, signal) {
  let timer;
  return bounded(new Promise((resolve) => (timer = setTimeout(resolve, ms))), 0, signal, () => clearTimeout(timer));
}

/**
 * Calls the caller's function `fn` (a `headers()` or `target()` callback) with `arg`, and
 * awaits what it returns if that is a promise. Rejects with `threw` or `rejected` (detail:
 * the callback's own message), `timeout` or `aborted`.
 */
export function call(fn, arg, timeoutMs, signal) {
  let returned;
  try {
    returned = arg === undefined ? fn() : fn(arg);
  } catch (error) {
    return Promise.reject(failure("threw", describe(error)));
  }
  const answer = Promise.resolve(returned).catch((error) => {
    throw failure("rejected", describe(error));
  });
  return bounded(answer, timeoutMs, signal);
}

// ------------------------------------------------------------------ reading the file

/** Bytes asked of the file per read: fewer, larger pieces cost less per byte (measured). */
const PIECE = 1024 * 1024;

/**
 * The byte-counting reader over a Blob: pieces of `blob.slice(offset).stream()` pass
 * through a TransformStream that counts them (progress's `bytesRead`) without copying.
 * Rust (src/web/source.rs) makes one per (re)start of the file stream, and copies each
 * piece into wasm memory before it asks for the next.
 *
 * The pieces live in one buffer, reused: where the file's stream is a byte stream
 * (Chromium, Firefox), it is read with a BYOB reader into that buffer, and the piece Rust
 * copied last is handed back to be filled again. A default reader would allocate a new
 * buffer per piece, and a 1 GiB upload would leave a gigabyte of garbage for the collector
 * to catch up with (196 MiB of growth, measured). Even so, Chromium's own objects behind
 * each read are garbage that its collector takes late: a bare BYOB read grew the renderer's
 * anonymous memory by 13 MiB for 1 GiB, 4 MiB for 256 MiB (`npm run anatomy -- read`).
 * Where BYOB is not offered (WebKit: `Blob.stream()` is not a byte stream there), the
 * default reader is the fallback, and its chunks are handed on in pieces of at most PIECE
 * bytes: WebKit gives a file on disk in 512 KiB chunks but an in-memory Blob as one chunk
 * of its whole size, and Rust's copy buffer (wasm memory, which never shrinks) would grow
 * to the largest piece.
 */
export class CountingReader {
  constructor(blob, offset, signal) {
    this.bytes = 0;
    this.signal = signal;
    this.spare = null;
    const counter = this;
    const counting = new TransformStream({
      transform(chunk, controller) {
        counter.bytes += chunk.byteLength;
        controller.enqueue(chunk);
      },
    });
    const stream = blob.slice(offset).stream();
    try {
      this.source = stream.getReader({ mode: "byob" });
      this.spare = new ArrayBuffer(PIECE);
    } catch {
      // Not a byte stream here (WebKit): the default reader; `rest` is what is left of its
      // last chunk.
      this.source = stream.getReader();
      this.rest = null;
    }
    this.writer = counting.writable.getWriter();
    this.reader = counting.readable.getReader();
  }

  /** The next piece as a Uint8Array, or null at the end; rejects `aborted` or `read`. */
  read() {
    const next = this.pump().then(
      ({ done, value }) => (done ? null : value),
      (error) => {
        throw failure("read", describe(error));
      },
    );
    return bounded(next, 0, this.signal);
  }

  /**
   * The next piece from the file (the spare buffer filled, or the next at most PIECE bytes
   * of the default reader's chunk), passed through the counter.
   */
  async pump() {
    let value;
    if (this.spare) {
      const read = await this.source.read(new Uint8Array(this.spare, 0, PIECE));
      if (read.done) return read;
      value = read.value;
    } else {
      while (!this.rest?.byteLength) {
        const read = await this.source.read();
        if (read.done) return read;
        this.rest = read.value;
      }
      value = this.rest.subarray(0, PIECE);
      this.rest = this.rest.subarray(value.byteLength);
    }
    // The counter's readable side holds nothing back (high-water mark 0): read as we write.
    this.writer.write(value).catch(() => {});
    const piece = await this.reader.read();
    // Rust copies this piece before asking for the next: its memory is the next spare.
    // (None after a cancel meanwhile: the read ends `done`.)
    if (this.spare && !piece.done) this.spare = piece.value.buffer;
    return piece;
  }

  /** Stops reading the file; never throws. */
  cancel() {
    this.source.cancel().catch(() => {});
    this.reader.cancel().catch(() => {});
  }
}

// ------------------------------------------------------------------ sending requests

/**
 * One request on its way. `next()` resolves to a number (body bytes sent so far, for a
 * request with upload progress) or to the answer `[status, [name, value, name, value...]]`,
 * with a third element for a status outside 2xx: the start of the body (errorText);
 * call it again after a number. `cancel()` aborts it (Rust calls it when it drops the
 * request unanswered).
 */
class Exchange {
  constructor() {
    this.events = [];
    this.waiting = null;
    this.finished = false;
    this.cancel = () => {};
  }

  push(event, failed = false) {
    if (this.finished) return;
    if (!failed && typeof event === "number") {
      // Only the latest count matters: replace one not yet taken.
      if (typeof this.events.at(-1)?.value === "number") this.events.pop();
    } else {
      this.finished = true;
    }
    this.events.push({ value: event, failed });
    this.flush();
  }

  flush() {
    if (!this.waiting || this.events.length === 0) return;
    const { resolve, reject } = this.waiting;
    this.waiting = null;
    const { value, failed } = this.events.shift();
    (failed ? reject : resolve)(value);
  }

  next() {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.flush();
    });
  }
}

function headerPairs(entries) {
  const flat = [];
  for (const [name, value] of entries) flat.push(name, value);
  return flat;
}

/**
 * Sends `method url` with the header pairs `headers` ([[name, value]...]) and an optional
 * Blob body (a file slice: the browser streams it from disk). With `progress`, through
 * XMLHttpRequest, whose upload events fetch lacks, and `timeoutMs` is an idle timeout that
 * restarts whenever body bytes leave; otherwise with fetch, and `timeoutMs` bounds the
 * whole exchange. `keepalive` lets a clean-up request outlive the page.
 */
export function send(method, url, headers, body, timeoutMs, progress, keepalive, signal) {
  const exchange = new Exchange();
  if (signal?.aborted) {
    exchange.push(aborted(), true);
    return exchange;
  }
  (progress ? sendWithXhr : sendWithFetch)(exchange, method, url, headers, body, timeoutMs, keepalive, signal);
  return exchange;
}

function sendWithFetch(exchange, method, url, headers, body, timeoutMs, keepalive, signal) {
  const controller = new AbortController();
  let request;
  try {
    const fetchHeaders = new Headers();
    for (const [name, value] of headers) {
      try {
        fetchHeaders.set(name, value);
      } catch {
        throw failure("header", name);
      }
    }
    // The browser's text for a refused request may quote the URL (a credential): not kept.
    request = new Request(url, { method, headers: fetchHeaders, body, cache: "no-store", keepalive, signal: controller.signal });
  } catch (error) {
    exchange.push(error?.kind ? error : failure("refused"), true);
    return;
  }
  exchange.cancel = () => controller.abort();
  const answered = fetch(request).then(
    (response) =>
      response.ok
        ? [response.status, headerPairs(response.headers)]
        : response.text().then(
            (text) => [response.status, headerPairs(response.headers), errorText(text)],
            () => [response.status, headerPairs(response.headers)],
          ),
    (error) => {
      throw failure("network", describe(error));
    },
  );
  bounded(answered, timeoutMs, signal, () => {
    exchange.cancel = () => {};
  }).then(
    (answer) => exchange.push(answer),
    (error) => {
      controller.abort();
      exchange.push(error, true);
    },
  );
}

function sendWithXhr(exchange, method, url, headers, body, timeoutMs, keepalive, signal) {
  const xhr = new XMLHttpRequest();
  try {
    xhr.open(method, url, true);
  } catch {
    exchange.push(failure("refused"), true);
    return;
  }
  for (const [name, value] of headers) {
    try {
      xhr.setRequestHeader(name, value);
    } catch {
      exchange.push(failure("header", name), true);
      return;
    }
  }
  let timer;
  const idle = () => {
    clearTimeout(timer);
    if (timeoutMs > 0) timer = setTimeout(() => finish(failure("timeout"), true), timeoutMs);
  };
  const onAbort = () => finish(aborted(), true);
  let finished = false;
  const finish = (event, failed) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    exchange.cancel = () => {};
    // abort() fires the request's own abort event before it returns, which would finish
    // the exchange as a network failure; `finished` keeps this event (a timeout, an abort,
    // a cancel) the one reported.
    if (failed) xhr.abort();
    exchange.push(event, failed);
  };
  // Registering an upload listener before send() is what makes the browser report upload
  // progress (it also makes a cross-origin request preflighted).
  xhr.upload.onprogress = (event) => {
    idle();
    exchange.push(event.loaded);
  };
  xhr.onload = () => {
    if (xhr.status === 0) finish(failure("network", "the request failed without an HTTP answer"), true);
    else if (xhr.status >= 200 && xhr.status < 300) finish([xhr.status, parseHeaders(xhr.getAllResponseHeaders())]);
    else finish([xhr.status, parseHeaders(xhr.getAllResponseHeaders()), errorText(xhr.responseText)]);
  };
  xhr.onerror = xhr.onabort = () => finish(failure("network", "the request failed without an HTTP answer"), true);
  signal?.addEventListener("abort", onAbort);
  exchange.cancel = () => finish(aborted(), true);
  try {
    xhr.send(body);
  } catch {
    finish(failure("refused"), true);
    return;
  }
  idle();
}

/**
 * The start of a refusal's body, for the protocol to read an error code from (an S3 error
 * document's `<Code>`): never put into a message or a log, since a server may echo what it
 * was sent.
 */
function errorText(text) {
  return typeof text === "string" ? text.slice(0, 4096) : "";
}

/** `getAllResponseHeaders()` text: `name: value` lines separated by CRLF. */
function parseHeaders(text) {
  const flat = [];
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) flat.push(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return flat;
}

// ------------------------------------------------------------------ the chat session's messages

/**
 * The messages of a web-messaging session, queued for `attachFile`: `listener` goes to the
 * widget's `session.subscribe`, and `next()` hands them over one by one.
 */
export class Inbox {
  constructor() {
    this.queue = [];
    this.waiting = null;
    // Widgets may pass the parsed object or the raw text.
    this.listener = (message) => {
      if (typeof message === "string") {
        try {
          message = JSON.parse(message);
        } catch {
          message = null;
        }
      }
      this.queue.push(message);
      if (this.waiting) {
        const resolve = this.waiting;
        this.waiting = null;
        resolve(this.queue.shift());
      }
    };
  }

  /**
   * Calls the widget's `subscribe(listener)` and resolves to what it returned (the
   * unsubscribe function, or a promise of it: the Worker's stand-in for the page's
   * `subscribe` answers after a round trip). Rejects like `call`, or `aborted` at once when
   * `signal` fires first; a subscription that still arrives after that is ended as soon as
   * it does, so the widget's socket is never left feeding a listener nobody reads.
   */
  subscribeTo(subscribe, signal) {
    const answer = call(subscribe, this.listener, 0, undefined);
    answer.then(
      (unsubscribe) => {
        if (signal?.aborted && typeof unsubscribe === "function") unsubscribe();
      },
      () => {},
    );
    return bounded(answer, 0, signal);
  }

  /** The next message; rejects `timeout` after `timeoutMs` (0 = never) or `aborted`. */
  next(timeoutMs, signal) {
    const next = this.queue.length > 0 ? Promise.resolve(this.queue.shift()) : new Promise((resolve) => (this.waiting = resolve));
    return bounded(next, timeoutMs, signal, () => {
      this.waiting = null;
    });
  }
}

// ------------------------------------------------------------------ the network's state

/** Whether the browser says it is offline (navigator.onLine, on the page or in a Worker). */
export function isOffline() {
  return globalThis.navigator?.onLine === false;
}

/** How often the network's state is looked at while offline. */
const ONLINE_POLL_MS = 250;

/**
 * Resolves once the browser is online again; rejects `aborted`. The `online` event ends
 * the wait at once, and navigator.onLine is also looked at every 250 ms: a Worker sees the
 * state change but not always the event (Chromium's offline emulation, for one).
 */
export function waitOnline(signal) {
  if (!isOffline()) return Promise.resolve();
  let onOnline;
  let poll;
  const online = new Promise((resolve) => {
    onOnline = resolve;
    globalThis.addEventListener("online", onOnline);
    poll = setInterval(() => isOffline() || resolve(), ONLINE_POLL_MS);
  });
  return bounded(online, 0, signal, () => {
    globalThis.removeEventListener("online", onOnline);
    clearInterval(poll);
  });
}

// ------------------------------------------------------------------ resume records

/**
 * The resume records, in IndexedDB (the same for the page and chunkup's Worker, which has
 * no localStorage): key → plain object. Rust decides what goes in (src/core/resume.rs).
 * Storage is a convenience, never a reason to fail nor to wait: where it is unavailable
 * (private browsing, a full quota, a blocked database) or does not answer within
 * RECORDS_TIMEOUT_MS (a wedged store: some browsers' IndexedDB never fires any event
 * then), every call answers as if nothing were stored.
 */
const DB_NAME = "chunkup";
const STORE = "resume";
const RECORDS_TIMEOUT_MS = 3000;
let opening = null;

/** Resolves as `promise` (which never rejects), or to `fallback` after RECORDS_TIMEOUT_MS. */
function inTime(promise, fallback) {
  return bounded(promise, RECORDS_TIMEOUT_MS).catch(() => fallback);
}

/**
 * The database, or null where there is none. Each call waits for the opening at most
 * RECORDS_TIMEOUT_MS, without giving up on it: an open that was only slow (a cold profile
 * on a slow device) serves the calls that come after it.
 */
function openRecords() {
  opening ??= new Promise((resolve) => {
    try {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => {
        const db = request.result;
        // Another tab with a newer chunkup upgrades the database: let it, and open it
        // again next time.
        db.onversionchange = () => {
          db.close();
          opening = null;
        };
        resolve(db);
      };
      request.onerror = request.onblocked = () => resolve(null);
    } catch {
      resolve(null);
    }
  });
  return inTime(opening, null);
}

/** Runs `use(store)` in a transaction; resolves to what its request gives, or `fallback`. */
async function withRecords(mode, use, fallback) {
  const db = await openRecords();
  if (!db) return fallback;
  const answer = new Promise((resolve) => {
    try {
      const request = use(db.transaction(STORE, mode).objectStore(STORE));
      request.onsuccess = () => resolve(request.result ?? fallback);
      request.onerror = () => resolve(fallback);
    } catch {
      resolve(fallback);
    }
  });
  return inTime(answer, fallback);
}

/**
 * How long a claim waits for the upload holding the record to let go: a page being reloaded
 * gives its lock back only as it goes, after the new page may have asked for it.
 */
const CLAIM_WAIT_MS = 2000;

/**
 * Claims the record `key` for one upload, across tabs and Workers (a Web Lock): resolves to
 * the function that gives it back, or null if another upload still holds it after
 * CLAIM_WAIT_MS (or `signal` fired first). Where Web Locks are missing or refused (an
 * opaque origin), every claim succeeds.
 */
export function claimRecord(key, signal) {
  const locks = globalThis.navigator?.locks;
  const unlocked = () => {};
  if (typeof locks?.request !== "function") return Promise.resolve(unlocked);
  const giveUp = new AbortController();
  let over = false;
  const granted = new Promise((resolve, reject) => {
    locks
      .request(`chunkup:${key}`, { signal: giveUp.signal }, () =>
        // Held until the upload gives it back; granted after the claim gave up (an engine
        // that ignores `signal`), given back at once.
        over ? undefined : new Promise((release) => resolve(release)),
      )
      .catch(reject);
  });
  granted.catch(() => {}); // its AbortError after the claim gave up is no one's
  const ended = () => {
    over = true;
    giveUp.abort(); // a no-op once granted
  };
  // Timed out or aborted (a failure with a `kind`): no claim; refused by the browser: none
  // is needed.
  return bounded(granted, CLAIM_WAIT_MS, signal, ended).catch((error) => (error?.kind ? null : unlocked));
}

/** The record under `key`, or null. */
export function recordGet(key) {
  return withRecords("readonly", (store) => store.get(key), null);
}

/** Stores `value` under `key`; resolves to whether it was stored. */
export function recordPut(key, value) {
  return withRecords("readwrite", (store) => store.put(value, key), false).then((r) => r !== false);
}

/** Removes the record under `key`. */
export function recordDelete(key) {
  return withRecords("readwrite", (store) => store.delete(key), null);
}

/** Every record's key and `savedAt`: [[key, savedAt or null], ...]. */
export async function recordList() {
  const db = await openRecords();
  if (!db) return [];
  const list = [];
  const listed = new Promise((resolve) => {
    try {
      const cursor = db.transaction(STORE, "readonly").objectStore(STORE).openCursor();
      cursor.onsuccess = () => {
        const at = cursor.result;
        if (!at) return resolve(list);
        list.push([at.key, typeof at.value?.savedAt === "number" ? at.value.savedAt : null]);
        at.continue();
      };
      cursor.onerror = () => resolve(list);
    } catch {
      resolve(list);
    }
  });
  return inTime(listed, list);
}
