#!/usr/bin/env bash
# Measures ringkv against baselines on this machine, interleaving runs (A B A B ...) and quoting
# medians, as ../shared/PERF.md asks: a 3-node cluster (N=3, R=W=2; dw=0 and dw=all), one node
# (N=1), 100-byte and 4 KiB values, against bare hyper (the HTTP ceiling, same load generator),
# Redis (redis-benchmark; in memory, and with fsync on every write) and etcd (one node, its v3
# JSON gateway under wrk).
#
# The relay rows (bench/relay.rs, three processes) are the network shape of ringkv's replicated
# requests and nothing else: hyper on one thread per process, an in-memory map, and pipelined
# frames over one persistent TCP connection to each of two peers. "relay PUT" stores locally, sends
# the value to both peers and answers after both replied (the two peer round trips of an N=3
# write); "relay GET" looks up locally and asks one peer (the one round trip of an R=2 read). The
# ratio of ringkv to these rows is what ringkv spends beyond moving the bytes: versions, storage,
# quorum bookkeeping, routing.
#
#   bench/compare.sh            # 10 s per run, 3 rounds
#   DURATION=5s ROUNDS=2 bench/compare.sh
#
# Everything listens on loopback, keeps its data in a temporary folder, and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-50}
work=$(mktemp -d /tmp/ringkv-compare-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "installing redis (baseline)"; apt-get install -y --no-install-recommends redis-server redis-tools >/dev/null
fi
command -v jq >/dev/null || apt-get install -y --no-install-recommends jq >/dev/null
command -v wrk >/dev/null || apt-get install -y --no-install-recommends wrk >/dev/null
command -v etcd >/dev/null || apt-get install -y --no-install-recommends etcd-server >/dev/null

cargo build --release --locked -p ringkv --bin ringkv --example bare_hyper --example relay
# Where cargo put them: honours CARGO_TARGET_DIR and build.target-dir.
release=$(cargo metadata --format-version 1 --no-deps --locked | jq -r .target_directory)/release
bin=$release/ringkv

wait_http() { for _ in $(seq 200); do curl -fsS "$1/health" >/dev/null 2>&1 && return 0; curl -fsS -o /dev/null "$1/" 2>/dev/null && return 0; sleep 0.1; done; echo "$1 did not start" >&2; return 1; }

# A 3-node cluster (defaults N=3, R=W=2) and a 1-node cluster (N=1).
RINGKV_LOG=warn $bin dev --base-port 18087 --data-dir "$work/cluster" >"$work/dev.log" 2>&1 & pids+=($!)
printf 'target_n = 1\n[bucket]\nn = 1\nr = "1"\nw = "1"\n' >"$work/single.toml"
RINGKV_LOG=warn $bin server --config "$work/single.toml" --data-dir "$work/single" --listen 127.0.0.1:18287 --peer-listen 127.0.0.1:18387 >"$work/single.log" 2>&1 & pids+=($!)
$release/examples/bare_hyper 127.0.0.1:18000 & pids+=($!)
$release/examples/relay peer 127.0.0.1:18401 & pids+=($!)
$release/examples/relay peer 127.0.0.1:18402 & pids+=($!)
$release/examples/relay coordinator 127.0.0.1:18400 --peers 127.0.0.1:18401,127.0.0.1:18402 & pids+=($!)
redis-server --bind 127.0.0.1 --port 7379 --save '' --appendonly no --daemonize no >/dev/null & pids+=($!)
redis-server --bind 127.0.0.1 --port 7380 --save '' --appendonly yes --appendfsync always --dir "$work" --daemonize no >/dev/null & pids+=($!)
etcd --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 >"$work/etcd.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.1:18087; wait_http http://127.0.0.1:18287; wait_http http://127.0.0.1:18400
for _ in $(seq 100); do grep -q "Ctrl-C" "$work/dev.log" && break; sleep 0.2; done
sleep 1

cluster=http://127.0.0.1:18087,http://127.0.0.1:18088,http://127.0.0.1:18089
ringkv_run() { # nodes, extra args... -> ops/s p50 p99 p999 (µs) of the first op kind, errors
  local nodes=$1; shift
  $bin bench --nodes "$nodes" --duration "$DURATION" --concurrency "$CONCURRENCY" --keys 100000 --json --no-progress "$@" \
    | jq -r '(.per_op | to_entries | .[0].value) as $s
             | [.throughput, $s.p50_us, $s.p99_us, $s.p999_us, ([.errors[] | numbers] | add // 0)]
             | map(tostring) | join(" ")'
}
redis_run() { # port, test (set|get), value size -> ops/s p50 p99 max(µs; redis-benchmark has no p99.9) errors
  redis-benchmark -p "$1" -t "$2" -c "$CONCURRENCY" -n 200000 -d "$3" -r 100000 --csv 2>/dev/null \
    | awk -F',' 'NR==2 {for (i = 1; i <= NF; i++) gsub(/"/, "", $i); print $2, $5*1000, $7*1000, $8*1000, 0}'
}
etcd_run() { # put|range -> ops/s p50 p99 p99.9 (µs) errors, through the v3 JSON gateway with wrk
  ETCD_MODE=$1 wrk -t1 -c"$CONCURRENCY" -d"$DURATION" -s bench/etcd_put.lua http://127.0.0.1:2379 2>/dev/null \
    | awk '/^WRKRESULT/ {print $2, $3, $4, $5, $6}'
}

declare -A results
record() { results["$1"]+="$2"$'\n'; }
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS"
  record "bare hyper GET 100B"        "$(ringkv_run http://127.0.0.1:18000 --no-routing --mix get=100)"
  record "3 nodes GET 100B"           "$(ringkv_run $cluster --mix get=100 --value-size 100 --prefill)"
  record "relay GET 100B"             "$(ringkv_run http://127.0.0.1:18400 --no-routing --mix get=100 --value-size 100 --prefill)"
  record "bare hyper PUT 100B"        "$(ringkv_run http://127.0.0.1:18000 --no-routing --mix put=100)"
  record "3 nodes PUT 100B dw=0"      "$(ringkv_run $cluster --mix put=100 --value-size 100)"
  record "relay PUT 100B"             "$(ringkv_run http://127.0.0.1:18400 --no-routing --mix put=100 --value-size 100)"
  record "3 nodes PUT 100B dw=all"    "$(ringkv_run $cluster --mix put=100 --value-size 100 --dw all)"
  record "3 nodes MIX 100B"           "$(ringkv_run $cluster --mix get=50,put=50 --value-size 100)"
  record "3 nodes PUT 4KiB dw=0"      "$(ringkv_run $cluster --mix put=100 --value-size 4KiB)"
  record "3 nodes GET 4KiB"           "$(ringkv_run $cluster --mix get=100 --value-size 4KiB --prefill)"
  record "1 node PUT 100B dw=0"       "$(ringkv_run http://127.0.0.1:18287 --mix put=100 --value-size 100)"
  record "1 node PUT 100B dw=1"       "$(ringkv_run http://127.0.0.1:18287 --mix put=100 --value-size 100 --dw 1)"
  record "1 node GET 100B"            "$(ringkv_run http://127.0.0.1:18287 --mix get=100 --value-size 100 --prefill)"
  record "redis SET 100B"             "$(redis_run 7379 set 100)"
  record "redis GET 100B"             "$(redis_run 7379 get 100)"
  record "redis SET 100B fsync"       "$(redis_run 7380 set 100)"
  record "redis SET 4KiB"             "$(redis_run 7379 set 4096)"
  record "etcd put 100B"              "$(etcd_run put)"
  record "etcd range 100B"            "$(etcd_run range)"
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }
column_median() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

printf '\n%-26s %10s %9s %9s %9s %7s   %-22s %s\n' "load ($CONCURRENCY clients)" "ops/s" "p50 µs" "p99 µs" "p99.9 µs" "errors" "baseline" "ratio (ops/s)"
row() { # name baseline
  local ops p50 p99 p999 errors base
  ops=$(column_median "$1" 1); p50=$(column_median "$1" 2); p99=$(column_median "$1" 3); p999=$(column_median "$1" 4)
  errors=$(column_median "$1" 5); base=$(column_median "$2" 1)
  printf '%-26s %10.0f %9.0f %9.0f %9.0f %7.0f   %-22s %s\n' "$1" "$ops" "$p50" "$p99" "$p999" "$errors" "$2" "$(ratio "$ops" "$base")"
}
row "bare hyper GET 100B"     "bare hyper GET 100B"
row "relay GET 100B"          "bare hyper GET 100B"
row "relay PUT 100B"          "bare hyper PUT 100B"
row "3 nodes GET 100B"        "bare hyper GET 100B"
row "3 nodes GET 100B"        "relay GET 100B"
row "3 nodes GET 100B"        "redis GET 100B"
row "3 nodes PUT 100B dw=0"   "bare hyper PUT 100B"
row "3 nodes PUT 100B dw=0"   "relay PUT 100B"
row "3 nodes PUT 100B dw=0"   "redis SET 100B"
row "3 nodes PUT 100B dw=0"   "etcd put 100B"
row "3 nodes GET 100B"        "etcd range 100B"
row "3 nodes PUT 100B dw=all" "redis SET 100B fsync"
row "3 nodes MIX 100B"        "bare hyper GET 100B"
row "3 nodes PUT 4KiB dw=0"   "redis SET 4KiB"
row "3 nodes GET 4KiB"        "bare hyper GET 100B"
row "1 node PUT 100B dw=0"    "redis SET 100B"
row "1 node PUT 100B dw=1"    "redis SET 100B fsync"
row "1 node GET 100B"         "redis GET 100B"
