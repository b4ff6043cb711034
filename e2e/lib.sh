# shellcheck shell=bash
# Shared helpers for the berth e2e scripts. Source it; do not execute it.
#
# Environment:
#   BERTH_BIN      berth binary (default: <repo>/target/release/berth)
#   E2E_REGISTRY   "berth" (default) or "reference": start the CNCF reference registry
#                  (docker-registry) instead, to validate the scripts themselves.
#   E2E_KEEP=1     keep temp dirs (data dirs, layouts) for inspection.
#   E2E_TMPDIR     parent of the temp dirs (default: $TMPDIR or /tmp).
#   BERTH_AUTH     "on" (default): berth runs with token authentication; start_berth declares
#                  the projects in BERTH_PROJECTS (private, user BERTH_USER is Owner, with a
#                  personal access token BERTH_PASS) in a manifest directory.
#                  "off": berth runs with --no-auth. Always off for E2E_REGISTRY=reference.
#   BERTH_PROJECTS project paths start_berth declares (set by each script; default "e2e").
#   BERTH_MANIFESTS unset: start_berth writes DIR/manifests itself; a directory: use it as it is
#                  (the caller wrote it, e.g. with write_manifests); "none": no --manifest-dir.
#   BERTH_LOG_NAME server log file name in $E2E_OUT (default server.log).
#   E2E_REPLICAS   N > 1: start_berth starts N `berth serve` replicas on one data directory and
#                  one PostgreSQL database (a server of its own, start_postgres) behind haproxy,
#                  which sends each request to the next replica in turn (no affinity), as a
#                  Service with several pods would; BERTH_ADDR is the proxy. Default 1.
#   E2E_STORAGE    "filesystem" (default) or "s3": berth keeps its blobs in a bucket of an
#                  S3-compatible server of its own (start_s3: s3s-fs, or versitygw with
#                  E2E_S3_SERVER=versitygw), configured by a config file
#                  (storage.kind s3) with the credentials in AWS_ACCESS_KEY_ID/SECRET; more
#                  top-level keys for that file in BERTH_EXTRA_CONFIG (YAML), one more key of
#                  storage.s3 in BERTH_S3_EXTRA (e.g. "redirect: true").
#   BERTH_TLS_CERT / BERTH_TLS_KEY  PEM files: berth serves HTTPS (--tls-cert/--tls-key) and
#                  BERTH_URL is https://; curl trusts the CA in CURL_CA_BUNDLE (the caller sets it).
#   BERTH_METRICS_ADDR  host:port: berth serves Prometheus /metrics there (--metrics-listen).
#
# Provides: start_berth DIR / stop_berth (export BERTH_PID BERTH_ADDR BERTH_URL BERTH_LOG, and
# with auth BERTH_AUTH_ON=1 BERTH_USER BERTH_PASS BERTH_REALM BERTH_SERVICE BERTH_MANIFEST_DIR),
# write_manifests, registry_token / http_login (Docker token flow with curl), e2e_tmpdir,
# pass/fail/die/finish, step, http (logged curl), abs_url, with_query, run_logged / run_refused
# (client commands with their output in $E2E_OUT/NAME.log).

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$E2E_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$E2E_DIR/versions.env"

BERTH_BIN="${BERTH_BIN:-$REPO_ROOT/target/release/berth}"
E2E_REGISTRY="${E2E_REGISTRY:-berth}"
E2E_NAME="${E2E_NAME:-$(basename "${0%.sh}")}"
E2E_OUT="$E2E_DIR/out/$E2E_NAME"
E2E_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/berth-e2e/$CONFORMANCE_VERSION"
CONFORMANCE_BIN="$E2E_CACHE/bin/conformance"
mkdir -p "$E2E_OUT"
: >"$E2E_OUT/http.log"

E2E_PASSED=0
E2E_FAILED=0
E2E_FAILURES=()
E2E_TMPDIRS=()
BERTH_PID=""
BERTH_ADDR=""
BERTH_URL=""
BERTH_LOG=""
BERTH_AUTH="${BERTH_AUTH:-on}"
[ "$E2E_REGISTRY" = reference ] && BERTH_AUTH=off
case "$BERTH_AUTH" in on|off) ;; *) echo "BERTH_AUTH must be on or off, not '$BERTH_AUTH'" >&2; exit 2 ;; esac
BERTH_AUTH_ON=0; [ "$BERTH_AUTH" = on ] && BERTH_AUTH_ON=1
BERTH_PROJECTS="${BERTH_PROJECTS:-e2e}"
# the e2e user: Owner of every project start_berth declares, logs in with a personal access token
BERTH_USER=""; BERTH_PASS=""
if [ "$BERTH_AUTH_ON" = 1 ]; then
  BERTH_USER="e2e-owner"
  BERTH_PASS="e2e-pat-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
fi
BERTH_REALM=""; BERTH_SERVICE=""; BERTH_MANIFEST_DIR=""
export BERTH_AUTH BERTH_AUTH_ON BERTH_USER BERTH_PASS

