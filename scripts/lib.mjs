// Helpers shared by the build, start, test and bench scripts: run a command, start a
// server and learn its URL from its first line, stop it again.
import { spawn } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const serverBinary = path.join(root, "target", "release", "chunkup-server");

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

/** Where the tests leave the servers' logs. */
export const logDir = path.join(root, "target", "test-logs");

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

/** Starts @tus/server (file store) on a free port, storing in `dir`. */
export function startTusNodeServer(dir, options = {}) {
  return startServer(
    process.execPath,
    [path.join(root, "scripts", "tus-node-server.mjs"), "--port", "0", "--dir", dir],
    /tus-node-server listening on (\S+)/,
    options,
  );
}
