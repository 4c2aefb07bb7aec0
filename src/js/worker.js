// chunkup's Worker: the entry point of the dedicated module Worker that src/js/bridge.js
// starts. scripts/build.mjs copies this file to pkg/chunkup_worker.js and points the bridge
// import at the bridge's place among wasm-bindgen's snippets. It instantiates the same
// wasm module as the page (sent by the page, compiled once) and runs the jobs the page
// posts with the package's own exports.
import init, * as chunkup from "./chunkup.js";
import { serveWorker } from "./snippets/BRIDGE";

serveWorker(init, chunkup);
