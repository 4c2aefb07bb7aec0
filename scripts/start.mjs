// `npm start`: builds the reference server, starts a one-node Garage (the object store
// behind the put and s3 protocols and the chat widget's attachments; about a second) when
// Garage is installed, starts the server with the demo page, the built package and the
// store, and prints the URL. Ctrl-C stops both and removes Garage's files.
//
// Without Garage (scripts/setup.sh installs it) the demo still serves tus and range; put,
// s3 and attachments answer 503 saying so. `--s3-*` flags given to `npm start -- …` point
// the server at another store instead, and no Garage is started.
import { buildServer, root, serverBinary } from "./lib.mjs";
import { findGarage, startGarage } from "./garage.mjs";
import { spawn } from "node:child_process";
import path from "node:path";

await buildServer();
const port = process.env.PORT ?? "8080";
const extra = process.argv.slice(2);

let garage = null;
let storeArgs = [];
let env = process.env;
if (!extra.some((arg) => arg.startsWith("--s3-"))) {
  let installed = true;
  try {
    findGarage();
  } catch {
    installed = false;
    console.warn(
      "npm start: Garage is not installed, so put, s3 and the widget's attachments are off (503); " +
        "`bash scripts/setup.sh` installs it",
    );
  }
  if (installed) {
    garage = await startGarage({ nodes: 1 });
    storeArgs = garage.serverArgs();
    env = { ...process.env, ...garage.serverEnv };
    console.log(`  object store:  Garage, 1 node, bucket ${garage.bucket} at ${garage.endpoints[0]} (up in ${garage.startMs} ms)`);
  }
}

const server = spawn(
  serverBinary,
  [
    "--port", port,
    "--www", path.join(root, "www"),
    "--pkg", path.join(root, "pkg"),
    "--widget", path.join(root, "widget", "dist"),
    ...storeArgs,
    ...extra,
  ],
  { cwd: root, stdio: ["ignore", "pipe", "inherit"], env },
);
server.stdout.on("data", (data) => {
  const text = data.toString();
  process.stdout.write(text);
  const match = text.match(/listening on (\S+)/);
  if (match) {
    console.log(`\n  chunkup demo:  ${match[1]}\n  chat widget:   ${match[1]}widget/\n  (Ctrl-C to stop)\n`);
  }
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.kill("SIGTERM"));
server.on("exit", async (code) => {
  await garage?.stop().catch(() => {});
  process.exit(code ?? 0);
});
