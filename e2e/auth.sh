#!/usr/bin/env bash
# berth's token authentication with real clients (Docker token flow: 401 Bearer challenge ->
# GET <realm>?service=&scope= with Basic credentials or none -> JWT -> Authorization: Bearer).
#   1. a private project secure/app (user e2e-owner is Owner, a read_registry deploy token,
#      a user outsider who is no member): skopeo (skopeo login), podman (podman login) and
#      oras (login()) push and pull secure/app/img; digests compared
#   2. anonymous pull is refused: skopeo inspect/copy without credentials fail; curl through
#      the token flow gets a token granting nothing, then 401 on the manifest; same for the
#      non-member
#   3. the read_registry deploy token pulls (skopeo) but cannot push (skopeo copy fails; its
#      token grants only pull)
#   4. wrong password / unknown user: the token endpoint answers 401 (curl); podman login fails
#   5. _catalog: with the owner's token lists secure/app/img, with an anonymous token does not
#   6. live manifest reload, no restart: visibility public -> anonymous skopeo pull works
#      (polled up to 10 s, time printed); anonymous push still refused; then
#      registryAccessLevel disabled -> even the Owner is refused
#   7. first-run admin token: fresh data dir, no manifest dir -> berth logs a berth_... token
#      once; admin pushes to a repository outside any project; after a restart the token is
#      not shown again and still works; the data dir holds only its hash
# Client logs and every curl request go to e2e/out/auth/.
set -euo pipefail
E2E_NAME=auth
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$E2E_REGISTRY" != berth ] || [ "$BERTH_AUTH_ON" != 1 ]; then
  log "SKIP: auth.sh tests berth's token authentication (E2E_REGISTRY=$E2E_REGISTRY, BERTH_AUTH=$BERTH_AUTH)"
  finish; exit 0
fi
for c in skopeo podman jq python3 curl sha256sum; do
  command -v "$c" >/dev/null || die "$c not installed (run e2e/setup.sh)"
done
python3 -c 'import oras.client' 2>/dev/null || die "python module oras missing (run e2e/setup.sh)"

RELOAD_WAIT_S="${AUTH_RELOAD_WAIT_S:-10}"
e2e_tmpdir W
# Anonymous unless a command names an auth file or credentials: the default auth file is empty.
client_sandbox "$W" anonymous-auth.json
PODMAN=(podman --root "$W/podman/root" --runroot "$W/podman/run" --storage-driver vfs
        --cgroup-manager cgroupfs --events-backend file --tmpdir "$W/podman/tmp")
mkdir -p "$W/podman/root" "$W/podman/run" "$W/podman/tmp"

# jwt_access TOKEN: the JWT's "access" claim, compact JSON
jwt_access() {
  python3 -c 'import base64, json, sys
p = sys.argv[1].split(".")[1]; p += "=" * (-len(p) % 4)
print(json.dumps(json.loads(base64.urlsafe_b64decode(p)).get("access"), separators=(",", ":")))' "$1"
}
# actions_of TOKEN NAME: the actions the token grants on repository NAME, comma-separated
actions_of() {
  jwt_access "$1" | jq -r --arg n "$2" '[.[]? | select(.type == "repository" and .name == $n) | .actions[]] | join(",")'
}

