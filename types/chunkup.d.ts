/** How long to wait between retries; retries reset whenever the server's offset advances. */
export interface RetryOptions {
  /** Retries allowed in a row without progress. Default 8. */
  attempts?: number;
  /** First backoff ceiling in ms; it doubles each retry (full jitter). Default 500. */
  baseDelayMs?: number;
  /** No wait is longer, not even one asked for by `Retry-After`. Default 30000. */
  maxDelayMs?: number;
}

/**
 * What a `headers()` or `target()` call is told: `refresh` is true (with the refusing
 * `status`) right after the server refused the credentials (401; for tus and range also
 * 403), so that a token provider that caches its token knows to fetch a new one.
 */
export interface CredentialsContext {
  refresh: boolean;
  /** With `refresh: true`: the status of the refusal. */
  status?: number;
}

/** Request headers, or a (possibly async) function called before every request. */
export type HeadersOption =
  | Record<string, string>
  | ((context: CredentialsContext) => Record<string, string> | Promise<Record<string, string>>);

/** What a `target()` callback returns: where the next attempt goes, and its headers. */
export interface UploadTarget {
  /** An absolute http(s) URL, e.g. a freshly presigned one. */
  url: string;
  /** Headers to send exactly as given (they replace `options.headers`). */
  headers?: Record<string, string>;
}

/** The upload protocols. */
export type UploadProtocol = "tus" | "put" | "range" | "s3";

/** The multipart upload a store created: every hook after the first receives it. */
export interface MultipartUpload {
  uploadId: string;
  key: string;
}

/**
 * `s3`: the widget's backend, which holds the storage credentials, reached through five
 * hooks (named as in Uppy's S3 plugin), each taking one object. They are called on the
 * page (also when the upload runs in chunkup's Worker); one that throws or rejects is
 * retried like a network error, one that answers with something unusable fails the upload
 * with `hook_failed`.
 */
export interface S3Hooks {
  /** Starts a multipart upload (`metadata` is `options.metadata`). */
  createMultipartUpload(file: { name: string; type: string; size: number; metadata: Record<string, string> }): Promise<MultipartUpload>;
  /**
   * Presigns part `partNumber` (1-based) of `size` bytes. `checksumSHA256` is the base64
   * SHA-256 of the part, computed before this call: sign it into the URL's query
   * (`x-amz-checksum-sha256`, the AWS SDK presigner's default) or as a header returned in
   * `headers`, and the store verifies every part. The part is sent by a PUT with exactly
   * these headers (chunkup adds none); an expired URL (AWS: 403; Garage: 400
   * `InvalidRequest` "Date is too old") makes chunkup ask again, as does every retry of a part.
   */
  signPart(part: MultipartUpload & { partNumber: number; size: number; checksumSHA256: string }): Promise<{ url: string; headers?: Record<string, string> }>;
  /**
   * The parts the store holds (for resuming), or null when the store no longer knows the
   * upload (S3's `NoSuchUpload`): chunkup then aborts it and creates a new one at once.
   */
  listParts(upload: MultipartUpload): Promise<{ partNumber: number; size: number; etag: string }[] | null>;
  /** Completes the upload from its parts, in order; `location` is the object's URL. */
  completeMultipartUpload(upload: MultipartUpload & { parts: { partNumber: number; etag: string; checksumSHA256: string }[] }): Promise<{ location: string }>;
  /** Aborts the upload (called after `signal` aborted it). */
  abortMultipartUpload(upload: MultipartUpload): Promise<unknown>;
}

/**
 * The options of {@link uploadFile}. Unknown option names, and options the chosen protocol
 * would ignore, are rejected. `null` counts as not given.
 */