# ---------------------------------------------------------------- output
log()  { printf '[%s %s] %s\n' "$E2E_NAME" "$(date +%H:%M:%S)" "$*"; }
step() { printf '\n[%s %s] ==== %s\n' "$E2E_NAME" "$(date +%H:%M:%S)" "$*"; }
pass() { E2E_PASSED=$((E2E_PASSED + 1)); printf '[%s] PASS: %s\n' "$E2E_NAME" "$*"; }
# fail records a failure and continues; die records one and exits (cleanup runs from the trap).
fail() {
  E2E_FAILED=$((E2E_FAILED + 1)); E2E_FAILURES+=("$*")
  printf '[%s] FAIL: %s\n' "$E2E_NAME" "$*"
}
die() { fail "$*"; exit 1; }
# check DESCRIPTION CMD...: pass if CMD succeeds, else fail (and continue)
check() { local d="$1"; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }

# finish: print this script's summary and exit non-zero on any failure.
finish() {
  printf '\n[%s] ---- summary: %d checks passed, %d failed\n' "$E2E_NAME" "$E2E_PASSED" "$E2E_FAILED"
  local f
  for f in "${E2E_FAILURES[@]}"; do printf '[%s]   failed: %s\n' "$E2E_NAME" "$f"; done
  [ "$E2E_FAILED" -eq 0 ]
}

# ---------------------------------------------------------------- temp dirs & cleanup
e2e_tmpdir() { # e2e_tmpdir VAR: create a temp dir, removed on exit unless E2E_KEEP=1
  # all-lowercase name: podman derives image names from oci: layout paths
  local d i
  for i in 1 2 3 4 5; do
    d="${E2E_TMPDIR:-${TMPDIR:-/tmp}}/berth-e2e-$E2E_NAME.$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')"
    mkdir -m 700 "$d" 2>/dev/null && break
  done
  [ -d "$d" ] || { echo "cannot create a temp dir under ${E2E_TMPDIR:-${TMPDIR:-/tmp}}" >&2; return 1; }
  E2E_TMPDIRS+=("$d")
  printf -v "$1" '%s' "$d"
}

e2e_cleanup() {
  local rc=$?
  set +e
  stop_berth
  stop_s3
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    [ "${#E2E_TMPDIRS[@]}" -gt 0 ] && log "E2E_KEEP=1: kept ${E2E_TMPDIRS[*]}"
  else
    local d
    for d in "${E2E_TMPDIRS[@]}"; do
      # podman's vfs storage may leave read-only dirs behind
      chmod -R u+w "$d" 2>/dev/null; rm -rf "$d"
    done
  fi
  if [ "$rc" -ne 0 ] && [ "$E2E_FAILED" -eq 0 ]; then
    printf '[%s] FAIL: aborted with exit code %d (see output above)\n' "$E2E_NAME" "$rc"
  fi
  return "$rc"
}
trap e2e_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- authentication
# write_manifests DIR [PROJECT_PATH...]: a manifest directory declaring each project (private,
# registry enabled, BERTH_USER is Owner) and BERTH_USER's personal access token (BERTH_PASS,
# read_registry + write_registry). Default projects: $BERTH_PROJECTS. Callers may add files.
write_manifests() {
  local dir="$1"; shift
  local projects=("$@") p f
  [ "${#projects[@]}" -gt 0 ] || read -r -a projects <<<"$BERTH_PROJECTS"
  mkdir -p "$dir"
  f="$dir/e2e-projects.yaml"
  {
    echo "# written by e2e/lib.sh write_manifests"
    for p in "${projects[@]}"; do
      cat <<YAML
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: ${p//\//-}}
spec:
  path: $p
  visibility: private
  registryAccessLevel: enabled
  members:
    - {user: $BERTH_USER, role: Owner}
YAML
    done
    echo "---"
    pat_secret_yaml "$BERTH_USER" "$BERTH_PASS"
  } >"$f"
}

# registry_token [-u USER:PASS | -a] SCOPE...: print a token from the registry's token endpoint
# ($BERTH_REALM, from the /v2/ challenge) for the scopes (e.g. repository:a/b:pull,push), with
# Basic credentials USER:PASS (default BERTH_USER:BERTH_PASS) or anonymously (-a). On anything
# but 200 + a token, prints the exact request and response to stderr and returns 1.
registry_token() {
  local creds="$BERTH_USER:$BERTH_PASS" anon=0
  case "${1:-}" in
    -u) creds="$2"; shift 2 ;;
    -a) anon=1; shift ;;
  esac
  [ -n "$BERTH_REALM" ] || { echo "registry_token: no token realm (auth off?)" >&2; return 1; }
  local url="$BERTH_REALM?service=$BERTH_SERVICE" s
  for s in "$@"; do url="$url&scope=$(jq -rn --arg s "$s" '$s|@uri')"; done
  local cargs=(); [ "$anon" = 1 ] || cargs=(-u "$creds")
  local body="$E2E_SCRATCH/token.body" hdrs="$E2E_SCRATCH/token.hdrs" code
  code="$(curl -sS -D "$hdrs" -o "$body" -w '%{http_code}' "${cargs[@]}" "$url" || echo "curl-error-$?")"
  printf '>>> GET %s (%s)\n<<< %s\n' "$url" "$([ "$anon" = 1 ] && echo anonymous || echo "basic ${creds%%:*}")" "$code" >>"$E2E_OUT/http.log"
  local tok=""
  [ "$code" = 200 ] && tok="$(jq -r '.token // .access_token // empty' "$body" 2>/dev/null || true)"
  if [ -z "$tok" ]; then
    {
      printf '  token request: GET %s (%s)\n  expected: HTTP 200 with a token\n  got     : HTTP %s\n' \
        "$url" "$([ "$anon" = 1 ] && echo anonymous || echo "basic auth as ${creds%%:*}")" "$code"
      tr -d '\r' <"$hdrs" | sed 's/^/    /'; head -c 1000 "$body" | sed 's/^/    /'; echo
    } >&2
    return 1
  fi
  printf '%s' "$tok"
}

