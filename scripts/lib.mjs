// Helpers shared by the build, start, test, soak and bench scripts: run a command, start
// a server (or the fault-injecting proxy) and learn its URL from its first line, stop it
// again; for the bench, write a random file and read a process tree's memory.
import { spawn } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { mkdirSync, openSync, readdirSync, readFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const serverBinary = path.join(root, "target", "server", "chunkup-server");

/** Runs a command with inherited output; rejects on a non-zero exit. */
export function run(command, args, options = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, stdio: "inherit", ...options });
    child.on("error", reject);
    child.on("exit", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${command} ${args.join(" ")} exited with ${code ?? signal}`)),
    );
  });
}

/** Builds the reference server (Cargo.toml's `server` profile) into `serverBinary`. */
export function buildServer() {
  return run("cargo", ["build", "--profile", "server", "-p", "chunkup-server"]);
}

/**
 * Starts a long-running server and resolves once it printed a line matching `pattern`
 * (whose first group is its URL). Its stderr goes to ours, or with `log` to that file
 * (the tests keep servers quiet but leave their logs in target/test-logs/).
 */
export function startServer(command, args, pattern, { log, env } = {}) {
  return new Promise((resolve, reject) => {
    let stderr = "inherit";
    if (log) {
      mkdirSync(path.dirname(log), { recursive: true });
      stderr = openSync(log, "w");
    }
    const child = spawn(command, args, {
      cwd: root,
      stdio: ["ignore", "pipe", stderr],
      env: env ?? process.env,
    });
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`${command} did not start within 60 s`));
    }, 60_000);
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`${command} exited early with ${code}`)));
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const match = line.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve({ url: match[1], child });
      }
    });
  });
}

/** Stops a server started with startServer and waits for it to exit. */
export function stop(server) {
  const { child } = server ?? {};
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.removeAllListeners("exit");
    child.on("exit", resolve);
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  });
}

/**
 * A loopback TCP port that is free now, for a program that must be told its port (Garage's
 * nodes, WebKitWebDriver, a server restarted on the port it had). Picked below the kernel's
 * ephemeral range, so that no socket bound to port 0 meanwhile (every other server of the
 * tests, every outgoing connection) can take it before that program binds it; never the
 * same port twice in one process.
 */
export async function freePort() {
  const [ephemeralLow] = (() => {
    try {
      return readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    } catch {
      return [32768];
    }
  })();
  const low = 10000;
  const high = Math.max(low + 1000, ephemeralLow) - 1;
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port)) continue;
    const free = await new Promise((resolve) => {
      const probe = createServer();
      probe.once("error", () => resolve(false));
      probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port between ${low} and ${high}`);
}
const handedOut = new Set();

/** Where the tests leave the servers' logs. */
export const logDir = path.join(root, "target", "test-logs");

/**
 * Reference-server flags that open the guest API emulator's limits up to any file a
 * measurement uses (Genesys itself takes at most 50 MB: the bench and anatomy measure the
 * engine, not that limit).
 */
export const openGuestLimits = ["--guest-max-kb", String(4 * 1024 * 1024), "--guest-file-types", "*/*"];

/** Starts the reference server on a free port. */
export function startReferenceServer(extraArgs = [], options = {}) {
  return startServer(
    serverBinary,
    [
      "--port", "0",
      "--www", path.join(root, "www"),
      "--pkg", path.join(root, "pkg"),
      "--widget", path.join(root, "widget", "dist"),
      ...extraArgs,
    ],
    /chunkup-server listening on (\S+)/,
    options,
  );
}

/**
 * Starts the reference server's fault-injecting proxy (`chunkup-server --proxy-to`) on a
 * free port in front of `upstream` (a URL; only its origin counts) with the fault spec
 * `faults`; `options.seed` (default 1) seeds it, `options.log`/`options.env` as for
 * startServer. Resolves to `{ url, child }`, `url` being the proxy's `http://HOST:PORT/`;
 * `GET <url>__faults` answers its counters.
 */
export function startFaultProxy(upstream, faults, { seed = 1, ...options } = {}) {
  return startServer(
    serverBinary,
    ["--proxy-to", new URL(upstream).origin, "--port", "0", "--faults", faults, "--seed", String(seed)],
    /chunkup-server proxy listening on (\S+)/,
    options,
  );
}

/** Starts @tus/server (file store) on a free port, storing in `dir`. */
export function startTusNodeServer(dir, options = {}) {
  return startServer(
    process.execPath,
    [path.join(root, "scripts", "tus-node-server.mjs"), "--port", "0", "--dir", dir],
    /tus-node-server listening on (\S+)/,
    options,
  );
}