export interface UploadOptions {
  /**
   * `tus`: the creation URL; `put`: the presigned URL; `range`: the session URI (required
   * for these three). `s3`: optional, it only names the destination of resume records.
   * Absolute or relative to the page, http(s), without user name or password.
   */
  endpoint?: string;
  /** `"tus"` (default), `"put"` (one presigned PUT), `"range"` (Content-Range session) or `"s3"` (multipart through presigned part URLs). */
  protocol?: UploadProtocol;
  /**
   * `tus`, `range`: bytes per request (a whole number >= 1; `range`: a multiple of 256 KiB).
   * `s3`: the part size, at least 5 MiB (the last part may be smaller), grown so that no
   * file needs more than 10,000 parts, and at most 5 GiB. Default 8 MiB.
   */
  chunkSize?: number;
  /** `s3`: the widget's backend's hooks; required for `s3`. */
  s3?: S3Hooks;
  /** `s3`: parts in flight at once, 1 to 16 (default 4); 1 sends one part after the other. */
  parallelUploads?: number;
  /** `s3`: continue this multipart upload (`listParts` says which parts the store holds; only the others are sent). */
  s3Upload?: MultipartUpload;
  /** `tus`, `put`, `range`: extra request headers (e.g. Authorization); never included in errors or logs. Refused with `s3`, whose part requests carry exactly the signer's headers. */
  headers?: HeadersOption | Headers | Map<string, string>;
  /** `tus`: `Upload-Metadata` entries (`filename` and `filetype` are added from the file); `s3`: `createMultipartUpload`'s `metadata`. */
  metadata?: Record<string, string>;
  /** `tus`: the `filename` metadata; `s3`: `createMultipartUpload`'s `name`. Default `file.name`, or `"blob"` for a Blob. */
  filename?: string;
  /** `put`: the default Content-Type, `file.type` if not given (none if empty); a Content-Type among the headers wins. */
  contentType?: string;
  /** `put`: called before every attempt for a fresh `{ url, headers }`; an expired URL (403; Garage: 400 `InvalidRequest`) is then retried too. Not with `headers`. */
  target?: (context: CredentialsContext) => UploadTarget | Promise<UploadTarget>;
  /**
   * `tus`, `range`, `s3`: continue an upload after a reload or a crash (default `true`).
   * Before creating an upload, a stored record of the same File (name, size, last modified)
   * to the same endpoint (`s3`: the same `endpoint` or none) is looked for; the server is
   * asked how much it holds (`s3`: `listParts`), that part is re-read and hashed locally
   * (not sent again), and the rest is uploaded. Records are kept
   * in IndexedDB under a hash of the file's identity (never its name), hold the upload's
   * URL (`s3`: the multipart upload's id, key and part size) and size (never a header or
   * token), and are removed on success and on abort.
   * `{ maxRecords, maxAgeMs }` bound them (defaults 100 and 24 hours; 1 to 10000 records,
   * 1 ms to 31 days). `false` turns it
   * off. `put` cannot resume: `resume` is refused with it unless `false`.
   */
  resume?: boolean | { maxRecords?: number; maxAgeMs?: number };
  /** `tus`: continue this upload (its URL, e.g. an earlier `result.url` or progress `url`) instead of creating one. One the server no longer knows or refuses (as for a resume record, see `resume`: a 404 or 410 to its `HEAD`, say, or a 401 or 403 that fresh credentials do not lift) is replaced by a new upload at `endpoint`. */
  uploadUrl?: string;
  /** Also compute the file's MD5 (`result.md5`). Default false. */
  md5?: boolean;
  /** Aborts the upload: in-flight request, file read and backoff sleep. */
  signal?: AbortSignal;
  /**
   * Where the work runs. `true` (default): in chunkup's own dedicated Worker, started on
   * first use and ended when idle; where a Worker cannot start (a Content-Security-Policy
   * without `worker-src` for the package, a browser without module Workers) the upload runs
   * on the page instead. `false`: on the page, yielding to the event loop every few
   * milliseconds. Callbacks (`onProgress`, `headers`, `target`) run on the page either way.
   */
  worker?: boolean;
  /** Retry schedule (attempts 0-1000, delays 0-3600000 ms). */
  retry?: RetryOptions;
  /** Minimum ms between progress calls (phase changes, chunk acknowledgements and the final call always go out). Default 100. */
  progressIntervalMs?: number;
  /**
   * A request or a headers/target callback with no answer after this many ms fails with
   * `timeout` and is retried; 0 = never. Default 120000, at most 86400000. For `tus` and
   * `range` it covers the body too; for `put` it is an idle timeout that restarts whenever
   * body bytes leave.
   */
  timeoutMs?: number;
}

/**
 * Where an upload is: `resuming` (re-reading locally the part a continued upload already
 * has on the server), `retrying` (waiting `retryInMs`), `offline` (waiting for the browser
 * to be online; no retry is spent), `verifying` (`attachFile`: the server checks the file).
 */
