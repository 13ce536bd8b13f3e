#!/usr/bin/env bash
# Tests the OCI image end to end without a container runtime (podman cannot run in this sandbox):
# builds it with deploy/image/build.sh from the debug binary, checks its configuration and labels,
# exports it as an OCI layout, unpacks its layer into a root filesystem, checks that the rootfs holds
# only the binary, its libraries and a few /etc files, then starts a 3-node cluster from that rootfs:
# each node is the image's entrypoint and command (ports moved apart, as the nodes share loopback)
# run under chroot as the image's user, in its own mount and pid namespaces (unshare) with its own
# data folder bound on /data. It writes and reads a key with the image's own CLI, kills one node
# with SIGKILL, checks the cluster still serves, restarts the node from its data folder and checks
# that it rejoins and serves the key written while it was down.
#
# Needs root (chroot, unshare, mounts). RINGKV_BINARY=<path> tests another binary (default: the
# workspace's target/debug/ringkv, built when missing). Cleans up after itself, even on failure.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)

die() {
  echo "image test: FAILED: $*" >&2
  exit 1
}
say() { echo "image test: $*"; }

[ "$(id -u)" -eq 0 ] || die "needs root (chroot, unshare, mount)"
for tool in unshare chroot mount curl python3 tar; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
done

binary=${RINGKV_BINARY:-}
if [ -z "$binary" ]; then
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  binary="$target_dir/debug/ringkv"
  if [ ! -x "$binary" ]; then
    say "building the debug binary"
    (cd "$repo" && cargo build -p ringkv --locked)
  fi
fi
[ -x "$binary" ] || die "no ringkv binary at $binary"

cleanup() {
  local status=$?
  local n server
  for n in "${!node_pid[@]}"; do
    # The server is pid 1 of its namespace: killing it ends the namespace. (unshare's
    # --kill-child does not reach it: chroot --userspec changes the uid, which clears the
    # parent-death signal.)
    server=$(server_pid "$n")
    [ -z "$server" ] || kill -9 "$server" 2>/dev/null || true
    kill -9 "${node_pid[$n]}" 2>/dev/null || true
    wait "${node_pid[$n]}" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ] && [ -n "$work" ]; then
    for log in "$work"/n*.log; do
      [ -f "$log" ] || continue
      echo "---- $log (last 30 lines)" >&2
      tail -n 30 "$log" >&2
    done
  fi
  if command -v buildah >/dev/null 2>&1; then
    buildah rmi "$tag" >/dev/null 2>&1 || true
  fi
  [ -z "$work" ] || rm -rf "$work"
}
work=""
tag="localhost/ringkv-test:$$"
declare -A node_pid=()
work=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-image-test.XXXXXX")
trap cleanup EXIT
trap 'exit 143' INT TERM
# buildah storage of this run only: nothing left behind, no clash with the machine's own storage
# (its driver, other images) or with another run.
cat >"$work/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
export CONTAINERS_STORAGE_CONF="$work/storage.conf" STORAGE_DRIVER=vfs

# 1. Build, inspect.
say "building the image from $binary"
bash "$repo/deploy/image/build.sh" --binary "$binary" --tag "$tag" >/dev/null
inspect=$(buildah inspect --type image "$tag")
python3 - "$inspect" <<'EOF' || die "the image configuration is not as expected"
import json, sys
image = json.loads(sys.argv[1])
config = image["Docker"]["config"]
labels = config.get("Labels") or {}
for key in ["title", "description", "version", "revision", "source", "licenses", "created"]:
    value = labels.get("org.opencontainers.image." + key)
    assert value, f"label org.opencontainers.image.{key} is missing"
    print(f"  label org.opencontainers.image.{key} = {value}")
assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
assert config["User"] == "10001:10001", config["User"]
assert config["StopSignal"] == "SIGTERM", config["StopSignal"]
assert config["Entrypoint"] == ["/usr/local/bin/ringkv"], config["Entrypoint"]
assert config["Healthcheck"]["Test"] == ["CMD", "/usr/local/bin/ringkv", "probe", "--ready"], config["Healthcheck"]
assert set(config["ExposedPorts"]) == {"8087/tcp", "7087/tcp"}, config["ExposedPorts"]
assert "/data" in config["Volumes"], config["Volumes"]
print(f"  user {config['User']}, stop signal {config['StopSignal']}, healthcheck {config['Healthcheck']['Test'][1:]}")
EOF

