// A throwaway Garage cluster (an S3-compatible object store) on loopback, for chunkup's
// tests and `npm start`: N nodes (default 3, replication factor N) on free ports, each with
// its own metadata and data directories and TOML under one temporary directory, connected,
// with a layout applied, a bucket, a key allowed on it (made with the `garage` command) and
// the bucket's CORS set for browser uploads. Quick once Garage is installed (about a second
// for three nodes); `stop()` stops every node and removes every file.
//
//   import { startGarage } from "./garage.mjs";
//   const g = await startGarage({ nodes: 3 });     // options below
//   g.endpoints      // S3 API of each node: ["http://127.0.0.1:PORT/", ...]
//   g.region, g.bucket, g.keyId, g.secret
//   g.serverArgs({ publicEndpoint })   // chunkup-server's --s3-* flags (no secret in them)
//   g.serverEnv      // { CHUNKUP_S3_SECRET_ACCESS_KEY: secret }: pass the secret this way
//   await g.stopNode(1)                // SIGKILL, as a crash (or { signal: "SIGTERM" })
//   await g.startNode(1)               // same directories and ports: it rejoins; resolves
//                                      // once healthy (1 to 10 s: Garage nodes exchange
//                                      // their status every 10 s)
//   await g.stop()
//
// Options: nodes (3), replication (= nodes, at most 3 here), bucket ("chunkup"),
// region ("garage"), corsOrigins (["*"]), logDir (keep each node's log there, e.g.
// target/test-logs; default: in the temporary directory, removed with it), rustLog
// (RUST_LOG of the nodes, default "garage=warn"), garage (the binary; default $GARAGE_BIN,
// then `garage` on PATH, then ~/.cargo/bin/garage).
//
// Each node runs under a small `sh` watchdog that holds a pipe from this process: if this
// process dies without calling stop(), the pipe closes and the watchdog kills its node, so
// no Garage outlives a crashed test run; a janitor holding another pipe then removes the
// temporary directory.
//
// The bucket's CORS is set through the S3 API (PutBucketCors), as an application would,
// signed by `aws4fetch` (a dev dependency, pinned): a small SigV4 signer for fetch with no
// dependencies of its own. The AWS SDK would do the same with about a hundred packages, and
// going through the reference server's rusty-s3 would tie this script to a built server.
// Rules: AllowedOrigin corsOrigins; AllowedMethod GET, PUT, POST, DELETE, HEAD;
// AllowedHeader *; ExposeHeader ETag, x-amz-checksum-sha256, Content-Length,
// Content-Range, Accept-Ranges; MaxAgeSeconds 3600.
//
// CLI, for manual use:
//   node scripts/garage.mjs [--nodes N] [--bucket NAME] [--region NAME] [--json]
// starts a cluster, prints the endpoints, the chunkup-server flags and the key's secret
// (a throwaway key of a throwaway local cluster), and stops it all on Ctrl-C. With --json,
// one JSON line instead (endpoints, region, bucket, keyId, secret, dir).
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { AwsClient } from "aws4fetch";
import { freePort } from "./lib.mjs";

const SECRET_ENV = "CHUNKUP_S3_SECRET_ACCESS_KEY";

/** The Garage binary, or an Error saying how to install it. */
export function findGarage(explicit = process.env.GARAGE_BIN) {
  const candidates = [];
  if (explicit) candidates.push(explicit);
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) if (dir) candidates.push(path.join(dir, "garage"));
  candidates.push(path.join(os.homedir(), ".cargo", "bin", "garage"));
  for (const file of candidates) {
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // next
    }
  }
  throw new Error(
    "Garage is not installed (no `garage` on PATH or in ~/.cargo/bin): run `bash scripts/setup.sh`, " +
      "which installs it from crates.io (`cargo install garage --locked`), or set GARAGE_BIN",
  );
}

