// One small, engine-neutral way for the end-to-end tests to drive a page in each of the three
// browser engines chunkup is tested in:
//
//   chromium  Debian's Chromium, headless, through playwright-core (tests/e2e/chromium.mjs)
//   firefox   Debian's firefox-esr, headless, through geckodriver (built from crates.io)
//   webkit    WebKitGTK's MiniBrowser (--automation) through WebKitWebDriver, on a private
//             Xvfb display: MiniBrowser has no headless mode ("cannot open display")
//
// Firefox and WebKit are driven with plain W3C WebDriver over HTTP (node:http, no client
// library). Each openBrowser() starts its own driver on a free port and its own browser, and
// close() ends them; every process is started in its own process group, and that group is
// killed when the test process exits, fails or is interrupted, so nothing outlives a run.
//
// Starting Firefox or WebKit takes seconds, so `npm test` starts one of each per run for
// all its test files (shareBrowser) and passes it in CHUNKUP_BROWSER; openBrowser() then
// uses that WebDriver session (the files use it one after the other), and close() only
// detaches. Chromium starts in about a second and is launched by each file: a Chromium
// shared through Playwright's browser server relays everything through the process that
// serves it (a picked 64 MiB file crosses a WebSocket as base64), which made its tests three
// times slower alone and ten times slower inside `npm test`.
//
// The page object offers only what the tests use:
//   goto(url)                 navigate and wait for the load event
//   evaluate(fn, arg)         run `fn(arg)` in the page (may be async); arg and result as JSON
//                             (undefined properties vanish, as with JSON.stringify)
//   waitFor(fn, arg, opts)    evaluate until the result is truthy; resolves to it
//   setInputFiles(sel, path)  pick a file on disk in an <input type=file>
//   click(sel), type(sel, text)
//   screenshot(path)          a PNG of the viewport
//   minimize(), restore()     hide the page and show it again (Firefox and WebKit only)
//   close()
//
// Environment: CHUNKUP_ENGINE (chromium | firefox | webkit; default chromium), CHROMIUM_PATH,
// FIREFOX_PATH, GECKODRIVER (default: geckodriver on PATH, else ~/.cargo/bin/geckodriver),
// MINIBROWSER_PATH (default: found with `dpkg -L libwebkit2gtk-4.1-0`).

import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";

import { launchChromium } from "./chromium.mjs";
import { freePort, logDir } from "../../scripts/lib.mjs";

export const ENGINES = ["chromium", "firefox", "webkit"];

/** The engine this test process runs in (CHUNKUP_ENGINE). */
export const engine = process.env.CHUNKUP_ENGINE || "chromium";
if (!ENGINES.includes(engine)) {
  throw new Error(`CHUNKUP_ENGINE=${engine}: expected one of ${ENGINES.join(", ")}`);
}

// ------------------------------------------------------------------ processes

/** Every process group started here and not yet ended: killed when this process ends. */
const groups = new Set();
/** Temporary directories (Firefox profiles) to remove then too. */
const scratch = new Set();

function killGroups() {
  for (const child of groups) {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  groups.clear();
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
  scratch.clear();
}
process.on("exit", killGroups);
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]]) {
  process.once(signal, async () => {
    // A moment to clean up (Xvfb removes its socket, geckodriver its profile), then kill.
    const others = process.listenerCount(signal) > 0;
    await atMost(2000, Promise.all([...groups].map(endGroup)));
    killGroups();
    // A script with handlers of its own (scripts/test.mjs) ends itself once it cleaned up.
    if (!others) process.exit(code);
  });
}

/** Starts `command` in a process group of its own, stderr and stdout to `log`. */
function startGroup(command, args, { env = process.env, log, stdio } = {}) {
  mkdirSync(path.dirname(log), { recursive: true });
  if (!stdio) {
    const out = openSync(log, "a");
    stdio = ["ignore", out, out];
  }
  const child = spawn(command, args, { env, detached: true, stdio });
  groups.add(child);
  child.on("exit", () => groups.delete(child));
  return child;
}

/** Ends a process group: SIGTERM, then SIGKILL if it is still there after 5 s. */
async function endGroup(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) {
    groups.delete(child);
    return;
  }
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    process.kill(-child.pid, "SIGTERM");
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }, 5000);
  await exited;
  clearTimeout(timer);
  // Children that outlived the group leader (a browser's helper processes).
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // none left
  }
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const candidate = path.join(dir, name);
    if (dir && existsSync(candidate)) return candidate;
  }
  return null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits for `promise`, or `ms` at most. The timer is cleared when the promise wins: a
 * pending one kept each test file's process alive that much longer after its last test.
 */
