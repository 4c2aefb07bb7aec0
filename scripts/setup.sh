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

# wasm-bindgen CLI: exactly the version Cargo.lock pins, or wasm-pack would try to download it.
if [ ! -f Cargo.lock ]; then cargo generate-lockfile; fi
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  say "building wasm-bindgen-cli $want (a few minutes, once)"
  # --locked first, as its authors pinned; if a pinned crate was yanked since, resolve afresh.
  cargo install wasm-bindgen-cli --version "$want" --locked --force \
    || cargo install wasm-bindgen-cli --version "$want" --force
fi

WASM_PACK_VERSION=0.15.1
if [ "$(wasm-pack --version 2>/dev/null | awk '{print $2}')" != "$WASM_PACK_VERSION" ]; then
  say "building wasm-pack $WASM_PACK_VERSION (a few minutes, once)"
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
if [ ${#packages[@]} -gt 0 ]; then
  say "installing ${packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# geckodriver, Firefox's WebDriver, built from crates.io (its prebuilt downloads fail here).
GECKODRIVER_VERSION=0.37.1
if [ "$( (geckodriver --version 2>/dev/null || true) | awk 'NR == 1 {print $2}')" != "$GECKODRIVER_VERSION" ]; then
  say "building geckodriver $GECKODRIVER_VERSION (a few minutes, once)"
  cargo install geckodriver --version "$GECKODRIVER_VERSION" --locked --force
fi

# Garage, the S3-compatible store of the put, s3 and attachment tests, built from crates.io.
# The tests need only the LMDB metadata engine (plus bundled-libs, which Garage requires):
# leaving out SQLite (a C build), metrics and K2V, and optimising less than a release build
# does, keeps a cold build inside npm test's budget. The store's speed is not what is tested.
GARAGE_VERSION=2.5.0
if ! (garage --version 2>/dev/null || true) | head -n 1 | grep -qw "$GARAGE_VERSION"; then
  say "building garage $GARAGE_VERSION (about 12 minutes on 2 cores, once)"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install garage --version "$GARAGE_VERSION" --locked --force --no-default-features --features bundled-libs,lmdb
fi

# npm dev dependencies, when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dev dependencies"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi
