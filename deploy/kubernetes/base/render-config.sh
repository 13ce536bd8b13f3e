#!/bin/sh
# The init container of each ringkv pod (busybox sh). The image has no shell, and a pod's settings
# depend on its ordinal, so this writes /run/ringkv/ringkv.toml: the pod's own keys (node id = pod
# name; stable DNS names through the headless Service ringkv-peers, re-resolved on every dial, so
# a pod keeps its address when its IP changes; the seed; the zone) followed by the ConfigMap's
# ringkv.toml. The seed pod (ringkv-0) founds the cluster and every other pod joins through it.
#
# Environment: POD_NAME, POD_NAMESPACE (downward API); ZONE (optional: the failure domain);
# CLUSTER_DOMAIN (cluster.local); PEERS_SERVICE (ringkv-peers); HTTP_PORT (8087), PEER_PORT (7087);
# CONFIG_IN, CONFIG_OUT, DATA_DIR (the mounts); SEED_PROBE_PATH (/livez); SEED_POD (<set>-0: the
# pod every other joins through; set it to another member to bring back a seed pod whose volume
# was lost, see ../README.md).
set -eu
: "${POD_NAME:?POD_NAME must be set (downward API metadata.name)}"
: "${POD_NAMESPACE:?POD_NAMESPACE must be set (downward API metadata.namespace)}"
peers=${PEERS_SERVICE:-ringkv-peers}
domain=${CLUSTER_DOMAIN:-cluster.local}
http_port=${HTTP_PORT:-8087}
peer_port=${PEER_PORT:-7087}
config_in=${CONFIG_IN:-/etc/ringkv/config/ringkv.toml}
config_out=${CONFIG_OUT:-/run/ringkv/ringkv.toml}
data_dir=${DATA_DIR:-/data}
ordinal=${POD_NAME##*-}
seed_pod=${SEED_POD:-${POD_NAME%-*}-0}
case "$ordinal" in
  '' | *[!0-9]*) echo "render-config: $POD_NAME is not a StatefulSet pod name (<set>-<ordinal>)" >&2; exit 1 ;;
esac

host() {
  echo "$1.$peers.$POD_NAMESPACE.svc.$domain"
}

{
  echo "# Rendered by render-config.sh for $POD_NAME; the ConfigMap's ringkv.toml follows."
  echo "node_id = \"$POD_NAME\""
  echo "advertise = \"$(host "$POD_NAME"):$http_port\""
  echo "peer_advertise = \"$(host "$POD_NAME"):$peer_port\""
  if [ "$POD_NAME" != "$seed_pod" ]; then
    echo "seeds = [\"$(host "$seed_pod"):$peer_port\"]"
  fi
  if [ -n "${ZONE:-}" ]; then
    echo "zone = \"$ZONE\""
  fi
  echo
  cat "$config_in"
} >"$config_out.tmp"
mv "$config_out.tmp" "$config_out"
echo "render-config: wrote $config_out for $POD_NAME${ZONE:+ in zone $ZONE}"

# A pod's first start (no identity in its volume yet): wait until the seed serves, rather than let
# the server exit on a seed nobody answers and be restarted with a back-off (pods start in
# parallel). A restarting member needs no seed: it comes back with its persisted view.
if [ "$POD_NAME" != "$seed_pod" ] && [ ! -e "$data_dir/identity.json" ]; then
  url="http://$(host "$seed_pod"):$http_port${SEED_PROBE_PATH:-/livez}"
  until wget -q -T 3 -O /dev/null "$url"; do
    echo "render-config: first start: waiting for the seed $seed_pod ($url)"
    sleep 2
  done
fi