async function atMost(ms, promise) {
  let timer;
  const deadline = new Promise((resolve) => (timer = setTimeout(resolve, ms)));
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------------ W3C WebDriver over HTTP

/** One WebDriver command; resolves to the response's `value`, rejects on a WebDriver error. */
function command(base, method, pathname, body) {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const request = http.request(
      new URL(pathname, base),
      {
        method,
        // No timeout: an asynchronous script may run for minutes (the session's script
        // timeout and the tests' own timeouts bound it).
        headers: payload === undefined ? {} : { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(payload) },
      },
      (response) => {
        const parts = [];
        response.on("data", (part) => parts.push(part));
        response.on("end", () => {
          const text = Buffer.concat(parts).toString("utf8");
          let json;
          try {
            json = JSON.parse(text);
          } catch {
            reject(new Error(`WebDriver ${method} ${pathname}: HTTP ${response.statusCode}, not JSON: ${text.slice(0, 200)}`));
            return;
          }
          const value = json.value;
          if (response.statusCode >= 400 || (value && typeof value === "object" && "error" in value && typeof value.error === "string")) {
            reject(new Error(`WebDriver ${method} ${pathname}: ${value?.error}: ${value?.message}`));
          } else {
            resolve(value);
          }
        });
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(payload);
  });
}

/** Waits until a WebDriver server answers /status. */
async function driverReady(base, child, what) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode} before it was ready`);
    try {
      const status = await command(base, "GET", "/status");
      if (status?.ready !== false) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${what} did not answer on ${base} within 30 s`);
    await sleep(100);
  }
}

const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";

/**
 * The body of a WebDriver "Execute Async Script" that runs the function `source` (a
 * function's text) on the argument, in the page's own JavaScript realm, and calls back with
 * the outcome as JSON text: the result (so that every engine returns the same shapes), or
 * a thrown error's name, message and stack.
 *
 * Why through a <script> element: Firefox (Marionette) runs WebDriver scripts in a sandbox
 * with its own JavaScript built-ins. A module imported from there, and every Uint8Array,
 * Map or Error made there, belongs to another realm than the page's, so `instanceof` checks
 * in the page (wasm-bindgen's among them) fail, which no page of a real site sees. An inline
 * script runs in the page's realm in every engine; a page whose Content-Security-Policy
 * refuses inline scripts cannot be driven this way (the tests' own pages allow them).
 */
function asyncScript(source) {
  return `const [argJson, done] = arguments;
const id = "__chunkupTest" + Math.random().toString(36).slice(2);
let started = false;
window[id] = {
  argJson,
  start() { started = true; },
  done(outcome) { delete window[id]; done(outcome); },
};
const script = document.createElement("script");
script.textContent = "(" + ${JSON.stringify(inPage.toString())} + ")(" + JSON.stringify(id) + ", " + ${JSON.stringify(`(${source})`)} + ");";
(document.head || document.documentElement).append(script);
script.remove();
if (!started) {
  delete window[id];
  done(JSON.stringify({ ok: false, message: "the page refused the test's inline script (Content-Security-Policy?)" }));
}`;
}

/** Runs in the page (inline script): calls `fn` with the argument, reports the outcome. */
function inPage(id, fn) {
  const slot = window[id];
  slot.start();
  (async () => fn(JSON.parse(slot.argJson)))().then(
    (value) => slot.done(JSON.stringify({ ok: true, undef: value === undefined, json: value === undefined ? "null" : JSON.stringify(value) })),
    (error) =>
      slot.done(JSON.stringify({ ok: false, message: error instanceof Error ? `${error.name}: ${error.message}\n${error.stack}` : String(error) })),
  );
}

function settled(outcome, engineName) {
  if (!outcome?.ok) {
    const error = new Error(`[${engineName}] page function failed: ${outcome?.message ?? JSON.stringify(outcome)}`);
    error.pageStack = outcome?.message;
    throw error;
  }
  return outcome.undef ? undefined : JSON.parse(outcome.json ?? "null");
}

/** A page in a WebDriver session: the operations the tests use. */
class WebDriverPage {
  /** `processes`: the driver's (and display's) process groups, or null for a shared session. */
  constructor(engineName, base, session, processes) {
    this.engine = engineName;
    this.base = base;
    this.session = session;
    this.processes = processes;
    this.closed = false;
  }

  cmd(method, suffix, body) {
    return command(this.base, method, `/session/${this.session}${suffix}`, body);
  }