# http_login SCOPE...: make every following `http` call send a bearer token for the scopes
# (fetched now with BERTH_USER's credentials). No-op when authentication is off. Tokens live
# 300 s: call it again before long sequences. http_logout: stop sending one.
HTTP_AUTH=(); HTTP_AUTH_NOTE=""
http_login() {
  HTTP_AUTH=(); HTTP_AUTH_NOTE=""
  [ "$BERTH_AUTH_ON" = 1 ] || return 0
  local tok
  tok="$(registry_token "$@")" || { fail "token request for scope $* as $BERTH_USER"; return 1; }
  HTTP_AUTH=(-H "Authorization: Bearer $tok"); HTTP_AUTH_NOTE="bearer token for $*"
}
http_logout() { HTTP_AUTH=(); HTTP_AUTH_NOTE=""; }

# client_sandbox DIR [AUTH_FILE]: skopeo and podman configured under DIR, never ~/.config or /run:
# an accept-anything signature policy (DIR/policy.json), no unqualified-search registries
# (DIR/registries.conf, exported as CONTAINERS_REGISTRIES_CONF), an empty auth file exported as
# REGISTRY_AUTH_FILE (DIR/AUTH_FILE, default auth.json; podman 4.3 refuses one that does not
# exist, and an empty one means anonymous unless a command names credentials); sets SKOPEO.
client_sandbox() {
  local dir="$1"
  printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$dir/policy.json"
  printf 'unqualified-search-registries = []\n' >"$dir/registries.conf"
  export CONTAINERS_REGISTRIES_CONF="$dir/registries.conf"
  export REGISTRY_AUTH_FILE="$dir/${2:-auth.json}"
  printf '{"auths":{}}\n' >"$REGISTRY_AUTH_FILE"
  SKOPEO=(skopeo --policy "$dir/policy.json" --registries-conf "$dir/registries.conf")
}

# ---------------------------------------------------------------- registry process
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_berth DIR: start the registry with its data under DIR/data, logs in $E2E_OUT/server.log
# (or $BERTH_LOG_NAME). With BERTH_AUTH=on (default) berth reads a manifest directory (see
# BERTH_MANIFESTS; by default DIR/manifests written by write_manifests) and the /v2/ challenge
# must name a Bearer realm (exported as BERTH_REALM, BERTH_SERVICE).
# Exports BERTH_PID (the server process itself), BERTH_ADDR (127.0.0.1:PORT), BERTH_URL, BERTH_LOG.
start_berth() {
  local dir="$1" port attempt
  [ -n "$dir" ] || die "start_berth: DIR required"
  mkdir -p "$dir/data"
  BERTH_LOG="$E2E_OUT/${BERTH_LOG_NAME:-server.log}"
  : >"$BERTH_LOG"
  local auth_args=()
  BERTH_MANIFEST_DIR=""
  if [ "$E2E_REGISTRY" = berth ]; then
    if [ "$BERTH_AUTH_ON" = 1 ]; then
      case "${BERTH_MANIFESTS:-}" in
        none) ;;
        "") BERTH_MANIFEST_DIR="$dir/manifests"; write_manifests "$BERTH_MANIFEST_DIR"
            log "auth on: private project(s) $BERTH_PROJECTS, Owner $BERTH_USER (personal access token)" ;;
        *) BERTH_MANIFEST_DIR="$BERTH_MANIFESTS" ;;
      esac
      [ -n "$BERTH_MANIFEST_DIR" ] && auth_args=(--manifest-dir "$BERTH_MANIFEST_DIR")
    else
      auth_args=(--no-auth)
    fi
  fi
  export BERTH_MANIFEST_DIR
  local want_status=200; [ "$BERTH_AUTH_ON" = 1 ] && want_status=401
  if [ "${E2E_STORAGE:-filesystem}" = s3 ]; then
    [ "$E2E_REGISTRY" = berth ] || die "E2E_STORAGE=s3 needs E2E_REGISTRY=berth"
    [ -n "$S3_PID" ] || start_s3
    s3_config "$dir/berth-s3.yaml"
    auth_args+=(--config "$dir/berth-s3.yaml")
  fi
  local scheme=http
  if [ -n "${BERTH_TLS_CERT:-}" ]; then
    auth_args+=(--tls-cert "$BERTH_TLS_CERT" --tls-key "$BERTH_TLS_KEY"); scheme=https
  fi
  [ -n "${BERTH_METRICS_ADDR:-}" ] && auth_args+=(--metrics-listen "$BERTH_METRICS_ADDR")
  if [ "${E2E_REPLICAS:-1}" -gt 1 ]; then
    [ "$E2E_REGISTRY" = berth ] || die "E2E_REPLICAS needs E2E_REGISTRY=berth"
    start_replicas "$dir" "$E2E_REPLICAS" "$want_status" "${auth_args[@]}"
    return
  fi
  for attempt in 1 2 3; do
    port="$(free_port)"
    BERTH_ADDR="127.0.0.1:$port"
    BERTH_URL="$scheme://$BERTH_ADDR"
    case "$E2E_REGISTRY" in
      berth)
        [ -x "$BERTH_BIN" ] || die "berth binary not found or not executable: $BERTH_BIN (set BERTH_BIN, or E2E_REGISTRY=reference)"
        log "starting berth: $BERTH_BIN serve --listen $BERTH_ADDR --data-dir $dir/data ${auth_args[*]}"
        "$BERTH_BIN" serve --listen "$BERTH_ADDR" --data-dir "$dir/data" "${auth_args[@]}" >>"$BERTH_LOG" 2>&1 &
        ;;
      reference)
        command -v docker-registry >/dev/null || die "docker-registry not installed (run e2e/setup.sh)"
        cat >"$dir/registry.yml" <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $BERTH_ADDR
