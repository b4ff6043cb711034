#!/usr/bin/env bash
# The berth container image built without a container engine (issue 16):
#   1. image/build.sh writes the image into an OCI layout with umoci, from $BERTH_BIN (stripped
#      by the script); its compressed size (the layers as pushed) is printed and must be < 30 MB
#   2. skopeo pushes it into a running berth (a private project, logged in)
#   3. skopeo inspect: the user is 65532 (not root), the entrypoint is berth, the OCI labels
#      are there
#   4. skopeo pulls it back into a new layout, umoci unpacks it; from that root filesystem, as
#      uid 65532 (chroot): `berth --version` runs, and `berth serve` with the image's data
#      directory answers /v2/ and takes a blob (the directory is writable by the non-root user)
set -euo pipefail
E2E_NAME="${E2E_NAME:-image}"
BERTH_PROJECTS="${BERTH_PROJECTS:-images}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for c in umoci skopeo jq curl chroot sha256sum; do
  command -v "$c" >/dev/null || die "$c not installed (run e2e/setup.sh)"
done
[ "$(id -u)" = 0 ] || die "image.sh runs as root (image/build.sh records the data directory's owner; chroot)"
[ -x "$BERTH_BIN" ] || die "no berth binary at $BERTH_BIN"

e2e_tmpdir W
client_sandbox "$W"
VERSION="$("$BERTH_BIN" --version | awk '{print $2}')"
TAG="$VERSION-e2e"

# ===================================================================== 1. build
step "image/build.sh: the image without a container engine"
if run_logged image-build "$REPO_ROOT/image/build.sh" --binary "$BERTH_BIN" --layout "$W/oci" --tag "$TAG"; then
  pass "image/build.sh wrote $W/oci:$TAG"
  tail -n 1 "$E2E_OUT/image-build.log" | sed 's/^/    /'
else die "image/build.sh failed (log: $E2E_OUT/image-build.log)"; fi
manifest="$(jq -r '.manifests[0].digest' "$W/oci/index.json")"
mfile="$W/oci/blobs/sha256/${manifest#sha256:}"
compressed="$(jq '([.layers[].size] | add) + .config.size' "$mfile")"
log "image size: $compressed bytes compressed ($(awk -v b="$compressed" 'BEGIN{printf "%.1f MB", b/1e6}')), binary $(stat -c %s "$BERTH_BIN") bytes before strip"
check "compressed image under 30 MB ($compressed bytes)" test "$compressed" -lt 30000000

# ===================================================================== 2. push
step "skopeo pushes the image into berth"
start_berth "$W/berth"
REF="$BERTH_ADDR/images/berth:$TAG"
if run_logged skopeo-push "${SKOPEO[@]}" copy --dest-tls-verify=false --dest-creds "$BERTH_USER:$BERTH_PASS" \
     "oci:$W/oci:$TAG" "docker://$REF"; then
  pass "skopeo copy oci:layout:$TAG -> $REF"
else fail "skopeo push of the image (log: $E2E_OUT/skopeo-push.log)"; fi

# ===================================================================== 3. inspect
step "skopeo inspect: user, entrypoint, labels"
if run_logged skopeo-inspect "${SKOPEO[@]}" inspect --tls-verify=false --creds "$BERTH_USER:$BERTH_PASS" \
     --config "docker://$REF"; then
  cfg="$(sed 1d "$E2E_OUT/skopeo-inspect.log")"
  user="$(jq -r '.config.User' <<<"$cfg")"
  log "config: $(jq -c '.config | {User, Entrypoint, Cmd, WorkingDir, ExposedPorts}' <<<"$cfg")"
  check "user $user is not root" bash -c "uid='${user%%:*}'; [ -n \"\$uid\" ] && [ \"\$uid\" != 0 ] && [ \"\$uid\" != root ]"
  check "entrypoint is berth" test "$(jq -c '.config.Entrypoint' <<<"$cfg")" = '["/usr/local/bin/berth"]'
  check "OCI labels: title berth, version $VERSION" \
    test "$(jq -r '.config.Labels["org.opencontainers.image.title"] + " " + .config.Labels["org.opencontainers.image.version"]' <<<"$cfg")" = "berth $VERSION"
else fail "skopeo inspect --config (log: $E2E_OUT/skopeo-inspect.log)"; fi

# ===================================================================== 4. run from the pulled root filesystem
step "pull back, unpack, run as uid 65532 from the image's root filesystem"
if run_logged skopeo-pull "${SKOPEO[@]}" copy --src-tls-verify=false --src-creds "$BERTH_USER:$BERTH_PASS" \
     "docker://$REF" "oci:$W/pulled:$TAG" \
   && run_logged umoci-unpack umoci unpack --image "$W/pulled:$TAG" "$W/bundle"; then
  pass "pulled back and unpacked"
  R="$W/bundle/rootfs"
  out="$(chroot --userspec=65532:65532 "$R" /usr/local/bin/berth --version 2>&1 || true)"
  check "berth --version from the image as 65532: '$out'" test "$out" = "berth $VERSION"
  port="$(free_port)"
  chroot --userspec=65532:65532 "$R" /usr/local/bin/berth serve --no-auth \
    --listen "127.0.0.1:$port" --data-dir /var/lib/berth >"$E2E_OUT/chroot-serve.log" 2>&1 &
  CHROOT_PID=$!
  code=""
  for _ in $(seq 1 100); do
    code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/v2/" 2>/dev/null || true)"
    [ "$code" = 200 ] && break
    kill -0 "$CHROOT_PID" 2>/dev/null || break
    sleep 0.1
  done
  check "berth serve from the image answers /v2/ (got $code)" test "$code" = 200
  blob="image e2e $RANDOM"
  digest="sha256:$(printf '%s' "$blob" | sha256sum | cut -d' ' -f1)"
  code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST --data-binary "$blob" \
    "http://127.0.0.1:$port/v2/t/blobs/uploads/?digest=$digest" || true)"
  check "it stores a blob in /var/lib/berth as 65532 (got $code)" test "$code" = 201
  kill "$CHROOT_PID" 2>/dev/null || true; wait "$CHROOT_PID" 2>/dev/null || true
  [ "$code" = 201 ] || tail -n 10 "$E2E_OUT/chroot-serve.log" | sed 's/^/    /' >&2
else fail "pull back or unpack (logs: $E2E_OUT/skopeo-pull.log, umoci-unpack.log)"; fi

stop_berth
finish
