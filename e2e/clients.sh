#!/usr/bin/env bash
# Real clients round-trip locally built images through berth (nothing is pulled from the net):
#   1. umoci builds an OCI layout: a 2-layer amd64 image, an arm64 image, and an OCI index of both
#   2. skopeo copy layout -> berth -> new layout; manifest, config and layer digests identical
#   3. podman (root, vfs storage in temp dirs, no container engine needed for pull/push):
#      load from the layout, push to berth, remove, pull back; image ID / digest identical
#   4. oras (PyPI SDK) pushes two artifacts whose subject is the image; GET referrers lists
#      both, ?artifactType= filters to one (with OCI-Filters-Applied)
#   5. multi-arch index: skopeo copy --all there and back; index and child digests identical
#   6. bad names: skopeo and podman pushing too deep below the project, and oras pushing to
#      `app-`, are refused and print berth's NAME_INVALID reason (not a bare "400 Bad Request":
#      a HEAD, which every push starts with, answers 404 so the next request shows the body)
# With berth's token authentication (the default) the repository is in the private project
# group/project and every client logs in as lib.sh's e2e user (Owner): skopeo with
# --dest-creds/--src-creds/--creds, podman with `podman login` (auth file in the temp dir),
# oras with login(); each does the Docker token flow itself. curl checks send a bearer token.
# Client logs (with --debug HTTP traces) and every curl request go to e2e/out/clients/.
set -euo pipefail
E2E_NAME="${E2E_NAME:-clients}"
BERTH_PROJECTS="${BERTH_PROJECTS:-group/project}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for c in umoci skopeo podman jq python3 curl sha256sum; do
  command -v "$c" >/dev/null || die "$c not installed (run e2e/setup.sh)"
done
python3 -c 'import oras.client' 2>/dev/null || die "python module oras missing (run e2e/setup.sh)"

e2e_tmpdir W
# podman names an image loaded from oci:PATH after PATH, so PATH must be lowercase
# (e2e_tmpdir makes lowercase names)
W_LC="$W/work"; mkdir -p "$W_LC"
# podman login / skopeo keep credentials in $W/auth.json
client_sandbox "$W"
skopeo_debug() { "${SKOPEO[0]}" --debug "${SKOPEO[@]:1}" "$@"; }

# layout helpers -------------------------------------------------------------------------
# layout_digest LAYOUT REF: manifest digest that index.json tags as REF
layout_digest() {
  jq -r --arg r "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$r) | .digest' "$1/index.json"
}
blob_path() { printf '%s/blobs/%s/%s' "$1" "${2%%:*}" "${2#*:}"; }
# all_digests LAYOUT DIGEST: the digest and, recursively, every digest it references
all_digests() {
  local layout="$1" d="$2"
  printf '%s\n' "$d"
  local f; f="$(blob_path "$layout" "$d")"
  [ -f "$f" ] || return 0
  local mt; mt="$(jq -r '.mediaType // empty' "$f" 2>/dev/null || true)"
  if jq -e '.manifests' "$f" >/dev/null 2>&1; then
    local c
    for c in $(jq -r '.manifests[].digest' "$f"); do all_digests "$layout" "$c"; done
  elif jq -e '.config' "$f" >/dev/null 2>&1; then
    jq -r '.config.digest, (.layers // [])[].digest' "$f"
  fi
  : "$mt"
}
# verify every blob reachable from DIGEST exists in LAYOUT and hashes to its name
verify_layout_blobs() {
  local layout="$1" d bad=0
  for d in $(all_digests "$layout" "$2"); do
    local f; f="$(blob_path "$layout" "$d")"
    if [ ! -f "$f" ]; then echo "  missing blob $d in $layout" >&2; bad=1; continue; fi
    local got; got="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
    [ "$got" = "$d" ] || { echo "  blob $d in $layout hashes to $got" >&2; bad=1; }
  done
  return "$bad"
}
same_digest_sets() { # same_digest_sets LAYOUT_A DIGEST_A LAYOUT_B DIGEST_B
  local a b
  a="$(all_digests "$1" "$2" | sort -u)"; b="$(all_digests "$3" "$4" | sort -u)"
  if [ "$a" = "$b" ]; then return 0; fi
  echo "  digest sets differ:" >&2; diff <(echo "$a") <(echo "$b") | sed 's/^/    /' >&2
  return 1
}