YAML
        log "starting reference registry: docker-registry serve $dir/registry.yml ($BERTH_ADDR)"
        # it reads REGISTRY_* variables as configuration: not the clients' REGISTRY_AUTH_FILE
        env -u REGISTRY_AUTH_FILE docker-registry serve "$dir/registry.yml" >>"$BERTH_LOG" 2>&1 &
        ;;
      *) die "E2E_REGISTRY must be berth or reference, not '$E2E_REGISTRY'" ;;
    esac
    BERTH_PID=$!
    export BERTH_PID BERTH_ADDR BERTH_URL BERTH_LOG
    local i code=""
    for i in $(seq 1 300); do # 30 s
      code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$BERTH_URL/v2/" 2>/dev/null || true)"
      if [ "$code" = 200 ] || [ "$code" = 401 ]; then
        log "registry up at $BERTH_URL (pid $BERTH_PID) after $((i / 10)).$((i % 10))s; log: $BERTH_LOG"
        break
      fi
      if ! kill -0 "$BERTH_PID" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if [ "$code" = 200 ] || [ "$code" = 401 ]; then
      if [ "$code" != "$want_status" ]; then
        curl -sS -i --max-time 2 "$BERTH_URL/v2/" 2>&1 | head -20 >&2 || true
        die "GET $BERTH_URL/v2/ answered $code, want $want_status (BERTH_AUTH=$BERTH_AUTH)"
      fi
      auth_discover
      return 0
    fi
    if kill -0 "$BERTH_PID" 2>/dev/null; then
      log "GET $BERTH_URL/v2/ did not return 200/401 within 30s:"
      curl -sS -i --max-time 2 "$BERTH_URL/v2/" 2>&1 | head -20 || true
      stop_berth
      tail -n 30 "$BERTH_LOG" >&2
      die "registry not ready within 30s"
    fi
    wait "$BERTH_PID" 2>/dev/null || true
    BERTH_PID=""
    if grep -qi 'address already in use' "$BERTH_LOG"; then
      log "port $port taken (race), retrying"; continue
    fi
    tail -n 30 "$BERTH_LOG" >&2
    die "registry exited during startup (log above: $BERTH_LOG)"
  done
  die "could not start the registry on a free port after 3 attempts"
}

