#!/usr/bin/env bash
# Builds the berth container image without a container engine: an OCI image layout written
# with umoci (Debian package `umoci`), the same image the Containerfile describes:
#   /usr/local/bin/berth         the binary, stripped
#   the C runtime it links       glibc, libgcc_s, the dynamic loader (found with ldd, copied
#                                from this machine: the binary was built against them)
#   /etc/ssl/certs/ca-certificates.crt   for S3 and PostgreSQL endpoints over TLS
#   /etc/passwd, /etc/group      root and nonroot (65532), as distroless has them
#   /var/lib/berth               the data directory, owned by 65532; /tmp (1777)
# config: user 65532:65532, entrypoint berth, cmd `serve --listen 0.0.0.0:5000 --data-dir
# /var/lib/berth`, port 5000, OCI labels (title, description, version, revision, created,
# licenses). No shell, no package manager.
#
# Usage: image/build.sh [--binary FILE] [--layout DIR] [--tag TAG]
#   --binary  the berth binary to put in (default: cargo build --release, then
#             $CARGO_TARGET_DIR or ./target /release/berth)
#   --layout  the OCI layout to write into (default: ./target/image; created if missing)
#   --tag     the tag in the layout (default: the crate version)
# Then, e.g.:  skopeo copy oci:target/image:0.1.0 docker://registry.example.com/berth:0.1.0
# Run as root (the data directory's owner, 65532, is recorded in the layer); prints the
# image's compressed size (the layers as pushed) and its manifest digest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
BIN="" LAYOUT="$ROOT/target/image" TAG="$VERSION"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN="$2"; shift 2 ;;
    --layout) LAYOUT="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "image/build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '[image] %s\n' "$*"; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }
for c in umoci ldd strip jq sha256sum; do command -v "$c" >/dev/null || die "$c not installed"; done
[ "$(id -u)" = 0 ] || die "run as root: the data directory's owner (65532) is recorded in the layer"

if [ -z "$BIN" ]; then
  say "cargo build --release --locked --bin berth"
  (cd "$ROOT" && cargo build --release --locked --bin berth)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/berth"
fi
[ -x "$BIN" ] || die "no executable at $BIN"
"$BIN" --version >/dev/null || die "$BIN --version failed"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/berth-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
BUNDLE="$WORK/bundle"
[ -f "$LAYOUT/oci-layout" ] || umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$TAG"
umoci unpack --image "$LAYOUT:$TAG" "$BUNDLE" >/dev/null
R="$BUNDLE/rootfs"

mkdir -p "$R/usr/local/bin" "$R/etc/ssl/certs" "$R/var/lib/berth" "$R/tmp"
strip -o "$R/usr/local/bin/berth" "$BIN"
chmod 0755 "$R/usr/local/bin/berth"
# the shared libraries and the loader, at the paths the binary asks for
ldd "$BIN" | awk '/=> \// {print $3} /^\t\/[^ ]*ld-linux/ {print $1}' | while read -r lib; do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$R/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$R/etc/group"
chown 65532:65532 "$R/var/lib/berth"; chmod 0755 "$R/var/lib/berth"
chmod 1777 "$R/tmp"
umoci repack --image "$LAYOUT:$TAG" "$BUNDLE"

REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
umoci config --image "$LAYOUT:$TAG" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/berth \
  --config.cmd serve --config.cmd --listen --config.cmd 0.0.0.0:5000 \
  --config.cmd --data-dir --config.cmd /var/lib/berth \
  --config.workingdir /var/lib/berth \
  --config.volume /var/lib/berth \
  --config.exposedports 5000/tcp \
  --config.label "org.opencontainers.image.title=berth" \
  --config.label "org.opencontainers.image.description=A Kubernetes-native, OCI-conformant container registry run by its own operator" \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.revision=$REVISION" \
  --config.label "org.opencontainers.image.created=$CREATED" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --created "$CREATED" --author "berth image/build.sh" \
  --history.created_by "image/build.sh (berth $VERSION, $REVISION)"
umoci gc --layout "$LAYOUT"

# the manifest the tag names: its layers' sizes are what a registry stores and clients pull
manifest="$(jq -r --arg t "$TAG" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | .digest' "$LAYOUT/index.json")"
mfile="$LAYOUT/blobs/sha256/${manifest#sha256:}"
compressed="$(jq "([.layers[].size] | add) + .config.size" "$mfile")"
say "built $LAYOUT:$TAG (manifest $manifest): $(jq '.layers | length' "$mfile") layer(s), $compressed bytes compressed ($(awk -v b="$compressed" 'BEGIN{printf "%.1f MB", b/1e6}'))"
