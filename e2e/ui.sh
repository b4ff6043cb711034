#!/usr/bin/env bash
# berth's web UI (/ui/) in a real browser: headless Chromium driven by playwright-core
# (e2e/ui/ui.test.mjs, installed by setup.sh with `npm ci`; no browser download, it uses the
# Debian chromium package).
#   1. a manifest directory: project demo/public (public) and demo/private (private); alice is
#      Developer in both (may delete), bob Reporter in demo/private (may see, may not delete),
#      e2e-owner Owner of both; personal access tokens for all three
#   2. seeding (timed): e2e/ui/seed.py writes an OCI layout; skopeo pushes demo/public/web v1 v2
#      v3 (64/128/256 KiB) and multi (index, linux/amd64 + linux/arm64), demo/private/api:v1,
#      demo/public/scratch:v1 (deleted through the UI), demo/public/many:t00000; seed.py pushes
#      through the registry API an artifact tagged v1-sig (subject v1), rc-01..rc-25 (= v1) and
#      t00001..t09999 in demo/public/many (UI_MANY_TAGS, default 10000, keep-alive, 4 threads);
#      last, after a pause, skopeo pushes `latest` (so it is the most recently published tag)
#   3. node e2e/ui/ui.test.mjs (playwright-core; axe-core for WCAG 2.1 A/AA audits): anonymous browsing, sign-in (cookie flags), tag search / sort /
#      kind filter / pagination (state in the URL), tag details checked against the registry
#      API, copy buttons (clipboard), deletes with confirmation, CSRF refusals, a Reporter's
#      missing delete rights, sign-out, accessibility and a 375 px viewport, 10k-tag timings.
#      Its PASS:/FAIL: lines are this script's checks; full-page screenshots go to
#      ${UI_ARTIFACTS:-<repo>/artifacts/ui} (the absolute path is printed).
# Skipped (passes with 0 checks) for E2E_REGISTRY=reference or BERTH_AUTH=off.
# Knobs: UI_ARTIFACTS, UI_MANY_TAGS, CHROMIUM (/usr/bin/chromium), UI_TEST_TIMEOUT_S (900),
# UI_ACTION_TIMEOUT_MS (10000), UI_NAV_TIMEOUT_MS (15000), UI_HEADED=1 (needs a display).
set -euo pipefail
E2E_NAME=ui
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$E2E_REGISTRY" != berth ] || [ "$BERTH_AUTH_ON" != 1 ]; then
  log "SKIP: ui.sh tests berth's web UI with its sign-in (E2E_REGISTRY=$E2E_REGISTRY, BERTH_AUTH=$BERTH_AUTH)"
  finish; exit 0
fi
for c in skopeo jq python3 curl node timeout; do
  command -v "$c" >/dev/null || die "$c not installed (run e2e/setup.sh)"
done
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM (run e2e/setup.sh: Debian package chromium; or set CHROMIUM)"
[ -f "$E2E_DIR/ui/node_modules/playwright-core/package.json" ] \
  || die "playwright-core missing in $E2E_DIR/ui/node_modules (run e2e/setup.sh: npm ci --prefix e2e/ui)"
export CHROMIUM

UI_ARTIFACTS="${UI_ARTIFACTS:-$REPO_ROOT/artifacts/ui}"
mkdir -p "$UI_ARTIFACTS"
UI_ARTIFACTS="$(cd "$UI_ARTIFACTS" && pwd)"
# only this script's own files (NN-name.png, fail-NN-name.png) from an earlier run
find "$UI_ARTIFACTS" -maxdepth 1 -type f \( -name '[0-9][0-9]-*.png' -o -name 'fail-*.png' \) -delete
MANY_TAGS="${UI_MANY_TAGS:-10000}"

# fractional seconds since T0 (date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

e2e_tmpdir W
client_sandbox "$W" anonymous-auth.json