# auth_discover: with auth on, read realm and service from the /v2/ Bearer challenge (as a
# client would) into BERTH_REALM / BERTH_SERVICE.
auth_discover() {
  BERTH_REALM=""; BERTH_SERVICE=""
  [ "$BERTH_AUTH_ON" = 1 ] || return 0
  local ch
  ch="$(curl -sS -o /dev/null -D - --max-time 5 "$BERTH_URL/v2/" | tr -d '\r' | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: *//p' | head -1)"
  BERTH_REALM="$(sed -n 's/.*realm="\([^"]*\)".*/\1/p' <<<"$ch")"
  BERTH_SERVICE="$(sed -n 's/.*service="\([^"]*\)".*/\1/p' <<<"$ch")"
  case "$ch" in
    Bearer\ *) ;;
    *) die "GET $BERTH_URL/v2/: 401 without a Bearer challenge (WWW-Authenticate: '$ch')" ;;
  esac
  [ -n "$BERTH_REALM" ] && [ -n "$BERTH_SERVICE" ] \
    || die "GET $BERTH_URL/v2/: challenge without realm/service: WWW-Authenticate: $ch"
  export BERTH_REALM BERTH_SERVICE
  if [ -n "$BERTH_MANIFEST_DIR" ]; then
    log "token auth: realm $BERTH_REALM, service $BERTH_SERVICE; manifests $BERTH_MANIFEST_DIR"
  else
    log "token auth: realm $BERTH_REALM, service $BERTH_SERVICE; no manifest directory"
  fi
}

stop_berth() {
  if [ -n "${REPLICA_PIDS[*]:-}" ]; then stop_replicas; return 0; fi
  [ -n "${BERTH_PID:-}" ] || return 0
  if kill -0 "$BERTH_PID" 2>/dev/null; then
    kill -TERM "$BERTH_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do kill -0 "$BERTH_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$BERTH_PID" 2>/dev/null; then
      log "registry pid $BERTH_PID ignored SIGTERM for 10s; sending SIGKILL"
      kill -KILL "$BERTH_PID" 2>/dev/null || true
    fi
  fi
  wait "$BERTH_PID" 2>/dev/null || true
  BERTH_PID=""
}

# ---------------------------------------------------------------- S3-compatible server
# start_s3: an S3-compatible server of our own on a free 127.0.0.1 port over a temp dir, run as
# nobody, with bucket $S3_BUCKET, log in $E2E_OUT/s3.log: s3s-fs (crates.io; BERTH_S3S_FS, else
# the tools cache e2e/test-all.sh installs it into), or with E2E_S3_SERVER=versitygw versitygw's
# posix backend (Go module proxy, built by setup.sh; it also answers ListMultipartUploads).
# Exports S3_ENDPOINT, S3_BUCKET, S3_ROOT, S3_PID and the credentials as AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY (berth reads them when its config has none). stop_s3 stops it; run_s3
# starts it again on the same port and directory (versitygw over TLS when S3_TLS_CERT,
# S3_TLS_KEY and S3_TLS_CA, the CA that signed the certificate, are set; S3_ENDPOINT https then).
S3_PID=""
start_s3() {
  local dir
  S3_SERVER="${E2E_S3_SERVER:-s3s-fs}"
  case "$S3_SERVER" in
    s3s-fs) S3_BIN="${BERTH_S3S_FS:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools/bin/s3s-fs}" ;;
    versitygw) S3_BIN="${BERTH_VERSITYGW:-${XDG_CACHE_HOME:-$HOME/.cache}/berth-e2e/versitygw-$VERSITYGW_VERSION/bin/versitygw}" ;;
    *) die "E2E_S3_SERVER must be s3s-fs or versitygw, not '$S3_SERVER'" ;;
  esac
  [ -x "$S3_BIN" ] || die "$S3_SERVER not found at $S3_BIN (e2e/test-all.sh and e2e/setup.sh install it)"
  dir="$(mktemp -d "${E2E_TMPDIR:-${TMPDIR:-/tmp}}/berth-e2e-s3.XXXXXX")"
  E2E_TMPDIRS+=("$dir")
  S3_ROOT="$dir/root"; S3_BUCKET="${S3_BUCKET:-berth}"; S3_PORT="$(free_port)"
  mkdir -p "$S3_ROOT"; chmod 755 "$dir"; chown -R nobody: "$S3_ROOT"
  # nobody may not reach into root's home (the tools caches): it runs a copy
  cp "$S3_BIN" "$dir/$S3_SERVER"; chmod 755 "$dir/$S3_SERVER"; S3_BIN="$dir/$S3_SERVER"
  AWS_ACCESS_KEY_ID=berth-e2e; AWS_SECRET_ACCESS_KEY="e2e-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY S3_ENDPOINT S3_BUCKET S3_ROOT
  run_s3
  python3 - <<'PY' || die "cannot create bucket $S3_BUCKET on $S3_ENDPOINT"
import os, boto3
boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1").create_bucket(
    Bucket=os.environ["S3_BUCKET"])
PY
  log "$S3_SERVER at $S3_ENDPOINT, bucket $S3_BUCKET (pid $S3_PID)"
}
run_s3() {
  local args
  case "$S3_SERVER" in
    s3s-fs) args=(--host 127.0.0.1 --port "$S3_PORT" --access-key "$AWS_ACCESS_KEY_ID"
                  --secret-key "$AWS_SECRET_ACCESS_KEY" "$S3_ROOT") ;;
    versitygw) args=(--access "$AWS_ACCESS_KEY_ID" --secret "$AWS_SECRET_ACCESS_KEY"
                     --port "127.0.0.1:$S3_PORT" ${S3_TLS_CERT:+--cert "$S3_TLS_CERT" --key "$S3_TLS_KEY"}
                     posix "$S3_ROOT") ;;
  esac
  setpriv --reuid=nobody --regid=nogroup --clear-groups "$S3_BIN" "${args[@]}" >>"$E2E_OUT/s3.log" 2>&1 &
  S3_PID=$!
  wait_serving "$S3_SERVER" "$S3_PID" "$E2E_OUT/s3.log" \
    curl -s -o /dev/null --max-time 1 ${S3_TLS_CA:+--cacert "$S3_TLS_CA"} "$S3_ENDPOINT/"
}
# wait_serving NAME PID LOG CHECK...: waits up to 30 s for CHECK to succeed; dies with the end of
# LOG if the server PID exits first, or when the time is up.
wait_serving() {
  local name="$1" pid="$2" log="$3" i; shift 3
  for i in $(seq 1 300); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log"; die "$name exited at start"; }
    sleep 0.1
  done
  die "$name not ready within 30 s"
}
stop_s3() {
  [ -n "$S3_PID" ] || return 0
  kill "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null || true; S3_PID=""
}
# s3_config FILE: a berth config file keeping blobs in the bucket (credentials from the env).
s3_config() {
  cat >"$1" <<YAML
storage:
  kind: s3
  s3:
    endpoint: $S3_ENDPOINT
    bucket: $S3_BUCKET
    region: us-east-1
    pathStyle: true
    requestTimeout: 10s
${BERTH_S3_EXTRA:+    $BERTH_S3_EXTRA}
${BERTH_EXTRA_CONFIG:-}
YAML
}

