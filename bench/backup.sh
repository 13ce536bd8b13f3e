#!/usr/bin/env bash
# Backup and restore times on a local 3-node release cluster (issue 17): KEYS keys of 100 B are
# written, backed up as one node's snapshot, as every member's (--all) and through the bucket
# listing; then a fresh cluster (new data folders) is started and each backup is restored.
#   bench/backup.sh            # KEYS=100000
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-100000}
PORT=${PORT:-19187}
BIN=${RINGKV_BIN:-${CARGO_TARGET_DIR:-target}/release/ringkv}
[ -x "$BIN" ] || cargo build --release -p ringkv
OUT=$(mktemp -d)
NODES="http://127.0.0.1:$PORT,http://127.0.0.1:$((PORT + 1)),http://127.0.0.1:$((PORT + 2))"
start() {
    "$BIN" dev --base-port "$PORT" >"$OUT/dev-$1.log" 2>&1 &
    DEV=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
    sleep 2
}
trap 'kill $DEV 2>/dev/null || true; rm -rf "$OUT"' EXIT
start a
echo "prefill: $KEYS keys of 100 B"
"$BIN" bench --nodes "$NODES" --bucket data --keys "$KEYS" --value-size 100 --prefill --ops 1 \
    --mix get=1 --no-progress >/dev/null
timed() { local t0; t0=$(date +%s.%N); "$@"; echo "  took $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s"; }
echo "node backup:";    timed "$BIN" backup --node "http://127.0.0.1:$PORT" --out "$OUT/node.backup"
echo "cluster backup:"; timed "$BIN" backup --all --node "http://127.0.0.1:$PORT" --out "$OUT/all.backup"
echo "bucket backup:";  timed "$BIN" backup --bucket data --node "http://127.0.0.1:$PORT" --out "$OUT/bucket.backup"
ls -l "$OUT"/*.backup | awk '{print "  " $5 " bytes  " $9}'
kill $DEV; wait $DEV 2>/dev/null || true
start b
echo "restore of the node backup into a fresh cluster:"
timed "$BIN" restore --node "$NODES" "$OUT/node.backup"
echo "restore of the cluster backup on top (every record merged again, 3 copies each):"
timed "$BIN" restore --node "$NODES" "$OUT/all.backup"
echo "restore of the bucket backup on top:"
timed "$BIN" restore --node "$NODES" "$OUT/bucket.backup"
"$BIN" list data --node "http://127.0.0.1:$PORT" | wc -l | sed 's/^/keys listed after the restores: /'