export type UploadPhase = "starting" | "resuming" | "uploading" | "retrying" | "offline" | "verifying" | "done";

/** One chunk the server acknowledged. */
export interface UploadedChunk {
  /** 0-based position in `result.chunks`. */
  index: number;
  /** Byte offset of the chunk in the file. */
  offset: number;
  /** Length in bytes. Chunks are `chunkSize` long except the last and, after a connection broke mid-chunk on a server without checksums, the part the server kept. */
  length: number;
  /** Lower-case hex SHA-256 of the chunk's bytes. */
  sha256: string;
  /** Retries since the previous chunk was acknowledged (chunk 0 includes those spent starting). `s3`: the retries of this part's PUT and its signatures; those of `createMultipartUpload`, `listParts` and `completeMultipartUpload` are in no chunk, only in `retries`. */
  retries: number;
}

/** The object passed to `onProgress`. */
export interface UploadProgress {
  phase: UploadPhase;
  /** Bytes that have passed through the counting stream, as a position in the file (goes back when a retry re-reads). */
  bytesRead: number;
  /** Bytes the server acknowledged. Never decreases. */
  bytesUploaded: number;
  /** Bytes handed to the network: byte by byte for `put` and each `s3` part, else equal to `bytesUploaded`. Goes back when a `put` restarts or an `s3` part's PUT fails. */
  bytesSent: number;
  bytesTotal: number;
  /** `max(bytesUploaded, bytesSent) / bytesTotal * 100`; never decreases; below 100 until confirmed, exactly 100 on the final call. */
  percent: number;
  /** Smoothed rate (about 3 s time constant) of bytes acknowledged, or of bytes sent where the browser reports them as they leave (`put`, `s3` parts, `attachFile`). */
  bytesPerSecond: number;
  /** Seconds left at the smoothed rate; `null` until a rate is known. */
  etaSeconds: number | null;
  /** The chunk being worked on (0-based); `s3`: the parts finished so far (several are in flight). Equals `chunkCount` on the final call. */
  chunkIndex: number;
  /** How many chunks the upload will have, as planned now. */
  chunkCount: number;
  /** Failures in a row plus one: 1 until something fails, back to 1 when the offset advances. */
  attempt: number;
  /** Retries so far over the whole upload. */
  retries: number;
  /** While `phase` is `"retrying"`, the wait in ms; otherwise `null`. */
  retryInMs: number | null;
  /** Set on the call made when a chunk was acknowledged; otherwise `null`. */
  chunk: UploadedChunk | null;
  /** The upload's URL on the server once it was created (`put`: once the PUT succeeded; `s3`: only on the final call), else `null`. */
  url: string | null;
}

/** What {@link uploadFile} resolves to. */
export interface UploadResult {
  /** The upload's URL on the server (s3: the object's `location`; `put` with `target`: the URL `target()` gave last): for `put`, `range` and `s3` without its query (which may hold credentials); for `tus` the `Location` with its query (continuing it with `uploadUrl` needs all of it), made absolute if the server gave a relative one. */
  url: string;
  size: number;
  /** Lower-case hex SHA-256 of the whole file. */
  sha256: string;
  /** Lower-case hex MD5 of the whole file when `md5: true`, else null. */
  md5: string | null;
  /** The acknowledged chunks, in order; they cover the file exactly. */
  chunks: UploadedChunk[];
  /** Retries over the whole upload. */
  retries: number;
  durationMs: number;
  protocol: UploadProtocol;
  /** The algorithm the server verified every chunk with (tus `Upload-Checksum`; s3: every part sent signed with `x-amz-checksum-sha256`, and at least one sent), or `null`. */
  checksum: "sha256" | null;
  /** Bytes the server already held when this upload continued an earlier one (0 when it started afresh); they were re-read and hashed, not sent again. */
  resumedFrom: number;
}