# ===================================================================== manifests
ALICE_USER=alice; ALICE_PASS="alice-pat-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
BOB_USER=bob;     BOB_PASS="bob-pat-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
MDIR="$W/manifests"
mkdir -p "$MDIR"
cat >"$MDIR/projects.yaml" <<YAML
# written by e2e/ui.sh
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: demo-public}
spec:
  path: demo/public
  visibility: public
  registryAccessLevel: enabled
  members:
    - {user: $BERTH_USER, role: Owner}
    - {user: $ALICE_USER, role: Developer}
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: demo-private}
spec:
  path: demo/private
  visibility: private
  registryAccessLevel: enabled
  members:
    - {user: $BERTH_USER, role: Owner}
    - {user: $ALICE_USER, role: Developer}
    - {user: $BOB_USER, role: Reporter}
YAML
{
  pat_secret_yaml "$BERTH_USER" "$BERTH_PASS"; echo "---"
  pat_secret_yaml "$ALICE_USER" "$ALICE_PASS"; echo "---"
  pat_secret_yaml "$BOB_USER" "$BOB_PASS"
} >"$MDIR/tokens.yaml"

step "start berth (manifests: $MDIR; demo/public public, demo/private private; alice Developer, bob Reporter)"
BERTH_MANIFESTS="$MDIR" start_berth "$W/registry"
REG="$BERTH_ADDR"

# ===================================================================== seeding
step "seed: images, an index, an artifact, rc tags, $MANY_TAGS tags in demo/public/many"
SEED_T0="$(date +%s.%N)"
LAYOUT="$W/layout"
python3 "$E2E_DIR/ui/seed.py" layout "$LAYOUT" >"$E2E_OUT/layout.json" \
  || die "e2e/ui/seed.py layout $LAYOUT failed"
log "OCI layout $LAYOUT: $(jq -c '.images | map_values(.digest[7:19])' "$LAYOUT/layout.json")"
CREDS="$BERTH_USER:$BERTH_PASS"
# push REF DEST [skopeo copy args]: oci:LAYOUT:REF -> docker://REG/DEST as the Owner
push() {
  local ref="$1" dest="$2"; shift 2
  run_logged "push-${dest//[\/:]/_}" "${SKOPEO[@]}" copy --preserve-digests --dest-tls-verify=false \
    --dest-creds "$CREDS" "$@" "oci:$LAYOUT:$ref" "docker://$REG/$dest" \
    || die "skopeo copy oci:layout:$ref -> docker://$REG/$dest (log: $E2E_OUT/push-${dest//[\/:]/_}.log)"
}
t="$(date +%s.%N)"
push v1 demo/public/web:v1
push v2 demo/public/web:v2
push v3 demo/public/web:v3
push multi demo/public/web:multi --all
push v1 demo/private/api:v1
push v1 demo/public/scratch:v1
push many demo/public/many:t00000
log "skopeo pushes (web v1 v2 v3 multi, private/api:v1, scratch:v1, many:t00000): $(since "$t")s"
export BERTH_URL BERTH_REALM BERTH_SERVICE SEED_USER="$BERTH_USER" SEED_PASS="$BERTH_PASS"
t="$(date +%s.%N)"
python3 "$E2E_DIR/ui/seed.py" web "$LAYOUT" demo/public/web || die "seed.py web (artifact v1-sig, rc tags) failed"
log "artifact + 25 rc tags: $(since "$t")s"
t="$(date +%s.%N)"
if [ "$MANY_TAGS" -gt 1 ]; then
  python3 "$E2E_DIR/ui/seed.py" many "$LAYOUT" demo/public/many "$MANY_TAGS" \
    || die "seed.py many ($MANY_TAGS tags in demo/public/many) failed"
else
  printf '{"count": 1, "digest": "%s"}\n' "$(jq -r .images.many.digest "$LAYOUT/layout.json")" >"$LAYOUT/many.json"
fi
MANY_S="$(since "$t")"
log "demo/public/many: $MANY_TAGS tags in ${MANY_S}s"
sleep 1.1 # `latest` is the most recently published tag, by more than the clock's resolution
push latest demo/public/web:latest
SEED_S="$(since "$SEED_T0")"
log "seeding took ${SEED_S}s in all ($MANY_TAGS tags in demo/public/many: ${MANY_S}s)"

