// `npm test`: every test, in every browser engine. Native `cargo test` (the pure core, the
// SHA-256 crate and the reference server); the browser tests (tests/browser.rs and sha256/,
// wasm-bindgen-test) against the reference server in headless Chromium and headless
// Firefox; the end-to-end tests (tests/e2e/: the demo page with faults on, the widget,
// attachFile's flow, the Worker, resuming, interop with @tus/server, s3 on Garage) in
// Chromium, Firefox and WebKit (tests/e2e/engines.mjs says how each is driven); and a short
// soak (scripts/soak.mjs --short).
//
// Everything is built first (so that a compile error stops it at once); then all of it runs
// side by side: the runs mostly wait (on injected latency, throttled links, backoff), so
// even on two cores this takes little more than the longest of them. Each run has its own
// log in target/test-logs/ (printed when a run fails). Each end-to-end run has its own
// reference server (the demo switches that server's faults on for everyone), and its test
// files share one Firefox or WebKit (Chromium starts fast and is launched per file). One
// Garage cluster is the object store of every reference server.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { buildServer, logDir, root, run, runToLog, startFaultProxy, startReferenceServer, startTusNodeServer, stop } from "./lib.mjs";
import { startGarage } from "./garage.mjs";
import { geckodriverPath, shareBrowser } from "../tests/e2e/engines.mjs";

const ENGINES = ["chromium", "firefox", "webkit"];
// The end-to-end files, in three runs per engine of about the same length.
const E2E_GROUPS = [
  ["demo.test.mjs", "guest.test.mjs", "interop.test.mjs", "widget.test.mjs"],
  ["resume.test.mjs"],
  ["s3.test.mjs", "worker.test.mjs"],
];

const step = (name) => console.log(`\n\x1b[1m== ${name}\x1b[0m`);
const servers = [];
const browsers = new Set(); // shared browsers not yet closed
const jobs = new Set(); // child processes of the runs side by side
const tusDir = mkdtempSync(path.join(tmpdir(), "chunkup-tus-node-"));
let garage = null; // the object store of every reference server (put, s3, attachments)
const cleanUp = async () => {
  for (const child of jobs) child.kill("SIGTERM");
  await Promise.all([...browsers].map((browser) => browser.close()));
  await Promise.all(servers.map(stop));
  await garage?.stop().catch(() => {});
  rmSync(tusDir, { recursive: true, force: true });
};
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]]) {
  process.on(signal, () => cleanUp().then(() => process.exit(code)));
}

/**
 * Runs commands one after the other, each into a log of its own; resolves to the first
 * failure, or null. `env` may be a function, called when its command is about to start.
 */