/**
 * The stable `error.code` values:
 * - `invalid_input`: bad arguments or options, or a file larger than the server accepts; nothing was uploaded.
 * - `http_status`: the server answered with a status that cannot be retried (`status` says which).
 * - `network`: no HTTP answer (offline, reset, CORS); always retried, so seen as a `cause` of `retries_exhausted`. `attachFile`: also at once when `session.send` throws.
 * - `timeout`: no answer within `timeoutMs`; likewise. `attachFile`: also at once when `session.send`'s promise does not settle within `eventTimeoutMs`.
 * - `retries_exhausted`: `retry.attempts` retries in a row without progress; `cause` is the last error.
 * - `checksum_mismatch`: the server received a chunk corrupted (tus 460; s3: 400 `BadDigest`/`InvalidDigest`); appears as a `cause`.
 * - `aborted`: `options.signal` fired; the partial upload was deleted where the server allows it.
 * - `read_failed`: the file could not be read (removed, changed, permission revoked).
 * - `headers_failed`: the `headers` or `target` function threw or returned something unusable, or a header name or value is invalid (one that never settles is a `timeout`).
 * - `hook_failed`: an `s3` hook answered with something unusable (as `cause` of `retries_exhausted`: one that kept throwing, rejecting or not answering within `timeoutMs`).
 * - `unauthorized`: the server refused the credentials (401; tus and range also 403) twice in a row for the same request, the second time right after `headers({ refresh: true })`; or at once when `headers` is fixed.
 * - `protocol`: the server broke the upload protocol (a missing header, an impossible offset such as one beyond the bytes sent, a success that kept nothing or came before the last byte was sent), or the browser refused to build or send a request.
 * - `worker_failed`: chunkup's Worker stopped during the call (it crashed, or its wasm failed and it was ended); retryable: the next call starts a new Worker, and an upload continues from its resume record.
 */
export type UploadErrorCode =
  | AttachmentErrorCode
  | "invalid_input"
  | "http_status"
  | "network"
  | "timeout"
  | "retries_exhausted"
  | "checksum_mismatch"
  | "aborted"
  | "read_failed"
  | "headers_failed"
  | "hook_failed"
  | "unauthorized"
  | "protocol"
  | "worker_failed";

/**
 * Web-messaging attachment refusals ({@link attachFile}, {@link validateAttachment}); their
 * `message` is written for the customer:
 * - `file_empty`, `attachments_disabled`, `file_extension_blocked`: by the session's rules, before any traffic.
 * - `file_type_invalid` (4001), `file_size_invalid` (4002): by the rules, or by the server.
 * - `file_content_invalid` (4003), `file_name_invalid` (4004), `file_name_too_long` (4005).
 * - `session_expired` (4006), `session_not_found` (4007).
 * - `attachment_expired` (4008), `attachment_not_found` (4009), `attachment_not_uploaded` (4010): after fresh-URL retries.
 * - `too_many_requests` (4029): still rate limited after `retry.attempts` waits.
 * - `feature_unavailable` (4000), `missing_parameter` (4020).
 * - `unexpected` (5000 and unknown codes); `no_response`: no server answer within `eventTimeoutMs`.
 */
export type AttachmentErrorCode =
  | "file_empty"
  | "attachments_disabled"
  | "file_extension_blocked"
  | "file_type_invalid"
  | "file_size_invalid"
  | "file_content_invalid"
  | "file_name_invalid"
  | "file_name_too_long"
  | "session_expired"
  | "session_not_found"
  | "attachment_expired"
  | "attachment_not_found"
  | "attachment_not_uploaded"
  | "too_many_requests"
  | "feature_unavailable"
  | "missing_parameter"
  | "unexpected"
  | "no_response";

/** The `Error` chunkup rejects with (`name` is `"ChunkupError"`). */
export interface ChunkupError extends Error {
  code: UploadErrorCode;
  /** For attachment errors from the server: the guest API's code (4001...5000). */
  serverCode?: number;
  /** The HTTP status behind the error, when there is one. */
  status?: number;
  /** Whether trying the same call again later may succeed. `false` for `retries_exhausted`, whose retries are spent: its `cause.retryable` says whether the failure itself may pass. */
  retryable: boolean;
  /** For `retries_exhausted`: the last error. */
  cause?: ChunkupError;
}

/**
 * Uploads a file (any Blob) with tus 1.0 (chunks), a presigned PUT (`put`) or a
 * Content-Range session (`range`), hashing every chunk with SHA-256, retrying through rate
 * limits, server errors and dropped connections, and reporting progress.
 * Rejects with a {@link ChunkupError}.
 */
