#!/usr/bin/env node
// A stock tus 1.0 server (@tus/server + @tus/file-store) to check chunkup
// against an implementation other than our own reference server.
//
//   node scripts/tus-node-server.mjs [--port 0] [--host 127.0.0.1] [--dir DIR]
//                                    [--origin http://127.0.0.1:8080 ...] [--relative-location]
//
// Prints "tus-node-server listening on http://HOST:PORT/files/" once it
// accepts connections. --port 0 picks a free port. Without --dir, uploads go
// to a fresh temporary directory that is removed on exit. Location headers are
// absolute (the stock default) unless --relative-location ("/files/<id>").
//
// CORS: @tus/server answers preflights and sets Access-Control-* itself.
// Without --origin any origin is allowed ("*"); Location, Upload-Offset,
// Upload-Length, Tus-* are exposed by default, and we add Upload-Expires.
// Upload-Checksum is added to the allowed request headers so that a client
// sending it does not fail the preflight (this store ignores it: no checksum
// extension is advertised in Tus-Extension).
//
// Extra, for tests: GET /files/<id>/info answers like chunkup-server's:
//   {"size","offset","sha256","complete","metadata"} (sha256 of the stored bytes).
// Requires Node >= 20.

import { createHash } from "node:crypto";
import { createReadStream, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { FileStore } from "@tus/file-store";
import { Server } from "@tus/server";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    dir: { type: "string" },
    origin: { type: "string", multiple: true },
    "relative-location": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});

if (args.help) {
  console.log(
    "usage: node scripts/tus-node-server.mjs [--port N] [--host H] [--dir DIR] [--origin URL ...] [--relative-location]",
  );
  process.exit(0);
}

const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`tus-node-server: bad --port ${JSON.stringify(args.port)}`);
  process.exit(2);
}

const ownDir = !args.dir;
const directory = path.resolve(
  args.dir ?? mkdtempSync(path.join(os.tmpdir(), "chunkup-tus-")),
);

const PATH = "/files";
const datastore = new FileStore({ directory });
const tus = new Server({
  path: PATH,
  datastore,
  relativeLocation: args["relative-location"],
  allowedOrigins: args.origin?.length ? args.origin : undefined,
  allowedHeaders: ["Upload-Checksum", "X-Request-Id"],
  exposedHeaders: ["Upload-Expires", "Upload-Checksum"],
});

const corsOrigin = (origin) => {
  if (!args.origin?.length) return "*";
  return origin && args.origin.includes(origin) ? origin : args.origin[0];
};

const INFO = new RegExp(`^${PATH}/([^/]+)/info/?$`);

async function info(req, res, id) {
  const headers = {
    "Access-Control-Allow-Origin": corsOrigin(req.headers.origin),
    "Cache-Control": "no-store",
    "Content-Type": "application/json",
  };
  let upload;
  try {
    upload = await datastore.getUpload(id);
  } catch {
    res.writeHead(404, headers).end(JSON.stringify({ error: "not found" }));
    return;
  }
  const hash = createHash("sha256");
  if (upload.offset > 0) {
    await new Promise((resolve, reject) => {
      createReadStream(path.join(directory, id), { end: upload.offset - 1 })
        .on("data", (b) => hash.update(b))
        .on("end", resolve)
        .on("error", reject);
    });
  }
  res.writeHead(200, headers).end(
    JSON.stringify({
      size: upload.size ?? null,
      offset: upload.offset,
      sha256: hash.digest("hex"),
      complete: upload.size != null && upload.offset === upload.size,
      metadata: upload.metadata ?? {},
    }),
  );
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  const m = req.method === "GET" && INFO.exec(url.pathname);
  if (m) {
    info(req, res, decodeURIComponent(m[1])).catch((err) => {
      if (!res.headersSent) res.writeHead(500).end(String(err));
      else res.destroy();
    });
    return;
  }
  if (url.pathname !== PATH && !url.pathname.startsWith(`${PATH}/`)) {
    res.writeHead(404, { "Content-Type": "text/plain" }).end("Not found\n");
    return;
  }
  tus.handle(req, res).catch((err) => {
    if (!res.headersSent) res.writeHead(500).end(String(err));
    else res.destroy();
  });
});

server.on("error", (err) => {
  console.error(`tus-node-server: ${err.message}`);
  process.exit(1);
});

server.listen(port, args.host, () => {
  const { port: actual } = server.address();
  const host = args.host.includes(":") ? `[${args.host}]` : args.host;
  console.log(`tus-node-server listening on http://${host}:${actual}${PATH}/`);
  console.error(`tus-node-server: storing uploads in ${directory}`);
});

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  server.close(() => {
    if (ownDir) rmSync(directory, { recursive: true, force: true });
    process.exit(0);
  });
  // Uploads in flight would otherwise keep close() waiting.
  server.closeAllConnections();
  setTimeout(() => {
    console.error(`tus-node-server: forced exit after ${signal}`);
    if (ownDir) rmSync(directory, { recursive: true, force: true });
    process.exit(0);
  }, 3000).unref();
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