# ===================================================================== 1. build images
step "build OCI layout with umoci"
SRC="$W_LC/src"
# build_image TAG ARCH SEED: two filesystem layers (etc + app with random data) and a config
build_image() {
  local tag="$1" arch="$2" seed="$3" b="$W/bundle-$1"
  umoci new --image "$SRC:$tag"
  umoci unpack --rootless --image "$SRC:$tag" "$b"
  mkdir -p "$b/rootfs/etc"
  printf 'berth e2e %s %s\n' "$tag" "$seed" >"$b/rootfs/etc/berth-release"
  umoci repack --refresh-bundle --image "$SRC:$tag" "$b"  # layer 1
  mkdir -p "$b/rootfs/app"
  head -c 262144 /dev/urandom >"$b/rootfs/app/data.bin"
  printf '#!/bin/sh\necho hello from %s\n' "$tag" >"$b/rootfs/app/run.sh"
  chmod +x "$b/rootfs/app/run.sh"
  umoci repack --image "$SRC:$tag" "$b"                   # layer 2
  umoci config --image "$SRC:$tag" --os linux --architecture "$arch" \
    --config.cmd /app/run.sh --config.env "BERTH_SEED=$seed" --config.workingdir /app \
    --config.label "org.opencontainers.image.title=berth-e2e-$tag" \
    --manifest.annotation "org.opencontainers.image.description=berth e2e $tag"
  rm -rf "$b"
}
run_logged umoci-init umoci init --layout "$SRC" || die "umoci init failed"
run_logged umoci-build-v1 build_image v1 amd64 "$RANDOM$RANDOM" || die "umoci build of v1 failed"
run_logged umoci-build-arm64 build_image arm64 arm64 "$RANDOM$RANDOM" || die "umoci build of arm64 failed"
# a second amd64 image for the index (distinct content)
run_logged umoci-build-amd64 build_image amd64 amd64 "$RANDOM$RANDOM" || die "umoci build of amd64 failed"

V1_DIGEST="$(layout_digest "$SRC" v1)"
V1_MANIFEST="$(blob_path "$SRC" "$V1_DIGEST")"
nlayers="$(jq '.layers | length' "$V1_MANIFEST")"
[ "$nlayers" -ge 2 ] || die "umoci image v1 has $nlayers layers, want >= 2"
log "v1: manifest $V1_DIGEST, $nlayers layers, config $(jq -r .config.digest "$V1_MANIFEST")"

# OCI index of the amd64 + arm64 images, tagged "multi" in the layout
python3 - "$SRC" <<'PY'
import hashlib, json, os, sys
layout = sys.argv[1]
idx_path = os.path.join(layout, "index.json")
top = json.load(open(idx_path))
by_ref = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in top["manifests"]}
children = []
for ref, arch in (("amd64", "amd64"), ("arm64", "arm64")):
    d = dict(by_ref[ref]); d.pop("annotations", None)
    d["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    d["platform"] = {"architecture": arch, "os": "linux"}
    children.append(d)
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": children,
         "annotations": {"org.opencontainers.image.description": "berth e2e multi-arch"}}
raw = json.dumps(index, separators=(",", ":")).encode()
dig = hashlib.sha256(raw).hexdigest()
open(os.path.join(layout, "blobs", "sha256", dig), "wb").write(raw)
top["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                         "digest": "sha256:" + dig, "size": len(raw),
                         "annotations": {"org.opencontainers.image.ref.name": "multi"}})
json.dump(top, open(idx_path, "w"))
PY
MULTI_DIGEST="$(layout_digest "$SRC" multi)"
log "multi: index $MULTI_DIGEST ($(jq -c '[.manifests[].platform.architecture]' "$(blob_path "$SRC" "$MULTI_DIGEST")"))"
check "source layout is self-consistent (every blob hashes to its name)" \
  verify_layout_blobs "$SRC" "$MULTI_DIGEST"

