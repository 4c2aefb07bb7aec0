// Builds the npm package into pkg/ (wasm-pack --target web, release) and optimises the
// .wasm with wasm-opt from the npm package `binaryen` (wasm-pack's own binaryen download
// does not work offline, so Cargo.toml turns it off); then builds the chat-widget demo
// with Vite from that package, imported by name (node_modules/chunkup links to pkg/).
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { root, run } from "./lib.mjs";

const wasm = path.join(root, "pkg", "chunkup_bg.wasm");
await run("wasm-pack", ["build", "--target", "web", "--release", "--out-dir", "pkg", "--out-name", "chunkup"]);

const wasmOpt = path.join(root, "node_modules", "binaryen", "bin", "wasm-opt");
if (!existsSync(wasmOpt)) throw new Error("wasm-opt missing: run `npm run setup`");
const before = statSync(wasm).size;
// The features rustc enables by default for wasm32 in 1.95, plus SIMD (.cargo/config.toml).
const features = [
  "--enable-simd",
  "--enable-bulk-memory",
  "--enable-bulk-memory-opt",
  "--enable-nontrapping-float-to-int",
  "--enable-sign-ext",
  "--enable-mutable-globals",
  "--enable-reference-types",
  "--enable-multivalue",
];
await run(process.execPath, [wasmOpt, "-Os", ...features, wasm, "-o", wasm]);
console.log(`build: pkg/chunkup_bg.wasm ${before} -> ${statSync(wasm).size} bytes after wasm-opt`);

await run(path.join(root, "node_modules", ".bin", "vite"), [
  "build",
  "--config",
  path.join(root, "widget", "vite.config.js"),
  "--logLevel",
  "warn",
]);
console.log("build: widget/dist (the chat-widget demo)");