# ===================================================================== image
step "build a small OCI image layout"
SRC="$W/src"
python3 "$E2E_DIR/oci_image.py" "$SRC"
V1_DIGEST="$(jq -r '.manifests[0].digest' "$SRC/index.json")"
V1_CONFIG="$(jq -r .config.digest "$SRC/blobs/sha256/${V1_DIGEST#sha256:}")"
log "image: manifest $V1_DIGEST, config $V1_CONFIG"

# ===================================================================== manifests
PROJECT="secure/app"
REPO="$PROJECT/img"
DEPLOY_USER="e2e-deployer"
DEPLOY_PASS="deploy-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
OUTSIDER_USER="outsider"
OUTSIDER_PASS="outsider-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
MDIR="$W/manifests"
mkdir -p "$MDIR"
# write_project VISIBILITY LEVEL: (re)write the Project's YAML, atomically (rename)
write_project() {
  cat >"$MDIR/project.yaml.tmp" <<YAML
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: app, namespace: secure}
spec:
  visibility: $1
  registryAccessLevel: $2
  members:
    - {user: $BERTH_USER, role: Owner}
  deployTokens:
    - {name: $DEPLOY_USER, scopes: [read_registry]}
YAML
  mv "$MDIR/project.yaml.tmp" "$MDIR/project.yaml"
}
write_project private enabled
{ pat_secret_yaml "$BERTH_USER" "$BERTH_PASS"; cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: $OUTSIDER_USER-pat
  labels: {berth.dev/user: $OUTSIDER_USER}
stringData: {token: $OUTSIDER_PASS}
---
apiVersion: v1
kind: Secret
metadata:
  name: $DEPLOY_USER
  annotations: {berth.dev/project: $PROJECT, berth.dev/token: $DEPLOY_USER}
stringData: {token: $DEPLOY_PASS}
YAML
} >"$MDIR/tokens.yaml"

step "start berth with token authentication (manifests: $MDIR)"
BERTH_MANIFESTS="$MDIR" start_berth "$W/registry"
REG="$BERTH_ADDR"

# the challenge a client sees first
if http 401 GET "$BERTH_URL/v2/$REPO/manifests/v1"; then
  ch="$(header WWW-Authenticate)"
  want="Bearer realm=\"$BERTH_REALM\",service=\"$BERTH_SERVICE\",scope=\"repository:$REPO:pull\""
  [ "$ch" = "$want" ] && pass "anonymous GET manifest: 401 with challenge $ch" \
    || fail "GET /v2/$REPO/manifests/v1 (no credentials): WWW-Authenticate '$ch', want '$want'"
else
  fail "GET /v2/$REPO/manifests/v1 without credentials must answer 401"
fi

# ===================================================================== 1. clients log in
step "1. skopeo, podman, oras log in and push/pull $REG/$REPO"
SK_AUTH="$W/skopeo-auth.json"
if printf '%s' "$BERTH_PASS" | run_logged skopeo-login "${SKOPEO[@]}" login --tls-verify=false \
     --authfile "$SK_AUTH" -u "$BERTH_USER" --password-stdin "$REG"; then
  pass "skopeo login $REG as $BERTH_USER"
else
  fail "skopeo login --tls-verify=false -u $BERTH_USER $REG (log: $E2E_OUT/skopeo-login.log)"
fi
if run_logged skopeo-push "${SKOPEO[@]}" --debug copy --preserve-digests --dest-tls-verify=false \
     --dest-authfile "$SK_AUTH" "oci:$SRC:v1" "docker://$REG/$REPO:v1"; then
  pass "skopeo push (logged in) oci:layout:v1 -> docker://$REG/$REPO:v1"
else
  fail "skopeo push oci:layout:v1 -> docker://$REG/$REPO:v1 with --dest-authfile (log: $E2E_OUT/skopeo-push.log)"
fi
if run_logged skopeo-pull "${SKOPEO[@]}" --debug copy --preserve-digests --src-tls-verify=false \
     --src-authfile "$SK_AUTH" "docker://$REG/$REPO:v1" "oci:$W/back:v1"; then
  got="$(jq -r '.manifests[0].digest' "$W/back/index.json")"
  [ "$got" = "$V1_DIGEST" ] && pass "skopeo pull (logged in): manifest digest $got identical" \
    || fail "skopeo pull docker://$REG/$REPO:v1: manifest digest $got, pushed $V1_DIGEST"
else
  fail "skopeo pull docker://$REG/$REPO:v1 with --src-authfile (log: $E2E_OUT/skopeo-pull.log)"
fi

PD_AUTH="$W/podman-auth.json"
podman_ok=1
if printf '%s' "$BERTH_PASS" | run_logged podman-login "${PODMAN[@]}" login --tls-verify=false \
     --authfile "$PD_AUTH" -u "$BERTH_USER" --password-stdin "$REG"; then
  pass "podman login $REG as $BERTH_USER"
