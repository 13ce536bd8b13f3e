#!/usr/bin/env bash
# Validates the Kubernetes manifests offline:
#  1. `kubectl kustomize` renders the base and each overlay (in a copy, with secrets made by
#     make-secrets.sh);
#  2. kubernetes-validate (PyPI, in target/deploy-venv, pinned by requirements.txt) checks every
#     rendered document against the Kubernetes schemas, strictly (unknown fields are errors), for
#     Kubernetes 1.28 and 1.37 (the newest it knows);
#  3. the rendered objects say what the README promises (probes, security context, PDB, headless
#     peers Service publishing not-ready addresses, grace period, zone spreading);
#  4. as root: the rendered ConfigMap's init script writes each pod's configuration, and the real
#     ringkv binary runs it: in a network namespace whose /etc/hosts gives the pods' DNS names,
#     ringkv-0 founds and ringkv-1 joins through its DNS seed over mutual TLS with the generated
#     certificate and cluster secret (the dev overlay); the production overlay's node starts with
#     its zone; a seed whose certificate (same CA) names other pods is refused. Without root
#     this step is skipped with a message.
# RINGKV_BINARY=<path> uses another binary (default: the workspace's target/debug/ringkv, built
# when missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() {
  echo "kubernetes test: FAILED: $*" >&2
  exit 1
}
say() { echo "kubernetes test: $*"; }

# ---------------------------------------------------------------------------------------------
# Step 4 runs inside `unshare --net --mount` (this script calls itself with --inside).
if [ "${1:-}" = --inside ]; then
  work=$2 binary=$3
  pids=()
  # shellcheck disable=SC2317 # called by the trap
  stop_servers() {
    local pid
    for pid in "${pids[@]}"; do
      kill -9 "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
  }
  trap stop_servers EXIT
  ip link set lo up
  cat >"$work/hosts" <<'EOF'
127.0.0.1 localhost
127.0.0.10 ringkv-0.ringkv-peers.ringkv-dev.svc.cluster.local
127.0.0.11 ringkv-1.ringkv-peers.ringkv-dev.svc.cluster.local
127.0.0.20 ringkv-0.ringkv-peers.ringkv.svc.cluster.local
EOF
  mount --bind "$work/hosts" /etc/hosts
  # The init container's wget, answered by curl.
  mkdir -p "$work/bin"
  cat >"$work/bin/wget" <<'EOF'
