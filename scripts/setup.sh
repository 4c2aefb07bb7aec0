#!/usr/bin/env bash
# Installs whatever chunkup's build and tests need and is missing; quick when nothing is.
# Works offline except for the package registries (crates.io, npm, Debian): every tool is
# built or installed from them, never downloaded as a prebuilt binary, which fails here.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "setup: need root (or sudo) to run: $*" >&2; exit 1
  fi
}

# Rust's wasm target.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# What is missing is installed side by side, each into a log of its own: the cargo builds
# below take about 20 minutes one after the other on two cores, and each leaves a core idle
# for much of its time (build scripts, the last crates, linking); Debian's and npm's
# downloads mostly wait on the network.
logs=target/setup-logs
jobs_started=()
jobs_what=()
job_pids=()
# in_background NAME WHAT COMMAND...: runs COMMAND in the background into $logs/NAME.log.
in_background() {
  local name=$1 what=$2
  shift 2
  mkdir -p "$logs"
  say "$what: started (log: $logs/$name.log)"
  "$@" >"$logs/$name.log" 2>&1 &
  job_pids+=($!)
  jobs_started+=("$name")
  jobs_what+=("$what")
}

# wasm-bindgen CLI: exactly the version Cargo.lock pins, or wasm-pack would try to download it.
if [ ! -f Cargo.lock ]; then cargo generate-lockfile; fi
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
install_wasm_bindgen() {
  # --locked first, as its authors pinned; if a pinned crate was yanked since, resolve afresh.
  cargo install wasm-bindgen-cli --version "$want" --locked --force \
    || cargo install wasm-bindgen-cli --version "$want" --force
}
if [ "$have" != "$want" ]; then
  in_background wasm-bindgen "building wasm-bindgen-cli $want" install_wasm_bindgen
fi

WASM_PACK_VERSION=0.15.1
if [ "$(wasm-pack --version 2>/dev/null | awk '{print $2}')" != "$WASM_PACK_VERSION" ]; then
  in_background wasm-pack "building wasm-pack $WASM_PACK_VERSION" \
    cargo install wasm-pack --version "$WASM_PACK_VERSION" --locked --force
fi

# The three browser engines, from Debian: Chromium and its driver (browser tests and
# end-to-end tests), Firefox ESR (both too), and WebKitGTK's WebDriver, which brings the
# MiniBrowser, with Xvfb to give it a display (end-to-end tests).
packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
command -v firefox-esr >/dev/null || packages+=(firefox-esr)
command -v WebKitWebDriver >/dev/null || packages+=(webkit2gtk-driver)
command -v Xvfb >/dev/null || packages+=(xvfb)
install_packages() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
}
if [ ${#packages[@]} -gt 0 ]; then
  in_background apt "installing ${packages[*]}" install_packages
fi

# geckodriver, Firefox's WebDriver, built from crates.io (its prebuilt downloads fail here).
GECKODRIVER_VERSION=0.37.1
if [ "$( (geckodriver --version 2>/dev/null || true) | awk 'NR == 1 {print $2}')" != "$GECKODRIVER_VERSION" ]; then
  in_background geckodriver "building geckodriver $GECKODRIVER_VERSION" \
    cargo install geckodriver --version "$GECKODRIVER_VERSION" --locked --force
fi

# Garage, the S3-compatible store of the put, s3 and attachment tests, built from crates.io.
# The tests need only the LMDB metadata engine (plus bundled-libs, which Garage requires):
# leaving out SQLite (a C build), metrics and K2V, and optimising less than a release build
# does, keeps a cold build inside npm test's budget. The store's speed is not what is tested.
GARAGE_VERSION=2.5.0
if ! (garage --version 2>/dev/null || true) | head -n 1 | grep -qw "$GARAGE_VERSION"; then
  in_background garage "building garage $GARAGE_VERSION" \
    env CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install garage --version "$GARAGE_VERSION" --locked --force --no-default-features --features bundled-libs,lmdb
fi

# npm dev dependencies, when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dev dependencies"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

# Wait for everything started above; a failure shows the end of its log.
failed=0
for i in "${!job_pids[@]}"; do
  if wait "${job_pids[$i]}"; then
    say "${jobs_what[$i]}: done"
  else
    echo "setup: ${jobs_what[$i]}: failed; the end of $logs/${jobs_started[$i]}.log:" >&2
    tail -n 40 "$logs/${jobs_started[$i]}.log" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