else
  podman_ok=0; fail "podman login --tls-verify=false -u $BERTH_USER $REG (log: $E2E_OUT/podman-login.log)"
fi
if [ "$podman_ok" = 1 ] && run_logged podman-load "${PODMAN[@]}" pull --signature-policy "$W/policy.json" "oci:$SRC:v1" \
   && run_logged podman-tag "${PODMAN[@]}" tag "${V1_CONFIG#sha256:}" "$REG/$REPO:podman"; then
  if run_logged podman-push "${PODMAN[@]}" --log-level=debug push --signature-policy "$W/policy.json" \
       --tls-verify=false --authfile "$PD_AUTH" --digestfile "$W/podman.digest" "$REG/$REPO:podman"; then
    pass "podman push (logged in) -> $REG/$REPO:podman ($(cat "$W/podman.digest"))"
    run_logged podman-rmi "${PODMAN[@]}" rmi -a -f || fail "podman rmi -a"
    if run_logged podman-pull "${PODMAN[@]}" --log-level=debug pull --signature-policy "$W/policy.json" \
         --tls-verify=false --authfile "$PD_AUTH" "$REG/$REPO:podman"; then
      id="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$REG/$REPO:podman")"
      [ "sha256:$id" = "$V1_CONFIG" ] && pass "podman pull (logged in) $REG/$REPO:podman: image ID = source config" \
        || fail "podman pull $REG/$REPO:podman: image ID sha256:$id, want $V1_CONFIG"
    else
      fail "podman pull $REG/$REPO:podman with --authfile (log: $E2E_OUT/podman-pull.log)"
    fi
  else
    fail "podman push -> $REG/$REPO:podman with --authfile (log: $E2E_OUT/podman-push.log)"
  fi
elif [ "$podman_ok" = 1 ]; then
  fail "podman: loading oci:layout:v1 into the local store failed (see above)"
fi

mkdir -p "$W/oras/out"
printf 'berth auth e2e artifact %s\n' "$RANDOM$RANDOM" >"$W/oras/artifact.txt"
# oras-py: login() keeps Basic credentials, its token backend answers each 401 challenge by
# asking the realm for a token. Its token cache ignores scopes (oras-py issue #67: a pull-only
# token is reused for the push); drop it on error="insufficient_scope" as the token spec says.
if (cd "$W/oras" && ORAS_USER="$BERTH_USER" ORAS_PASS="$BERTH_PASS" python3 - "$REG" "$REPO" \
      >"$E2E_OUT/oras.log" 2>&1) <<'PY'
import filecmp, os, sys
import oras.client
reg, repo = sys.argv[1:3]
def client():
    c = oras.client.OrasClient(hostname=reg, insecure=True)
    print("login:", c.login(username=os.environ["ORAS_USER"], password=os.environ["ORAS_PASS"],
                            hostname=reg, config_path=os.path.abspath("docker-config.json")))
    orig = c.auth.authenticate_request
    def authenticate_request(original, headers, refresh=False):
        insufficient = "insufficient_scope" in original.headers.get("Www-Authenticate", "")
        return orig(original, headers, refresh=refresh or insufficient)
    c.auth.authenticate_request = authenticate_request
    return c
r = client().push(target=f"{reg}/{repo}:oras", files=["artifact.txt"])
print("push:", r.status_code, r.headers.get("Docker-Content-Digest"))
r.raise_for_status()
files = client().pull(target=f"{reg}/{repo}:oras", outdir="out")
print("pull:", files)
assert [os.path.basename(f) for f in files] == ["artifact.txt"], files
assert filecmp.cmp("artifact.txt", "out/artifact.txt", shallow=False), "pulled content differs"
PY
then
  pass "oras login + push $REG/$REPO:oras, pull back identical content (token flow done by oras-py)"
else
  fail "oras login/push/pull $REG/$REPO:oras (log: $E2E_OUT/oras.log)"
  tail -n 15 "$E2E_OUT/oras.log" | sed 's/^/    /' >&2
