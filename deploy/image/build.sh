#!/usr/bin/env bash
# Builds the ringkv OCI image from scratch with buildah: the ringkv binary, the shared libraries
# it links (as ldd resolves them on this Debian system), a few /etc files, a /data volume owned by
# the non-root user ringkv (uid 10001). No base image is pulled. See deploy/image/README.md.
#
#   deploy/image/build.sh [--binary PATH] [--tag NAME] [--format docker|oci]
#                         [--oci-archive FILE] [--no-strip]
#
# --binary     the ringkv binary to ship (default: `cargo build --release -p ringkv`, then
#              target/release/ringkv)
# --tag        image name (default localhost/ringkv:<version from Cargo>)
# --format     docker (default: keeps HEALTHCHECK, which the OCI image config has no field for) or oci
# --oci-archive also write the image to FILE as an OCI archive (`podman load -i FILE`)
# --no-strip   ship the binary as it is (by default a copy loses its DWARF debug info: symbols,
#              and so backtraces, stay)
#
# buildah's storage driver is $STORAGE_DRIVER when set, else vfs (works in nested sandboxes
# without overlayfs; slower and bigger on disk than overlay, which a normal host can use).
# Prints the image id on the last line of stdout.
set -euo pipefail

die() {
  echo "build.sh: $*" >&2
  exit 1
}

repo=$(cd "$(dirname "$0")/../.." && pwd)
binary=""
tag=""
format=docker
archive=""
strip_debug=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    --format) format=${2:?--format needs docker or oci}; shift 2 ;;
    --oci-archive) archive=${2:?--oci-archive needs a file}; shift 2 ;;
    --no-strip) strip_debug=0; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case "$format" in docker | oci) ;; *) die "--format must be docker or oci, not $format" ;; esac

export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
# Mounting the container and giving /data to uid 10001 need root, or buildah's user namespace.
[ "$(id -u)" -eq 0 ] || die "run as root, or rootless inside buildah's user namespace: buildah unshare $0 ..."

if ! command -v buildah >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "buildah is not installed: apt-get install buildah (as root)"
  echo "build.sh: installing buildah (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends buildah >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends buildah >&2; } \
    || die "could not install buildah with apt-get"
fi
for tool in ldd python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
done

# The version and the target folder, from Cargo's metadata.
metadata=$(cd "$repo" && cargo metadata --format-version 1 --no-deps --locked) \
  || die "cargo metadata failed in $repo"
version=$(python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "ringkv"))' <<<"$metadata")
target_dir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$metadata")

revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
if [ -z "$binary" ]; then
  echo "build.sh: cargo build --release -p ringkv" >&2
  # The commit also goes into the binary: /metrics shows it as ringkv_build_info{commit=...}.
  (cd "$repo" && RINGKV_GIT_COMMIT="$revision" cargo build --release -p ringkv --locked >&2) \
    || die "the release build failed"
  binary="$target_dir/release/ringkv"
fi
[ -x "$binary" ] || die "$binary is not an executable file"
tag=${tag:-localhost/ringkv:$version}
created=$(date -u ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"} +%Y-%m-%dT%H:%M:%SZ)
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac

stage=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-image.XXXXXX")
container=""
cleanup() {
  if [ -n "$container" ]; then
    buildah umount "$container" >/dev/null 2>&1 || true
    buildah rm "$container" >/dev/null 2>&1 || true
  fi
  rm -rf "$stage"
}
trap cleanup EXIT

# The root filesystem, staged in a folder first.
root="$stage/root"
install -d -m 0755 "$root/usr/local/bin" "$root/etc"
install -m 0755 "$binary" "$root/usr/local/bin/ringkv"
if [ "$strip_debug" -eq 1 ]; then
  if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$root/usr/local/bin/ringkv"
  else
    echo "build.sh: strip not found (binutils): the binary keeps its debug info" >&2
  fi
fi

# Every library the dynamic loader resolves, and the loader itself, copied (symlinks followed)
# to the path ldd names: that is where the binary's PT_INTERP and the loader's search find them.
libraries=$(ldd "$binary" 2>&1) || die "ldd $binary failed: $libraries"
while read -r library; do
  [ -n "$library" ] || continue
  [ -e "$library" ] || die "ldd names $library, which does not exist"
  install -D -m 0755 "$(readlink -f "$library")" "$root$library"
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libraries")
grep -q 'not found' <<<"$libraries" && die "a library of $binary is not found: $libraries"

# The user the server runs as; the ids are fixed so that volumes and Kubernetes' runAsUser match.
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
ringkv:x:10001:10001:ringkv:/data:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
ringkv:x:10001:
EOF
# glibc reads this for name lookups (peer and seed host names are resolved with getaddrinfo);
# its files and dns back ends are built into libc since 2.34. The runtime provides
# /etc/hosts and /etc/resolv.conf.
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
# No CA bundle: the ringkv client compiles the Mozilla roots in (webpki-roots), and --ca-file
# names any other CA.

container=$(buildah from --format "$format" scratch)
mount=$(buildah mount "$container")
cp -a "$root/." "$mount/"
install -d -m 0750 -o 10001 -g 10001 "$mount/data"
buildah umount "$container" >/dev/null

config=(
  --os linux --arch "$arch"
  --user 10001:10001
  --workingdir /data
  --entrypoint '["/usr/local/bin/ringkv"]'
  --cmd '["server", "--data-dir", "/data", "--listen", "0.0.0.0:8087", "--peer-listen", "0.0.0.0:7087", "--advertise", "127.0.0.1:8087", "--peer-advertise", "127.0.0.1:7087"]'
  --port 8087/tcp --port 7087/tcp
  --volume /data
  --stop-signal SIGTERM
  --env PATH=/usr/local/bin
  --env RINGKV_LOG=info
  --label org.opencontainers.image.title=ringkv
  --label "org.opencontainers.image.description=A leaderless, always-writable Dynamo-style key-value store"
  --label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.revision=$revision"
  --label "org.opencontainers.image.source=https://example.invalid/ringkv"
  --label org.opencontainers.image.licenses=Apache-2.0
  --label "org.opencontainers.image.created=$created"
  --label 'io.ringkv.healthcheck=["/usr/local/bin/ringkv", "probe", "--ready"]'
)
if [ "$format" = docker ]; then
  config+=(
    --healthcheck 'CMD /usr/local/bin/ringkv probe --ready'
    --healthcheck-interval 10s --healthcheck-timeout 3s
    --healthcheck-start-period 60s --healthcheck-retries 3
  )
fi
buildah config "${config[@]}" "$container"

image=$(buildah commit --quiet --format "$format" --rm "$container" "$tag")
container=""
if [ -n "$archive" ]; then
  rm -f "$archive"
  buildah push --quiet "$tag" "oci-archive:$archive:$tag" >/dev/null
  echo "build.sh: wrote $archive" >&2
fi
echo "build.sh: built $tag ($format format) from $binary" >&2
echo "$image"
