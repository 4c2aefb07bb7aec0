// `npm test`: every test, in order of cost. Native `cargo test` (the pure core and the
// reference server), browser tests with `wasm-pack test --headless --chrome` against the
// reference server, then end-to-end tests with playwright-core in headless Chromium
// (the demo page with faults on, and interop with @tus/server).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { readdirSync } from "node:fs";
import { logDir, root, run, startReferenceServer, startTusNodeServer, stop } from "./lib.mjs";

const step = (name) => console.log(`\n\x1b[1m== ${name}\x1b[0m`);
const servers = [];
const tusDir = mkdtempSync(path.join(tmpdir(), "chunkup-tus-node-"));
const cleanUp = async () => {
  await Promise.all(servers.map(stop));
  rmSync(tusDir, { recursive: true, force: true });
};
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]]) {
  process.on(signal, () => cleanUp().then(() => process.exit(code)));
}

try {
  step("native tests (cargo test)");
  await run("cargo", ["test", "--workspace"]);

  step("build the reference server and the package");
  await run("cargo", ["build", "--release", "-p", "chunkup-server"]);
  await run(process.execPath, [path.join(root, "scripts", "build.mjs")]);

  step("browser tests (wasm-pack test --headless --chrome)");
  const reference = await startReferenceServer([], { log: path.join(logDir, "reference-server.log") });
  servers.push(reference);
  await run("wasm-pack", ["test", "--headless", "--chrome", "--chromedriver", "/usr/bin/chromedriver"], {
    env: {
      ...process.env,
      CHUNKUP_SERVER_URL: reference.url,
      WASM_BINDGEN_TEST_TIMEOUT: "900",
    },
  });

  step("end-to-end tests (playwright-core, headless Chromium)");
  const tusNode = await startTusNodeServer(tusDir, { log: path.join(logDir, "tus-node-server.log") });
  servers.push(tusNode);
  // Files listed one by one: Node 22+ no longer expands a directory argument.
  const e2e = readdirSync(path.join(root, "tests", "e2e"))
    .filter((name) => name.endsWith(".test.mjs"))
    .map((name) => path.join("tests", "e2e", name));
  await run(process.execPath, ["--test", "--test-concurrency=1", ...e2e], {
    env: {
      ...process.env,
      CHUNKUP_SERVER_URL: reference.url,
      TUS_NODE_URL: tusNode.url,
      TUS_NODE_DIR: tusDir,
    },
  });
  console.log("\nnpm test: all suites passed");
} catch (error) {
  console.error(`\nnpm test failed: ${error.message}\n(server logs: ${logDir})`);
  process.exitCode = 1;
} finally {
  await cleanUp();
}