  async goto(url) {
    await this.cmd("POST", "/url", { url });
  }

  async evaluate(fn, arg) {
    const outcome = await this.cmd("POST", "/execute/async", { script: asyncScript(fn.toString()), args: [JSON.stringify(arg ?? null)] });
    return settled(JSON.parse(outcome), this.engine);
  }

  async element(selector) {
    const found = await this.cmd("POST", "/element", { using: "css selector", value: selector });
    return found[ELEMENT];
  }

  async setInputFiles(selector, file) {
    await this.cmd("POST", `/element/${await this.element(selector)}/value`, { text: path.resolve(file) });
  }

  async click(selector) {
    await this.cmd("POST", `/element/${await this.element(selector)}/click`, {});
  }

  async type(selector, text) {
    await this.cmd("POST", `/element/${await this.element(selector)}/value`, { text });
  }

  /**
   * Minimizes the window: the page is then hidden (document.visibilityState), as in a
   * background tab, and the browser throttles its timers. WebDriver only: headless Chromium
   * keeps every page visible.
   */
  async minimize() {
    await this.cmd("POST", "/window/minimize", {});
  }

  /** Shows the window again, at the tests' size. */
  async restore() {
    await this.cmd("POST", "/window/rect", { width: 1100, height: 900 });
  }

  async screenshot(file) {
    const png = await this.cmd("GET", "/screenshot");
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, Buffer.from(png, "base64"));
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    if (!this.processes) {
      // A shared session: leave it on an empty page for the next test file.
      await atMost(10_000, this.goto("about:blank").catch(() => {}));
      return;
    }
    // Ending the session quits the browser (and removes its temporary profile).
    await atMost(10_000, this.cmd("DELETE", "").catch(() => {}));
    for (const child of this.processes) await endGroup(child);
  }
}

/** Asks a WebDriver server for a session; on failure, ends the processes started for it. */
async function startSession(engineName, base, capabilities, processes) {
  try {
    const created = await command(base, "POST", "/session", { capabilities: { alwaysMatch: capabilities } });
    const page = new WebDriverPage(engineName, base, created.sessionId, processes);
    // No page function of the tests runs for minutes (long waits poll); a bounded script
    // timeout keeps a test file that died mid-call from blocking a shared session for long.
    await page.cmd("POST", "/timeouts", { script: 5 * 60 * 1000, pageLoad: 60_000, implicit: 0 });
    await page.cmd("POST", "/window/rect", { width: 1100, height: 900 }).catch(() => {});
    return page;
  } catch (error) {
    for (const child of processes) await endGroup(child);
    throw error;
  }
}

function driverLog(name) {
  return path.join(logDir, `${name}-${process.pid}.log`);
}

/** geckodriver: $GECKODRIVER, else on PATH, else where `cargo install` puts it. */
export function geckodriverPath() {
  const driver = process.env.GECKODRIVER || onPath("geckodriver") || path.join(os.homedir(), ".cargo", "bin", "geckodriver");
  if (!existsSync(driver)) throw new Error(`geckodriver not found (${driver}): run \`npm run setup\``);
  return driver;
}

async function openFirefox() {
  const driver = geckodriverPath();
  const binary = process.env.FIREFOX_PATH || onPath("firefox-esr") || onPath("firefox");
  if (!binary) throw new Error("firefox-esr not found: run `npm run setup`");
  // geckodriver says which port it took; BiDi's WebSocket port too must not collide when
  // several run at once.
  const log = driverLog("geckodriver");
  mkdirSync(logDir, { recursive: true });
  // geckodriver removes the profile it made when the session ends; if this process is
  // killed first, the exit handler removes it with this folder.
  const profiles = mkdtempSync(path.join(os.tmpdir(), "chunkup-firefox-"));
  scratch.add(profiles);
  const child = startGroup(driver, ["--port", "0", "--websocket-port", "0", "--profile-root", profiles], {
    log,
    stdio: ["ignore", "pipe", openSync(log, "a")],
  });
  child.on("exit", () => {
    rmSync(profiles, { recursive: true, force: true });
    scratch.delete(profiles);
  });
  const base = await new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`geckodriver did not say where it listens within 30 s: ${seen}`)), 30_000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (text) => {
      seen += text;
      const match = /Listening on (\S+)/.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolve(`http://${match[1]}`);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`geckodriver exited with ${code}: ${seen}`));
    });
  }).catch(async (error) => {
    await endGroup(child);
    throw error;
  });
  // Keep draining its log so that it never blocks on a full pipe.
  const out = openSync(log, "a");
  child.stdout.on("data", (text) => writeFileSync(out, text));
  return startSession(
    "firefox",
    base,
    {
      browserName: "firefox",
      "moz:firefoxOptions": {
        binary,
        args: ["-headless"],
        prefs: {
          // Nothing to reach on this network: no update, telemetry or captive-portal checks.
          "app.update.auto": false,
          "network.captive-portal-service.enabled": false,
          "network.connectivity-service.enabled": false,
          "datareporting.policy.dataSubmissionEnabled": false,
          "toolkit.telemetry.enabled": false,
        },
      },
    },
    [child],
  );
}

