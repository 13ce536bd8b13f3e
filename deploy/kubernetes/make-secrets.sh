#!/usr/bin/env bash
# Writes the files of the Secret ringkv-cluster into an overlay's secrets/ folder, where the
# overlay's secretGenerator reads them (git ignores them: never commit keys):
#
#   deploy/kubernetes/make-secrets.sh --namespace ringkv overlays/production/secrets
#
#   cluster-secret  32 random bytes, hex: every peer proves it knows it (HMAC of the hellos)
#   ca.crt          the cluster's own CA (EC P-256, 10 years); ca.key is kept beside it, OUTSIDE
#                   the Secret: move it somewhere safe, it signs new peer certificates
#   peer.crt/.key   the certificate every pod presents to its peers, for
#                   *.ringkv-peers.<namespace>.svc.<cluster domain> (the names pods advertise and
#                   dial), with serverAuth and clientAuth (2 years)
#
# Existing files are kept (rerunning is harmless); --force replaces them. Needs openssl.
set -euo pipefail

die() {
  echo "make-secrets.sh: $*" >&2
  exit 1
}

namespace=""
domain=cluster.local
service=ringkv-peers
force=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) namespace=${2:?--namespace needs a value}; shift 2 ;;
    --cluster-domain) domain=${2:?--cluster-domain needs a value}; shift 2 ;;
    --peers-service) service=${2:?--peers-service needs a value}; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$out" ] || die "one output folder only"; out=$1; shift ;;
  esac
done
[ -n "$namespace" ] || die "--namespace is required (the certificate names the pods' DNS names in it)"
[ -n "$out" ] || die "the output folder is required (e.g. overlays/production/secrets)"
command -v openssl >/dev/null 2>&1 || die "openssl is needed"

mkdir -p "$out"
chmod 0700 "$out"
cd "$out"
umask 077
if [ "$force" -eq 0 ] && [ -e cluster-secret ] && [ -e ca.crt ] && [ -e peer.crt ] && [ -e peer.key ]; then
  echo "make-secrets.sh: $out already holds the secret's files (--force replaces them)"
  exit 0
fi

openssl rand -hex 32 >cluster-secret

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout ca.key -out ca.crt -days 3650 -subj "/CN=ringkv cluster CA ($namespace)" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

names="DNS:*.$service.$namespace.svc.$domain,DNS:*.$service.$namespace.svc"
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout peer.key -out peer.csr -subj "/CN=$service.$namespace" 2>/dev/null
extensions=$(mktemp)
trap 'rm -f "$extensions" peer.csr' EXIT
cat >"$extensions" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$names
EXT
openssl x509 -req -in peer.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 730 \
  -extfile "$extensions" -out peer.crt 2>/dev/null
rm -f ca.srl
chmod 0600 ca.key peer.key cluster-secret
chmod 0644 ca.crt peer.crt
echo "make-secrets.sh: wrote cluster-secret, ca.crt, peer.crt, peer.key (and ca.key: keep it out of the cluster) in $out for $names"
