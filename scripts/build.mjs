// Builds the npm package into pkg/ (wasm-pack --target web, release) and optimises the
// .wasm with wasm-opt from the npm package `binaryen` (wasm-pack's own binaryen download
// does not work offline, so Cargo.toml turns it off); then builds the chat-widget demo
// with Vite from that package, imported by name (node_modules/chunkup links to pkg/).
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { transform } from "esbuild";
import { root, run } from "./lib.mjs";

const wasm = path.join(root, "pkg", "chunkup_bg.wasm");
rmSync(path.join(root, "pkg"), { recursive: true, force: true });
await run("wasm-pack", ["build", "--target", "web", "--release", "--out-dir", "pkg", "--out-name", "chunkup"]);

// The Worker's entry point: wasm-bindgen places src/js/bridge.js among its snippets under a
// hashed folder name, which the glue's import of it tells.
const glue = readFileSync(path.join(root, "pkg", "chunkup.js"), "utf8");
const bridge = glue.match(/from '\.\/(snippets\/[^']+\/src\/js\/bridge\.js)'/)?.[1];
if (!bridge) throw new Error("build: the glue does not import src/js/bridge.js");
const workerEntry = readFileSync(path.join(root, "src", "js", "worker.js"), "utf8");
writeFileSync(path.join(root, "pkg", "chunkup_worker.js"), workerEntry.replace("./snippets/BRIDGE", `./${bridge}`));
const manifestPath = path.join(root, "pkg", "package.json");
const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
manifest.files = [...new Set([...manifest.files, "chunkup_worker.js"])];
writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);

// Every visitor of a widget downloads the JavaScript too: minify it (whitespace, comments and
// local names; string literals such as the `new URL(..., import.meta.url)` paths that
// bundlers look for stay as written).
let jsBefore = 0;
let jsAfter = 0;
for (const file of javascriptIn(path.join(root, "pkg"))) {
  const source = readFileSync(file, "utf8");
  const { code } = await transform(source, { minify: true, format: "esm", target: "es2020", legalComments: "none" });
  writeFileSync(file, code);
  jsBefore += source.length;
  jsAfter += code.length;
}
console.log(`build: pkg JavaScript ${jsBefore} -> ${jsAfter} bytes minified`);

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

function* javascriptIn(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* javascriptIn(full);
    else if (entry.name.endsWith(".js")) yield full;
  }
}