# what the registry API holds now
jq -s '{images: .[0].images, artifact: .[1].artifact, rc_tags: .[1].rc_tags, many: .[2],
        web_tags: (["v1","v2","v3","multi","latest","v1-sig"] + .[1].rc_tags)}' \
  "$LAYOUT/layout.json" "$LAYOUT/web.json" "$LAYOUT/many.json" >"$W/seed.json"
cp "$W/seed.json" "$E2E_OUT/seed.json"
http_login "repository:demo/public/web:pull"
if http 200 GET "$BERTH_URL/v2/demo/public/web/tags/list?n=1000"; then
  want="$(jq -c '.web_tags | sort' "$W/seed.json")"; got="$(jq -c '.tags | sort' "$HTTP_BODY")"
  [ "$got" = "$want" ] && pass "seeded demo/public/web: $(jq '.tags | length' "$HTTP_BODY") tags ($(jq -r '.tags | join(" ")' "$HTTP_BODY" | cut -c1-80)...)" \
    || fail "GET /v2/demo/public/web/tags/list: $got, want $want"
else fail "GET /v2/demo/public/web/tags/list after seeding"; fi
a_digest="$(jq -r .artifact.digest "$W/seed.json")"; v1_digest="$(jq -r .images.v1.digest "$W/seed.json")"
if http 200 GET "$BERTH_URL/v2/demo/public/web/referrers/$v1_digest"; then
  jq -e --arg d "$a_digest" '.manifests | map(.digest) | index($d)' "$HTTP_BODY" >/dev/null \
    && pass "referrers of v1 list the artifact v1-sig ($a_digest, $(jq -r '.manifests[0].artifactType' "$HTTP_BODY"))" \
    || fail "GET /v2/demo/public/web/referrers/$v1_digest: $(head -c 500 "$HTTP_BODY") lacks $a_digest"
else fail "GET /v2/demo/public/web/referrers/$v1_digest"; fi
http_logout

# ===================================================================== browser
step "browser tests: node e2e/ui/ui.test.mjs (Chromium $("$CHROMIUM" --version 2>/dev/null | awk '{print $2}'))"
log "screenshots: $UI_ARTIFACTS"
NODE_LOG="$E2E_OUT/ui-test.log"
rc=0
BERTH_URL="$BERTH_URL" BERTH_REALM="$BERTH_REALM" BERTH_SERVICE="$BERTH_SERVICE" \
UI_ALICE_USER="$ALICE_USER" UI_ALICE_TOKEN="$ALICE_PASS" UI_BOB_USER="$BOB_USER" UI_BOB_TOKEN="$BOB_PASS" \
UI_SEED_JSON="$W/seed.json" \
SCREENSHOT_DIR="$UI_ARTIFACTS" CHROMIUM="$CHROMIUM" \
  timeout -k 10 "${UI_TEST_TIMEOUT_S:-900}" node "$E2E_DIR/ui/ui.test.mjs" 2>&1 | tee "$NODE_LOG" || rc=$?

# the test's PASS:/FAIL: lines become this script's checks (already printed above)
n_pass=0; n_fail=0
while IFS= read -r line; do
  case "$line" in
    "PASS: "*) pass "${line#PASS: }" >/dev/null; n_pass=$((n_pass + 1)) ;;
    "FAIL: "*) fail "${line#FAIL: }" >/dev/null; n_fail=$((n_fail + 1)) ;;
  esac
done <"$NODE_LOG"
log "ui.test.mjs: $n_pass passed, $n_fail failed, exit code $rc (output: $NODE_LOG)"
if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then
  [ "$rc" -eq 124 ] && fail "ui.test.mjs timed out after ${UI_TEST_TIMEOUT_S:-900}s (output: $NODE_LOG)" \
    || fail "ui.test.mjs exited with code $rc without a FAIL line (output: $NODE_LOG)"
fi
[ "$rc" -eq 0 ] && [ "$n_pass" -eq 0 ] && fail "ui.test.mjs ran no checks (output: $NODE_LOG)"
log "screenshots: $UI_ARTIFACTS ($(find "$UI_ARTIFACTS" -maxdepth 1 -name '*.png' | wc -l) PNG files)"
log "seeding took ${SEED_S}s ($MANY_TAGS tags in demo/public/many: ${MANY_S}s)"
finish