/** A free TCP port on 127.0.0.1 (free when asked; taken again by Garage right after). */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `garage -c CONFIG ARGS...`; resolves to its stdout. */
function garageCommand(bin, config, args, { timeoutMs = 20_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      ["-c", config, ...args],
      { timeout: timeoutMs, env: { ...process.env, RUST_LOG: "error" } },
      (error, stdout, stderr) => {
        if (error) {
          error.message = `garage ${args.join(" ")}: ${(stderr || stdout || error.message).trim()}`;
          reject(error);
        } else resolve(stdout);
      },
    );
  });
}

/** Retries `fn` until it resolves or `timeoutMs` passed (cluster steps settle in ms). */
async function retry(fn, { timeoutMs = 15_000, delayMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(delayMs);
    }
  }
}

function nodeToml({ dir, replication, rpcPort, s3Port, adminPort, rpcSecret, adminToken, region }) {
  return `metadata_dir = "${dir}/meta"
data_dir = "${dir}/data"
db_engine = "lmdb"
# The LMDB map is sparse, but keep the reservation modest on small test machines.
lmdb_map_size = "1G"
replication_factor = ${replication}
# Blocks are stored as sent: zstd (level 1 by default) costs each node CPU on every block,
# and what these clusters hold (the tests' random bytes, the demo's uploads, the bench's
# files) would not compress enough to be worth it on a local test cluster.
compression_level = "none"
rpc_bind_addr = "127.0.0.1:${rpcPort}"
rpc_public_addr = "127.0.0.1:${rpcPort}"
rpc_secret = "${rpcSecret}"

[s3_api]
api_bind_addr = "127.0.0.1:${s3Port}"
s3_region = "${region}"

[admin]
api_bind_addr = "127.0.0.1:${adminPort}"
admin_token = "${adminToken}"
`;
}

function corsXml(origins) {
  const each = (tag, values) => values.map((v) => `<${tag}>${v}</${tag}>`).join("");
  return (
    `<?xml version="1.0" encoding="UTF-8"?><CORSConfiguration><CORSRule>` +
    each("AllowedOrigin", origins) +
    each("AllowedMethod", ["GET", "PUT", "POST", "DELETE", "HEAD"]) +
    each("AllowedHeader", ["*"]) +
    each("ExposeHeader", ["ETag", "x-amz-checksum-sha256", "Content-Length", "Content-Range", "Accept-Ranges"]) +
    `<MaxAgeSeconds>3600</MaxAgeSeconds></CORSRule></CORSConfiguration>`
  );
}

/** Whether a process runs: it exists and is not a zombie (a node that died stays one
 * until its watchdog reaps it). Linux /proc. */
function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/**
 * Starts a cluster (see the header comment). Rejects with a clear message when Garage is
 * not installed; anything started before a failure is stopped and removed again.
 */
