#!/usr/bin/env bash
# Figures of the session API (issue 15) on a local 3-node release cluster: the cost of listing
# KEYS keys (its time, and the throughput of concurrent gets meanwhile as a ratio to without),
# a 100-key multi-get against 100 single gets, and a watch's latency. Interleaved rounds.
#   bench/session_api.sh            # KEYS=100000 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-100000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-19087}
BIN=${RINGKV_BIN:-target/release/ringkv}
[ -x "$BIN" ] || cargo build --release -p ringkv
NODES="http://127.0.0.1:$PORT,http://127.0.0.1:$((PORT + 1)),http://127.0.0.1:$((PORT + 2))"
"$BIN" dev --base-port "$PORT" >/tmp/ringkv-session-bench.log 2>&1 &
DEV=$!
trap 'kill $DEV 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
sleep 2
echo "prefill: $KEYS keys of 100 B"
"$BIN" bench --nodes "$NODES" --bucket scan --keys "$KEYS" --value-size 100 --prefill --ops 1 \
    --mix get=1 --no-progress >/dev/null
gets() {
    "$BIN" bench --nodes "$NODES" --bucket scan --keys "$KEYS" --mix get=1 --duration "$1" \
        --concurrency 32 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput"])'
}
for round in $(seq "$ROUNDS"); do
    alone=$(gets 10s)
    python3 bench/session_api.py list-for "127.0.0.1:$PORT" scan 11 >/tmp/ringkv-list.json &
    LIST=$!
    during=$(gets 10s)
    wait $LIST
    echo "round $round: gets alone $alone/s, while listings run back to back $during/s (ratio $(python3 -c "print(round($during/$alone,3))")); listings meanwhile $(cat /tmp/ringkv-list.json)"
done
python3 bench/session_api.py list "127.0.0.1:$PORT" scan | sed 's/^/listing alone: /'
python3 bench/session_api.py mget "127.0.0.1:$PORT" mgetbench 20 | sed 's/^/multi-get: /'
python3 bench/session_api.py watch "127.0.0.1:$PORT" 50 | sed 's/^/watch: /'
