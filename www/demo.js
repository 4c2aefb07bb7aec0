// chunkup demo page. Plain ES module, no bundler.
//
// Loads the wasm-pack (--target web) package from ./pkg/chunkup.js, which the
// reference server serves at /pkg/. Everything is local to this module; the
// only global is window.__lastResult (the last successful result, for tests).

const $ = (id) => document.getElementById(id);

const els = {
  file: $("file"),
  drop: $("drop"),
  fileInfo: $("file-info"),
  start: $("start"),
  abort: $("abort"),
  faults: $("faults"),
  faultsState: $("faults-state"),
  faultsNote: $("faults-note"),
  chunkSize: $("chunk-size"),
  endpoint: $("endpoint"),
  endpointField: $("endpoint-field"),
  protocol: $("protocol"),
  parallel: $("parallel"),
  parallelField: $("parallel-field"),
  progress: $("progress"),
  percent: $("percent"),
  phase: $("phase"),
  bytes: $("bytes"),
  speed: $("speed"),
  eta: $("eta"),
  chunk: $("chunk"),
  attempt: $("attempt"),
  retries: $("retries"),
  retryIn: $("retry-in"),
  status: $("status"),
  error: $("error"),
  result: $("result"),
  clientSha: $("client-sha256"),
  serverSha: $("server-sha256"),
  verdict: $("verdict"),
  uploadUrl: $("upload-url"),
  checksum: $("checksum"),
  chunks: $("chunks"),
  chunksEmpty: $("chunks-empty"),
};

const FAULT_SPEC = "429:0.15,500:0.05,503:0.05,reset:0.1";
const FAULTS_URL = "/__faults";
const MiB = 1024 * 1024;

let uploadFile = null; // set once the package has loaded
let selected = null; // the File to upload
let controller = null; // AbortController of the upload in flight
let lastStatus = "";
let resumedAt = null; // percent at which the upload in flight continued an earlier one

// ---------------------------------------------------------------- formatting

const intFmt = new Intl.NumberFormat("en-US");

function formatBytes(n) {
  if (!Number.isFinite(n)) return "–";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function formatSpeed(bytesPerSecond) {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "–";
  return `${(bytesPerSecond / 1e6).toFixed(2)} MB/s`;
}

function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

const shortHash = (hex) => (hex && hex.length > 16 ? `${hex.slice(0, 12)}…` : hex || "–");

// ---------------------------------------------------------------- status

function setStatus(text) {
  // aria-live region: only touch it when the text changes, so screen readers
  // are not flooded by the ~10 progress callbacks per second.
  if (text === lastStatus) return;
  lastStatus = text;
  els.status.textContent = text;
}

function showError(err) {
  els.error.replaceChildren();
  if (!err) return;
  const code = document.createElement("strong");
  code.className = "error-code";
  code.textContent = err.code || err.name || "error";
  const msg = document.createElement("span");
  msg.textContent = ` ${err.message || String(err)}`;
  els.error.append(code, msg);
  const extra = [];
  if (err.status != null) extra.push(`HTTP ${err.status}`);
  if (typeof err.retryable === "boolean") extra.push(err.retryable ? "retryable" : "not retryable");
  if (err.cause?.code) {
    extra.push(`last error: ${err.cause.code}${err.cause.status != null ? ` ${err.cause.status}` : ""}`);
  }
  if (extra.length) {
    const small = document.createElement("span");
    small.className = "error-extra";
    small.textContent = ` (${extra.join(", ")})`;
    els.error.append(small);
  }
}

function setPhase(phase) {
  els.phase.textContent = phase;
  els.phase.dataset.phase = phase;
}

function setBusy(busy) {
  els.start.disabled = busy || !selected || !uploadFile;
  els.abort.disabled = !busy;
  els.chunkSize.disabled = busy;
  els.endpoint.disabled = busy;
  els.protocol.disabled = busy;
  els.parallel.disabled = busy;
  els.file.disabled = busy;
  els.drop.classList.toggle("disabled", busy);
  document.body.classList.toggle("busy", busy);
}

// ---------------------------------------------------------------- file choice

function selectFile(file) {
  if (!file) return;
  if (controller) {
    setStatus("An upload is in progress; abort it first.");
    return;
  }
  selected = file;
  els.fileInfo.textContent = `${file.name || "blob"} · ${formatBytes(file.size)}`;
  els.start.disabled = !uploadFile;
  setStatus(uploadFile ? `Ready to upload ${file.name || "the file"}.` : lastStatus);
}

els.file.addEventListener("change", () => selectFile(els.file.files?.[0]));

els.drop.addEventListener("dragenter", (e) => {
  e.preventDefault();
  if (!controller) els.drop.classList.add("over");
});
els.drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  e.dataTransfer.dropEffect = controller ? "none" : "copy";
});
els.drop.addEventListener("dragleave", (e) => {
  if (!els.drop.contains(e.relatedTarget)) els.drop.classList.remove("over");
});
els.drop.addEventListener("drop", (e) => {
  e.preventDefault();
  els.drop.classList.remove("over");
  selectFile(e.dataTransfer.files?.[0]);
});
// Keep the browser from opening files dropped next to the zone.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