export async function startGarage(options = {}) {
  const {
    nodes: count = 3,
    bucket = "chunkup",
    region = "garage",
    corsOrigins = ["*"],
    logDir,
    rustLog = "garage=warn",
  } = options;
  const replication = options.replication ?? Math.min(count, 3);
  const bin = findGarage(options.garage);
  const started = Date.now();
  const dir = mkdtempSync(path.join(os.tmpdir(), "chunkup-garage-"));
  const rpcSecret = randomBytes(32).toString("hex");
  const adminToken = randomBytes(24).toString("hex");
  // Removes the directory once this process is gone, however it ends.
  const janitor = spawn("sh", ["-c", 'cat >/dev/null; sleep 1; rm -rf "$0"', dir], {
    stdio: ["pipe", "ignore", "ignore"],
  });
  janitor.unref();
  janitor.stdin.unref?.();
  const nodes = [];
  for (let i = 0; i < count; i++) {
    const nodeDir = path.join(dir, `node${i}`);
    mkdirSync(nodeDir, { recursive: true });
    const node = {
      index: i,
      dir: nodeDir,
      config: path.join(nodeDir, "garage.toml"),
      log: logDir ? path.join(logDir, `garage-node${i}.log`) : path.join(nodeDir, "garage.log"),
      rpcPort: await freePort(),
      s3Port: await freePort(),
      adminPort: await freePort(),
      watchdog: null,
      pid: null,
    };
    writeFileSync(node.config, nodeToml({ dir: nodeDir, replication, rpcSecret, adminToken, region, ...node }));
    nodes.push(node);
  }
  if (logDir) mkdirSync(logDir, { recursive: true });

  const startNode = async (i) => {
    const node = nodes[i];
    if (node.watchdog) throw new Error(`garage node ${i} is already running`);
    // The watchdog: starts the node, prints its pid, then waits for its stdin (a pipe from
    // this process) to close, and kills the node if it still runs.
    const script =
      'exec 3<&0; "$0" -c "$1" server >>"$2" 2>&1 </dev/null 3<&- & pid=$!; echo "$pid"; ' +
      'cat <&3 >/dev/null; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 0';
    const watchdog = spawn("sh", ["-c", script, bin, node.config, node.log], {
      stdio: ["pipe", "pipe", "inherit"],
      env: { ...process.env, RUST_LOG: rustLog },
    });
    node.watchdog = watchdog;
    node.exited = new Promise((resolve) => watchdog.on("exit", resolve));
    node.pid = await new Promise((resolve, reject) => {
      const lines = createInterface({ input: watchdog.stdout });
      lines.once("line", (line) => resolve(Number(line)));
      watchdog.once("error", reject);
      watchdog.once("exit", () => reject(new Error(`garage node ${i} did not start`)));
    });
    // Up when its admin API answers (it binds the S3 API at the same time).
    await retry(async () => {
      if (!alive(node.pid)) throw new Error(`garage node ${i} exited at once: see ${node.log}`);
      await fetch(`http://127.0.0.1:${node.adminPort}/health`);
    });
    // A restarted node may not know its peers yet (it saves them now and then), and they
    // retry it ever more slowly: introduce it, as an operator would.
    const peer = nodes.find((n) => n !== node && n.watchdog);
    if (node.id && peer) await retry(() => garageCommand(bin, peer.config, ["node", "connect", node.id]));
  };

  const stopNode = async (i, { signal = "SIGKILL" } = {}) => {
    const node = nodes[i];
    if (!node.watchdog) return;
    if (alive(node.pid)) process.kill(node.pid, signal);
    const deadline = Date.now() + 10_000;
    while (alive(node.pid) && Date.now() < deadline) await sleep(20);
    node.watchdog.stdin.end(); // the watchdog then SIGKILLs whatever is left, and exits
    await node.exited;
    node.watchdog = null;
    node.pid = null;
  };

  let stopped = false;
  const cleanupSync = () => {
    for (const node of nodes) if (node.pid && alive(node.pid)) process.kill(node.pid, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", cleanupSync);
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    process.removeListener("exit", cleanupSync);
    await Promise.all(nodes.map((_, i) => stopNode(i)));
    rmSync(dir, { recursive: true, force: true });
    janitor.stdin.end();
  };

  try {
    await Promise.all(nodes.map((_, i) => startNode(i)));
    const cli = (args, o) => garageCommand(bin, nodes[0].config, args, o);
    const ids = [];
    for (const node of nodes) {
      const id = (await retry(() => garageCommand(bin, node.config, ["node", "id", "-q"]))).trim();
      ids.push(id);
    }
    for (const id of ids.slice(1)) await retry(() => cli(["node", "connect", id]));
    ids.forEach((id, i) => (nodes[i].id = id));
    for (const id of ids) await retry(() => cli(["layout", "assign", "-z", "dc1", "-c", "1G", id.split("@")[0]]));
    await retry(() => cli(["layout", "apply", "--version", "1"]));
    // Healthy once every node knows the layout and quorum is there.
    for (const node of nodes) {
      await retry(async () => {
        const res = await fetch(`http://127.0.0.1:${node.adminPort}/health`);
        if (!res.ok) throw new Error(`garage node ${node.index}: ${res.status} ${await res.text()}`);
      });
    }
    await retry(() => cli(["bucket", "create", bucket]));
    const keyInfo = await retry(() => cli(["key", "create", `${bucket}-key`]));
    const keyId = keyInfo.match(/Key ID:\s*(\S+)/)?.[1];
    const secret = keyInfo.match(/Secret key:\s*(\S+)/)?.[1];
    if (!keyId || !secret) throw new Error("garage key create: no key id or secret in its output");
    await retry(() => cli(["bucket", "allow", "--read", "--write", "--owner", bucket, "--key", keyId]));
    const endpoints = nodes.map((n) => `http://127.0.0.1:${n.s3Port}/`);
    const aws = new AwsClient({ accessKeyId: keyId, secretAccessKey: secret, service: "s3", region });
    await retry(async () => {
      const res = await aws.fetch(`${endpoints[0]}${bucket}?cors`, {
        method: "PUT",
        headers: { "content-type": "application/xml" },
        body: corsXml(corsOrigins),
      });
      if (!res.ok) throw new Error(`PutBucketCors: ${res.status} ${await res.text()}`);
    });
    return {
      endpoints,
      region,
      bucket,
      keyId,
      secret,
      dir,
      replication,
      nodes: nodes.map((n) => ({ s3: `http://127.0.0.1:${n.s3Port}/`, admin: `http://127.0.0.1:${n.adminPort}/`, log: n.log })),
      startMs: Date.now() - started,
      /** chunkup-server's flags for this cluster; the secret goes in `serverEnv`. */
      serverArgs({ endpoint = endpoints[0], publicEndpoint = endpoint } = {}) {
        return [
          "--s3-endpoint", endpoint,
          "--s3-public-endpoint", publicEndpoint,
          "--s3-region", region,
          "--s3-bucket", bucket,
          "--s3-access-key-id", keyId,
        ];
      },
      serverEnv: { [SECRET_ENV]: secret },
      stopNode,
      startNode: async (i) => {
        await startNode(i);
        // Back in the cluster once it answers healthy (it reconnects to its peers).
        await retry(async () => {
          const res = await fetch(`http://127.0.0.1:${nodes[i].adminPort}/health`);
          if (!res.ok) throw new Error(`garage node ${i} unhealthy`);
        });
      },
      stop,
    };
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
}

// ---- CLI ----
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const usage = (code) => {
    console.log("usage: node scripts/garage.mjs [--nodes N] [--bucket NAME] [--region NAME] [--json]");
    process.exit(code);
  };
  const opts = { nodes: "3", bucket: "chunkup", region: "garage" };
  let json = false;
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const name = args[i].replace(/^--/, "");
    if (args[i] === "--json") json = true;
    else if (args[i] === "--help") usage(0);
    else if (args[i].startsWith("--") && name in opts && i + 1 < args.length) opts[name] = args[++i];
    else usage(2);
  }
  let cluster;
  try {
    cluster = await startGarage({ nodes: Number(opts.nodes), bucket: opts.bucket, region: opts.region });
  } catch (error) {
    console.error(`garage.mjs: ${error.message}`);
    process.exit(1);
  }
  if (json) {
    const { endpoints, region, bucket, keyId, secret, dir } = cluster;
    console.log(JSON.stringify({ endpoints, region, bucket, keyId, secret, dir }));
  } else {
    console.log(`garage: ${cluster.endpoints.length} node(s) up in ${cluster.startMs} ms (replication factor ${cluster.replication})`);
    console.log(`  S3 endpoints:  ${cluster.endpoints.join(" ")}`);
    console.log(`  files:         ${cluster.dir}`);
    console.log(`  server flags:  ${cluster.serverArgs().join(" ")}`);
    console.log(`  secret:        export ${SECRET_ENV}=${cluster.secret}`);
    console.log("  (Ctrl-C stops the cluster and removes its files)");
  }
  const shutdown = () => cluster.stop().then(() => process.exit(0));
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
}