/** The MiniBrowser that libwebkit2gtk-4.1-0 installs (it is not on PATH). */
function miniBrowser() {
  if (process.env.MINIBROWSER_PATH) return process.env.MINIBROWSER_PATH;
  let files = "";
  try {
    files = execFileSync("dpkg", ["-L", "libwebkit2gtk-4.1-0"], { encoding: "utf8" });
  } catch {
    // not installed
  }
  const found = files.split("\n").find((line) => line.endsWith("/MiniBrowser"));
  if (!found) throw new Error("WebKitGTK's MiniBrowser not found (dpkg -L libwebkit2gtk-4.1-0): run `npm run setup`");
  return found;
}

/** Starts Xvfb on the first free display; resolves to { child, display }. */
async function startXvfb() {
  const log = driverLog("xvfb");
  mkdirSync(logDir, { recursive: true });
  // -displayfd: Xvfb picks a free display number and writes it to that descriptor when ready.
  const child = startGroup("Xvfb", ["-displayfd", "3", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"], {
    log,
    stdio: ["ignore", openSync(log, "a"), openSync(log, "a"), "pipe"],
  });
  try {
    const display = await new Promise((resolve, reject) => {
      let seen = "";
      const timer = setTimeout(() => reject(new Error("Xvfb did not start within 30 s")), 30_000);
      child.stdio[3].setEncoding("utf8");
      child.stdio[3].on("data", (text) => {
        seen += text;
        if (seen.includes("\n")) {
          clearTimeout(timer);
          resolve(`:${seen.trim()}`);
        }
      });
      child.on("error", (error) => {
        clearTimeout(timer);
        reject(new Error(`Xvfb could not start (${error.message}): run \`npm run setup\``));
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`Xvfb exited with ${code} (log: ${log})`));
      });
    });
    return { child, display };
  } catch (error) {
    await endGroup(child);
    throw error;
  }
}

async function openWebKit() {
  const binary = miniBrowser();
  const xvfb = await startXvfb();
  // WebKitWebDriver does not say which port it took: it gets one that was free a moment
  // ago, and another if that was taken meanwhile (it then exits at once).
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const driver = startGroup("WebKitWebDriver", [`--port=${port}`], {
      env: { ...process.env, DISPLAY: xvfb.display },
      log: driverLog("webkitwebdriver"),
    });
    const base = `http://127.0.0.1:${port}`;
    try {
      await driverReady(base, driver, "WebKitWebDriver");
    } catch (error) {
      await endGroup(driver);
      if (attempt < 3 && driver.exitCode !== null) continue;
      await endGroup(xvfb.child);
      throw error;
    }
    return startSession("webkit", base, { "webkitgtk:browserOptions": { binary, args: ["--automation"] } }, [driver, xvfb.child]);
  }
}

// ------------------------------------------------------------------ Chromium (playwright-core)

/** The same page API over playwright-core, for Chromium. */
class ChromiumPage {
  constructor(browser, page) {
    this.engine = "chromium";
    this.browser = browser;
    this.page = page;
  }

  async goto(url) {
    await this.page.goto(url);
  }

  async evaluate(fn, arg) {
    // The same JSON crossing as over WebDriver, so that results have the same shapes.
    const outcome = await this.page.evaluate(
      `(${asyncScriptForPlaywright(fn.toString())})(${JSON.stringify(arg ?? null)})`,
    );
    return settled(outcome, this.engine);
  }

  async setInputFiles(selector, file) {
    await this.page.setInputFiles(selector, file);
  }

  async click(selector) {
    await this.page.click(selector);
  }

  async type(selector, text) {
    // WebDriver's key for Enter; the rest is typed as is.
    const parts = text.split("\uE007");
    for (let i = 0; i < parts.length; i += 1) {
      if (parts[i]) await this.page.type(selector, parts[i]);
      if (i < parts.length - 1) await this.page.press(selector, "Enter");
    }
  }