step "start registry ($E2E_REGISTRY)"
start_berth "$W/registry"
REG="$BERTH_ADDR"
REPO="group/project/app"
# credentials for the clients (none when authentication is off)
DEST_CREDS=(); SRC_CREDS=(); CREDS=()
if [ "$BERTH_AUTH_ON" = 1 ]; then
  DEST_CREDS=(--dest-creds "$BERTH_USER:$BERTH_PASS"); SRC_CREDS=(--src-creds "$BERTH_USER:$BERTH_PASS")
  CREDS=(--creds "$BERTH_USER:$BERTH_PASS")
  log "authentication on: clients log in as $BERTH_USER (Owner of private project group/project)"
fi
# curl checks below: a bearer token for the repository (refreshed before each section)
http_login "repository:$REPO:pull"

# ===================================================================== 2. skopeo
step "skopeo: push oci layout -> $REG/$REPO:v1, pull back, compare digests"
if run_logged skopeo-push-v1 skopeo_debug copy --preserve-digests --dest-tls-verify=false "${DEST_CREDS[@]}" \
     "oci:$SRC:v1" "docker://$REG/$REPO:v1"; then
  pass "skopeo copy oci:layout:v1 -> docker://$REG/$REPO:v1"
else
  fail "skopeo copy oci:layout:v1 -> docker://$REG/$REPO:v1 (log: $E2E_OUT/skopeo-push-v1.log)"
fi

if "${SKOPEO[@]}" inspect --tls-verify=false "${CREDS[@]}" --raw "docker://$REG/$REPO:v1" >"$W/v1.raw" 2>"$E2E_OUT/skopeo-inspect-v1.log"; then
  remote="sha256:$(sha256sum <"$W/v1.raw" | cut -d' ' -f1)"
  if [ "$remote" = "$V1_DIGEST" ]; then pass "skopeo inspect --raw: manifest digest $remote matches the layout"
  else fail "skopeo inspect --raw docker://$REG/$REPO:v1: manifest digest $remote != layout $V1_DIGEST"; fi
else
  fail "skopeo inspect --raw docker://$REG/$REPO:v1: $(tail -n 3 "$E2E_OUT/skopeo-inspect-v1.log")"
fi

if http 200 GET "$BERTH_URL/v2/$REPO/manifests/v1" -H "Accept: application/vnd.oci.image.manifest.v1+json"; then
  got_ct="$(header Content-Type)"; got_dcd="$(header Docker-Content-Digest)"
  body_d="sha256:$(sha256sum "$HTTP_BODY" | cut -d' ' -f1)"
  if [ "$got_ct" = "application/vnd.oci.image.manifest.v1+json" ] && [ "$got_dcd" = "$V1_DIGEST" ] && [ "$body_d" = "$V1_DIGEST" ]; then
    pass "GET manifests/v1: Content-Type, Docker-Content-Digest and body digest match"
  else
    fail "GET /v2/$REPO/manifests/v1: Content-Type='$got_ct' (want application/vnd.oci.image.manifest.v1+json), Docker-Content-Digest='$got_dcd', body digest $body_d (want $V1_DIGEST)"
  fi
else
  fail "GET /v2/$REPO/manifests/v1"
fi

BACK="$W_LC/back"
if run_logged skopeo-pull-v1 skopeo_debug copy --preserve-digests --src-tls-verify=false "${SRC_CREDS[@]}" \
     "docker://$REG/$REPO:v1" "oci:$BACK:v1"; then
  pass "skopeo copy docker://$REG/$REPO:v1 -> new oci layout"
  back_d="$(layout_digest "$BACK" v1)"
  if [ "$back_d" = "$V1_DIGEST" ]; then pass "pulled manifest digest $back_d identical"
  else fail "pulled manifest digest $back_d != pushed $V1_DIGEST"; fi
  if cmp -s "$V1_MANIFEST" "$(blob_path "$BACK" "$back_d")"; then pass "pulled manifest bytes identical"
  else fail "pulled manifest bytes differ from the pushed manifest"; fi
  check "pulled config + layer digests identical to the source" same_digest_sets "$SRC" "$V1_DIGEST" "$BACK" "$back_d"
  check "pulled blobs hash to their digests (sha256sum)" verify_layout_blobs "$BACK" "$back_d"