fi

# ===================================================================== 2. anonymous
step "2. anonymous and non-member pulls are refused"
if run_refused skopeo-anon-inspect "${SKOPEO[@]}" inspect --tls-verify=false --raw "docker://$REG/$REPO:v1"; then
  pass "anonymous skopeo inspect docker://$REG/$REPO:v1 refused ($REFUSED_MSG)"
else
  fail "anonymous skopeo inspect docker://$REG/$REPO:v1 succeeded on a private project"
fi
if run_refused skopeo-anon-copy "${SKOPEO[@]}" copy --src-tls-verify=false "docker://$REG/$REPO:v1" "oci:$W/anon:v1"; then
  pass "anonymous skopeo copy docker://$REG/$REPO:v1 -> oci: refused ($REFUSED_MSG)"
else
  fail "anonymous skopeo copy docker://$REG/$REPO:v1 succeeded on a private project"
fi
# token flow by hand: anonymous token, then the manifest
refused_with_token() { # LABEL TOKEN: the token grants nothing on REPO and GET manifest -> 401
  local label="$1" tok="$2" acts
  acts="$(actions_of "$tok" "$REPO")"
  [ -z "$acts" ] && pass "$label: token endpoint gives a token granting nothing on $REPO (access $(jwt_access "$tok"))" \
    || fail "$label: token for repository:$REPO:pull grants '$acts' (access $(jwt_access "$tok")), want nothing"
  HTTP_AUTH=(-H "Authorization: Bearer $tok"); HTTP_AUTH_NOTE="$label token"
  if http 401 GET "$BERTH_URL/v2/$REPO/manifests/v1" -H "Accept: application/vnd.oci.image.manifest.v1+json"; then
    pass "$label: GET manifest with that token -> 401 ($(header WWW-Authenticate))"
  else
    fail "$label: GET /v2/$REPO/manifests/v1 with a token granting nothing must be 401"
  fi
  http_logout
}
if tok="$(registry_token -a "repository:$REPO:pull")"; then
  refused_with_token "anonymous" "$tok"
else fail "anonymous token request for repository:$REPO:pull must answer 200 with a token"; fi
if tok="$(registry_token -u "$OUTSIDER_USER:$OUTSIDER_PASS" "repository:$REPO:pull")"; then
  refused_with_token "non-member $OUTSIDER_USER" "$tok"
else fail "token request as $OUTSIDER_USER for repository:$REPO:pull must answer 200 with a token"; fi

# ===================================================================== 3. deploy token
step "3. read_registry deploy token: pull yes, push no"
if run_logged skopeo-deploy-pull "${SKOPEO[@]}" copy --src-tls-verify=false \
     --src-creds "$DEPLOY_USER:$DEPLOY_PASS" "docker://$REG/$REPO:v1" "oci:$W/deploy:v1"; then
  got="$(jq -r '.manifests[0].digest' "$W/deploy/index.json")"
  [ "$got" = "$V1_DIGEST" ] && pass "deploy token ($DEPLOY_USER, read_registry) pulls $REPO:v1 with skopeo" \
    || fail "deploy token pull: manifest $got, want $V1_DIGEST"
else
  fail "skopeo copy --src-creds $DEPLOY_USER:... docker://$REG/$REPO:v1 (read_registry deploy token must pull)"
fi
if run_refused skopeo-deploy-push "${SKOPEO[@]}" copy --dest-tls-verify=false \
     --dest-creds "$DEPLOY_USER:$DEPLOY_PASS" "oci:$SRC:v1" "docker://$REG/$REPO:deploy-push"; then
  pass "deploy token cannot push: skopeo copy --dest-creds $DEPLOY_USER refused ($REFUSED_MSG)"
else
  fail "skopeo push with the read_registry deploy token succeeded (docker://$REG/$REPO:deploy-push)"