  async screenshot(file) {
    await this.page.screenshot({ path: file });
  }

  async close() {
    await this.browser.close().catch(() => {});
  }
}

function asyncScriptForPlaywright(source) {
  return `async (arg) => {
  try {
    const value = await (${source})(arg);
    return { ok: true, undef: value === undefined, json: value === undefined ? "null" : JSON.stringify(value) };
  } catch (error) {
    return { ok: false, message: error instanceof Error ? error.name + ": " + error.message + "\\n" + error.stack : String(error) };
  }
}`;
}

async function openChromium() {
  const browser = await launchChromium();
  try {
    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    return new ChromiumPage(browser, await context.newPage());
  } catch (error) {
    await browser.close().catch(() => {});
    throw error;
  }
}

// ------------------------------------------------------------------ the entry points

const OPEN = { chromium: openChromium, firefox: openFirefox, webkit: openWebKit };

/**
 * A page in a browser of `engineName` (default: CHUNKUP_ENGINE): the shared one that
 * CHUNKUP_BROWSER describes, or one started here (see the top of this file). `close()` ends
 * a browser started here, or detaches from the shared one.
 */
export async function openBrowser(engineName = engine) {
  const shared = process.env.CHUNKUP_BROWSER ? JSON.parse(process.env.CHUNKUP_BROWSER) : null;
  let page;
  if (shared?.engine === engineName) {
    page = new WebDriverPage(engineName, shared.base, shared.session, null);
  } else {
    page = await OPEN[engineName]();
  }
  page.waitFor = (fn, arg, options) => waitFor(page, fn, arg, options);
  return page;
}

/**
 * A page function (`await page.evaluate(installFileHelpers)`): `window.fileOf(size, name,
 * type, seed)`, a File of pseudo-random bytes made in the page, and `window.sha256(blob)`,
 * its SHA-256 in hex by WebCrypto.
 */
export function installFileHelpers() {
  window.fileOf = (size, name = "data.bin", type = "application/octet-stream", seed = 11) => {
    const bytes = new Uint8Array(size);
    let x = seed;
    for (let i = 0; i < size; i += 1) {
      x = (x * 1103515245 + 12345) >>> 0;
      bytes[i] = x >>> 24;
    }
    return new File([bytes], name, { type });
  };
  window.sha256 = async (blob) =>
    [...new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()))]
      .map((b) => b.toString(16).padStart(2, "0"))
      .join("");
}

/**
 * Starts a browser of `engineName` for several test processes (one at a time). Resolves to
 * `{ env, close() }`: `env` holds CHUNKUP_BROWSER for those processes' environment.
 */
export async function shareBrowser(engineName) {
  // Chromium: each file launches its own (see the top of this file).
  if (engineName === "chromium") return { env: {}, close: async () => {} };
  const page = await OPEN[engineName]();
  return {
    env: { CHUNKUP_BROWSER: JSON.stringify({ engine: engineName, base: page.base, session: page.session }) },
    close: () => page.close(),
  };
}

/**
 * Calls `read()` (in Node) every `interval` ms until `done(value)` holds or `timeout` ms have
 * passed, and returns the last value read, for the test to assert on. For what a server does
 * after the page has moved on: a DELETE or a deleteAttachment goes out as the call rejects,
 * and npm test runs its engines side by side on few cores, so it may land some time later.
 */
export async function eventually(read, done, { timeout = 10_000, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/**
 * Evaluates `fn(arg)` every `interval` ms until it returns something truthy. The polling
 * runs in the page, a second at a time: a WebDriver round trip costs the browser and its
 * driver a few milliseconds of CPU, and npm test's engines run side by side on few cores.
 * So the page must not navigate away while it is waited on (no test does): that ends the
 * call in flight with an error.
 */
async function waitFor(page, fn, arg, { timeout = 30_000, interval = 200, message } = {}) {
  const deadline = Date.now() + timeout;
  const pollForASecond = `async (arg) => {
  const fn = (${fn});
  const until = Date.now() + 1000;
  for (;;) {
    const value = await fn(arg);
    if (value || Date.now() >= until) return value;
    await new Promise((resolve) => setTimeout(resolve, ${Number(interval)}));
  }
}`;
  for (;;) {
    const value = await page.evaluate(pollForASecond, arg);
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`[${page.engine}] ${message ?? `timed out after ${timeout} ms waiting for ${fn.toString().slice(0, 200)}`}`);
    }
  }
}