#!/bin/sh
for url; do :; done
exec curl -fsS -o /dev/null --max-time 3 "$url"
EOF
  chmod +x "$work/bin/wget"

  wait_for() {
    local what=$1 deadline=$((SECONDS + 120))
    shift
    until "$@" >/dev/null 2>&1; do
      [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$work"/*.log >&2; die "timed out waiting until $what"; }
      sleep 0.5
    done
  }

  # start <overlay> <pod> <ip> [ZONE=..]: renders the pod's configuration with the overlay's init
  # script, moves the secret paths to the test's copy, and starts the server on <ip>.
  start() {
    local overlay=$1 pod=$2 ip=$3 zone=${4:-} namespace
    namespace=$(cat "$work/$overlay/namespace")
    mkdir -p "$work/$overlay/data-$pod"
    env -i PATH="$work/bin:$PATH" POD_NAME="$pod" POD_NAMESPACE="$namespace" ZONE="$zone" \
      CONFIG_IN="$work/$overlay/config/ringkv.toml" CONFIG_OUT="$work/$overlay/$pod.toml" \
      DATA_DIR="$work/$overlay/data-$pod" SEED_PROBE_PATH=/health \
      sh "$work/$overlay/config/render-config.sh"
    sed -i "s#/etc/ringkv/secret/#$work/$overlay/secret/#" "$work/$overlay/$pod.toml"
    "$binary" server --config "$work/$overlay/$pod.toml" --data-dir "$work/$overlay/data-$pod" \
      --listen "$ip:8087" --peer-listen "$ip:7087" >"$work/$overlay-$pod.log" 2>&1 &
    pids+=($!)
  }

  # The child process has exited (a zombie until waited for, which kill -0 still finds).
  # shellcheck disable=SC2317 # called through wait_for
  exited() {
    [ ! -e "/proc/$1" ] || awk '{ exit ($3 == "Z" ? 0 : 1) }' "/proc/$1/stat"
  }

  # Every named member is up and alive in the view of the node at <ip>.
  # shellcheck disable=SC2317 # called through wait_for
  members_up() {
    local ip=$1
    shift
    curl -fsS "http://$ip:8087/cluster" | python3 -c '
import json, sys
members = {m["id"]: m for m in json.load(sys.stdin)["members"]}
sys.exit(0 if all(members.get(w, {}).get("status") == "up" and members[w]["alive"] for w in sys.argv[1:]) else 1)' "$@"
  }

  start dev ringkv-0 127.0.0.10
  wait_for "ringkv-0 (dev) serves" curl -fsS http://127.0.0.10:8087/health
  start dev ringkv-1 127.0.0.11
  wait_for "ringkv-1 joined ringkv-0 through its DNS seed over mutual TLS" members_up 127.0.0.10 ringkv-0 ringkv-1
  wait_for "ringkv-1 sees both up" members_up 127.0.0.11 ringkv-0 ringkv-1
  rejected=$(curl -fsS http://127.0.0.10:8087/metrics | awk '/^ringkv_peer_frames_rejected_total/ { n += $2 } END { print n + 0 }')
  [ "$rejected" = 0 ] || die "ringkv-0 rejected $rejected peer frames"
  say "dev: ringkv-0 founded, ringkv-1 joined through ringkv-0.ringkv-peers.ringkv-dev.svc.cluster.local:7087 (mutual TLS, cluster secret, no frame rejected)"
  grep -q '^seeds = \["ringkv-0.ringkv-peers.ringkv-dev.svc.cluster.local:7087"\]' "$work/dev/ringkv-1.toml" \
    || die "ringkv-1's configuration has no DNS seed"
  ! grep -q '^seeds' "$work/dev/ringkv-0.toml" || die "ringkv-0's configuration has a seed"
  for setting in peer_tls cluster_secret; do
    grep -Eq "${setting}[^ ]*=[^ ]*true" "$work/dev-ringkv-0.log" || die "ringkv-0 did not start with $setting"
  done

  # The name is checked, not only the CA: a seed whose certificate (from the same CA) names
  # another namespace's pods is refused, and the joining node stops with an error.
  stop_servers
  pids=()
  start dev-wrong-name ringkv-0 127.0.0.10
  wait_for "ringkv-0 with the wrong certificate serves" curl -fsS http://127.0.0.10:8087/health
  start dev-wrong-name ringkv-1 127.0.0.11
  joiner=${pids[-1]}
  wait_for "ringkv-1 gives up on a seed with the wrong name" exited "$joiner"
  if wait "$joiner"; then
    die "ringkv-1 joined a seed whose certificate does not name it"
  fi
  grep -qi 'not valid for name' "$work/dev-wrong-name-ringkv-1.log" \
    || { tail -n 5 "$work/dev-wrong-name-ringkv-1.log" >&2; die "ringkv-1 stopped, but not for the certificate's name"; }
  say "dev: a seed presenting a certificate for other names is refused ($(grep -oi 'certificate not valid for name[^;]*' "$work/dev-wrong-name-ringkv-1.log" | head -n 1))"

  start production ringkv-0 127.0.0.20 zone-a
  wait_for "ringkv-0 (production) serves" curl -fsS http://127.0.0.20:8087/health
  zone=$(curl -fsS http://127.0.0.20:8087/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["members"][0]["zone"])')
  [ "$zone" = zone-a ] || die "the production node's zone is $zone, not zone-a"
  say "production: ringkv-0 started from the rendered configuration in zone $zone"
  exit 0
fi
# ---------------------------------------------------------------------------------------------

# kubectl with a kustomize that knows `resources: [../../base]` and `patches:` (v4 and later).
if ! command -v kubectl >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "kubectl is not installed"
  say "installing kubectl (Debian's kubernetes-client)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends kubernetes-client \
    || { apt-get update && apt-get install -y --no-install-recommends kubernetes-client; } \
    || die "could not install kubernetes-client"
fi
kustomize=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v//p')
case "$kustomize" in
  [4-9].* | [1-9][0-9].*) ;;
  *) die "kubectl ($(command -v kubectl)) embeds kustomize '${kustomize:-older than v4}'; these kustomizations need kustomize v4 or later (kubectl 1.21 or later; Debian 12's kubernetes-client is 1.20): install a newer kubectl" ;;
esac

# kubernetes-validate in a venv of its own.
venv="$repo/target/deploy-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || die "cannot create a venv in $venv (Debian: apt-get install python3-venv)"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" \
  || die "pip could not install $here/requirements.txt"

work=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-kubernetes-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$here" "$work/k8s"
rm -rf "$work/k8s/overlays/"*/secrets

rendered=()
kubectl kustomize "$work/k8s/base" >"$work/base.yaml" || die "kubectl kustomize base failed"
rendered+=("$work/base.yaml")
for overlay in dev production; do
  namespace=$(sed -n 's/^namespace: *//p' "$work/k8s/overlays/$overlay/kustomization.yaml")
  [ -n "$namespace" ] || die "overlays/$overlay sets no namespace"
  bash "$work/k8s/make-secrets.sh" --namespace "$namespace" "$work/k8s/overlays/$overlay/secrets" >/dev/null
  kubectl kustomize "$work/k8s/overlays/$overlay" >"$work/$overlay.yaml" \
    || die "kubectl kustomize overlays/$overlay failed"
  rendered+=("$work/$overlay.yaml")
  mkdir -p "$work/$overlay"
  echo "$namespace" >"$work/$overlay/namespace"
done
counts=()
for file in "${rendered[@]}"; do
  counts+=("$(basename "$file" .yaml): $(grep -c '^kind:' "$file") documents")
done
say "kubectl kustomize rendered ${counts[*]}"

for version in 1.28.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "${rendered[@]}" \
    || die "kubernetes-validate (strict, Kubernetes $version) rejected the rendered manifests"
  say "kubernetes-validate --strict: every document valid for Kubernetes $version"
done

# What the README promises, and the files step 4 needs (the ConfigMap and the Secret, decoded).
"$venv/bin/python" - "$work" <<'EOF' || die "the rendered manifests are not as documented"
import base64, os, sys, yaml
work = sys.argv[1]
for overlay in ["dev", "production"]:
    docs = [d for d in yaml.safe_load_all(open(f"{work}/{overlay}.yaml")) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    [sts] = by_kind["StatefulSet"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    [server] = [c for c in pod["containers"] if c["name"] == "ringkv"]
    [init] = pod["initContainers"]
    assert spec["serviceName"] == "ringkv-peers"
    assert spec["podManagementPolicy"] == "Parallel"
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    for c in [server, init]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
    assert server["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["startupProbe"]["httpGet"]["path"] == "/livez"
    assert server["args"] == ["server", "--config", "/run/ringkv/ringkv.toml"]
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert any(m["mountPath"] == "/data" and m["name"] == "data" for m in server["volumeMounts"])
    [pdb] = by_kind["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    services = {s["metadata"]["name"]: s["spec"] for s in by_kind["Service"]}
    assert services["ringkv-peers"]["clusterIP"] == "None"
    assert services["ringkv-peers"]["publishNotReadyAddresses"] is True
    assert "clusterIP" not in services["ringkv"]
    [cm] = by_kind["ConfigMap"]
    [secret] = by_kind["Secret"]
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} == {cm["metadata"]["name"]}
    assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {secret["metadata"]["name"]}
    assert set(secret["data"]) == {"cluster-secret", "ca.crt", "peer.crt", "peer.key"}
    toml = cm["data"]["ringkv.toml"]
    # The server's whole shutdown must fit in the grace period.
    drain = int(next(l.split("=")[1] for l in toml.splitlines() if l.startswith("drain_timeout_ms")))
    assert pod["terminationGracePeriodSeconds"] * 1000 > drain + 5000 + 10000, "grace period too short"
    if overlay == "production":
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
        assert any(e["name"] == "ZONE" for e in init["env"])
    os.makedirs(f"{work}/{overlay}/config", exist_ok=True)
    os.makedirs(f"{work}/{overlay}/secret", mode=0o700, exist_ok=True)
    for name, text in cm["data"].items():
        open(f"{work}/{overlay}/config/{name}", "w").write(text)
    for name, value in secret["data"].items():
        open(f"{work}/{overlay}/secret/{name}", "wb").write(base64.b64decode(value))
    print(f"kubernetes test: {overlay}: {len(docs)} documents, {spec['replicas']} replicas, as documented")
EOF

if [ "$(id -u)" -ne 0 ]; then
  say "skipped running the rendered configuration with ringkv (needs root for a network namespace)"
  say "passed"
  exit 0
fi
binary=${RINGKV_BINARY:-}
if [ -z "$binary" ]; then
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  binary="$target_dir/debug/ringkv"
  [ -x "$binary" ] || (cd "$repo" && cargo build -p ringkv --locked)
fi
[ -x "$binary" ] || die "no ringkv binary at $binary"
# A certificate from the dev CA for another namespace's names, for the negative check inside.
wrong="$work/dev-wrong-name"
mkdir -p "$wrong"
cp -r "$work/dev/config" "$work/dev/secret" "$work/dev/namespace" "$wrong/"
ca="$work/k8s/overlays/dev/secrets"
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$wrong/secret/peer.key" \
  -out "$work/wrong.csr" -subj /CN=elsewhere 2>/dev/null
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=DNS:*.ringkv-peers.elsewhere.svc.cluster.local" \
  >"$work/wrong.ext"
openssl x509 -req -in "$work/wrong.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAserial "$work/wrong.srl" \
  -CAcreateserial -days 1 -extfile "$work/wrong.ext" -out "$wrong/secret/peer.crt" 2>/dev/null \
  || die "openssl could not sign the wrong-name certificate"
unshare --net --mount --propagation private -- bash "$0" --inside "$work" "$binary" \
  || die "the rendered configuration does not run (see above)"
say "passed"
