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
function bounded(promise, timeoutMs, signal, onEnd = () => {}) {
  if (signal?.aborted) {
    onEnd();
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

/** Bytes asked of the file per read: a few hundred microseconds of hashing. */
const PIECE = 256 * 1024;

/**
 * The byte-counting reader over a Blob: pieces of `blob.slice(offset).stream()` pass
 * through a TransformStream that counts them (progress's `bytesRead`) without copying.
 * Rust (src/web/source.rs) makes one per (re)start of the file stream, and copies each
 * piece into wasm memory before it asks for the next.
 *
 * Memory stays flat because the pieces live in one buffer, reused: where the file's stream
 * is a byte stream (Chromium, Firefox), it is read with a BYOB reader into that buffer, and
 * the piece Rust copied last is handed back to be filled again. A default reader would
 * allocate a new buffer per piece, and a 1 GiB upload would leave a gigabyte of garbage for
 * the collector to catch up with (100 MiB and more of growth, measured). Where BYOB is not
 * offered, the default reader is the fallback.
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
    } catch {
      this.source = null; // not a byte stream here: the default reader, through the counter
      this.reader = stream.pipeThrough(counting).getReader();
      return;
    }
    this.spare = new ArrayBuffer(PIECE);
    this.writer = counting.writable.getWriter();
    this.reader = counting.readable.getReader();
  }

  /** The next piece as a Uint8Array, or null at the end; rejects `aborted` or `read`. */
  read() {
    const next = (this.source ? this.pump() : this.reader.read()).then(
      ({ done, value }) => (done ? null : value),
      (error) => {
        throw failure("read", describe(error));
      },
    );
    return bounded(next, 0, this.signal);
  }

  /** Fills the spare buffer from the file and passes the piece through the counter. */
  async pump() {
    const { done, value } = await this.source.read(new Uint8Array(this.spare, 0, PIECE));
    if (done) return { done };
    // The counter's readable side holds nothing back (high-water mark 0): read as we write.
    this.writer.write(value).catch(() => {});
    const piece = await this.reader.read();
    // Rust copies this piece before asking for the next: its memory is the next spare.
    this.spare = piece.value.buffer;
    return piece;
  }

  /** Stops reading the file; never throws. */
  cancel() {
    this.source?.cancel().catch(() => {});
    this.reader.cancel().catch(() => {});
  }
}

// ------------------------------------------------------------------ sending requests

/**
 * One request on its way. `next()` resolves to a number (body bytes sent so far, for a
 * request with upload progress) or to the answer `[status, [name, value, name, value...]]`;
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
    (response) => [response.status, headerPairs(response.headers)],
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
  const finish = (event, failed) => {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    exchange.cancel = () => {};
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
    else finish([xhr.status, parseHeaders(xhr.getAllResponseHeaders())]);
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

  /** The next message; rejects `timeout` after `timeoutMs` (0 = never) or `aborted`. */
  next(timeoutMs, signal) {
    const next = this.queue.length > 0 ? Promise.resolve(this.queue.shift()) : new Promise((resolve) => (this.waiting = resolve));
    return bounded(next, timeoutMs, signal, () => {
      this.waiting = null;
    });
  }
}