else
  fail "skopeo copy docker://$REG/$REPO:v1 -> oci layout (log: $E2E_OUT/skopeo-pull-v1.log)"
fi

if http 200 GET "$BERTH_URL/v2/$REPO/tags/list"; then
  if jq -e '.name == "'"$REPO"'" and (.tags | index("v1"))' "$HTTP_BODY" >/dev/null; then
    pass "tags/list names $REPO and contains v1"
  else fail "GET /v2/$REPO/tags/list: body $(head -c 500 "$HTTP_BODY") lacks name=$REPO / tag v1"; fi
else fail "GET /v2/$REPO/tags/list"; fi

# ===================================================================== 3. podman
step "podman: load layout, push to $REG/$REPO:podman, rmi, pull back"
# podman needs no container engine for pull/push: only its image store. Everything lives in
# temp dirs (vfs driver works without overlay/fuse); cgroupfs + file events avoid systemd.
PODMAN=(podman --root "$W/podman/root" --runroot "$W/podman/run" --storage-driver vfs
        --cgroup-manager cgroupfs --events-backend file --tmpdir "$W/podman/tmp")
mkdir -p "$W/podman/root" "$W/podman/run" "$W/podman/tmp"
V1_CONFIG="$(jq -r .config.digest "$V1_MANIFEST")"
podman_ok=1
if run_logged podman-load "${PODMAN[@]}" --log-level=debug pull --signature-policy "$W/policy.json" "oci:$SRC:v1"; then
  pass "podman pull oci:layout:v1 (loaded into podman's vfs store)"
else
  podman_ok=0; fail "podman pull oci:layout:v1 (load into local store)"
fi
if [ "$podman_ok" = 1 ] && [ "$BERTH_AUTH_ON" = 1 ]; then
  if printf '%s' "$BERTH_PASS" | run_logged podman-login "${PODMAN[@]}" login --tls-verify=false \
       -u "$BERTH_USER" --password-stdin "$REG"; then
    pass "podman login $REG as $BERTH_USER"
  else
    podman_ok=0; fail "podman login --tls-verify=false -u $BERTH_USER $REG (log: $E2E_OUT/podman-login.log)"
  fi
fi
if [ "$podman_ok" = 1 ]; then
  run_logged podman-tag "${PODMAN[@]}" tag "${V1_CONFIG#sha256:}" localhost/berth-e2e:v1 \
    || { podman_ok=0; fail "podman tag"; }
fi
if [ "$podman_ok" = 1 ]; then
  if run_logged podman-push "${PODMAN[@]}" --log-level=debug push --signature-policy "$W/policy.json" \
       --tls-verify=false --digestfile "$W/podman.digest" localhost/berth-e2e:v1 "$REG/$REPO:podman"; then
    pushed_d="$(cat "$W/podman.digest")"
    pass "podman push -> $REG/$REPO:podman ($pushed_d)"
    http_login "repository:$REPO:pull"
    if http 200 GET "$BERTH_URL/v2/$REPO/manifests/podman" \
         -H "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"; then
      got="sha256:$(sha256sum "$HTTP_BODY" | cut -d' ' -f1)"
      if [ "$got" = "$pushed_d" ] && [ "$(header Docker-Content-Digest)" = "$pushed_d" ]; then
        pass "registry serves podman's manifest with the digest podman reported"
      else
        fail "GET manifests/podman: body digest $got, Docker-Content-Digest '$(header Docker-Content-Digest)', podman reported $pushed_d"
      fi
    else fail "GET /v2/$REPO/manifests/podman"; fi
    run_logged podman-rmi "${PODMAN[@]}" rmi -a -f || fail "podman rmi -a"
    if run_logged podman-pull "${PODMAN[@]}" --log-level=debug pull --signature-policy "$W/policy.json" \
         --tls-verify=false "$REG/$REPO:podman"; then
      pass "podman pull $REG/$REPO:podman"
      id="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$REG/$REPO:podman")"
      dg="$("${PODMAN[@]}" image inspect --format '{{.Digest}}' "$REG/$REPO:podman")"
      if [ "sha256:$id" = "$V1_CONFIG" ] && [ "$dg" = "$pushed_d" ]; then
        pass "podman pulled image: ID sha256:$id = source config, digest $dg = pushed"
      else
        fail "podman pulled image: ID sha256:$id (want $V1_CONFIG), digest $dg (want $pushed_d)"
      fi
      if run_logged podman-pull-digest "${PODMAN[@]}" pull --signature-policy "$W/policy.json" \
           --tls-verify=false "$REG/$REPO@$pushed_d"; then
        pass "podman pull by digest $REG/$REPO@$pushed_d"
      else fail "podman pull by digest $REG/$REPO@$pushed_d"; fi
    else
      fail "podman pull $REG/$REPO:podman (log: $E2E_OUT/podman-pull.log)"
    fi
  else
    fail "podman push -> $REG/$REPO:podman (log: $E2E_OUT/podman-push.log)"
  fi