/**
 * Writes `bytes` pseudo-random bytes to `file` in 8 MiB blocks (never the whole file in
 * memory) and resolves to their SHA-256 in hex, computed on the way.
 */
export async function writeRandomFile(file, bytes) {
  const hash = createHash("sha256");
  const block = Buffer.alloc(8 * 1024 * 1024);
  const handle = await open(file, "w");
  try {
    for (let at = 0; at < bytes; at += block.length) {
      const piece = block.subarray(0, Math.min(block.length, bytes - at));
      randomFillSync(piece);
      hash.update(piece);
      await handle.write(piece);
    }
  } finally {
    await handle.close();
  }
  return hash.digest("hex");
}

/** A file of `size` pseudo-random bytes at `dir/name`: resolves to `{ path, size, sha256 }`. */
export async function randomTestFile(dir, name, size) {
  const at = path.join(dir, name);
  return { path: at, size, sha256: await writeRandomFile(at, size) };
}

/** Every process's parent, from /proc/<pid>/stat (Linux): a Map of pid to ppid. */
function parentsOfAll() {
  const parents = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone since readdir
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
    parents.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
  }
  return parents;
}

/** The direct children of `pid`, each as { pid, cmdline } (arguments joined by spaces). */
export function childProcesses(pid) {
  const children = [];
  for (const [child, parent] of parentsOfAll()) {
    if (parent !== pid) continue;
    try {
      children.push({ pid: child, cmdline: readFileSync(`/proc/${child}/cmdline`, "utf8").split("\0").join(" ").trim() });
    } catch {
      // exited meanwhile
    }
  }
  return children;
}

/**
 * The pid of the browser playwright launched from this process. playwright's Browser does
 * not expose its process; it is the child of this process started with
 * --remote-debugging-pipe (Debian's /usr/bin/chromium is a shell script running the real
 * browser as its child: the tree below holds every browser process either way).
 */
export function launchedBrowserPid() {
  const launched = childProcesses(process.pid).filter((p) => p.cmdline.includes("--remote-debugging-pipe"));
  if (launched.length !== 1) throw new Error(`expected one browser under this process, found ${launched.length}`);
  return launched[0].pid;
}

/**
 * A process's role, from its command line: Chromium's `--type` ("renderer", "utility
 * NetworkService"...), else its program's name; "exited" when it is gone.
 */
export function processRole(pid) {
  try {
    // Chromium rewrites its children's command lines into one string: split on spaces too.
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split(/[\0 ]+/);
    const value = (name) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const type = value("type");
    if (!type) return path.basename(args[0]);
    return [type, value("utility-sub-type")?.split(".").pop()].filter(Boolean).join(" ");
  } catch {
    return "exited";
  }
}

/** The pids of `pid` and all its descendants (Linux). */
export function processTree(pid) {
  const children = new Map();
  for (const [child, parent] of parentsOfAll()) {
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(child);
  }
  const tree = [];
  for (let queue = [pid]; queue.length; ) {
    const next = queue.pop();
    tree.push(next);
    queue.push(...(children.get(next) ?? []));
  }
  return tree;
}

/** A "Name:   123 kB" line's number, from /proc's status or smaps_rollup text; 0 if absent. */
function kiBField(text, name) {
  return Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
}

/**
 * A process's RSS in KiB, whole (`total`, VmRSS) and in Linux's three parts: anonymous
 * memory (`anon`: heaps, wasm memory, compiled code), file-backed pages (`file`: Chromium's
 * own program and libraries, paged in as code runs for the first time; the kernel may drop
 * them at will) and shared memory (`shmem`: such as the data pipes that carry a file's bytes
 * between processes, counted in each process that maps them). Null for a process that has
 * exited.
 */
export function processRss(pid) {
  let status;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return null;
  }
  return {
    total: kiBField(status, "VmRSS"),
    anon: kiBField(status, "RssAnon"),
    file: kiBField(status, "RssFile"),
    shmem: kiBField(status, "RssShmem"),
  };
}

/**
 * Memory of processes in KiB. `rss` sums VmRSS: a page shared between processes counts once
 * per process. With `pss`, also from smaps_rollup: `pss` sums Pss, which splits a shared page
 * between all its users, and `pssAnonShmem` sums Pss_Anon + Pss_Shmem, leaving out
 * file-backed pages (program text, fonts): those are shared with any other process mapping
 * the same files, such as another Chromium on the machine, so the plain Pss of a process
 * moves when unrelated programs start or exit. Without `pss`, or when some smaps_rollup is
 * unreadable, both are null. Pss is slow to read (the kernel walks the page tables: about
 * 10 to 50 ms per Chromium process); VmRSS is not. A process that exited meanwhile counts 0.
 */