export function uploadFile(
  file: Blob,
  onProgress: ((progress: UploadProgress) => void) | null | undefined,
  options: UploadOptions,
): Promise<UploadResult>;

/** Options of {@link sha256File}. */
export interface HashOptions {
  /** Stops the hashing; the promise rejects with `aborted`. */
  signal?: AbortSignal;
  /** As {@link UploadOptions.worker}: in chunkup's Worker (default) or on the page. */
  worker?: boolean;
}

/**
 * The lower-case hex SHA-256 of a Blob or File, read through the same stream and Rust
 * hasher that uploads use. Rejects with a {@link ChunkupError} (`invalid_input`,
 * `read_failed`, `aborted`, and in the Worker `worker_failed`).
 */
export function sha256File(file: Blob, options?: HashOptions): Promise<string>;

/**
 * The widget's web-messaging (Genesys Cloud guest API) session, as chunkup needs it. The
 * widget owns the WebSocket; chunkup sends requests through `send` and reads every incoming
 * envelope through `subscribe`.
 */
export interface GuestSession {
  /** The session token sent in every guest request. */
  token: string;
  /** Sends one guest request (an object to JSON-serialise onto the socket). A returned promise is awaited; a throw or rejection fails the attachment with `network`. */
  send(message: object): void | Promise<void>;
  /** Calls `listener` with every incoming envelope (object or JSON text); returns an unsubscribe function (or a promise of one). */
  subscribe(listener: (message: object | string) => void): (() => void) | Promise<() => void>;
  /** The body of the `SessionResponse`: its `allowedMedia` and `blockedExtensions` are checked first. */
  sessionResponse?: object;
}

/** Options of {@link attachFile}. */
export interface AttachOptions {
  /** As {@link UploadOptions.worker}: the flow runs in chunkup's Worker (default) and calls the session's `send` and `subscribe` on the page through messages, or runs on the page. */
  worker?: boolean;
  /** Cancels the upload; the attachment is then deleted (`deleteAttachment`). */
  signal?: AbortSignal;
  /** Send the file's MD5 as `fileMd5` (read once more before asking for the URL). */
  md5?: boolean;
  /** Retries of the PUT, and how many rate-limit waits (4029) to accept. */
  retry?: RetryOptions;
  /** Idle timeout of the PUT (restarts whenever body bytes leave). Default 120000. */
  timeoutMs?: number;
  /** How long each answer on the socket (the URL, the verdict), and a `session.send` that returns a promise, may take: beyond it the attachment fails with `no_response` (an answer) or `timeout` (a send). Default 60000; 0 = for ever. */
  eventTimeoutMs?: number;
  /** Minimum ms between progress calls. Default 100. */
  progressIntervalMs?: number;
}

/** What {@link attachFile} resolves to once the server confirmed the upload. */
export interface AttachResult {
  attachmentId: string;
  /** From `UploadSuccessEvent`. */
  downloadUrl: string;
  /** Lower-case hex SHA-256 of the file. */
  sha256: string;
  /** Lower-case hex MD5 when `md5: true`, else null. */
  md5: string | null;
  size: number;
  fileName: string;
  fileType: string;
  /** Retries of the PUT that succeeded (the 4029 waits, fresh-URL restarts and the retries of PUTs given up for a fresh URL are not counted). */
  retries: number;
}

/**
 * Sends a file as a web-messaging attachment: checks it against the session's rules (no
 * traffic if refused), asks for a presigned URL (`onAttachment`, waiting out 4029 rate
 * limits), PUTs the file with byte-level progress, and waits for `UploadSuccessEvent`. An
 * expired URL or upload is retried with a fresh URL; an abort sends `deleteAttachment`.
 */
export function attachFile(
  session: GuestSession,
  file: Blob,
  onProgress: ((progress: UploadProgress) => void) | null | undefined,
  options?: AttachOptions,
): Promise<AttachResult>;

/** The check {@link attachFile} makes first: `null` if the file may be sent, else the error. */
export function validateAttachment(sessionResponse: object | null | undefined, file: Blob): ChunkupError | null;

/** The `onMessage` request carrying `text` and the attachments (send it with `session.send`). */
export function buildAttachmentMessage(token: string, text: string, attachmentIds: string[]): object;