# ---------------------------------------------------------------- PostgreSQL and replicas
# start_postgres: a PostgreSQL server of our own (Debian's package) on a free 127.0.0.1 port, run
# as user postgres, its data in a temp dir, log in $E2E_OUT/postgres.log. Exports PG_URL (database
# berth, created empty) and PG_PID.
PG_PID=""
start_postgres() {
  local bin dir
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$bin/initdb" ] || die "PostgreSQL is not installed (run e2e/setup.sh)"
  dir="$(mktemp -d "${E2E_TMPDIR:-${TMPDIR:-/tmp}}/berth-e2e-pg.XXXXXX")"
  E2E_TMPDIRS+=("$dir")
  chmod 755 "$dir"; chown postgres: "$dir"
  setpriv --reuid=postgres --regid=postgres --init-groups "$bin/initdb" -D "$dir/data" --auth=trust \
    --username=postgres -E UTF8 --locale=C >"$E2E_OUT/postgres-initdb.log" 2>&1 \
    || { tail -20 "$E2E_OUT/postgres-initdb.log"; die "initdb failed"; }
  PG_BIN="$bin"; PG_DIR="$dir"; PG_PORT="$(free_port)"
  run_postgres
  "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres berth || die "createdb berth failed"
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/berth"
  export PG_URL PG_PORT
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $NF}') at 127.0.0.1:$PG_PORT (pid $PG_PID)"
}
# run_postgres: (re)starts the server start_postgres made, on its port and data directory.
run_postgres() {
  setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/postgres" -D "$PG_DIR/data" -k "$PG_DIR" \
    -p "$PG_PORT" -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
    -c synchronous_commit=off >>"$E2E_OUT/postgres.log" 2>&1 &
  PG_PID=$!
  wait_serving PostgreSQL "$PG_PID" "$E2E_OUT/postgres.log" \
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres
}
stop_postgres() {
  [ -n "$PG_PID" ] || return 0
  kill -INT "$PG_PID" 2>/dev/null; wait "$PG_PID" 2>/dev/null || true; PG_PID=""
}

# start_replicas DIR N WANT_STATUS ARGS...: see E2E_REPLICAS. The replicas (logs
# $E2E_OUT/server-I.log) start together on DIR/data and database $PG_URL, given as
# BERTH_DATABASE_URL as the operator's pods get it; haproxy (log $E2E_OUT/haproxy.log) balances
# round-robin with a new server connection per request (option http-server-close), checks each
# replica's /readyz, and retries a request whose connection a replica refused. Exports
# REPLICA_PIDS, REPLICA_ADDRS, BERTH_PID (the first replica), BERTH_ADDR/BERTH_URL (the proxy),
# BERTH_LOG (the first replica's log), HAPROXY_STATS (the stats CSV URL).
REPLICA_PIDS=(); REPLICA_ADDRS=(); HAPROXY_PID=""
start_replicas() {
  local dir="$1" n="$2" want="$3" i port code; shift 3
  command -v haproxy >/dev/null || die "haproxy is not installed (run e2e/setup.sh)"
  [ -n "$PG_PID" ] || start_postgres
  REPLICA_PIDS=(); REPLICA_ADDRS=()
  for i in $(seq 0 $((n - 1))); do
    port="$(free_port)"
    REPLICA_ADDRS+=("127.0.0.1:$port")
    : >"$E2E_OUT/server-$i.log"
    BERTH_DATABASE_URL="$PG_URL" "$BERTH_BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" "$@" \
      >>"$E2E_OUT/server-$i.log" 2>&1 &
    REPLICA_PIDS+=($!)
  done
  log "started $n replicas on $dir/data and $PG_URL: ${REPLICA_ADDRS[*]}"
  for i in "${!REPLICA_ADDRS[@]}"; do
    local up=""
    for _ in $(seq 1 300); do
      code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://${REPLICA_ADDRS[$i]}/readyz" 2>/dev/null || true)"
      [ "$code" = 200 ] && { up=1; break; }
      kill -0 "${REPLICA_PIDS[$i]}" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$up" ] || { tail -30 "$E2E_OUT/server-$i.log" >&2; die "replica $i (${REPLICA_ADDRS[$i]}) not ready within 30 s"; }
  done
  local front stats; front="$(free_port)"; stats="$(free_port)"
  {
    printf 'global\n  maxconn 4000\n'
    printf 'defaults\n  mode http\n  timeout connect 5s\n  timeout client 10m\n  timeout server 10m\n'
    printf '  timeout http-request 60s\n  option http-server-close\n  retries 3\n  option redispatch\n'
    printf '  retry-on conn-failure empty-response\n'
    printf 'frontend registry\n  bind 127.0.0.1:%s\n  default_backend replicas\n' "$front"
    printf 'backend replicas\n  balance roundrobin\n  option httpchk GET /readyz\n'
    for i in "${!REPLICA_ADDRS[@]}"; do
      printf '  server r%s %s check inter 1s fall 2 rise 1\n' "$i" "${REPLICA_ADDRS[$i]}"
    done
    printf 'listen stats\n  bind 127.0.0.1:%s\n  stats enable\n  stats uri /stats\n' "$stats"
  } >"$dir/haproxy.cfg"
  haproxy -db -f "$dir/haproxy.cfg" >"$E2E_OUT/haproxy.log" 2>&1 &
  HAPROXY_PID=$!
  BERTH_ADDR="127.0.0.1:$front"; BERTH_URL="http://$BERTH_ADDR"; BERTH_PID="${REPLICA_PIDS[0]}"
  BERTH_LOG="$E2E_OUT/server-0.log"; HAPROXY_STATS="http://127.0.0.1:$stats/stats;csv"
  export BERTH_ADDR BERTH_URL BERTH_PID BERTH_LOG HAPROXY_STATS
  for _ in $(seq 1 100); do
    code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$BERTH_URL/v2/" 2>/dev/null || true)"
    [ "$code" = 200 ] || [ "$code" = 401 ] && break
    sleep 0.1
  done
  [ "$code" = "$want" ] || { cat "$E2E_OUT/haproxy.log" >&2; die "GET $BERTH_URL/v2/ through haproxy answered $code, want $want"; }
  log "haproxy at $BERTH_URL (round-robin over ${#REPLICA_ADDRS[@]} replicas; stats $HAPROXY_STATS)"
  auth_discover
}