async function runSteps(name, steps) {
  const started = Date.now();
  let failure = null;
  const logs = [];
  for (const step of steps) {
    const { label, command, args } = step;
    let env;
    try {
      env = typeof step.env === "function" ? await step.env() : step.env;
    } catch (error) {
      failure = `${label} could not start: ${error.message}`;
      break;
    }
    const log = path.join(logDir, `${label}.log`);
    logs.push(log);
    const attempt = () =>
      runToLog(command, args, {
        log,
        env,
        onSpawn: (child) => {
          jobs.add(child);
          child.on("exit", () => jobs.delete(child));
        },
      });
    let outcome = await attempt();
    if (outcome !== 0 && step.browserDidNotStart?.(readFileSync(log, "utf8"))) {
      // No test ran: the browser did not come up in time (a cold Firefox on a loaded
      // machine). Once more; the first log is kept beside the second.
      renameSync(log, path.join(logDir, `${label}.first-try.log`));
      console.log(`(${label}: the browser did not start in time; once more)`);
      outcome = await attempt();
    }
    if (outcome !== 0) {
      failure = `${label} exited with ${outcome}`;
      break;
    }
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  if (failure) {
    console.log(`\n\x1b[1;31m✗ ${name}\x1b[0m (${seconds} s): ${failure}`);
    if (existsSync(logs.at(-1) ?? "")) {
      const text = readFileSync(logs.at(-1), "utf8").split("\n");
      console.log(`--- last lines of ${logs.at(-1)}:\n${text.slice(-150).join("\n")}`);
    }
  } else {
    console.log(`\x1b[1;32m✓ ${name}\x1b[0m (${seconds} s; ${logs.map((log) => path.relative(root, log)).join(", ")})`);
    // What each run counted, so that a suite that ran nothing does not pass unseen.
    for (const log of logs) {
      const text = readFileSync(log, "utf8");
      const nodeCounts = text.match(/^ℹ (tests|pass|fail) \d+$/gm);
      const cargoPassed = [...text.matchAll(/^test result: ok\. (\d+) passed/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
      const soak = text.match(/^soak: uploads .*$/m);
      if (nodeCounts) console.log(`  ${nodeCounts.map((line) => line.slice(2)).join(", ")}`);
      else if (soak) console.log(`  ${soak[0]}`);
      else if (cargoPassed > 0) console.log(`  ${path.basename(log, ".log")}: ${cargoPassed} tests passed`);
    }
  }
  return failure;
}

// Only this run's logs: the engines' drivers leave one file per browser started.
rmSync(logDir, { recursive: true, force: true });
mkdirSync(logDir, { recursive: true });

try {
  step("build the native tests, the reference server and the package");
  await run("cargo", ["test", "--workspace", "--no-run"]);
  await buildServer();
  await run(process.execPath, [path.join(root, "scripts", "build.mjs")]);

  step("start Garage and the servers; build the browser tests");
  // One Garage cluster (three nodes, replication 3) behind one fault-injecting proxy is the
  // object store of every reference server below: browsers reach it through the proxy
  // (presigned URLs are signed for the proxy's host), which applies the faults a test puts
  // in a URL's path. The s3 end-to-end tests start clusters of their own, to stop nodes.
  garage = await startGarage({ nodes: 3, logDir });
  const storeProxy = await startFaultProxy(garage.endpoints[0], "none", { log: path.join(logDir, "store-proxy.log") });
  servers.push(storeProxy);
  const storeArgs = garage.serverArgs({ publicEndpoint: storeProxy.url });
  const storeEnv = { ...process.env, ...garage.serverEnv };
  console.log(`(Garage: ${garage.endpoints.length} nodes, up in ${garage.startMs} ms)`);
  // A reference server per run: the runs go side by side, and the server keeps state that
  // a test may count on (the demo's fault switch, the uses of each token of `token:N`).
  const referenceServer = (name) =>
    startReferenceServer(storeArgs, { log: path.join(logDir, `${name}-server.log`), env: storeEnv });
  // The browser tests' binary has this server's URL built in (CHUNKUP_SERVER_URL): one
  // server for both engines, so that the binary is built once. Their tests share no server
  // state (each token of `token:N` is unique to its run) but the fault streams of a spec:
  // a test that must meet a fault uploads again until it does (tests/browser.rs).
  const browserServer = await referenceServer("browser");
  servers.push(browserServer);
  // WASM_BINDGEN_TEST_DRIVER_TIMEOUT: how long the driver (chromedriver, geckodriver) may
  // take to bind its port; the runner's default, 5 s, is short beside everything else here.
  const browserEnv = {
    ...process.env,
    CHUNKUP_SERVER_URL: browserServer.url,
    WASM_BINDGEN_TEST_TIMEOUT: "900",
    WASM_BINDGEN_TEST_DRIVER_TIMEOUT: "60",
  };
  // What `wasm-pack test` builds first, built here so that its runs below find it done: on a
  // fresh machine this build is minutes, and side by side with every other run it was the
  // last to finish.
  for (const pkg of ["chunkup", "chunkup-sha256"]) {
    await run("cargo", ["build", "--tests", "--target", "wasm32-unknown-unknown", "-p", pkg], { env: browserEnv });
  }
  const tusNode = await startTusNodeServer(tusDir, { log: path.join(logDir, "tus-node-server.log") });
  servers.push(tusNode);
  // Each engine's end-to-end files go in three runs side by side (E2E_GROUPS), each with its
  // own browser and reference server: one run of every file took longer than the rest of
  // npm test together.
  const e2eRuns = ENGINES.flatMap((engine) => E2E_GROUPS.map((group, i) => ({ engine, group, label: `e2e-${engine}-${i + 1}` })));
  for (const run of e2eRuns) {
    run.server = await referenceServer(run.label);
    servers.push(run.server);
  }

  step("native tests, browser tests (Chromium, Firefox), end-to-end tests (Chromium, Firefox, WebKit) and a short soak, side by side");
  console.log(`(logs in ${path.relative(root, logDir)}/; each run is reported when it ends)`);

  // Files listed one by one: Node 22+ no longer expands a directory argument.
  const e2eFiles = readdirSync(path.join(root, "tests", "e2e"))
    .filter((name) => name.endsWith(".test.mjs"))
    .sort();
  const grouped = E2E_GROUPS.flat();
  const ungrouped = e2eFiles.filter((name) => !grouped.includes(name));
  if (ungrouped.length > 0) throw new Error(`tests/e2e files in no group of E2E_GROUPS (scripts/test.mjs): ${ungrouped.join(", ")}`);
  // wasm-bindgen-test-runner's words when the driver did not start or could not open a
  // browser session: nothing was tested yet.
  const browserDidNotStart = (log) =>
    ["webdriver POST /session request failed", "driver failed to bind port during startup", "driver failed to start"].some((words) =>
      log.includes(words),
    );
  // WebKit has no driver that wasm-bindgen-test supports: end-to-end tests only.
  const browserTests = (name, flags) =>
    runSteps(`browser tests in ${name} (wasm-pack test ${flags[0]})`, [
      { label: `browser-${name.toLowerCase()}`, command: "wasm-pack", args: ["test", "--headless", ...flags], env: browserEnv, browserDidNotStart },
      // The SHA-256 crate's own tests, in the SIMD build only a browser runs.
      { label: `browser-${name.toLowerCase()}-sha256`, command: "wasm-pack", args: ["test", "--headless", ...flags, "sha256"], env: browserEnv, browserDidNotStart },
    ]);
  const failures = await Promise.all([
    runSteps("native tests (cargo test)", [{ label: "native", command: "cargo", args: ["test", "--workspace"] }]),
    browserTests("Chromium", ["--chrome", "--chromedriver", "/usr/bin/chromedriver"]),
    browserTests("Firefox", ["--firefox", "--geckodriver", geckodriverPath()]),
    runSteps("soak, short (50 uploads through injected faults, to the reference server and @tus/server)", [
      { label: "soak", command: process.execPath, args: [path.join(root, "scripts", "soak.mjs"), "--short"] },
    ]),
    ...e2eRuns.map(async ({ engine, group, label, server }) => {
      let browser;
      try {
        return await runSteps(`end-to-end tests in ${engine} (${group.map((name) => name.replace(".test.mjs", "")).join(", ")})`, [
          {
            label,
            command: process.execPath,
            args: ["--test", "--test-concurrency=1", "--test-reporter=spec", ...group.map((name) => path.join("tests", "e2e", name))],
            env: async () => {
              browser = await shareBrowser(engine);
              browsers.add(browser);
              return {
                ...process.env,
                ...browser.env,
                CHUNKUP_ENGINE: engine,
                CHUNKUP_SERVER_URL: server.url,
                TUS_NODE_URL: tusNode.url,
                TUS_NODE_DIR: tusDir,
              };
            },
          },
        ]);
      } finally {
        if (browser) {
          browsers.delete(browser);
          await browser.close();
        }
      }
    }),
  ]);
  const failed = failures.filter(Boolean);
  if (failed.length > 0) throw new Error(failed.join("; "));
  console.log("\nnpm test: all suites passed");
} catch (error) {
  console.error(`\nnpm test failed: ${error.message}\n(logs: ${logDir})`);
  process.exitCode = 1;
} finally {
  await cleanUp();
}
