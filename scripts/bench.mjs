// `npm run bench`: figures measured side by side in one run, in headless Chromium against
// the reference server on loopback. Timings live here, never in the tests: the machines are
// shared and noisy, so compare the ratios within a run rather than absolute numbers.
//
//   BENCH_MIB=256 (file size)   BENCH_RUNS=2 (runs per figure; the best is reported too)
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir as systemTmp } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { launchChromium } from "../tests/e2e/chromium.mjs";
import { root, run, startReferenceServer, stop } from "./lib.mjs";

const MiB = 1024 * 1024;
const sizeMiB = Number(process.env.BENCH_MIB ?? 256);
const runs = Number(process.env.BENCH_RUNS ?? 2);
const tmpdir = mkdtempSync(path.join(systemTmp(), "chunkup-bench-"));

await run("cargo", ["build", "--release", "-p", "chunkup-server"]);
const server = await startReferenceServer([], { log: path.join(tmpdir, "server.log") });
let browser;

try {
  browser = await launchChromium();
  const page = await browser.newPage();
  await page.goto(server.url);
  // A real file on disk, as a customer would pick it (and not a 256 MiB Blob in memory,
  // which Chromium may page out to its profile directory).
  const file = path.join(tmpdir, "bench.bin");
  const content = Buffer.alloc(sizeMiB * MiB);
  for (let i = 0, x = 88172645; i < content.length; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    content.writeUInt32LE(x, i);
  }
  writeFileSync(file, content);
  await page.goto(server.url);
  await page.evaluate(() => document.body.insertAdjacentHTML("beforeend", '<input type="file" id="bench-file">'));
  await page.setInputFiles("#bench-file", file);
  await page.evaluate(async () => {
    const chunkup = await import("/pkg/chunkup.js");
    await chunkup.default();
    const blob = document.getElementById("bench-file").files[0];
    // 100 MB (decimal) of the same file, for the single-PUT figures.
    window.bench = { chunkup, blob, blob100: blob.slice(0, 100_000_000) };
  });

  // Each measurement returns { ms, ...extras }; MB/s = bytes / ms / 1000.
  const measurements = {
    "read File.stream() only, no hashing": () =>
      page.evaluate(async () => {
        const t = performance.now();
        const reader = window.bench.blob.stream().getReader();
        let pieces = 0;
        while (!(await reader.read()).done) pieces += 1;
        return { ms: performance.now() - t, extra: `${pieces} pieces` };
      }),
    "sha2 in wasm (sha256File)": () =>
      page.evaluate(async () => {
        const t = performance.now();
        await window.bench.chunkup.sha256File(window.bench.blob);
        return { ms: performance.now() - t };
      }),
    "WebCrypto digest per 8 MiB chunk": () =>
      page.evaluate(async () => {
        const { blob } = window.bench;
        const t = performance.now();
        for (let at = 0; at < blob.size; at += 8 << 20) {
          await crypto.subtle.digest("SHA-256", await blob.slice(at, at + (8 << 20)).arrayBuffer());
        }
        return { ms: performance.now() - t };
      }),
    "one plain PATCH, no hashing (loopback ceiling)": () =>
      page.evaluate(async () => {
        const { blob } = window.bench;
        const tus = { "Tus-Resumable": "1.0.0" };
        const t = performance.now();
        const created = await fetch("/faults/checksum:off/files/", { method: "POST", headers: { ...tus, "Upload-Length": String(blob.size) } });
        const url = created.headers.get("Location");
        const done = await fetch(url, { method: "PATCH", body: blob, headers: { ...tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream" } });
        const ms = performance.now() - t;
        if (done.status !== 204) throw new Error(`PATCH ${done.status}`);
        await fetch(url, { method: "DELETE", headers: tus });
        return { ms };
      }),
    ...Object.fromEntries(
      [
        ["put (one presigned PUT, XHR), 100 MB, progressIntervalMs 100", 100],
        ["put (one presigned PUT, XHR), 100 MB, progressIntervalMs 0", 0],
      ].map(([name, interval]) => [
        name,
        () =>
          page.evaluate(async (progressIntervalMs) => {
            const { chunkup, blob100: blob } = window.bench;
            const presigned = await (
              await fetch("/presign", {
                method: "POST",
                headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ fileName: "bench.bin", fileType: "", fileSize: blob.size }),
              })
            ).json();
            let moving = 0;
            let last = -1;
            const t = performance.now();
            const result = await chunkup.uploadFile(
              blob,
              (p) => {
                if (p.bytesSent !== last && p.bytesSent > 0 && p.bytesSent < blob.size) moving += 1;
                last = p.bytesSent;
              },
              { protocol: "put", endpoint: presigned.url, headers: presigned.headers, progressIntervalMs },
            );
            const ms = performance.now() - t;
            const info = await (await fetch(`${presigned.url.split("?")[0]}/info`)).json();
            if (info.sha256 !== result.sha256) throw new Error("server hash differs");
            return { ms, bytes: blob.size, extra: `${moving} byte-level progress calls, ${(moving / (ms / 1000)).toFixed(1)} per second` };
          }, interval),
      ]),
    ),
    ...Object.fromEntries(
      [
        ["uploadFile, 8 MiB chunks, Upload-Checksum verified", "/files/", 8],
        ["uploadFile, 8 MiB chunks, no server checksum", "/faults/checksum:off/files/", 8],
        ["uploadFile, 32 MiB chunks, Upload-Checksum verified", "/files/", 32],
      ].map(([name, endpoint, chunkMiB]) => [
        name,
        () =>
          page.evaluate(
            async ({ endpoint, chunkSize }) => {
              const { chunkup, blob } = window.bench;
              let calls = 0;
              const t = performance.now();
              const result = await chunkup.uploadFile(blob, () => { calls += 1; }, { endpoint, chunkSize });
              const ms = performance.now() - t;
              const info = await (await fetch(`${result.url}/info`)).json();
              if (info.sha256 !== result.sha256) throw new Error("server hash differs");
              await fetch(result.url, { method: "DELETE", headers: { "Tus-Resumable": "1.0.0" } });
              return { ms, extra: `${calls} progress calls, checksum ${result.checksum}` };
            },
            { endpoint, chunkSize: chunkMiB * MiB },
          ),
      ]),
    ),
  };

  const bytes = sizeMiB * MiB;
  console.log(`\nchunkup bench: ${sizeMiB} MiB in headless Chromium, reference server on loopback, ${runs} run(s) each\n`);
  const rows = [];
  for (const [name, measure] of Object.entries(measurements)) {
    const rates = [];
    let extra = "";
    for (let i = 0; i < runs; i += 1) {
      const { ms, extra: e, bytes: measured } = await measure();
      rates.push((measured ?? bytes) / ms / 1000);
      extra = e ?? "";
    }
    rows.push([name, Math.max(...rates), rates, extra]);
    console.log(`${name.padEnd(54)} best ${Math.max(...rates).toFixed(0).padStart(5)} MB/s  (runs: ${rates.map((r) => r.toFixed(0)).join(", ")})  ${extra}`);
  }
  const best = Object.fromEntries(rows.map(([n, b]) => [n, b]));
  const ceiling = best["one plain PATCH, no hashing (loopback ceiling)"];
  console.log(`\nratio uploadFile (8 MiB, checksums) / plain PATCH: ${(best["uploadFile, 8 MiB chunks, Upload-Checksum verified"] / ceiling).toFixed(2)}`);
  console.log(`ratio sha2 in wasm / WebCrypto: ${(best["sha2 in wasm (sha256File)"] / best["WebCrypto digest per 8 MiB chunk"]).toFixed(2)}`);

  const wasm = readFileSync(path.join(root, "pkg", "chunkup_bg.wasm"));
  const js = readFileSync(path.join(root, "pkg", "chunkup.js"));
  console.log(`\npkg/chunkup_bg.wasm: ${wasm.length} bytes raw, ${gzipSync(wasm, { level: 9 }).length} gzipped`);
  console.log(`pkg/chunkup.js: ${js.length} bytes raw, ${gzipSync(js, { level: 9 }).length} gzipped`);
} finally {
  await browser?.close();
  await stop(server);
  rmSync(tmpdir, { recursive: true, force: true });
}