fi

# ===================================================================== 4. oras + referrers
step "oras (python SDK): artifacts with subject -> referrers API"
SBOM_TYPE="application/vnd.berth.e2e.sbom.v1+json"
SIG_TYPE="application/vnd.berth.e2e.signature.v1"
mkdir -p "$W/oras"
printf '{"spdxVersion":"SPDX-2.3","name":"berth-e2e"}\n' >"$W/oras/sbom.spdx.json"
printf 'not-really-a-signature %s\n' "$RANDOM" >"$W/oras/image.sig"
printf '{}' >"$W/oras/config.json"
if (cd "$W/oras" && ORAS_USER="$BERTH_USER" ORAS_PASS="$BERTH_PASS" ORAS_AUTHFILE="$W/oras/docker-config.json" \
      python3 - "$REG" "$REPO" "$V1_DIGEST" "$SBOM_TYPE" "$SIG_TYPE" >"$E2E_OUT/oras.log" 2>&1) <<'PY'
import hashlib, json, os, sys
import oras.client, oras.defaults, oras.oci

reg, repo, subject_digest, sbom_type, sig_type = sys.argv[1:6]
base = f"http://{reg}/v2/{repo}"
client = oras.client.OrasClient(hostname=reg, insecure=True)
if os.environ.get("ORAS_USER"):
    # login() keeps Basic credentials; on a 401 oras' token backend reads the Bearer challenge
    # and asks the realm for a token itself. Its token cache ignores scopes (oras-py issue #67:
    # a pull-only token is reused for the push), so drop the cached token when the registry
    # answers error="insufficient_scope", as the Docker token spec intends.
    print("login:", client.login(username=os.environ["ORAS_USER"], password=os.environ["ORAS_PASS"],
                                 hostname=reg, config_path=os.environ["ORAS_AUTHFILE"]))
    _authenticate = client.auth.authenticate_request
    def authenticate_request(original, headers, refresh=False):
        insufficient = "insufficient_scope" in original.headers.get("Www-Authenticate", "")
        return _authenticate(original, headers, refresh=refresh or insufficient)
    client.auth.authenticate_request = authenticate_request
# subject descriptor from the exact bytes the registry serves (through oras' authenticated session)
r = client.do_request(f"{base}/manifests/{subject_digest}", "GET",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
r.raise_for_status()
assert "sha256:" + hashlib.sha256(r.content).hexdigest() == subject_digest, "subject digest mismatch"
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json",
                           digest=subject_digest, size=len(r.content))

# artifact 1: oras push() -- artifactType implied by config.mediaType (pre-1.1 style)
resp = client.push(target=f"{reg}/{repo}:sbom", files=["sbom.spdx.json:application/spdx+json"],
                   manifest_config=f"config.json:{sbom_type}", subject=subject,
                   manifest_annotations={"org.example.kind": "sbom"})
print("sbom push:", resp.status_code, dict(resp.headers))
sbom_digest = resp.headers["Docker-Content-Digest"]

# artifact 2: explicit artifactType + the OCI empty config (image-spec 1.1 style), through
# oras' blob upload and manifest PUT
container = client.get_container(f"{reg}/{repo}:signature")
layer = oras.oci.NewLayer("image.sig", media_type="application/octet-stream")
layer["annotations"] = {"org.opencontainers.image.title": "image.sig"}
resp = client.upload_blob("image.sig", container, layer); print("sig blob:", resp.status_code)
empty = {"mediaType": "application/vnd.oci.empty.v1+json",
         "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
         "size": 2, "data": "e30="}
