// Launches Debian's Chromium headless with playwright-core, with the flags this machine kind
// needs: no sandbox as root, no GPU, and no background traffic to hosts the closed network
// refuses. Shared by the end-to-end tests and the benchmark.
import { chromium } from "playwright-core";

const options = () => ({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

export function launchChromium() {
  return chromium.launch(options());
}
