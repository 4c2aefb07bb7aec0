// Builds the npm package into pkg/ (wasm-pack --target web, release) and optimises the
// .wasm with wasm-opt from the npm package `binaryen` (wasm-pack's own binaryen download
// does not work offline, so Cargo.toml turns it off); then builds the chat-widget demo
// with Vite from that package, imported by name (node_modules/chunkup links to pkg/).
//
// What wasm-pack produces goes to target/wasm-pack-out first. When it, and every other input
// of the steps after it, are what the last build was made from (target/pkg.stamp), pkg/ and
// widget/dist are left as they are: wasm-opt and Vite take most of a build's time, and
// `npm test` builds on every run.
import { createHash } from "node:crypto";
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { transform } from "esbuild";
import { root, run } from "./lib.mjs";

const pkg = path.join(root, "pkg");
const staging = path.join(root, "target", "wasm-pack-out");
const stampPath = path.join(root, "target", "pkg.stamp");
const wasm = path.join(pkg, "chunkup_bg.wasm");
rmSync(staging, { recursive: true, force: true });
await run("wasm-pack", ["build", "--target", "web", "--release", "--out-dir", staging, "--out-name", "chunkup"]);

const stamp = inputsDigest();
const outputs = [wasm, path.join(pkg, "chunkup_worker.js"), path.join(root, "widget", "dist", "index.html")];
if (outputs.every((file) => existsSync(file)) && existsSync(stampPath) && readFileSync(stampPath, "utf8") === stamp) {
  console.log("build: pkg/ and widget/dist are up to date (their inputs are unchanged)");
  process.exit(0);
}
rmSync(stampPath, { force: true });
rmSync(pkg, { recursive: true, force: true });
cpSync(staging, pkg, { recursive: true });

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
writeFileSync(stampPath, stamp);

/**
 * A digest of everything the steps after wasm-pack read: its output, the Worker's entry,
 * this script, the widget's sources and the npm packages' lockfile (esbuild, binaryen, Vite).
 */
function inputsDigest() {
  const hash = createHash("sha256");
  const add = (file) => hash.update(`${path.relative(root, file)}\0`).update(readFileSync(file)).update("\0");
  const inputs = [
    ...filesIn(staging),
    path.join(root, "src", "js", "worker.js"),
    path.join(root, "scripts", "build.mjs"),
    path.join(root, "package-lock.json"),
    ...filesIn(path.join(root, "widget")).filter((file) => !file.includes(`${path.sep}dist${path.sep}`)),
  ];
  for (const file of inputs) add(file);
  return hash.digest("hex");
}

/** Every file under `dir`, in a stable order. */
function filesIn(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath, entry.name))
    .sort();
}

function javascriptIn(dir) {
  return filesIn(dir).filter((file) => file.endsWith(".js"));
}