resp = client.upload_blob("config.json", container, {k: empty[k] for k in ("mediaType", "digest", "size")})
print("empty config blob:", resp.status_code)
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": sig_type, "config": empty, "layers": [layer],
            "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
            "annotations": {"org.example.kind": "signature"}}
resp = client.upload_manifest(manifest, container)
print("sig manifest:", resp.status_code, dict(resp.headers))
resp.raise_for_status()
sig_digest = resp.headers["Docker-Content-Digest"]
print(json.dumps({"sbom": sbom_digest, "signature": sig_digest,
                  "oci_subject_header": resp.headers.get("OCI-Subject")}))
PY
then
  pass "oras pushed sbom (config mediaType) and signature (artifactType) artifacts with subject"
  digests_json="$(tail -n 1 "$E2E_OUT/oras.log")"
  SBOM_D="$(jq -r .sbom <<<"$digests_json")"; SIG_D="$(jq -r .signature <<<"$digests_json")"
  log "sbom $SBOM_D, signature $SIG_D"
  http_login "repository:$REPO:pull"
  if [ "$(jq -r .oci_subject_header <<<"$digests_json")" = "$V1_DIGEST" ]; then
    pass "manifest PUT with subject answered OCI-Subject: $V1_DIGEST"
  else
    fail "PUT /v2/$REPO/manifests/signature (with subject $V1_DIGEST): OCI-Subject header was '$(jq -r '.oci_subject_header // "(absent)"' <<<"$digests_json")', spec requires the subject digest"
  fi

  if http 200 GET "$BERTH_URL/v2/$REPO/referrers/$V1_DIGEST"; then
    cp "$HTTP_BODY" "$E2E_OUT/referrers.json"
    ct="$(header Content-Type)"
    [ "$ct" = "application/vnd.oci.image.index.v1+json" ] \
      && pass "referrers Content-Type is $ct" \
      || fail "GET /v2/$REPO/referrers/$V1_DIGEST: Content-Type '$ct', want application/vnd.oci.image.index.v1+json"
    if jq -e --arg s "$SBOM_D" --arg g "$SIG_D" --arg st "$SBOM_TYPE" --arg gt "$SIG_TYPE" '
        .schemaVersion == 2 and .mediaType == "application/vnd.oci.image.index.v1+json"
        and (.manifests | length == 2)
        and any(.manifests[]; .digest == $s and .artifactType == $st and .mediaType == "application/vnd.oci.image.manifest.v1+json" and .annotations["org.example.kind"] == "sbom")
        and any(.manifests[]; .digest == $g and .artifactType == $gt and .annotations["org.example.kind"] == "signature")' \
        "$HTTP_BODY" >/dev/null; then
      pass "referrers lists both artifacts with artifactType and annotations"
    else
      fail "GET /v2/$REPO/referrers/$V1_DIGEST: want an index with exactly sbom $SBOM_D (artifactType $SBOM_TYPE) and signature $SIG_D (artifactType $SIG_TYPE) with annotations; got $(jq -c . "$HTTP_BODY" 2>/dev/null || head -c 800 "$HTTP_BODY")"
    fi
  else
    fail "GET /v2/$REPO/referrers/$V1_DIGEST"
  fi

  if http 200 GET "$BERTH_URL/v2/$REPO/referrers/$V1_DIGEST?artifactType=$SIG_TYPE"; then
    if jq -e --arg g "$SIG_D" '(.manifests | length == 1) and .manifests[0].digest == $g' "$HTTP_BODY" >/dev/null; then
      pass "referrers?artifactType=$SIG_TYPE returns only the signature"
    else
      fail "GET /v2/$REPO/referrers/$V1_DIGEST?artifactType=$SIG_TYPE: want only $SIG_D; got $(jq -c . "$HTTP_BODY" 2>/dev/null || head -c 800 "$HTTP_BODY")"
    fi
    fa="$(header OCI-Filters-Applied)"
    [ "$fa" = "artifactType" ] && pass "filtered referrers response has OCI-Filters-Applied: artifactType" \
      || fail "GET /v2/$REPO/referrers/$V1_DIGEST?artifactType=$SIG_TYPE: OCI-Filters-Applied header '$fa', want 'artifactType'"
  else
    fail "GET /v2/$REPO/referrers/$V1_DIGEST?artifactType=$SIG_TYPE"
  fi

  if http 200 GET "$BERTH_URL/v2/$REPO/referrers/$V1_DIGEST?artifactType=application/vnd.berth.e2e.none"; then
    jq -e '.manifests == []' "$HTTP_BODY" >/dev/null \
      && pass "referrers filtered on an unused artifactType is an empty index" \
      || fail "GET referrers?artifactType=application/vnd.berth.e2e.none: want manifests [], got $(head -c 800 "$HTTP_BODY")"
  else fail "GET /v2/$REPO/referrers/$V1_DIGEST?artifactType=application/vnd.berth.e2e.none"; fi
