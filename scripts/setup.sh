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

# What is missing is installed beside npm's install: Debian's packages in the background (they
# mostly wait on the network), the cargo builds one after the other in another background
# job, each into a log of its own under target/setup-logs/. (Side by side, eight compilers
# on two cores, the four builds gained nothing: 23 minutes at the default opt-level, against
# 18 one after the other at opt-level 1, measured from an empty CARGO_HOME; 16¼ with
# wasm-pack and geckodriver at opt-level 0.)
logs=target/setup-logs
mkdir -p "$logs"
jobs_started=()
jobs_what=()
job_pids=()
# in_background NAME WHAT COMMAND...: runs COMMAND in the background into $logs/NAME.log.
in_background() {
  local name=$1 what=$2
  shift 2
  say "$what: started (log: $logs/$name.log)"
  "$@" >"$logs/$name.log" 2>&1 &
  job_pids+=($!)
  jobs_started+=("$name")
  jobs_what+=("$what")
}

# The tools are built optimised less than a release build (no LTO, no debug info, opt-level
# 1 or 0), which is quicker (measured here from an empty CARGO_HOME, downloads included, at
# opt-level 1: wasm-bindgen-cli 3.9 min, wasm-pack 2.5 to 2.9, geckodriver 2.5 to 2.9,
# Garage 9.4), and none of them is a hot loop in the tests. wasm-pack and geckodriver only
# start and relay, so they get opt-level 0 (wasm-pack: 108 s against 163 at opt-level 1,
# with crates.io's sources at hand); wasm-bindgen rewrites every test binary and Garage
# hashes and replicates every byte the tests store, so they keep opt-level 1.
# tool_install OPT_LEVEL CARGO_INSTALL_ARGS...
tool_install() {
  local opt_level=$1
  shift
  CARGO_PROFILE_RELEASE_OPT_LEVEL=$opt_level CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install --force "$@"
}
cargo_jobs=() # each NAME has a function build_NAME, run in order by build_tools
build_tools() {
  local name
  for name in "${cargo_jobs[@]}"; do
    echo "building $name (log: $logs/$name.log)"
    if ! "build_$name" >"$logs/$name.log" 2>&1; then
      echo "building $name failed; the end of its log:"
      tail -n 40 "$logs/$name.log"
      return 1
    fi
  done
}

# wasm-bindgen CLI: exactly the version Cargo.lock pins, or wasm-pack would try to download it.
if [ ! -f Cargo.lock ]; then cargo generate-lockfile; fi
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
build_wasm-bindgen-cli() {
  # --locked first, as its authors pinned; if a pinned crate was yanked since, resolve afresh.
  tool_install 1 wasm-bindgen-cli --version "$want" --locked \
    || tool_install 1 wasm-bindgen-cli --version "$want"
}
[ "$have" = "$want" ] || cargo_jobs+=(wasm-bindgen-cli)

WASM_PACK_VERSION=0.15.1
build_wasm-pack() { tool_install 0 wasm-pack --version "$WASM_PACK_VERSION" --locked; }
[ "$(wasm-pack --version 2>/dev/null | awk '{print $2}')" = "$WASM_PACK_VERSION" ] || cargo_jobs+=(wasm-pack)

# geckodriver, Firefox's WebDriver, built from crates.io (its prebuilt downloads fail here).
GECKODRIVER_VERSION=0.37.1
build_geckodriver() { tool_install 0 geckodriver --version "$GECKODRIVER_VERSION" --locked; }
[ "$( (geckodriver --version 2>/dev/null || true) | awk 'NR == 1 {print $2}')" = "$GECKODRIVER_VERSION" ] \
  || cargo_jobs+=(geckodriver)

# Garage, the S3-compatible store of the put, s3 and attachment tests, built from crates.io.
# The tests need only the LMDB metadata engine (plus bundled-libs, which Garage requires):
# leaving out SQLite (a C build), metrics and K2V keeps a cold build inside npm test's budget.
GARAGE_VERSION=2.5.0
build_garage() {
  tool_install 1 garage --version "$GARAGE_VERSION" --locked --no-default-features --features bundled-libs,lmdb
}
(garage --version 2>/dev/null || true) | head -n 1 | grep -qw "$GARAGE_VERSION" || cargo_jobs+=(garage)

if [ ${#cargo_jobs[@]} -gt 0 ]; then
  in_background tools "building ${cargo_jobs[*]} (about 16 minutes on two cores, once)" build_tools
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