// ---------------------------------------------------------------- progress

const rows = new Map(); // chunk index -> <tr>

function chunkRow(c) {
  let tr = rows.get(c.index);
  if (!tr) {
    tr = document.createElement("tr");
    for (let i = 0; i < 5; i += 1) tr.append(document.createElement("td"));
    tr.cells[0].className = "num";
    tr.cells[1].className = "num";
    tr.cells[2].className = "num";
    tr.cells[4].className = "num";
    // Keep rows ordered by index even if they arrive out of order.
    const after = [...rows.keys()].filter((k) => k > c.index).sort((a, b) => a - b)[0];
    els.chunks.insertBefore(tr, after === undefined ? null : rows.get(after));
    rows.set(c.index, tr);
    els.chunksEmpty.hidden = true;
  }
  tr.cells[0].textContent = String(c.index);
  tr.cells[1].textContent = intFmt.format(c.offset);
  tr.cells[2].textContent = intFmt.format(c.length);
  const code = document.createElement("code");
  code.textContent = shortHash(c.sha256);
  code.title = c.sha256 || "";
  tr.cells[3].replaceChildren(code);
  tr.cells[4].textContent = String(c.retries ?? 0);
  tr.classList.toggle("retried", (c.retries ?? 0) > 0);
}

function onProgress(p) {
  try {
    const pct = Math.max(0, Math.min(100, Number(p.percent) || 0));
    els.progress.value = pct;
    els.progress.textContent = `${pct.toFixed(1)}%`;
    els.percent.textContent = `${pct.toFixed(1)}%`;
    setPhase(p.phase);
    els.bytes.textContent = `${formatBytes(p.bytesUploaded)} of ${formatBytes(p.bytesTotal)}`;
    els.speed.textContent = formatSpeed(p.bytesPerSecond);
    els.eta.textContent = p.phase === "done" ? "–" : formatDuration(p.etaSeconds);
    els.chunk.textContent = p.chunkCount
      ? `${Math.min(p.chunkIndex + 1, p.chunkCount)} of ${p.chunkCount}`
      : "–";
    els.attempt.textContent = String(p.attempt ?? "–");
    els.retries.textContent = String(p.retries ?? 0);
    els.retryIn.textContent =
      p.phase === "retrying" && p.retryInMs != null ? `${(p.retryInMs / 1000).toFixed(1)} s` : "–";
    if (p.chunk) chunkRow(p.chunk);

    if (p.phase === "retrying") {
      const wait = p.retryInMs != null ? ` in ${(p.retryInMs / 1000).toFixed(1)} s` : "";
      setStatus(`Retrying chunk ${p.chunkIndex + 1}${wait} (attempt ${p.attempt}).`);
    } else if (p.phase === "resuming") {
      resumedAt ??= pct;
      setStatus(`Resumed at ${Math.floor(resumedAt)} %: the server already holds ${formatBytes(p.bytesUploaded)}; re-reading that part to hash it (nothing is sent again)…`);
    } else if (p.phase === "offline") {
      setStatus("Offline: waiting for the network to come back (no retry is spent meanwhile)…");
    } else if (p.phase === "starting") {
      setStatus("Creating the upload…");
    } else if (p.phase === "uploading") {
      const resumed = resumedAt != null ? ` (resumed at ${Math.floor(resumedAt)} %)` : "";
      // Once per upload, not per chunk: the status is announced to screen readers (the
      // chunk being sent is in the table above).
      setStatus(`Uploading ${p.chunkCount} ${p.chunkCount === 1 ? "chunk" : "chunks"}…${resumed}`);
    }
  } catch (err) {
    console.error("progress display failed", err);
  }
}