fi
if tok="$(registry_token -u "$DEPLOY_USER:$DEPLOY_PASS" "repository:$REPO:pull,push")"; then
  acts="$(actions_of "$tok" "$REPO")"
  [ "$acts" = pull ] && pass "deploy token asking for pull,push is granted only pull" \
    || fail "GET $BERTH_REALM?scope=repository:$REPO:pull,push as $DEPLOY_USER: granted '$acts', want 'pull'"
else fail "token request as $DEPLOY_USER"; fi

# ===================================================================== 4. wrong password
step "4. wrong credentials"
for cred in "$BERTH_USER:wrong-$RANDOM" "nobody-$RANDOM:$BERTH_PASS"; do
  u="${cred%%:*}"
  if http 401 GET "$BERTH_REALM?service=$BERTH_SERVICE&scope=repository:$REPO:pull" -u "$cred"; then
    pass "token endpoint with a wrong password for '$u' -> 401 (WWW-Authenticate: $(header WWW-Authenticate))"
  else
    fail "GET $BERTH_REALM?service=$BERTH_SERVICE&scope=repository:$REPO:pull with Basic $u:<wrong> must be 401"
  fi
done
if run_refused podman-login-wrong "${PODMAN[@]}" login --tls-verify=false \
     --authfile "$W/podman-wrong-auth.json" -u "$BERTH_USER" --password-stdin "$REG" < <(printf 'wrong-%s' "$RANDOM"); then
  pass "podman login with a wrong password fails ($REFUSED_MSG)"
else
  fail "podman login -u $BERTH_USER with a wrong password succeeded"
fi

# ===================================================================== 5. catalog
step "5. _catalog lists only what the caller may pull"
if http 401 GET "$BERTH_URL/v2/_catalog"; then
  pass "GET /v2/_catalog without a token -> 401 ($(header WWW-Authenticate))"
else fail "GET /v2/_catalog without a token must be 401"; fi
if http_login "registry:catalog:*"; then
  if http 200 GET "$BERTH_URL/v2/_catalog"; then
    jq -e --arg r "$REPO" '.repositories | index($r)' "$HTTP_BODY" >/dev/null \
      && pass "_catalog with $BERTH_USER's token lists $REPO ($(jq -c .repositories "$HTTP_BODY"))" \
      || fail "GET /v2/_catalog as $BERTH_USER: $(head -c 500 "$HTTP_BODY") does not list $REPO"
  else fail "GET /v2/_catalog with $BERTH_USER's registry:catalog:* token"; fi
fi
if tok="$(registry_token -a "registry:catalog:*")"; then
  HTTP_AUTH=(-H "Authorization: Bearer $tok"); HTTP_AUTH_NOTE="anonymous registry:catalog:* token"
  if http 200 GET "$BERTH_URL/v2/_catalog"; then
    if jq -e --arg r "$REPO" '.repositories | index($r) | not' "$HTTP_BODY" >/dev/null; then
      pass "_catalog with an anonymous token does not list $REPO ($(jq -c .repositories "$HTTP_BODY"))"
    else
      fail "GET /v2/_catalog with an anonymous token lists the private $REPO: $(head -c 500 "$HTTP_BODY")"
    fi
  else fail "GET /v2/_catalog with an anonymous registry:catalog:* token"; fi
fi
http_logout

# ===================================================================== 6. live reload
# poll_until SECONDS CMD...: run CMD every 0.2 s until it succeeds; sets POLL_S (elapsed)
poll_until() {
  local limit="$1"; shift
  local t0 now; t0=$(date +%s.%N)
  while :; do
    if "$@" >/dev/null 2>&1; then POLL_S="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')"; return 0; fi
    now=$(date +%s.%N)
    if awk -v a="$t0" -v b="$now" -v l="$limit" 'BEGIN{exit !(b-a > l)}'; then
      POLL_S="$(awk -v a="$t0" -v b="$now" 'BEGIN{printf "%.1f", b-a}')"; return 1
    fi
    sleep 0.2
  done
}
anon_inspect() { "${SKOPEO[@]}" inspect --tls-verify=false --raw "docker://$REG/$REPO:v1"; }
owner_refused() { ! "${SKOPEO[@]}" inspect --tls-verify=false --raw --authfile "$SK_AUTH" "docker://$REG/$REPO:v1"; }