# replica_requests: the requests each replica served through the proxy ("r0=N r1=N ...").
replica_requests() {
  curl -fsS "$HAPROXY_STATS" | awk -F, '$1 == "replicas" && $2 ~ /^r[0-9]+$/ {printf "%s%s=%s", sep, $2, $8; sep=" "}'
}

# check_storage_used DIR: with E2E_STORAGE=s3, a check that the blobs went to the bucket and
# none to the data directory DIR/data (no-op otherwise).
check_storage_used() {
  [ "${E2E_STORAGE:-filesystem}" = s3 ] || return 0
  local in_bucket in_dir
  in_bucket="$( (find "$S3_ROOT/$S3_BUCKET/blobs" -type f 2>/dev/null || true) | wc -l)"
  in_dir="$( (find "$1/data/blobs" -type f 2>/dev/null || true) | wc -l)"
  if [ "$in_bucket" -gt 0 ] && [ "$in_dir" -eq 0 ]; then
    pass "the blobs are in the S3 bucket ($in_bucket objects under blobs/), none in the data directory"
  else fail "blobs in the bucket: $in_bucket, in the data directory: $in_dir"; fi
}

# check_replicas_shared: with E2E_REPLICAS, a check that every replica served at least half its
# fair share of the requests that went through the proxy (no-op otherwise).
check_replicas_shared() {
  [ "${E2E_REPLICAS:-1}" -gt 1 ] || return 0
  local counts; counts="$(replica_requests)"
  if awk -v n="${#REPLICA_ADDRS[@]}" '{for (i = 1; i <= NF; i++) {split($i, kv, "="); c[i] = kv[2]; t += kv[2]}}
       END {if (t == 0) exit 1; for (i in c) if (c[i] * n * 2 < t) exit 1}' <<<"$counts"; then
    pass "every replica served its share of the requests through the proxy ($counts)"
  else fail "requests through the proxy not spread over the replicas: $counts"; fi
}

stop_replicas() {
  local p
  [ -n "$HAPROXY_PID" ] && { kill "$HAPROXY_PID" 2>/dev/null; wait "$HAPROXY_PID" 2>/dev/null; HAPROXY_PID=""; }
  for p in "${REPLICA_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${REPLICA_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  REPLICA_PIDS=(); BERTH_PID=""
  stop_postgres
}

