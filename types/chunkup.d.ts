/** How long to wait between retries; retries reset whenever the server's offset advances. */
export interface RetryOptions {
  /** Retries allowed in a row without progress. Default 8. */
  attempts?: number;
  /** First backoff ceiling in ms; it doubles each retry (full jitter). Default 500. */
  baseDelayMs?: number;
  /** No wait is longer, not even one asked for by `Retry-After`. Default 30000. */
  maxDelayMs?: number;
}

/** Request headers, or a (possibly async) function called before every request. */
export type HeadersOption =
  | Record<string, string>
  | (() => Record<string, string> | Promise<Record<string, string>>);

/** The options of {@link uploadFile}. Unknown option names are rejected. */
export interface UploadOptions {
  /** The tus 1.0 creation URL, absolute or relative to the page. Required. */
  endpoint: string;
  /** The upload protocol. Only `"tus"` (the default) for now. */
  protocol?: "tus";
  /** Bytes per request (a whole number >= 1). Default 8 MiB (8388608). */
  chunkSize?: number;
  /** Extra request headers (e.g. Authorization); never included in errors or logs. */
  headers?: HeadersOption;
  /** tus `Upload-Metadata` entries. `filename` and `filetype` are added from the file. */
  metadata?: Record<string, string>;
  /** The `filename` metadata; default `file.name`, or `"blob"` for a Blob. */
  filename?: string;
  /** Aborts the upload: in-flight request, file read and backoff sleep. */
  signal?: AbortSignal;
  /** Retry schedule. */
  retry?: RetryOptions;
  /** Minimum ms between progress calls (phase changes, chunk acknowledgements and the final call always go out). Default 100. */
  progressIntervalMs?: number;
  /** A request with no answer after this many ms fails with `timeout` and is retried; 0 = never. Default 120000. */
  timeoutMs?: number;
}

/** Where an upload is. */
export type UploadPhase = "starting" | "uploading" | "retrying" | "done";

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
  /** Retries spent before the server acknowledged it. */
  retries: number;
}

/** The object passed to `onProgress`. */
export interface UploadProgress {
  phase: UploadPhase;
  /** Bytes that have passed through the counting stream, as a position in the file (goes back when a retry re-reads). */
  bytesRead: number;
  /** Bytes the server acknowledged. Never decreases. */
  bytesUploaded: number;
  bytesTotal: number;
  /** `bytesUploaded / bytesTotal * 100`; exactly 100 on the final call. */
  percent: number;
  /** Smoothed rate of acknowledged bytes (about 3 s time constant). */
  bytesPerSecond: number;
  /** Seconds left at the smoothed rate; `null` until a rate is known. */
  etaSeconds: number | null;
  /** The chunk being worked on (0-based). */
  chunkIndex: number;
  /** How many chunks the upload will have, as planned now. */
  chunkCount: number;
  /** Try number of the current request: 1, then 2 after its first retry... */
  attempt: number;
  /** Retries so far over the whole upload. */
  retries: number;
  /** While `phase` is `"retrying"`, the wait in ms; otherwise `null`. */
  retryInMs: number | null;
  /** Set on the call made when a chunk was acknowledged; otherwise `null`. */
  chunk: UploadedChunk | null;
  /** The upload's URL on the server once it was created, else `null`. */
  url: string | null;
}

/** What {@link uploadFile} resolves to. */
export interface UploadResult {
  /** The upload's URL on the server. */
  url: string;
  size: number;
  /** Lower-case hex SHA-256 of the whole file. */
  sha256: string;
  /** The acknowledged chunks, in order; they cover the file exactly. */
  chunks: UploadedChunk[];
  /** Retries over the whole upload. */
  retries: number;
  durationMs: number;
  protocol: "tus";
  /** The algorithm the server verified every chunk with (`Upload-Checksum`), or `null`. */
  checksum: "sha256" | null;
}

/**
 * The stable `error.code` values:
 * - `invalid_input`: bad arguments or options, or a file larger than the server accepts; nothing was uploaded.
 * - `http_status`: the server answered with a status that cannot be retried (`status` says which).
 * - `network`: no HTTP answer (offline, reset, CORS); retried before it is ever thrown.
 * - `timeout`: no answer within `timeoutMs`; retried before it is ever thrown.
 * - `retries_exhausted`: `retry.attempts` retries in a row without progress; `cause` is the last error.
 * - `checksum_mismatch`: the server received a chunk corrupted (tus 460); appears as a `cause`.
 * - `aborted`: `options.signal` fired; the partial upload was deleted where the server allows it.
 * - `read_failed`: the file could not be read (removed, changed, permission revoked).
 * - `headers_failed`: the `headers` function threw or returned something that is not an object of strings.
 * - `protocol`: the server broke the upload protocol (a missing header, an impossible offset).
 */
export type UploadErrorCode =
  | "invalid_input"
  | "http_status"
  | "network"
  | "timeout"
  | "retries_exhausted"
  | "checksum_mismatch"
  | "aborted"
  | "read_failed"
  | "headers_failed"
  | "protocol";

/** The `Error` {@link uploadFile} rejects with (`name` is `"ChunkupError"`). */
export interface ChunkupError extends Error {
  code: UploadErrorCode;
  /** The HTTP status behind the error, when there is one. */
  status?: number;
  /** Whether trying again later may succeed. */
  retryable: boolean;
  /** For `retries_exhausted`: the last error. */
  cause?: ChunkupError;
}

/**
 * Uploads a file (any Blob) in chunks over tus 1.0, hashing every chunk with SHA-256,
 * retrying through rate limits, server errors and dropped connections, and reporting progress.
 * Rejects with a {@link ChunkupError}.
 */
export function uploadFile(
  file: Blob,
  onProgress: ((progress: UploadProgress) => void) | null | undefined,
  options: UploadOptions,
): Promise<UploadResult>;

/**
 * The lower-case hex SHA-256 of a Blob or File, read through the same stream and Rust
 * hasher that uploads use. Rejects with a {@link ChunkupError} (`invalid_input`, `read_failed`).
 */
export function sha256File(file: Blob): Promise<string>;
