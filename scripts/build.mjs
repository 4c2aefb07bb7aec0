// Builds the npm package into pkg/ (wasm-pack --target web, release) and optimises the
// .wasm with wasm-opt from the npm package `binaryen` (wasm-pack's own binaryen download
// does not work offline, so Cargo.toml turns it off); then builds the chat-widget demo
// with Vite from that package, imported by name (node_modules/chunkup links to pkg/).
//
// What wasm-pack produces goes to target/wasm-pack-out first. When it, and every other input
// of the steps after it, are what the last build was made from, and pkg/ and widget/dist are
// what that build left (both digests are in target/pkg.stamp), they are kept as they are:
// wasm-opt and Vite take most of a build's time, and `npm test` builds on every run. Delete
// target/pkg.stamp to force a full build.
import { createHash } from "node:crypto";
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { transform } from "esbuild";
import { root, run } from "./lib.mjs";

const pkg = path.join(root, "pkg");
const staging = path.join(root, "target", "wasm-pack-out");
const stampPath = path.join(root, "target", "pkg.stamp");
const wasm = path.join(pkg, "chunkup_bg.wasm");
rmSync(staging, { recursive: true, force: true });
await run("wasm-pack", ["build", "--target", "web", "--release", "--out-dir", staging, "--out-name", "chunkup"], {
  env: { ...process.env, CARGO_ENCODED_RUSTFLAGS: releaseRustflags().join("\x1f") },
});

const widgetDist = path.join(root, "widget", "dist");
const inputs = digestOf([
  ...filesIn(staging),
  path.join(root, "src", "js", "worker.js"),
  path.join(root, "scripts", "build.mjs"),
  path.join(root, "package.json"),
  path.join(root, "package-lock.json"),
  ...filesIn(path.join(root, "widget")).filter((file) => !isInside(widgetDist, file)),
]);
const builtFrom = existsSync(stampPath) ? readFileSync(stampPath, "utf8").split("\n") : [];
if (builtFrom[0] === inputs && builtFrom[1] === outputsDigest()) {
  console.log("build: pkg/ and widget/dist are up to date (target/pkg.stamp)");
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
writeFileSync(stampPath, `${inputs}\n${outputsDigest()}`);

/**
 * The package's rustflags: those of .cargo/config.toml for wasm32 (SIMD), and the paths of
 * the dependencies' sources on this machine (`$CARGO_HOME/registry/src/<index>/`, in every
 * panic location of a dependency) cut to `<crate>-<version>/...`: nothing of the build
 * machine in the package (and 0.4 KB less wasm). Given as CARGO_ENCODED_RUSTFLAGS, which
 * replaces the config's list (hence read from it here) and takes paths with spaces.
 */
function releaseRustflags() {
  const config = readFileSync(path.join(root, ".cargo", "config.toml"), "utf8");
  const section = config.split(/^\[/m).find((part) => part.startsWith("target.wasm32-unknown-unknown]"));
  const list = section?.match(/^rustflags\s*=\s*\[([^\]]*)\]/m)?.[1];
  if (list === undefined) throw new Error("build: no rustflags for wasm32 in .cargo/config.toml");
  const configured = [...list.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
  const cargoHome = process.env.CARGO_HOME ?? path.join(os.homedir(), ".cargo");
  const sources = [path.join(cargoHome, "registry", "src"), path.join(cargoHome, "git", "checkouts")];
  const remaps = sources
    .filter((dir) => existsSync(dir))
    .flatMap((dir) => readdirSync(dir).map((entry) => `--remap-path-prefix=${path.join(dir, entry)}${path.sep}=`));
  return [...configured, ...remaps];
}

/** What this script leaves: pkg/ and widget/dist (none if either is missing). */
function outputsDigest() {
  if (!existsSync(pkg) || !existsSync(widgetDist)) return "none";
  return digestOf([...filesIn(pkg), ...filesIn(widgetDist)]);
}

/** A digest of files: their paths (relative to the repository) and contents. */
function digestOf(files) {
  const hash = createHash("sha256");
  for (const file of files) hash.update(`${path.relative(root, file)}\0`).update(readFileSync(file)).update("\0");
  return hash.digest("hex");
}

function isInside(dir, file) {
  const relative = path.relative(dir, file);
  return relative !== ".." && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative);
}

/** Every file under `dir`, in a stable order. */
function filesIn(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    // `parentPath` since Node 20.12; `path` before it.
    .map((entry) => path.join(entry.parentPath ?? entry.path, entry.name))
    .sort();
}

function javascriptIn(dir) {
  return filesIn(dir).filter((file) => file.endsWith(".js"));
}