else
  fail "oras push of artifacts with subject (log: $E2E_OUT/oras.log)"
  tail -n 20 "$E2E_OUT/oras.log" | sed 's/^/    /' >&2
  show_server_log_tail 10
fi

# ===================================================================== 5. multi-arch index
step "multi-arch: skopeo copy --all index -> $REG/$REPO:multi and back"
if run_logged skopeo-push-multi skopeo_debug copy --all --preserve-digests --dest-tls-verify=false "${DEST_CREDS[@]}" \
     "oci:$SRC:multi" "docker://$REG/$REPO:multi"; then
  pass "skopeo copy --all oci:layout:multi -> docker://$REG/$REPO:multi"
  http_login "repository:$REPO:pull"
  if http 200 GET "$BERTH_URL/v2/$REPO/manifests/multi" -H "Accept: application/vnd.oci.image.index.v1+json"; then
    got="sha256:$(sha256sum "$HTTP_BODY" | cut -d' ' -f1)"
    if [ "$got" = "$MULTI_DIGEST" ] && [ "$(header Content-Type)" = "application/vnd.oci.image.index.v1+json" ]; then
      pass "GET manifests/multi: index digest and Content-Type match"
    else
      fail "GET /v2/$REPO/manifests/multi: body digest $got (want $MULTI_DIGEST), Content-Type '$(header Content-Type)' (want application/vnd.oci.image.index.v1+json)"
    fi
  else fail "GET /v2/$REPO/manifests/multi"; fi
  for arch in amd64 arm64; do
    child="$(blob_path "$SRC" "$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture==$a) | .digest' "$(blob_path "$SRC" "$MULTI_DIGEST")")")"
    want="$arch $(jq -c '[.layers[].digest]' "$child")"
    if "${SKOPEO[@]}" --override-arch "$arch" --override-os linux inspect --tls-verify=false "${CREDS[@]}" \
         "docker://$REG/$REPO:multi" >"$W/inspect-$arch.json" 2>"$E2E_OUT/skopeo-inspect-$arch.log"; then
      got="$(jq -r '.Architecture' "$W/inspect-$arch.json") $(jq -c '.Layers' "$W/inspect-$arch.json")"
      [ "$got" = "$want" ] && pass "skopeo resolves platform linux/$arch through the index to its own manifest" \
        || fail "skopeo inspect --override-arch $arch $REG/$REPO:multi: got '$got', want '$want'"
    else fail "skopeo inspect --override-arch $arch docker://$REG/$REPO:multi: $(tail -n 3 "$E2E_OUT/skopeo-inspect-$arch.log")"; fi
  done
  BACK2="$W_LC/back-multi"
  if run_logged skopeo-pull-multi skopeo_debug copy --all --preserve-digests --src-tls-verify=false "${SRC_CREDS[@]}" \
       "docker://$REG/$REPO:multi" "oci:$BACK2:multi"; then
    pass "skopeo copy --all docker://$REG/$REPO:multi -> new oci layout"
    b="$(layout_digest "$BACK2" multi)"
    [ "$b" = "$MULTI_DIGEST" ] && pass "pulled index digest $b identical" \
      || fail "pulled index digest $b != pushed $MULTI_DIGEST"
    check "pulled index: both platform manifests, configs and layers identical" \
      same_digest_sets "$SRC" "$MULTI_DIGEST" "$BACK2" "$b"
    check "pulled multi-arch blobs hash to their digests" verify_layout_blobs "$BACK2" "$b"
  else
    fail "skopeo copy --all docker://$REG/$REPO:multi -> oci layout (log: $E2E_OUT/skopeo-pull-multi.log)"
  fi