export function processesMemory(pids, { pss: withPss = false } = {}) {
  let rss = 0;
  let pss = withPss ? 0 : null;
  let pssAnonShmem = withPss ? 0 : null;
  for (const pid of pids) {
    const resident = processRss(pid);
    if (!resident) continue; // exited: it holds no memory any more
    rss += resident.total;
    if (pss === null) continue;
    try {
      const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
      pss += kiBField(rollup, "Pss");
      pssAnonShmem += kiBField(rollup, "Pss_Anon") + kiBField(rollup, "Pss_Shmem");
    } catch (error) {
      if (error.code !== "ENOENT" && error.code !== "ESRCH") pss = pssAnonShmem = null;
    }
  }
  return { rss, pss, pssAnonShmem };
}

/**
 * Waits until the RSS of the process tree under `pid` has stopped moving: sampled every
 * 250 ms, settled once the last 2 s of samples lie within 1 MiB of each other; gives up
 * after `limitMs`. Resolves to { ms, settled }.
 *
 * Why: after a page loads, Chromium keeps warming up processes for a few seconds (a new
 * renderer grew by 8 to 29 MiB of RSS over 3 s in which the page did nothing, measured
 * with no wait here; with it, by 0.1 to 0.5 MiB). Memory growth measured from before that
 * ends would be Chromium's, not the measured job's: the bench's control row shows what
 * is left.
 */
export async function settleProcessTree(pid, { limitMs = 20_000 } = {}) {
  const started = Date.now();
  const window = [];
  for (;;) {
    window.push(processesMemory(processTree(pid)).rss);
    if (window.length > 9) window.shift();
    const spreadKiB = Math.max(...window) - Math.min(...window);
    if (window.length === 9 && spreadKiB < 1024) return { ms: Date.now() - started, settled: true };
    if (Date.now() - started >= limitMs) return { ms: Date.now() - started, settled: false };
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * Runs a command with its stdout and stderr going to the file `log` (for jobs that run side
 * by side, whose output would interleave). Resolves to its exit code, or to the signal's
 * name; `onSpawn` receives the child (to end it on an interruption).
 */
export function runToLog(command, args, { log, env, onSpawn } = {}) {
  mkdirSync(path.dirname(log), { recursive: true });
  const out = openSync(log, "w");
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, stdio: ["ignore", out, out], env: env ?? process.env });
    onSpawn?.(child);
    child.on("error", reject);
    child.on("exit", (code, signal) => resolve(code ?? signal));
  });
}

/**
 * The object-store stack of the put and s3 tests: a Garage cluster (scripts/garage.mjs;
 * `nodes`, default 3, replication factor 3), a fault-injecting proxy in front of its node 0
 * (`faults`, `seed`; `GET/PUT <proxy.url>__faults` as for startFaultProxy), and the reference
 * server as the widget's backend (`--s3-*` flags; browsers reach the store through the proxy,
 * so presigned URLs are signed for the proxy's host; the key's secret goes in the
 * environment, never on a command line). `serverArgs` are extra server flags; `logDir`
 * keeps the logs (garage-node*.log, store-proxy.log, store-server.log). Resolves to
 * `{ garage, proxy, server, stop() }`; `garage.stopNode(i)` / `garage.startNode(i)` for i ≥ 1
 * leave the proxy's and the server's node up. Garage missing: rejects saying how to install it.
 */
export async function startStoreStack({ nodes = 3, faults = "none", seed = 1, serverArgs = [], logDir } = {}) {
  // Imported here so scripts that never start a store do not need its dependencies.
  const { startGarage } = await import("./garage.mjs");
  const garage = await startGarage({ nodes, logDir });
  let proxy;
  let server;
  try {
    proxy = await startFaultProxy(garage.endpoints[0], faults, {
      seed,
      log: logDir && path.join(logDir, "store-proxy.log"),
    });
    server = await startReferenceServer([...garage.serverArgs({ publicEndpoint: proxy.url }), ...serverArgs], {
      log: logDir && path.join(logDir, "store-server.log"),
      env: { ...process.env, ...garage.serverEnv },
    });
  } catch (error) {
    await stop(proxy);
    await garage.stop();
    throw error;
  }
  return {
    garage,
    proxy,
    server,
    async stop() {
      await stop(server);
      await stop(proxy);
      await garage.stop();
    },
  };
}
