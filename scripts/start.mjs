// `npm start`: builds the reference server, starts it with the demo page and the built
// package, and prints the URL. Ctrl-C stops it.
import { root, run, serverBinary } from "./lib.mjs";
import { spawn } from "node:child_process";
import path from "node:path";

await run("cargo", ["build", "--release", "-p", "chunkup-server"]);
const port = process.env.PORT ?? "8080";
const server = spawn(
  serverBinary,
  [
    "--port", port,
    "--www", path.join(root, "www"),
    "--pkg", path.join(root, "pkg"),
    "--widget", path.join(root, "widget", "dist"),
    ...process.argv.slice(2),
  ],
  { cwd: root, stdio: ["ignore", "pipe", "inherit"] },
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
server.on("exit", (code) => process.exit(code ?? 0));