# 2. Export as an OCI layout and unpack the layer(s) into a root filesystem.
buildah push --quiet "$tag" "oci:$work/oci:test" >/dev/null
rootfs="$work/rootfs"
mkdir -p "$rootfs"
python3 - "$work/oci" >"$work/image.env" <<'EOF'
import json, shlex, sys
layout = sys.argv[1]
def blob(digest):
    algorithm, value = digest.split(":", 1)
    return f"{layout}/blobs/{algorithm}/{value}"
index = json.load(open(f"{layout}/index.json"))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))["config"]
print("layers=(" + " ".join(shlex.quote(blob(layer["digest"])) for layer in manifest["layers"]) + ")")
print("entrypoint=(" + " ".join(map(shlex.quote, config["Entrypoint"])) + ")")
print("command=(" + " ".join(map(shlex.quote, config["Cmd"])) + ")")
print("user=" + shlex.quote(config["User"]))
EOF
layers=() entrypoint=() command=() user=""
# shellcheck source=/dev/null
source "$work/image.env"
for layer in "${layers[@]}"; do
  tar -xf "$layer" -C "$rootfs" --numeric-owner
done
size=$(du -sb "$rootfs" | cut -f1)
compressed=$(du -cb "${layers[@]}" | tail -n 1 | cut -f1)
say "image: ${#layers[@]} layer(s) of $((compressed / 1024)) KiB compressed, root filesystem $((size / 1024 / 1024)) MiB ($size bytes) with $binary"
say "entrypoint ${entrypoint[*]}, command ${command[*]}, user $user"
(cd "$rootfs" && find . -mindepth 1 \( -type f -o -type l \) -printf '  %p %s\n' | sort)

# Nothing but the binary, the loader and libraries, /etc/{passwd,group,nsswitch.conf}, and the
# empty /data owned by the user.
unexpected=$(find "$rootfs" -mindepth 1 \( -type f -o -type l \) -printf '%P\n' \
  | grep -Ev '^usr/local/bin/ringkv$|^etc/(passwd|group|nsswitch\.conf)$|^(usr/)?lib(64|/x86_64-linux-gnu|/aarch64-linux-gnu)?/(ld-linux[^/]*|lib[^/]+\.so[.0-9]*)$' \
  || true)
[ -z "$unexpected" ] || die "unexpected files in the image: $unexpected"
[ -z "$(ls -A "$rootfs/data")" ] || die "/data is not empty in the image"
[ "$(stat -c %u:%g "$rootfs/data")" = 10001:10001 ] || die "/data is not owned by 10001:10001"
grep -q '^ringkv:x:10001:10001:' "$rootfs/etc/passwd" || die "no ringkv user with uid 10001"
# What a container runtime provides: a mount point for /proc (the nodes mount their own).
mkdir -p "$rootfs/proc"

# 3. A 3-node cluster from the rootfs, on loopback with ports of its own.
read -r -a ports < <(python3 - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(6)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
EOF
)
http_port() { echo "${ports[$(($1 - 1))]}"; }
peer_port() { echo "${ports[$(($1 + 2))]}"; }
url() { echo "http://127.0.0.1:$(http_port "$1")"; }

# The image's own CLI, as the image's user, in the rootfs.
image_ringkv() {
  chroot --userspec="$user" "$rootfs" "${entrypoint[@]}" "$@"
}

start_node() {
  local n=$1 args=() arg
  # The image's command with its addresses moved to this node's ports (all nodes share loopback).
  for arg in "${command[@]}"; do
    case "$arg" in
      0.0.0.0:8087 | 127.0.0.1:8087) args+=("127.0.0.1:$(http_port "$n")") ;;
      0.0.0.0:7087 | 127.0.0.1:7087) args+=("127.0.0.1:$(peer_port "$n")") ;;
      *) args+=("$arg") ;;
    esac
  done
  args+=(--node-id "n$n")
  [ "$n" -eq 1 ] || args+=(--seed "127.0.0.1:$(peer_port 1)")
  mkdir -p "$work/data$n"
  chown 10001:10001 "$work/data$n"
  # Own mount and pid namespaces: /data is this node's folder, /proc its own; the server is pid 1
  # there.
  # shellcheck disable=SC2016 # the inner script reads its own positional arguments
  unshare --mount --pid --fork --kill-child --propagation private -- \
    bash -c 'set -e; root=$1 data=$2 spec=$3; shift 3
      mount --bind "$data" "$root/data"
      mount -t proc proc "$root/proc"
      exec chroot --userspec="$spec" "$root" "$@"' \
    _ "$rootfs" "$work/data$n" "$user" "${entrypoint[@]}" "${args[@]}" \
    >>"$work/n$n.log" 2>&1 &
  node_pid[$n]=$!
  say "started n$n (${entrypoint[*]} ${args[*]})"
}