else
  fail "skopeo copy --all oci:layout:multi -> docker://$REG/$REPO:multi (log: $E2E_OUT/skopeo-push-multi.log)"
fi

# ===================================================================== 6. bad names
# Every client starts a push with a HEAD, whose reply has no body; berth answers HEAD on an
# invalid name with 404, so the upload that follows gets the 400 NAME_INVALID body and the
# client prints why. The reason must appear in what the client prints (its stderr).
step "bad names: the client prints berth's NAME_INVALID reason"
DEEP="group/project/a/b/c"
DEEP_REASON="levels below project group/project"
if run_refused skopeo-push-deep "${SKOPEO[@]}" copy --dest-tls-verify=false "${DEST_CREDS[@]}" \
     "oci:$SRC:v1" "docker://$REG/$DEEP:v1"; then
  if grep -q "$DEEP_REASON" "$RUN_LOG"; then pass "skopeo push to $DEEP is refused and prints: $REFUSED_MSG"
  else fail "skopeo push to $DEEP: the output lacks '$DEEP_REASON': $REFUSED_MSG (log: $RUN_LOG)"; fi
else fail "skopeo push to $DEEP was accepted"; fi
if [ "$podman_ok" = 1 ]; then
  run_logged podman-load-deep "${PODMAN[@]}" pull --signature-policy "$W/policy.json" "oci:$SRC:v1" \
    && run_logged podman-tag-deep "${PODMAN[@]}" tag "${V1_CONFIG#sha256:}" localhost/berth-e2e:deep \
    || fail "podman: load the image again for the bad-name push"
  if run_refused podman-push-deep "${PODMAN[@]}" push --signature-policy "$W/policy.json" --tls-verify=false \
       localhost/berth-e2e:deep "$REG/$DEEP:v1"; then
    if grep -q "$DEEP_REASON" "$RUN_LOG"; then pass "podman push to $DEEP is refused and prints: $REFUSED_MSG"
    else fail "podman push to $DEEP: the output lacks '$DEEP_REASON': $REFUSED_MSG (log: $RUN_LOG)"; fi
  else fail "podman push to $DEEP was accepted"; fi
else fail "podman push to $DEEP: podman was not usable above"; fi
# `app-` is refused by skopeo's and podman's own reference grammar before any request; the
# oras SDK sends it (its push starts with the upload POST, no HEAD) and must show berth's reason.
BAD="group/project/app-"
BAD_REASON='must end with a letter or digit'
cat >"$W/oras_bad.py" <<'PY'
import sys, oras.client
reg, repo, user, password, path, authfile = sys.argv[1:7]
c = oras.client.OrasClient(hostname=reg, insecure=True)
if user:
    c.login(username=user, password=password, hostname=reg, config_path=authfile)
r = c.push(target=f"{reg}/{repo}:v1", files=[path], disable_path_validation=True)
print("push answered", r.status_code, r.text)
PY
printf 'hello\n' >"$W/oras-bad.txt"
if run_refused oras-push-bad python3 "$W/oras_bad.py" "$REG" "$BAD" "$BERTH_USER" "$BERTH_PASS" "$W/oras-bad.txt" "$W/oras/docker-config-bad.json"; then
  if grep -q "$BAD_REASON" "$RUN_LOG"; then pass "oras push to $BAD is refused and prints: $REFUSED_MSG"
  else fail "oras push to $BAD: the output lacks '$BAD_REASON': $REFUSED_MSG (log: $RUN_LOG)"; fi
else fail "oras push to $BAD was accepted"; fi

check_replicas_shared
check_storage_used "$W/registry"
finish