step "6. edit the Project: visibility public (no restart, pid $BERTH_PID)"
pid_before="$BERTH_PID"
write_project public enabled
if poll_until "$RELOAD_WAIT_S" anon_inspect; then
  pass "visibility: public took effect after ${POLL_S}s: anonymous skopeo inspect works (server pid $BERTH_PID, not restarted)"
  if run_logged skopeo-anon-pull-public "${SKOPEO[@]}" copy --src-tls-verify=false \
       "docker://$REG/$REPO:v1" "oci:$W/public:v1"; then
    got="$(jq -r '.manifests[0].digest' "$W/public/index.json")"
    [ "$got" = "$V1_DIGEST" ] && pass "anonymous skopeo pull of the public project: digest $got identical" \
      || fail "anonymous pull of public $REPO:v1: manifest $got, want $V1_DIGEST"
  else fail "anonymous skopeo copy docker://$REG/$REPO:v1 after visibility: public"; fi
  if run_refused skopeo-anon-push-public "${SKOPEO[@]}" copy --dest-tls-verify=false \
       "oci:$SRC:v1" "docker://$REG/$REPO:anonymous"; then
    pass "anonymous push to the public project still refused ($REFUSED_MSG)"
  else fail "anonymous skopeo push to public $REPO:anonymous succeeded"; fi
else
  fail "after writing visibility: public to $MDIR/project.yaml, anonymous skopeo inspect docker://$REG/$REPO:v1 still refused after ${POLL_S}s"
  show_server_log_tail 10
fi

step "6b. edit the Project: registryAccessLevel disabled"
write_project public disabled
if poll_until "$RELOAD_WAIT_S" owner_refused; then
  pass "registryAccessLevel: disabled took effect after ${POLL_S}s: the Owner's skopeo inspect is refused"
  if run_refused skopeo-owner-disabled "${SKOPEO[@]}" copy --src-tls-verify=false --src-authfile "$SK_AUTH" \
       "docker://$REG/$REPO:v1" "oci:$W/disabled:v1"; then
    pass "registry disabled: Owner's skopeo pull refused ($REFUSED_MSG)"
  else fail "registry disabled: Owner's skopeo copy docker://$REG/$REPO:v1 succeeded"; fi
  if run_refused skopeo-anon-disabled anon_inspect; then
    pass "registry disabled: anonymous skopeo inspect refused"
  else fail "registry disabled: anonymous skopeo inspect of the (public) project succeeded"; fi
  if tok="$(registry_token "repository:$REPO:pull,push")"; then
    acts="$(actions_of "$tok" "$REPO")"
    [ -z "$acts" ] && pass "registry disabled: the Owner's token grants nothing on $REPO" \
      || fail "registry disabled: token for $BERTH_USER (Owner) grants '$acts' on $REPO, want nothing"
  else fail "token request as $BERTH_USER (registry disabled: 200 with an empty grant expected)"; fi
else
  fail "after writing registryAccessLevel: disabled, the Owner could still inspect docker://$REG/$REPO:v1 after ${POLL_S}s"
  show_server_log_tail 10
fi
[ "$BERTH_PID" = "$pid_before" ] && kill -0 "$BERTH_PID" 2>/dev/null \
  && pass "the server was not restarted during the manifest edits (pid $BERTH_PID)" \
  || fail "the server pid changed or died during the manifest edits ($pid_before -> $BERTH_PID)"
stop_berth

# ===================================================================== 7. admin token
step "7. first-run admin token (fresh data dir, no manifest directory)"
ADMIN_DIR="$W/admin-registry"
ADMIN_REPO="outside/admin/img"
BERTH_MANIFESTS=none BERTH_LOG_NAME=server-admin-first.log start_berth "$ADMIN_DIR"
mapfile -t found < <(grep -oE 'berth_[0-9A-Za-z_-]{16,}' "$BERTH_LOG" | sort -u)
ADMIN_TOKEN=""
if [ "${#found[@]}" -eq 1 ]; then
  ADMIN_TOKEN="${found[0]}"
  pass "first start logged one admin token (berth_…, ${#ADMIN_TOKEN} chars) in $(basename "$BERTH_LOG")"