# The server process of node n (unshare's child), once it runs.
server_pid() {
  local children
  children=$(cat "/proc/${node_pid[$1]}/task/${node_pid[$1]}/children" 2>/dev/null || true)
  echo "${children%% *}"
}

# wait_for <what> <command...>: polls until the command succeeds (at most 120 s: a stuck cluster,
# not a slow one, fails here).
wait_for() {
  local what=$1 deadline=$((SECONDS + 120))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting until $what"
    sleep 0.5
  done
}

healthy() { curl -fsS "$(url "$1")/health"; }

# Every node in `members` is up and alive, the ring is settled (no transfers pending), as node n sees it.
settled() {
  local n=$1
  shift
  curl -fsS "$(url "$n")/cluster" | python3 -c '
import json, sys
status = json.load(sys.stdin)
want = set(sys.argv[1:])
members = {m["id"]: m for m in status["members"]}
ok = status["ring_version"] is not None and status["transfers_pending"] == 0 and all(
    members.get(w, {}).get("status") == "up" and members[w]["alive"] and members[w]["partitions"] > 0
    for w in want)
sys.exit(0 if ok else 1)' "$@"
}

for n in 1 2 3; do
  start_node "$n"
  wait_for "n$n answers /health" healthy "$n"
done
wait_for "the ring holds n1, n2, n3" settled 1 n1 n2 n3

for n in 1 2 3; do
  pid=$(server_pid "$n")
  [ -n "$pid" ] || die "no server process for n$n"
  uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
  [ "$uids" = "10001 10001 10001 10001" ] || die "n$n runs as uid $uids, not 10001"
  comm=$(cat "/proc/$pid/comm")
  say "n$n: pid $pid ($comm), uid 10001 (real, effective, saved, fs)"
done

image_ringkv put --node "$(url 1)" carts alice 'milk,eggs'
[ "$(image_ringkv get --node "$(url 2)" carts alice 2>/dev/null)" = "milk,eggs" ] \
  || die "the value written through n1 does not read back through n2"
say "wrote carts/alice through n1 and read it through n2 with the image's CLI"

# 4. Kill n3 (SIGKILL: no clean shutdown), check the other two still serve.
kill -9 "$(server_pid 3)"
wait "${node_pid[3]}" 2>/dev/null || true
unset 'node_pid[3]'
say "killed n3 with SIGKILL"
# shellcheck disable=SC2016 # the inner script reads its own positional arguments
wait_for "n1 sees n3 down" bash -c '! curl -fsS "$1/cluster" | python3 -c "import json,sys; sys.exit(0 if any(m[\"id\"] == \"n3\" and m[\"alive\"] for m in json.load(sys.stdin)[\"members\"]) else 1)"' _ "$(url 1)"
image_ringkv put --node "$(url 1)" carts bob 'bread'
[ "$(image_ringkv get --node "$(url 2)" carts bob 2>/dev/null)" = "bread" ] \
  || die "the cluster without n3 does not serve"
[ "$(image_ringkv get --node "$(url 1)" carts alice 2>/dev/null)" = "milk,eggs" ] \
  || die "carts/alice is not readable without n3"
say "without n3: wrote carts/bob, read carts/alice and carts/bob"

# 5. Restart n3 from the same data folder: it rejoins with its persisted view.
start_node 3
wait_for "n3 answers /health again" healthy 3
wait_for "n1 sees n3 up again" settled 1 n1 n2 n3
wait_for "n3 sees everyone up" settled 3 n1 n2 n3
[ "$(image_ringkv get --node "$(url 3)" carts bob 2>/dev/null)" = "bread" ] \
  || die "restarted n3 does not serve carts/bob"
# Its own replica of the key written while it was down arrives (hinted hand-off or read repair).
wait_for "n3 holds its own replica of carts/bob" curl -fsS "$(url 3)/replica/carts/bob"
grep -q "restarted from the persisted cluster view" "$work/n3.log" \
  || die "n3 did not restart from its persisted view"
say "n3 restarted from its data folder, rejoined (up in n1's view) and holds carts/bob"
image_ringkv cluster status --node "$(url 1)"
say "passed"