# peak_rss_mib PID: VmHWM of the process in MiB (integer, rounded up)
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------- HTTP helpers
# abs_url LOCATION: resolve a Location header against the registry base URL
abs_url() {
  case "$1" in
    http://*|https://*) printf '%s' "$1" ;;
    /*) printf '%s%s' "$BERTH_URL" "$1" ;;
    *) printf '%s/%s' "$BERTH_URL" "$1" ;;
  esac
}
# with_query URL KEY=VALUE: append a query parameter with ? or &
with_query() { case "$1" in *\?*) printf '%s&%s' "$1" "$2" ;; *) printf '%s?%s' "$1" "$2" ;; esac; }

# http EXPECTED_STATUS METHOD URL [curl args...]
# Sends the bearer token of the last http_login, if any.
# Runs one request, saving response headers to $HTTP_HDRS and body to $HTTP_BODY (unless the
# caller passes -o), sets HTTP_STATUS. Every request is appended to $E2E_OUT/http.log. If the
# status is not EXPECTED_STATUS (a regex, e.g. '20[01]'), prints the exact request and response
# and returns 1.
HTTP_HDRS=""; HTTP_BODY=""; HTTP_STATUS=""
http() {
  local want="$1" method="$2" url="$3"; shift 3
  HTTP_HDRS="$E2E_SCRATCH/http.hdrs"; HTTP_BODY="$E2E_SCRATCH/http.body"
  : >"$HTTP_HDRS"; : >"$HTTP_BODY"
  local has_o=0 a
  for a in "$@"; do [ "$a" = "-o" ] && has_o=1; done
  local out=(-o "$HTTP_BODY"); [ "$has_o" = 1 ] && out=()
  local mflag=(-X "$method"); [ "$method" = HEAD ] && mflag=(-I)
  HTTP_STATUS="$(curl -sS "${mflag[@]}" -D "$HTTP_HDRS" "${out[@]}" -w '%{http_code}' "${HTTP_AUTH[@]}" "$@" "$url" || echo "curl-error-$?")"
  local note=""; [ -n "$HTTP_AUTH_NOTE" ] && note=" [$HTTP_AUTH_NOTE]"
  local shown="$*"; [ -n "$BERTH_PASS" ] && shown="${shown//$BERTH_PASS/<password>}"
  {
    printf '>>> %s %s %s%s\n' "$method" "$url" "$shown" "$note"
    printf '<<< %s\n' "$HTTP_STATUS"; tr -d '\r' <"$HTTP_HDRS" | sed 's/^/    /'
  } >>"$E2E_OUT/http.log"
  if [[ "$HTTP_STATUS" =~ ^($want)$ ]]; then return 0; fi
  {
    printf '  request : %s %s' "$method" "$url"; [ "$#" -gt 0 ] && printf '  (curl %s)' "$shown"; printf '%s\n' "$note"
    printf '  expected: HTTP %s\n  got     : HTTP %s\n' "$want" "$HTTP_STATUS"
    printf '  response headers:\n'; tr -d '\r' <"$HTTP_HDRS" | sed 's/^/    /'
    if [ "$has_o" = 0 ] && [ -s "$HTTP_BODY" ]; then
      printf '  response body (first 2000 bytes):\n'; head -c 2000 "$HTTP_BODY" | sed 's/^/    /'; printf '\n'
    fi
  } >&2
  return 1
}
# header NAME: value of a response header from the last http call (case-insensitive)
header() { tr -d '\r' <"$HTTP_HDRS" | awk -v h="$(printf '%s' "$1" | tr 'A-Z' 'a-z')" \
  'BEGIN{FS=": *"} { k=tolower($1) } k==h { sub(/^[^:]*: */, ""); v=$0 } END{ print v }'; }

# show_server_log_tail [N]: print the last N lines of the registry log (for failure reports)
show_server_log_tail() {
  [ -n "$BERTH_LOG" ] && [ -f "$BERTH_LOG" ] || return 0
  printf '  --- last %s lines of %s ---\n' "${1:-20}" "$BERTH_LOG" >&2
  tail -n "${1:-20}" "$BERTH_LOG" | sed 's/^/    /' >&2
}

# pat_secret_yaml USER TOKEN: the manifest of a personal access token Secret (both scopes).
pat_secret_yaml() {
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $1-pat
  labels: {berth.dev/user: $1}
  annotations: {berth.dev/scopes: "read_registry,write_registry"}
stringData: {token: $2}
YAML
}

# _run_to_log LOGNAME CMD...: runs CMD with its output in $E2E_OUT/LOGNAME.log (the command
# line first, BERTH_PASS hidden); sets RUN_LOG, RUN_SHOWN and RUN_RC.
_run_to_log() {
  local name="$1"; shift
  RUN_LOG="$E2E_OUT/$name.log"; RUN_SHOWN="$*"
  [ -n "$BERTH_PASS" ] && RUN_SHOWN="${RUN_SHOWN//$BERTH_PASS/<password>}"
  printf '$ %s\n' "$RUN_SHOWN" >"$RUN_LOG"
  RUN_RC=0
  "$@" >>"$RUN_LOG" 2>&1 || RUN_RC=$?
}

# run_logged LOGNAME CMD...: run a client, output to $E2E_OUT/LOGNAME.log; on failure show its
# tail (the --debug trace has the HTTP requests) and the registry log tail. BERTH_PASS is
# replaced by <password> in what is shown.
run_logged() {
  _run_to_log "$@"
  local logf="$RUN_LOG" shown="$RUN_SHOWN" rc="$RUN_RC"
  [ "$rc" -eq 0 ] && return 0
  {
    printf '  command failed (exit %d): %s\n' "$rc" "$shown"
    printf '  --- last 25 lines of %s ---\n' "$logf"
    tail -n 25 "$logf" | sed 's/^/    /'
  } >&2
  show_server_log_tail 10
  return "$rc"
}

# run_refused LOGNAME CMD...: like run_logged for a command that must FAIL: returns 0 if it
# failed (its last line is kept in REFUSED_MSG), else shows its output and returns 1.
REFUSED_MSG=""
run_refused() {
  _run_to_log "$@"
  local logf="$RUN_LOG" shown="$RUN_SHOWN" rc="$RUN_RC"
  REFUSED_MSG="$(grep -v '^\$ ' "$logf" | grep -v '^time=.*level=debug' | tail -n 1 | cut -c1-300)"
  [ "$rc" -ne 0 ] && return 0
  {
    printf '  command succeeded but should have been refused: %s\n' "$shown"
    printf '  --- last 15 lines of %s ---\n' "$logf"
    tail -n 15 "$logf" | sed 's/^/    /'
  } >&2
  show_server_log_tail 10
  return 1
}

export PATH="$PATH:/usr/local/go/bin"
e2e_tmpdir E2E_SCRATCH # scratch space for http() and small files, removed on exit