else
  fail "first start on an empty data dir with no manifest dir: want exactly one berth_... token in $BERTH_LOG, found ${#found[@]}"
  tail -n 20 "$BERTH_LOG" | sed 's/^/    /' >&2
fi
if [ -n "$ADMIN_TOKEN" ]; then
  if run_logged skopeo-admin-push "${SKOPEO[@]}" --debug copy --preserve-digests --dest-tls-verify=false \
       --dest-creds "admin:$ADMIN_TOKEN" "oci:$SRC:v1" "docker://$BERTH_ADDR/$ADMIN_REPO:v1"; then
    pass "admin pushes to $ADMIN_REPO (outside any project) with --dest-creds admin:<token>"
  else fail "skopeo copy --dest-creds admin:<token> oci:layout:v1 -> docker://$BERTH_ADDR/$ADMIN_REPO:v1"; fi
  if run_refused skopeo-admin-wrong "${SKOPEO[@]}" inspect --tls-verify=false --raw \
       --creds "admin:berth_wrong$RANDOM" "docker://$BERTH_ADDR/$ADMIN_REPO:v1"; then
    pass "a wrong admin token is refused ($REFUSED_MSG)"
  else fail "skopeo inspect with a wrong admin token succeeded"; fi
fi
stop_berth

step "7b. restart on the same data dir"
BERTH_MANIFESTS=none BERTH_LOG_NAME=server-admin-restart.log start_berth "$ADMIN_DIR"
if grep -qE 'berth_[0-9A-Za-z_-]{16,}' "$BERTH_LOG"; then
  fail "the restart logged a token again: $(grep -oE 'berth_[0-9A-Za-z_-]{16,}' "$BERTH_LOG" | head -1 | cut -c1-12)… in $BERTH_LOG"
else
  pass "restart on the same data dir does not show an admin token"
fi
if [ -n "$ADMIN_TOKEN" ]; then
  if "${SKOPEO[@]}" inspect --tls-verify=false --raw --creds "admin:$ADMIN_TOKEN" \
       "docker://$BERTH_ADDR/$ADMIN_REPO:v1" >"$W/admin.raw" 2>"$E2E_OUT/skopeo-admin-after-restart.log"; then
    got="sha256:$(sha256sum <"$W/admin.raw" | cut -d' ' -f1)"
    [ "$got" = "$V1_DIGEST" ] && pass "after the restart the admin token still works (skopeo inspect $ADMIN_REPO:v1, digest identical)" \
      || fail "after restart: skopeo inspect $ADMIN_REPO:v1 digest $got, want $V1_DIGEST"
  else
    fail "after restart: skopeo inspect --creds admin:<token> docker://$BERTH_ADDR/$ADMIN_REPO:v1: $(tail -n 2 "$E2E_OUT/skopeo-admin-after-restart.log")"
  fi
  if grep -rqaF "$ADMIN_TOKEN" "$ADMIN_DIR/data"; then
    fail "the admin token's value is stored in the data dir: $(grep -rlaF "$ADMIN_TOKEN" "$ADMIN_DIR/data" | head -3 | tr '\n' ' ')"
  else
    pass "the admin token's value is nowhere in the data dir (grep -r over $(find "$ADMIN_DIR/data" -type f | wc -l) files)"
  fi
  hf="$ADMIN_DIR/data/auth/admin-token.sha256"
  want="$(printf '%s' "$ADMIN_TOKEN" | sha256sum | cut -d' ' -f1)"
  if [ -f "$hf" ] && [ "$(tr -d ' \n' <"$hf")" = "$want" ]; then
    pass "data dir keeps only its SHA-256 (auth/admin-token.sha256)"
  else
    fail "$hf: want the token's SHA-256 $want, got '$(head -c 100 "$hf" 2>/dev/null)'"
  fi
fi

finish
