# shellcheck shell=bash
# Shared helpers for the berth e2e scripts. Source it; do not execute it.
#
# Environment:
#   BERTH_BIN      berth binary (default: <repo>/target/release/berth)
#   E2E_REGISTRY   "berth" (default) or "reference": start the CNCF reference registry
#                  (docker-registry) instead, to validate the scripts themselves.
#   E2E_KEEP=1     keep temp dirs (data dirs, layouts) for inspection.
#   E2E_TMPDIR     parent of the temp dirs (default: $TMPDIR or /tmp).
#
# Provides: start_berth DIR / stop_berth (export BERTH_PID BERTH_ADDR BERTH_URL BERTH_LOG),
# e2e_tmpdir, pass/fail/die/finish, step, http (logged curl), abs_url, with_query.

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

# ---------------------------------------------------------------- registry process
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_berth DIR: start the registry with its data under DIR/data, logs in $E2E_OUT/server.log.
# Exports BERTH_PID (the server process itself), BERTH_ADDR (127.0.0.1:PORT), BERTH_URL, BERTH_LOG.
start_berth() {
  local dir="$1" port attempt
  [ -n "$dir" ] || die "start_berth: DIR required"
  mkdir -p "$dir/data"
  BERTH_LOG="$E2E_OUT/server.log"
  : >"$BERTH_LOG"
  for attempt in 1 2 3; do
    port="$(free_port)"
    BERTH_ADDR="127.0.0.1:$port"
    BERTH_URL="http://$BERTH_ADDR"
    case "$E2E_REGISTRY" in
      berth)
        [ -x "$BERTH_BIN" ] || die "berth binary not found or not executable: $BERTH_BIN (set BERTH_BIN, or E2E_REGISTRY=reference)"
        log "starting berth: $BERTH_BIN serve --listen $BERTH_ADDR --data-dir $dir/data"
        "$BERTH_BIN" serve --listen "$BERTH_ADDR" --data-dir "$dir/data" >>"$BERTH_LOG" 2>&1 &
        ;;
      reference)
        command -v docker-registry >/dev/null || die "docker-registry not installed (run e2e/setup.sh)"
        cat >"$dir/registry.yml" <<EOF
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
EOF
        log "starting reference registry: docker-registry serve $dir/registry.yml ($BERTH_ADDR)"
        docker-registry serve "$dir/registry.yml" >>"$BERTH_LOG" 2>&1 &
        ;;
      *) die "E2E_REGISTRY must be berth or reference, not '$E2E_REGISTRY'" ;;
    esac
    BERTH_PID=$!
    export BERTH_PID BERTH_ADDR BERTH_URL BERTH_LOG
    local i
    for i in $(seq 1 300); do # 30 s
      if curl -fsS -o /dev/null --max-time 2 "$BERTH_URL/v2/" 2>/dev/null; then
        log "registry up at $BERTH_URL (pid $BERTH_PID) after $((i / 10)).$((i % 10))s; log: $BERTH_LOG"
        return 0
      fi
      if ! kill -0 "$BERTH_PID" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if kill -0 "$BERTH_PID" 2>/dev/null; then
      log "GET $BERTH_URL/v2/ did not return 200 within 30s:"
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

stop_berth() {
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
  HTTP_STATUS="$(curl -sS "${mflag[@]}" -D "$HTTP_HDRS" "${out[@]}" -w '%{http_code}' "$@" "$url" || echo "curl-error-$?")"
  {
    printf '>>> %s %s %s\n' "$method" "$url" "$*"
    printf '<<< %s\n' "$HTTP_STATUS"; tr -d '\r' <"$HTTP_HDRS" | sed 's/^/    /'
  } >>"$E2E_OUT/http.log"
  if [[ "$HTTP_STATUS" =~ ^($want)$ ]]; then return 0; fi
  {
    printf '  request : %s %s' "$method" "$url"; [ "$#" -gt 0 ] && printf '  (curl %s)' "$*"; printf '\n'
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

export PATH="$PATH:/usr/local/go/bin"
e2e_tmpdir E2E_SCRATCH # scratch space for http() and small files, removed on exit
