#!/usr/bin/env bash
# Builds the visualizer (build.sh) and runs its end-to-end test in headless Chromium (idempotent).
# Screenshots: target/wasm-e2e/*.png. The binding layer's Rust tests run with the workspace
# (`cargo test -p ringkv-wasm`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/build.sh"
if [ ! -x /usr/bin/chromium ]; then
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get install -y --no-install-recommends chromium \
    || { "${sudo_cmd[@]}" apt-get update && "${sudo_cmd[@]}" apt-get install -y --no-install-recommends chromium; }
fi
cd "$here/e2e"
# npm ci only when node_modules was not installed from this package-lock.json.
if ! cmp -s package-lock.json node_modules/.ringkv-installed-lock 2>/dev/null; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.ringkv-installed-lock
fi
node e2e.mjs