// ---------------------------------------------------------------- upload

function resetView() {
  resumedAt = null;
  showError(null);
  rows.clear();
  els.chunks.replaceChildren();
  els.chunksEmpty.hidden = false;
  els.result.hidden = true;
  els.clientSha.textContent = "";
  els.serverSha.textContent = "";
  els.serverSha.title = "";
  els.verdict.textContent = "";
  delete els.verdict.dataset.verdict;
  els.uploadUrl.textContent = "";
  els.checksum.textContent = "";
  els.progress.removeAttribute("value"); // indeterminate until the first event
  els.percent.textContent = "0%";
  for (const el of [els.bytes, els.speed, els.eta, els.chunk, els.attempt, els.retries, els.retryIn]) {
    el.textContent = "–";
  }
  setPhase("starting");
}

/**
 * S3 mode: the reference server plays the widget's backend, which holds the store's
 * credentials and signs every part (rusty-s3); these hooks only call it. `lastKey` is the
 * object key of the upload in flight, to check the stored object afterwards.
 */
let lastKey = null;
const backend = (path) => async (body) => {
  const res = await fetch(`/s3/multipart${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw Object.assign(new Error(`the backend answered ${res.status} to ${path || "create"}`), { status: res.status });
  return res.json();
};
const s3Hooks = {
  createMultipartUpload: async (file) => {
    const created = await backend("")(file);
    lastKey = created.key;
    return created;
  },
  signPart: backend("/sign"),
  listParts: async (upload) => {
    lastKey = upload.key;
    // A store that no longer knows the upload (404 NoSuchUpload): null, and chunkup starts
    // a new one at once.
    return backend("/list")(upload).catch((error) => {
      if (error.status === 404) return null;
      throw error;
    });
  },
  completeMultipartUpload: backend("/complete"),
  abortMultipartUpload: backend("/abort"),
};

function showProtocol() {
  const s3 = els.protocol.value === "s3";
  els.endpointField.hidden = s3;
  els.parallelField.hidden = !s3;
  // S3 parts are at least 5 MiB.
  for (const option of els.chunkSize.options) option.disabled = s3 && Number(option.value) < 5;
  if (s3 && Number(els.chunkSize.value) < 5) els.chunkSize.value = "8";
  // The parts go from the browser to the store: the server's faults never reach them.
  els.faults.disabled = s3 || !faultsAvailable;
  els.faults.title = s3 ? "S3 parts go straight to the store: this server's faults do not reach them" : "";
}
els.protocol.addEventListener("change", showProtocol);

async function fetchServerInfo(uploadUrl) {
  const url = els.protocol.value === "s3" && lastKey
    ? new URL(`/s3/objects/${encodeURIComponent(lastKey)}/info`, location.href)
    : new URL(`${uploadUrl.replace(/\/+$/, "")}/info`, location.href);
  let lastError;
  // Not part of tus; ride out a transient failure or two.
  for (let i = 0; i < 6; i += 1) {
    try {
      const res = await fetch(url, { cache: "no-store" });
      if (res.ok) return await res.json();
      lastError = new Error(`HTTP ${res.status}`);
      if (res.status === 404 || res.status === 405) break;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 250 * 2 ** i));
  }
  throw lastError;
}

async function showResult(result) {
  els.result.hidden = false;
  els.clientSha.textContent = result.sha256;
  els.uploadUrl.textContent = result.url;
  els.checksum.textContent = result.checksum
    ? `every chunk verified by the server (Upload-Checksum ${result.checksum})`
    : "not supported by the server (hashes compared after the upload only)";
  for (const c of result.chunks || []) chunkRow(c);

  let info;
  try {
    info = await fetchServerInfo(result.url);
  } catch (err) {
    els.serverSha.textContent = `unavailable (${err.message})`;
    return;
  }
  els.serverSha.textContent = info.sha256;
  const stored = info.offset ?? info.size;
  els.serverSha.title = `${intFmt.format(stored)} of ${intFmt.format(info.size)} bytes stored`;
  const ok =
    typeof info.sha256 === "string" &&
    info.sha256.toLowerCase() === String(result.sha256).toLowerCase() &&
    info.size === result.size &&
    stored === result.size;
  els.verdict.textContent = ok ? "match" : "MISMATCH";
  els.verdict.dataset.verdict = ok ? "match" : "mismatch";
}

async function start() {
  if (!selected || !uploadFile || controller) return;
  const file = selected;
  const ctrl = new AbortController();
  controller = ctrl;
  resetView();
  setBusy(true);
  els.abort.focus(); // #start is now disabled and would drop keyboard focus
  setStatus(`Starting upload of ${file.name || "the file"}…`);

  const chunkSize = Number(els.chunkSize.value) * MiB;
  const finish = () => {
    if (controller !== ctrl) return;
    controller = null;
    const refocus = document.activeElement === els.abort;
    setBusy(false);
    if (refocus) els.start.focus();
  };

  try {
    const s3 = els.protocol.value === "s3";
    lastKey = null;
    const result = await uploadFile(file, onProgress, {
      ...(s3
        ? { protocol: "s3", s3: s3Hooks, parallelUploads: Number(els.parallel.value) }
        : { endpoint: els.endpoint.value.trim() || "/files/" }),
      chunkSize, // filename/filetype metadata are added by the library
      signal: ctrl.signal,
      // More patient than the default, so the demo rides out the injected faults.
      retry: { attempts: 10, baseDelayMs: 250, maxDelayMs: 4000 },
      progressIntervalMs: 100,
    });
    window.__lastResult = result;
    finish();
    els.progress.value = 100;
    els.percent.textContent = "100.0%";
    els.eta.textContent = "–";
    els.retryIn.textContent = "–";
    setPhase("done");
    const secs = result.durationMs / 1000;
    const resumed = result.resumedFrom > 0
      ? `Resumed at ${Math.floor((result.resumedFrom * 100) / Math.max(result.size, 1))} % (${formatBytes(result.resumedFrom)} were already on the server). `
      : "";
    const sent = result.size - (result.resumedFrom || 0);
    setStatus(
      resumed +
      `Uploaded ${formatBytes(sent)} in ${secs.toFixed(1)} s ` +
        `(${formatSpeed(sent / Math.max(secs, 0.001))}), ` +
        `${result.chunks.length} chunk${result.chunks.length === 1 ? "" : "s"}, ` +
        `${result.retries} ${result.retries === 1 ? "retry" : "retries"}. Checking the server's copy…`,
    );
    await showResult(result);
    setStatus(
      lastStatus.replace(
        "Checking the server's copy…",
        els.verdict.textContent
          ? `Server copy: ${els.verdict.textContent}.`
          : "Server copy could not be checked.",
      ),
    );
  } catch (err) {
    setPhase(err?.code === "aborted" ? "aborted" : "failed");
    for (const el of [els.speed, els.eta, els.retryIn]) el.textContent = "–";
    if (els.progress.getAttribute("value") === null) els.progress.value = 0;
    // The user's own Abort is not an error: the status says it, the alert stays empty.
    setStatus(err?.code === "aborted" ? "Upload aborted." : "Upload failed.");
    showError(err?.code === "aborted" ? null : err);
  } finally {
    finish();
  }
}

els.start.addEventListener("click", start);
els.abort.addEventListener("click", () => {
  if (!controller) return;
  setStatus("Aborting…");
  controller.abort();
});

// ---------------------------------------------------------------- faults switch

function showFaults(on, spec) {
  els.faults.checked = on;
  els.faultsState.textContent = on ? "On" : "Off";
  els.faultsNote.textContent = on ? spec : "";
  els.faultsNote.title = on ? spec : "";
}

let faultsAvailable = false;

async function loadFaults() {
  try {
    const res = await fetch(FAULTS_URL, { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const { spec } = await res.json();
    const s = String(spec ?? "").trim();
    showFaults(s !== "" && s !== "none", s);
    faultsAvailable = true;
    els.faults.disabled = els.protocol.value === "s3";
  } catch (err) {
    els.faults.disabled = true;
    els.faultsNote.textContent = "not available on this server";
    console.warn("GET /__faults failed", err);
  }
}

// Changes are sent one at a time, always for the switch's latest state. The
// switch stays enabled meanwhile (disabling it would drop keyboard focus);
// aria-busy marks a request in flight.
let faultsQueue = Promise.resolve();
els.faults.addEventListener("change", () => {
  els.faults.setAttribute("aria-busy", "true");
  faultsQueue = faultsQueue.then(async () => {
    const on = els.faults.checked;
    const spec = on ? FAULT_SPEC : "none";
    try {
      const res = await fetch(FAULTS_URL, {
        method: "PUT",
        headers: { "Content-Type": "text/plain" },
        body: spec,
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const canonical = (await res.json().catch(() => ({}))).spec;
      if (els.faults.checked === on) showFaults(on, canonical || spec);
    } catch (err) {
      if (els.faults.checked === on) showFaults(!on, "");
      showError({ code: "faults", message: `could not switch server faults ${on ? "on" : "off"}: ${err.message}` });
    }
  });
  const mine = faultsQueue;
  mine.finally(() => {
    if (faultsQueue === mine) els.faults.removeAttribute("aria-busy");
  });
});

// ---------------------------------------------------------------- boot

/** S3 mode needs the store: offered when the backend answers. */
async function loadS3() {
  try {
    const res = await fetch("/s3/multipart/uploads", { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  } catch {
    els.protocol.querySelector('option[value="s3"]').disabled = true;
    els.protocol.title = "S3 mode needs the reference server started with a store (npm start starts Garage when it is installed)";
  }
}

async function boot() {
  setBusy(false);
  showProtocol();
  const faults = loadFaults();
  const s3 = loadS3();
  try {
    const mod = await import(new URL("./pkg/chunkup.js", import.meta.url).href);
    await mod.default();
    if (typeof mod.uploadFile !== "function") throw new Error("the package has no uploadFile export");
    uploadFile = mod.uploadFile;
    setPhase("idle");
    setStatus(selected ? `Ready to upload ${selected.name || "the file"}.` : "Choose a file to upload.");
    document.body.dataset.ready = "true";
  } catch (err) {
    setPhase("unavailable");
    setStatus("The chunkup package could not be loaded.");
    showError({
      code: "load_failed",
      message: `could not load pkg/chunkup.js: ${err?.message || err}. Check the connection and reload; on a fresh checkout, \`npm start\` builds it.`,
    });
    document.body.dataset.ready = "error";
  }
  setBusy(false);
  await faults;
  await s3;
}

boot();
