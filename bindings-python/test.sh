#!/usr/bin/env bash
# Sets up and runs the tests of the Python package `ringkv` (bindings-python/), idempotently:
#   - a venv (.venv-python at the repository root, or $RINGKV_VENV) with the pinned tools of
#     requirements-dev.txt (maturin, pytest, nbclient, ipykernel, matplotlib);
#   - `pip install ./bindings-python`, the real install path (maturin builds the Rust core into
#     target-python/, so it never waits on the workspace's target/ lock);
#   - the `ringkv` binary, built or brought up to date, for the live-client tests (they start
#     `ringkv dev`);
#   - pytest (simulation, ring, versions, bad input, docstrings, live client), then the example
#     notebook, executed with nbclient into target/python/conflicts.ipynb.
# RINGKV_SEED=<seed> replays a seeded test; RINGKV_SEEDS=<n> runs more campaign seeds.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${RINGKV_VENV:-$repo/.venv-python}"
base_python="${PYTHON:-python3}"
# The ringkv binary lives in the workspace's usual target dir; the Python build gets its own.
main_target="${CARGO_TARGET_DIR:-$repo/target}"
python_target="${RINGKV_PYTHON_TARGET_DIR:-$repo/target-python}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== python venv ($venv)"
if [ ! -x "$venv/bin/python" ]; then
  "$base_python" -m venv "$venv"
fi
py="$venv/bin/python"
# The venv's tools (maturin, which pip's build backend calls by name) come first.
export PATH="$venv/bin:$PATH"
stamp="$venv/.ringkv-requirements-dev"
if ! cmp -s "$here/requirements-dev.txt" "$stamp"; then
  "$py" -m pip install --quiet --upgrade pip
  "$py" -m pip install --quiet -r "$here/requirements-dev.txt"
  cp "$here/requirements-dev.txt" "$stamp"
fi

echo "== pip install ./bindings-python (maturin, release build in $python_target)"
started=$(date +%s)
# The venv already has the pinned maturin, so no isolated build environment is needed; a
# newcomer's plain `pip install ./bindings-python` fetches maturin itself.
CARGO_TARGET_DIR="$python_target" "$py" -m pip install --quiet --no-build-isolation --no-deps \
  --force-reinstall "$here"
echo "   built and installed in $(( $(date +%s) - started )) s"

# Built every time (a no-op when it is up to date): a binary left over from an older checkout
# would lack the endpoints the client tests exercise. RINGKV_BIN=<path> uses that one instead.
ringkv_bin="${RINGKV_BIN:-}"
if [ -z "$ringkv_bin" ]; then
  echo "== cargo build -p ringkv (for the live-client tests)"
  (cd "$repo" && CARGO_TARGET_DIR="$main_target" cargo build -p ringkv)
  ringkv_bin="$main_target/debug/ringkv"
fi
export RINGKV_BIN="$ringkv_bin"

echo "== pytest"
# From tests/, so the installed package is imported, never the source tree.
(cd "$here/tests" && "$py" -m pytest -q -p no:cacheprovider --rootdir "$here" .)

echo "== notebook examples/conflicts.ipynb"
out_dir="$main_target/python"
mkdir -p "$out_dir"
"$py" - "$here/examples/conflicts.ipynb" "$out_dir/conflicts.ipynb" <<'PY'
import sys, time
import nbformat
from nbclient import NotebookClient

source, target = sys.argv[1], sys.argv[2]
notebook = nbformat.read(source, as_version=4)
started = time.monotonic()
client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                        resources={"metadata": {"path": str(__import__("pathlib").Path(source).parent)}})
try:
    client.execute()
finally:
    nbformat.write(notebook, target)
print(f"   executed {sum(c.cell_type == 'code' for c in notebook.cells)} code cells "
      f"in {time.monotonic() - started:.0f} s: {target}")
PY
