#!/usr/bin/env bash
# Checks deploy/systemd/ringkv.service offline: `systemd-analyze verify` with no warning about
# the unit, and `systemd-analyze security` at an exposure of 2.0 or less ("OK").
#
# verify needs ExecStart's binary to exist, so it checks a copy of the unit whose ExecStart is
# the built binary ($RINGKV_BIN, else $CARGO_TARGET_DIR/debug/ringkv or target/debug/ringkv;
# a stub executable when none is built), and whose sample config path points at
# deploy/systemd/ringkv.toml.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
analyze="${SYSTEMD_ANALYZE:-$(command -v systemd-analyze || echo /usr/bin/systemd-analyze)}"
if [[ ! -x "$analyze" ]]; then
  echo "systemd-analyze not found (apt-get install systemd)" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

binary="${RINGKV_BIN:-${CARGO_TARGET_DIR:-$here/../../target}/debug/ringkv}"
if [[ ! -x "$binary" ]]; then
  binary="$work/ringkv"
  printf '#!/bin/sh\nexit 0\n' > "$binary"
  chmod +x "$binary"
fi
sed -e "s#^ExecStart=/usr/local/bin/ringkv #ExecStart=$binary #" \
    -e "s#/etc/ringkv/ringkv.toml#$here/ringkv.toml#" \
    "$here/ringkv.service" > "$work/ringkv.service"
if ! grep -q "^ExecStart=$binary " "$work/ringkv.service"; then
  echo "FAIL: ExecStart is no longer /usr/local/bin/ringkv server ...; update test.sh" >&2
  exit 1
fi

status=0
output="$("$analyze" verify "$work/ringkv.service" 2>&1)" || status=$?
# Lines about other units (none expected) are shown but do not fail the check.
about_unit="$(grep -i "ringkv" <<<"$output" || true)"
if [[ $status -ne 0 || -n "$about_unit" ]]; then
  echo "FAIL: systemd-analyze verify (exit $status):" >&2
  echo "$output" >&2
  exit 1
fi
[[ -z "$output" ]] || echo "$output"
echo "ok: systemd-analyze verify ringkv.service: no warnings"

security="$("$analyze" security --offline=yes --threshold=20 "$work/ringkv.service" 2>&1)" || {
  echo "$security" | tail -5 >&2
  echo "FAIL: systemd-analyze security: exposure above 2.0" >&2
  exit 1
}
echo "ok: $(grep -o 'Overall exposure level.*' <<<"$security")"
