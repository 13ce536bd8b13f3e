#!/usr/bin/env bash
# Builds the visualizer's WebAssembly module into bindings-wasm/web/pkg/ (idempotent).
#
# This machine's rustup has no wasm32 target and cannot download one, so the module is built with
# Debian bookworm's rustc-web and std built from source (../shared/DESIGN.md section 9). With
# internet, the ordinary route works as well:
#   rustup target add wasm32-unknown-unknown
#   cargo build --release --target wasm32-unknown-unknown -p ringkv-wasm
#   wasm-bindgen --target web --out-dir bindings-wasm/web/pkg \
#     target/wasm32-unknown-unknown/release/ringkv_wasm.wasm
set -euo pipefail
cd "$(dirname "$0")/.."

# The wasm-bindgen CLI must be exactly the crate's version (pinned with `=` in Cargo.toml).
version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' bindings-wasm/Cargo.toml)
[ -n "$version" ] || { echo "build.sh: no pinned wasm-bindgen version in bindings-wasm/Cargo.toml" >&2; exit 1; }

missing=()
for pkg in rustc-web cargo-web rust-web-src lld-22; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build.sh: installing ${missing[*]}" >&2
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}" \
    || { "${sudo_cmd[@]}" apt-get update && "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# rustup's ~/.cargo/bin shadows /usr/bin: full paths, and RUSTC/RUSTDOC for build scripts. A target
# dir of its own keeps the two compilers from invalidating each other's artifacts. --locked: the
# Debian cargo must use Cargo.lock as it is (rustup's cargo maintains it).
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target-wasm \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22 \
  /usr/bin/cargo build --locked --release --target wasm32-unknown-unknown \
  -Zbuild-std=std,panic_abort -p ringkv-wasm

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
bindgen="$cargo_bin/wasm-bindgen"
if ! { [ -x "$bindgen" ] && "$bindgen" --version 2>/dev/null | grep -qx "wasm-bindgen $version"; }; then
  echo "build.sh: installing wasm-bindgen-cli $version (several minutes, once)" >&2
  cargo install wasm-bindgen-cli --version "=$version"
fi
"$bindgen" --target web --out-dir bindings-wasm/web/pkg \
  target-wasm/wasm32-unknown-unknown/release/ringkv_wasm.wasm
echo "build.sh: bindings-wasm/web/pkg/ is up to date ($(du -k bindings-wasm/web/pkg/ringkv_wasm_bg.wasm | cut -f1) KiB of wasm)" >&2
