#!/usr/bin/env bash
# bench/scale.sh — berth's metadata backends side by side (issue 14): the CNCF
# reference registry (distribution 2.8, Debian package `docker-registry`), berth
# on SQLite, berth on PostgreSQL (1 replica) and berth on PostgreSQL (3 replicas
# on one data directory and one database, behind haproxy).
#
# All four run at the same time (each idle while another is measured) and get
# the same work in the same order: manifest GET by tag, tags/list (NTAGS tags),
# blob HEAD, manifest PUT (each request a distinct manifest under a distinct
# tag; every answer must be 201), all at concurrency CONNS; then the GC sweep
# rate: GC_BLOBS blobs uploaded and never referenced, swept by 1 sweeper, and on
# the 3 replicas by 3 sweepers at once, checked afterwards (the sweeps' counts,
# the GC totals, the blob files on disk, a HEAD of every garbage blob, the live
# image). The reference has no online collector: its column is its offline
# `registry garbage-collect` on the same kind of garbage.
#
# PostgreSQL is a server of this script's own (Debian's package, run as user
# postgres, data in the work dir on a real disk) with durable settings: fsync on,
# synchronous_commit on (the defaults); max_connections 300.
#
# CPU placement (PIN=split): during each measurement everything that serves a
# column is pinned to CPU 0 — for PG ×1 berth and PostgreSQL, for PG ×3 the
# three berth processes, haproxy and PostgreSQL — and the load generator runs
# single-threaded on CPU 1. So each column gets one core.
#
# The markdown table is printed and saved to SCALE_OUT; raw logs go to
# bench/out/scale-*. bench/run.sh runs this at its end and appends the table to
# bench/out/results.md.
#
# Usage: bench/scale.sh [--quick] [--help]
#   --quick      small sizes / short load tests, for checking the script only
#
# Environment (defaults in brackets):
#   BERTH_BIN       berth binary [${CARGO_TARGET_DIR:-<repo>/target}/release/berth]
#   NTAGS           tags in the tags/list repository [1000]
#   LOAD_SECONDS    duration of each request/s measurement [10]
#   WARMUP_SECONDS  unrecorded warm-up before each of them [2]
#   CONNS           load-test concurrency [32]
#   GC_BLOBS        garbage blobs per sweep measurement [2000]
#   GC_BLOB_BYTES   size of each garbage blob, bytes [4096]
#   PIN             split | none — CPU placement during measurements [split]
#   BENCH_TMP       where the temp dir goes (a real disk, not tmpfs) [/var/tmp]
#   WAIT_IDLE_SECONDS  how long to wait for other CPU load to stop [300]
#   BASELINE_COMMIT commit whose bench/out/results.md has the SQLite-only figures
#                   the SQLite column is compared with [0766034]
#   SCALE_OUT       the markdown table [bench/out/scale.md]
set -Euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
LIB=$HERE/benchlib.py

QUICK=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done

if (( QUICK )); then
  : "${NTAGS:=100}" "${LOAD_SECONDS:=2}" "${WARMUP_SECONDS:=1}" "${GC_BLOBS:=100}"
fi
BERTH_BIN=${BERTH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/berth}
NTAGS=${NTAGS:-1000}
LOAD_SECONDS=${LOAD_SECONDS:-10}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
CONNS=${CONNS:-32}
GC_BLOBS=${GC_BLOBS:-2000}
GC_BLOB_BYTES=${GC_BLOB_BYTES:-4096}
PIN=${PIN:-split}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
BASELINE_COMMIT=${BASELINE_COMMIT:-0766034}
SCALE_OUT=${SCALE_OUT:-$OUT/scale.md}

COLS=(ref sqlite pg1 pg3)
declare -A LABEL=([ref]="reference" [sqlite]="berth SQLite" [pg1]="berth PG ×1" [pg3]="berth PG ×3")
TAGS_REPO=bench/tags
PUT_REPO=bench/puts
ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'

log() { printf '\033[1m[scale %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
# Helpers shared with the other bench script (functions only).
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"

# --------------------------------------------------------------------------- #
# Prerequisites: install what is missing from Debian.
declare -A PKG_OF=(
  [curl]=curl [jq]=jq [wrk]=wrk [hey]=hey [docker-registry]=docker-registry
  [taskset]=util-linux [openssl]=openssl [python3]=python3 [haproxy]=haproxy
  [pgrep]=procps [setpriv]=util-linux [/usr/bin/time]=time
)
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then install_missing; else install_missing postgresql; fi
PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)
[[ -x $PG_BIN/initdb ]] || die "PostgreSQL not found under /usr/lib/postgresql"
id postgres >/dev/null 2>&1 || die "no user postgres (the postgresql package makes it)"
(( EUID == 0 )) || die "run as root: PostgreSQL is started as user postgres with setpriv"
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN (set BERTH_BIN)"

# --------------------------------------------------------------------------- #
# Temp dir, processes, cleanup. Leftovers of a run killed with SIGKILL are
# cleaned too (their pid file names a dead process).
mkdir -p "$BENCH_TMP" "$OUT"
WORK=$(make_work_dir berth-scale)
chmod 755 "$WORK"   # PostgreSQL (user postgres) keeps its data below it
# PIDS[col]: the processes serving a column (PostgreSQL apart: pg_pids).
declare -A PIDS=() PORT=() BASE=() DATA=() SWEEP_BASES=()
PG_PID="" PG_PORT="" HAPROXY_PID="" HAPROXY_STATS=""
REPLICA_PIDS=() REPLICA_PORTS=()

cleanup() {
  local rc=$? p f
  trap - EXIT INT TERM
  for p in ${PIDS[ref]:-} ${PIDS[sqlite]:-} ${PIDS[pg1]:-} "${REPLICA_PIDS[@]}" $HAPROXY_PID; do
    [[ -n $p ]] && stop_pid "$p"
  done
  [[ -n $PG_PID ]] && stop_pid "$PG_PID" INT
  for f in "$WORK"/server-*.log "$WORK"/haproxy.log "$WORK"/postgres.log; do
    [[ -f $f ]] && tail -c 2000000 "$f" >"$OUT/scale-$(basename "$f")"
  done
  wait 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

SAMPLES=$WORK/samples.tsv
ERRLOG=$OUT/scale-errors.log
: >"$SAMPLES"
: >"$ERRLOG"
rm -f "$OUT"/scale-*.log "$OUT"/scale-load-*.txt "$OUT"/scale-gc-*.txt

# A failed request or check: logged with what was asked and what came back.
fail() { # col what
  echo "[${LABEL[$1]}] $2" >>"$ERRLOG"
  if [[ -s $WORK/b ]]; then echo "    body: $(head -c 400 "$WORK/b" | tr '\n' ' ')" >>"$ERRLOG"; fi
  log "failed: [${LABEL[$1]}] $2"
}

# --------------------------------------------------------------------------- #
# Wait a while for other work on the box to stop, then go on and say so.
wait_for_quiet

# CPU used by anything that is not this script, its children or the servers.
times >"$WORK/times"
BUSY0=$(stat_busy_ticks); OWN0=$(times_secs); WALL0=$(now)

# --------------------------------------------------------------------------- #
# Servers.
freeport() { python3 "$LIB" freeport; }
remember() { echo "$1" >>"$WORK/.servers"; }
wait_http() { # url want what pid
  local i code=""
  for i in $(seq 300); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true)
    [[ $code == "$2" ]] && return 0
    kill -0 "$4" 2>/dev/null || die "$3 exited during start-up (log in bench/out/scale-*.log)"
    sleep 0.1
  done
  die "$3 not ready after 30 s (GET $1: $code, want $2)"
}

start_postgres() {
  pg_start "" -c max_connections=300 -c full_page_writes=on
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres berth_pg1 || die "createdb berth_pg1 failed"
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres berth_pg3 || die "createdb berth_pg3 failed"
  local ps
  ps=$("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d berth_pg1 -Atc \
    "SELECT current_setting('fsync') || ' ' || current_setting('synchronous_commit') || ' ' || current_setting('max_connections') || ' ' || current_setting('shared_buffers')")
  read -r pg_fsync pg_sync pg_maxc pg_sb <<<"$ps"
  rec_i pg_version - "$("$PG_BIN/postgres" --version | awk '{print $NF}')"
  rec_i pg_settings - "fsync $pg_fsync, synchronous_commit $pg_sync, max_connections $pg_maxc, shared_buffers $pg_sb"
  [[ $pg_fsync == on && $pg_sync == on ]] || die "PostgreSQL runs with fsync=$pg_fsync synchronous_commit=$pg_sync (want on, on)"
  log "PostgreSQL at 127.0.0.1:$PG_PORT (pid $PG_PID): $ps"
}
pg_url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"; }
pg_pids() { [[ -n $PG_PID ]] && echo "$PG_PID" $(pgrep -P "$PG_PID"); }

start_ref() { # [restart: keep port and data]
  DATA[ref]=$WORK/data-ref
  mkdir -p "${DATA[ref]}"
  [[ -n ${1:-} ]] || PORT[ref]=$(freeport)
  BASE[ref]=http://127.0.0.1:${PORT[ref]}
  ref_config "${DATA[ref]}" "${PORT[ref]}" >"$WORK/ref.yml"
  env -u REGISTRY_AUTH_FILE docker-registry serve "$WORK/ref.yml" >>"$WORK/server-ref.log" 2>&1 &
  PIDS[ref]=$!; remember "${PIDS[ref]}"
  wait_http "${BASE[ref]}/v2/" 200 reference "${PIDS[ref]}"
}

# berth's config: GC reviews due at once (the sweep-rate garbage is due as soon as
# it is uploaded) and no scheduled sweeps (only the ones this script asks for).
write_berth_config() { # file [postgres]
  {
    printf 'gc:\n  reviewDelay: 0s\n  sweepInterval: 24h\n'
    [[ -n ${2:-} ]] && printf 'database:\n  kind: postgres\n'
  } >"$1"
}
launch_berth() { # name port data config [database url] -> sets LAUNCHED
  local name=$1 port=$2 data=$3 cfg=$4 url=${5:-}
  if [[ -n $url ]]; then
    env -u BERTH_CONFIG RUST_LOG="${RUST_LOG:-warn}" BERTH_DATABASE_URL="$url" \
      "$BERTH_BIN" serve --config "$cfg" --listen "127.0.0.1:$port" --data-dir "$data" --no-auth \
      >>"$WORK/server-$name.log" 2>&1 &
  else
    env -u BERTH_CONFIG -u BERTH_DATABASE_URL RUST_LOG="${RUST_LOG:-warn}" \
      "$BERTH_BIN" serve --config "$cfg" --listen "127.0.0.1:$port" --data-dir "$data" --no-auth \
      >>"$WORK/server-$name.log" 2>&1 &
  fi
  LAUNCHED=$!; remember "$LAUNCHED"
}
start_sqlite() {
  DATA[sqlite]=$WORK/data-sqlite; mkdir -p "${DATA[sqlite]}"
  PORT[sqlite]=$(freeport); BASE[sqlite]=http://127.0.0.1:${PORT[sqlite]}
  write_berth_config "$WORK/berth-sqlite.yaml"
  launch_berth sqlite "${PORT[sqlite]}" "${DATA[sqlite]}" "$WORK/berth-sqlite.yaml"
  PIDS[sqlite]=$LAUNCHED
  wait_http "${BASE[sqlite]}/v2/" 200 "berth SQLite" "${PIDS[sqlite]}"
  SWEEP_BASES[sqlite]=${BASE[sqlite]}
}
start_pg1() {
  DATA[pg1]=$WORK/data-pg1; mkdir -p "${DATA[pg1]}"
  PORT[pg1]=$(freeport); BASE[pg1]=http://127.0.0.1:${PORT[pg1]}
  write_berth_config "$WORK/berth-pg.yaml" postgres
  launch_berth pg1 "${PORT[pg1]}" "${DATA[pg1]}" "$WORK/berth-pg.yaml" "$(pg_url berth_pg1)"
  PIDS[pg1]=$LAUNCHED
  wait_http "http://127.0.0.1:${PORT[pg1]}/readyz" 200 "berth PG ×1" "${PIDS[pg1]}"
  SWEEP_BASES[pg1]=${BASE[pg1]}
}
# Three replicas started together on one data directory and database, then
# haproxy in front: round robin, each request balanced on its own, keep-alive
# on both sides (haproxy's default http-keep-alive; idle server connections
# reused), health checks on /readyz; one thread (it shares CPU 0 with the rest).
start_pg3() {
  local i port front stats
  DATA[pg3]=$WORK/data-pg3; mkdir -p "${DATA[pg3]}"
  write_berth_config "$WORK/berth-pg.yaml" postgres
  for i in 0 1 2; do
    port=$(freeport); REPLICA_PORTS+=("$port")
    launch_berth "pg3-r$i" "$port" "${DATA[pg3]}" "$WORK/berth-pg.yaml" "$(pg_url berth_pg3)"
    REPLICA_PIDS+=("$LAUNCHED")
  done
  for i in 0 1 2; do
    wait_http "http://127.0.0.1:${REPLICA_PORTS[$i]}/readyz" 200 "berth PG ×3 replica $i" "${REPLICA_PIDS[$i]}"
  done
  front=$(freeport); stats=$(freeport)
  {
    printf 'global\n  maxconn 4000\n  nbthread 1\n'
    printf 'defaults\n  mode http\n  timeout connect 5s\n  timeout client 10m\n  timeout server 10m\n'
    printf '  timeout http-request 60s\n  option http-keep-alive\n  http-reuse safe\n'
    printf '  retries 3\n  option redispatch\n  retry-on conn-failure empty-response\n'
    printf 'frontend registry\n  bind 127.0.0.1:%s\n  default_backend replicas\n' "$front"
    printf 'backend replicas\n  balance roundrobin\n  option httpchk GET /readyz\n'
    for i in 0 1 2; do
      printf '  server r%s 127.0.0.1:%s check inter 1s fall 2 rise 1\n' "$i" "${REPLICA_PORTS[$i]}"
    done
    printf 'listen stats\n  bind 127.0.0.1:%s\n  stats enable\n  stats uri /stats\n' "$stats"
  } >"$WORK/haproxy.cfg"
  haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  HAPROXY_PID=$!; remember "$HAPROXY_PID"
  HAPROXY_STATS="http://127.0.0.1:$stats/stats;csv"
  PORT[pg3]=$front; BASE[pg3]=http://127.0.0.1:$front
  PIDS[pg3]="${REPLICA_PIDS[*]} $HAPROXY_PID"
  wait_http "${BASE[pg3]}/v2/" 200 "haproxy" "$HAPROXY_PID"
  SWEEP_BASES[pg3]=""
  for i in 0 1 2; do SWEEP_BASES[pg3]+="http://127.0.0.1:${REPLICA_PORTS[$i]} "; done
}
# The requests each replica served through the proxy ("r0=N r1=N r2=N").
replica_requests() {
  curl -fsS "$HAPROXY_STATS" | awk -F, '$1 == "replicas" && $2 ~ /^r[0-9]+$/ {printf "%s%s=%s", sep, $2, $8; sep=" "}'
}
col_pids() { # everything serving a column
  case $1 in
    ref|sqlite) echo "${PIDS[$1]}" ;;
    pg1|pg3) echo "${PIDS[$1]} $(pg_pids)" ;;
  esac
}
check_alive() { # phase
  local c p
  for c in "${COLS[@]}"; do
    for p in ${PIDS[$c]}; do
      kill -0 "$p" 2>/dev/null || die "${LABEL[$c]}: process $p exited during: $1 (logs in bench/out/scale-*.log)"
    done
  done
  kill -0 "$PG_PID" 2>/dev/null || die "PostgreSQL exited during: $1 (log in bench/out/scale-postgres.log)"
}

log "work dir $WORK"
rec_i date - "$(date -u '+%Y-%m-%d %H:%M UTC')"
rec_i machine - "$(nproc) × $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
rec_i workdir_fs - "$(df -hT "$WORK" | awk 'NR==2{print $2" on "$1}')"
rec_i ntags - "$NTAGS"; rec_i gc_blobs - "$GC_BLOBS"
rec_i wrk_duration - "${LOAD_SECONDS}s"; rec_i wrk_conns - "$CONNS"; rec_i warmup - "${WARMUP_SECONDS}s"
NCPU=$(nproc)
if [[ $PIN == split ]] && (( NCPU >= 2 )); then
  rec_i pin - "everything serving the column pinned to CPU 0 (berth; for PG also PostgreSQL; for PG ×3 the 3 berth processes, haproxy and PostgreSQL), load generator on CPU 1 (1 thread)"
else
  rec_i pin - "no CPU pinning"
fi
rec_i ref_version - "$(docker-registry --version 2>&1 | head -1)"
rec_i haproxy_version - "$(haproxy -v | awk 'NR==1{print $3}')"
rec_i haproxy_mode - "balance roundrobin, each request balanced on its own, keep-alive to clients and to the replicas (http-keep-alive, http-reuse safe), nbthread 1"
# Run a copy: the binary may be rebuilt while we run.
cp -p "$BERTH_BIN" "$WORK/berth"
rec_i berth_version - "$("$WORK/berth" --version 2>/dev/null | head -1) $BERTH_BIN built $(date -u -r "$BERTH_BIN" '+%Y-%m-%d %H:%M UTC'), sha256 $(openssl dgst -sha256 -r "$WORK/berth" | cut -c1-12), repo $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-commit)"
BERTH_BIN=$WORK/berth

start_postgres
start_ref
start_sqlite
start_pg1
start_pg3
for c in "${COLS[@]}"; do log "${LABEL[$c]} up on ${BASE[$c]} (pids $(col_pids "$c"))"; done

# --------------------------------------------------------------------------- #
# Load tests (as bench/run.sh does them).
pin_pids() { # cpus pid...
  local cpus=$1 p; shift
  (( NCPU >= 2 )) && [[ $PIN == split ]] || return 0
  for p in "$@"; do taskset -a -p -c "$cpus" "$p" >/dev/null 2>&1 || true; done
}
pin_col() { local -a p; read -r -a p <<<"$(col_pids "$1")"; pin_pids 0 "${p[@]}"; }
unpin_col() { local -a p; read -r -a p <<<"$(col_pids "$1")"; pin_pids "0-$((NCPU - 1))" "${p[@]}"; }
gen_prefix() { if (( NCPU >= 2 )) && [[ $PIN == split ]]; then echo "taskset -c 1"; fi; }
srv_prefix() { if (( NCPU >= 2 )) && [[ $PIN == split ]]; then echo "taskset -c 0"; fi; }
pids_ticks() { # CPU ticks of these processes and their reaped children (PostgreSQL's exited backends)
  local p t=0
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

load_test() { # col key tool url [wrk lua script, args...]
  local c=$1 key=$2 tool=$3 url=$4 f=$OUT/scale-load-$2-$1.txt threads=2 c0 c1 j
  shift 4
  [[ $PIN == split ]] && threads=1
  local -a cmd warm run
  if [[ $tool == wrk ]]; then
    cmd=(wrk -t"$threads" -c"$CONNS" --latency -H "Accept: $ACCEPT")
    if (( $# )); then
      local script=$1; shift
      warm=("${cmd[@]}" -s "$script" -d"${WARMUP_SECONDS}s" "$url" -- "$@" warm)
      run=("${cmd[@]}" -s "$script" -d"${LOAD_SECONDS}s" "$url" -- "$@" run)
    else
      warm=("${cmd[@]}" -d"${WARMUP_SECONDS}s" "$url")
      run=("${cmd[@]}" -d"${LOAD_SECONDS}s" "$url")
    fi
  else
    cmd=(hey -c "$CONNS" -m HEAD -cpus "$threads")
    warm=("${cmd[@]}" -z "${WARMUP_SECONDS}s" "$url")
    run=("${cmd[@]}" -z "${LOAD_SECONDS}s" "$url")
  fi
  pin_col "$c"
  # shellcheck disable=SC2046
  $(gen_prefix) "${warm[@]}" >"$OUT/scale-load-$key-$c.warmup.txt" 2>&1
  local -a cp; read -r -a cp <<<"$(col_pids "$c")"
  c0=$(pids_ticks "${cp[@]}")
  # shellcheck disable=SC2046
  $(gen_prefix) /usr/bin/time -f 'GEN_CPU %e %U %S' "${run[@]}" >"$f" 2>&1
  c1=$(pids_ticks "${cp[@]}")
  unpin_col "$c"
  record_load "$c" "${LABEL[$c]}" "$key" "$tool" "$url" "$f" "$c0" "$c1" "servers'"
}

log "populating $TAGS_REPO with $NTAGS tags, and $PUT_REPO's blobs"
declare -A LAYER=() CONFIG=() MANIFEST=() PUTJ=()
for c in "${COLS[@]}"; do
  pj=$(python3 "$LIB" populate "${BASE[$c]}" "$TAGS_REPO" "$NTAGS" 2>"$WORK/populate.err") \
    || die "populate ${LABEL[$c]} failed: $(tail -3 "$WORK/populate.err")"
  LAYER[$c]=$(jq -r .layer <<<"$pj"); CONFIG[$c]=$(jq -r .config <<<"$pj"); MANIFEST[$c]=$(jq -r .manifest <<<"$pj")
  log "${LABEL[$c]}: $NTAGS manifest PUTs (sequential) in $(jq -r .tag_put_seconds <<<"$pj") s"
  PUTJ[$c]=$(python3 "$LIB" populate "${BASE[$c]}" "$PUT_REPO" 1 2>"$WORK/populate.err") \
    || die "populate ${LABEL[$c]} $PUT_REPO failed: $(tail -3 "$WORK/populate.err")"
  # Sanity checks (untimed) so a fast wrong answer is not mistaken for a fast one.
  mid=$(printf 'tag-%04d' $((NTAGS / 2)))
  req GET "${BASE[$c]}/v2/$TAGS_REPO/manifests/$mid" -H "Accept: $ACCEPT"
  ct=$(hdr content-type); dcd=$(hdr docker-content-digest)
  if [[ $CODE != 200 || $ct != application/vnd.oci.image.manifest.v1+json* || $dcd != "${MANIFEST[$c]}" ]]; then
    fail "$c" "GET /v2/$TAGS_REPO/manifests/$mid -> $CODE, Content-Type '$ct', Docker-Content-Digest '$dcd' (want 200, OCI manifest, ${MANIFEST[$c]})"
  fi
  req HEAD "${BASE[$c]}/v2/$TAGS_REPO/blobs/${LAYER[$c]}" -I
  [[ $CODE == 200 ]] || fail "$c" "HEAD /v2/$TAGS_REPO/blobs/${LAYER[$c]} -> $CODE (want 200)"
  req GET "${BASE[$c]}/v2/$TAGS_REPO/tags/list"
  ntag=$(jq -r '.tags | length' "$WORK/b" 2>/dev/null || echo "?"); link=$(hdr link)
  if [[ $CODE != 200 || $ntag != "$NTAGS" ]]; then
    note "${LABEL[$c]}: GET /v2/$TAGS_REPO/tags/list -> $CODE with $ntag tags${link:+ and Link: $link} (pushed $NTAGS); tags/list req/s is for that response"
  fi
done

log "load tests: ${LOAD_SECONDS}s each at concurrency $CONNS (PIN=$PIN)"
for c in "${COLS[@]}"; do
  load_test "$c" manifest_get wrk "${BASE[$c]}/v2/$TAGS_REPO/manifests/$(printf 'tag-%04d' $((NTAGS / 2)))"
done
for c in "${COLS[@]}"; do
  load_test "$c" tags_list wrk "${BASE[$c]}/v2/$TAGS_REPO/tags/list"
done
for c in "${COLS[@]}"; do
  load_test "$c" blob_head hey "${BASE[$c]}/v2/$TAGS_REPO/blobs/${LAYER[$c]}"
done
check_alive "read load tests"
note "PG ×3: requests each replica served through haproxy by the end of the read loads: $(replica_requests)"

# --------------------------------------------------------------------------- #
# GC sweep rate. Before the manifest PUT load: its tens of thousands of new
# manifests each queue a review (all kept: they are tagged), which a sweep
# would go through before the blobs.
blob_files() { # col -> blob files on disk
  if [[ $1 == ref ]]; then
    find "${DATA[ref]}/docker/registry/v2/blobs" -type f -name data 2>/dev/null | wc -l
  else
    find "${DATA[$1]}/blobs" -type f 2>/dev/null | wc -l
  fi
}
gc_status() { # col -> JSON of GET /api/v1/gc (berth)
  local b
  read -r b _ <<<"${SWEEP_BASES[$1]}"
  curl -fsS "$b/api/v1/gc" || echo '{}'
}
# The image in bench/tags is still whole: its manifest by tag and both blobs.
live_ok() { # col
  local c=$1
  req GET "${BASE[$c]}/v2/$TAGS_REPO/manifests/tag-0000" -H "Accept: $ACCEPT"
  [[ $CODE == 200 && $(hdr docker-content-digest) == "${MANIFEST[$c]}" ]] || { fail "$c" "after GC: GET manifest tag-0000 -> $CODE"; return 1; }
  req HEAD "${BASE[$c]}/v2/$TAGS_REPO/blobs/${LAYER[$c]}" -I
  [[ $CODE == 200 ]] || { fail "$c" "after GC: HEAD layer ${LAYER[$c]} -> $CODE"; return 1; }
  req HEAD "${BASE[$c]}/v2/$TAGS_REPO/blobs/${CONFIG[$c]}" -I
  [[ $CODE == 200 ]] || { fail "$c" "after GC: HEAD config ${CONFIG[$c]} -> $CODE"; return 1; }
}
make_garbage() { # col repo file
  local gj
  gj=$(python3 "$LIB" garbage "${BASE[$1]}" "$2" "$GC_BLOBS" "$3" --bytes "$GC_BLOB_BYTES") \
    || die "${LABEL[$1]}: uploading garbage failed: $gj"
  log "${LABEL[$1]}: $GC_BLOBS garbage blobs uploaded in $(jq -r .seconds <<<"$gj") s"
}
gc_round() { # col sweepers(1|3) round
  local c=$1 n=$2 round=$3 bases=()
  local repo=bench/garbage-$round gfile=$WORK/garbage-$c-$round
  local s1 s2 f0 f1 f2 pend sj secs deleted reviews tdelta heads h404 live=false ok=false left
  read -r -a bases <<<"${SWEEP_BASES[$c]}"
  (( n == 1 )) && bases=("${bases[0]}")
  # Drain what earlier phases queued (untimed), so the timed sweep has exactly the garbage.
  python3 "$LIB" sweep "${bases[0]}" >/dev/null
  f0=$(blob_files "$c")
  make_garbage "$c" "$repo" "$gfile"
  # Reviews of uploads younger than 1 s (UPLOAD_GRACE, src/registry/gc.rs)
  # are taken one per transaction; garbage is older than that in a registry.
  sleep 2
  s1=$(gc_status "$c"); f1=$(blob_files "$c")
  pend=$(jq -r '.due_blob_reviews // "?"' <<<"$s1")
  if [[ $pend != "$GC_BLOBS" ]] || [[ $(jq -r '.pending_manifest_reviews' <<<"$s1") != 0 ]]; then
    note "${LABEL[$c]} GC ($n sweeper(s)): before the timed sweep $pend blob reviews were due and $(jq -r '.pending_manifest_reviews' <<<"$s1") manifest reviews pending (want $GC_BLOBS and 0)"
  fi
  pin_col "$c"
  # shellcheck disable=SC2046
  sj=$($(gen_prefix) python3 "$LIB" sweep "${bases[@]}")
  unpin_col "$c"
  echo "$sj" >"$OUT/scale-gc-$c-$round.txt"
  secs=$(jq -r .seconds <<<"$sj"); deleted=$(jq -r .blobs_deleted <<<"$sj"); reviews=$(jq -r .blob_reviews <<<"$sj")
  s2=$(gc_status "$c"); f2=$(blob_files "$c")
  tdelta=$(( $(jq -r .blobs_deleted <<<"$s2") - $(jq -r .blobs_deleted <<<"$s1") ))
  left=$(jq -r .pending_blob_reviews <<<"$s2")
  heads=$(python3 "$LIB" headall "${BASE[$c]}" "$repo" "$gfile")
  h404=$(jq -r '."404" // 0' <<<"$heads")
  live_ok "$c" && live=true
  if [[ $(jq -r .ok <<<"$sj") == true && $deleted == "$GC_BLOBS" && $tdelta == "$GC_BLOBS" \
        && $((f1 - f2)) == "$GC_BLOBS" && $((f1 - f0)) == "$GC_BLOBS" && $h404 == "$GC_BLOBS" \
        && $left == 0 && $live == true ]]; then
    ok=true
  else
    fail "$c" "GC with $n sweeper(s) did not delete exactly the $GC_BLOBS garbage blobs: sweeps $(jq -c '[.sweeps[] | {status, counts}]' <<<"$sj"), GC total +$tdelta, blob files $f0 -> $f1 -> $f2, HEAD of the garbage $heads, reviews left $left, live image $live"
    note "${LABEL[$c]}: GC with $n sweeper(s) failed its checks (bench/out/scale-errors.log)"
  fi
  local per
  per=$(jq -r '[.sweeps[] | (.counts.blobs_deleted // "ERR" | tostring)] | join(" + ")' <<<"$sj")
  rec_i "gc_detail_$n" "$c" "$(jq -cn --argjson n "$n" --arg made "$((f1 - f0)) files, $GC_BLOBS uploads" \
    --arg deleted "$deleted${per:+ ($per)}" --argjson td "$tdelta" --arg fd "$((f2 - f1))" --arg h "$h404 / $GC_BLOBS" \
    --argjson live "$live" --argjson left "$left" --argjson ok "$ok" \
    '{sweepers: $n, made: $made, deleted: $deleted, total_delta: $td, files_delta: $fd, head404: $h, live_ok: $live, reviews_left: $left, ok: $ok}')"
  if [[ $ok == true ]]; then
    rec_s "gc${n}_rate" "$c" "$(awk -v d="$deleted" -v s="$secs" 'BEGIN{printf "%.1f", d/s}')"
  else
    rec_s "gc${n}_rate" "$c" ERR
  fi
  log "${LABEL[$c]} GC, $n sweeper(s): $deleted blobs in $secs s ($reviews reviews; per sweeper $per); checks ok: $ok"
}
# The reference: its offline garbage collector, the server stopped (it has no other).
gc_ref() {
  local gfile=$WORK/garbage-ref-1 repo=bench/garbage-1 f0 f1 f2 t0 t1 heads h404 live=false ok=false rc
  f0=$(blob_files ref)
  make_garbage ref "$repo" "$gfile"
  f1=$(blob_files ref)
  stop_pid "${PIDS[ref]}"; wait "${PIDS[ref]}" 2>/dev/null
  sync
  t0=$(now)
  # shellcheck disable=SC2046
  $(srv_prefix) docker-registry garbage-collect "$WORK/ref.yml" >"$OUT/scale-gc-ref-1.txt" 2>&1
  rc=$?
  t1=$(now)
  f2=$(blob_files ref)
  start_ref restart
  heads=$(python3 "$LIB" headall "${BASE[ref]}" "$repo" "$gfile")
  h404=$(jq -r '."404" // 0' <<<"$heads")
  live_ok ref && live=true
  local secs; secs=$(secs "$t0" "$t1")
  if [[ $rc == 0 && $((f1 - f2)) == "$GC_BLOBS" && $((f1 - f0)) == "$GC_BLOBS" && $live == true ]]; then
    ok=true
  else
    fail ref "garbage-collect (exit $rc) did not delete exactly the $GC_BLOBS garbage blobs: blob files $f0 -> $f1 -> $f2, HEAD of the garbage $heads, live image $live"
  fi
  [[ $h404 == "$GC_BLOBS" ]] || note "reference: after garbage-collect, HEAD of the $GC_BLOBS garbage blobs answered $heads"
  rec_i gc_detail_1 ref "$(jq -cn --arg made "$((f1 - f0)) files, $GC_BLOBS uploads" --arg fd "$((f2 - f1))" \
    --arg h "$h404 / $GC_BLOBS" --argjson live "$live" --argjson ok "$ok" \
    '{sweepers: "offline", made: $made, deleted: "—", files_delta: $fd, head404: $h, live_ok: $live, ok: $ok}')"
  if [[ $ok == true ]]; then
    rec_s gc1_rate ref "$(awk -v d="$((f1 - f2))" -v s="$secs" 'BEGIN{printf "%.1f", d/s}')"
  else
    rec_s gc1_rate ref ERR
  fi
  log "reference offline garbage-collect: $((f1 - f2)) blob files gone in $secs s (exit $rc); checks ok: $ok"
}

log "GC sweep rate: $GC_BLOBS unreferenced blobs of $GC_BLOB_BYTES bytes per measurement"
gc_ref
gc_round sqlite 1 1
gc_round pg1 1 1
gc_round pg3 1 1
gc_round pg3 3 3
check_alive "GC sweeps"

# --------------------------------------------------------------------------- #
# Manifest PUT at concurrency CONNS: wrk with a script; each request PUTs a
# distinct manifest (an annotation names its tag) under a distinct tag, to the
# blobs populate pushed; every answer but 201 is counted as an error.
cat >"$WORK/put.lua" <<'EOF'
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  if args[1] == "--" then table.remove(args, 1) end
  repo, nonce = args[1], args[6] .. args[7]
  n, bad = 0, 0
  prefix = '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    .. '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"' .. args[2]
    .. '","size":' .. args[3] .. '},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",'
    .. '"digest":"' .. args[4] .. '","size":' .. args[5] .. '}],"annotations":{"bench.put":"'
  hdrs = {["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"}
end
function request()
  n = n + 1
  local tag = nonce .. "-" .. id .. "-" .. n
  return wrk.format("PUT", "/v2/" .. repo .. "/manifests/" .. tag, hdrs, prefix .. tag .. '"}}')
end
function response(status, headers, body)
  if status ~= 201 then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("PUT answered " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n") end
  end
end
function done(summary, latency, requests)
  local b, sent = 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    sent = sent + t:get("n")
  end
  io.write(string.format("Non-201 responses: %d\nPUTs sent: %d\n", b, sent))
end
EOF
log "manifest PUT load: ${LOAD_SECONDS}s at concurrency $CONNS"
NONCE=$(openssl rand -hex 4)
for c in "${COLS[@]}"; do
  pj=${PUTJ[$c]}
  load_test "$c" manifest_put wrk "${BASE[$c]}/" "$WORK/put.lua" "$PUT_REPO" \
    "$(jq -r .config <<<"$pj")" "$(jq -r .config_size <<<"$pj")" \
    "$(jq -r .layer <<<"$pj")" "$(jq -r .layer_size <<<"$pj")" "p$NONCE"
  # Every acknowledged PUT is a tag now (the warm-up's too): 1 (populate) + 201s
  # <= tags <= 1 + PUTs sent (a PUT in flight when wrk stopped may have landed).
  acked=0; sent=0
  for f in "$OUT/scale-load-manifest_put-$c.warmup.txt" "$OUT/scale-load-manifest_put-$c.txt"; do
    j=$(python3 "$LIB" loadparse wrk "$f")
    acked=$((acked + $(jq -r '.requests - (.non201 // 0)' <<<"$j")))
    sent=$((sent + $(jq -r '.sent // 0' <<<"$j")))
  done
  ntags=$(python3 "$LIB" tagcount "${BASE[$c]}" "$PUT_REPO" 2>"$WORK/tagcount.err") || ntags="ERR($(tail -1 "$WORK/tagcount.err"))"
  if [[ $ntags =~ ^[0-9]+$ ]] && (( ntags >= 1 + acked && ntags <= 1 + sent )); then
    log "${LABEL[$c]}: $PUT_REPO has $ntags tags (1 + $acked acknowledged PUTs, $sent sent)"
  else
    : >"$WORK/b"; fail "$c" "after the PUT load $PUT_REPO has $ntags tags; want between 1 + $acked (acknowledged) and 1 + $sent (sent)"
    note "${LABEL[$c]}: tags after the manifest PUT load do not match the acknowledged PUTs ($ntags tags, $acked acknowledged)"
  fi
done
check_alive "manifest PUT load"
note "PG ×3: requests each replica served through haproxy over the whole run: $(replica_requests)"

# --------------------------------------------------------------------------- #
times >"$WORK/times"
read -r -a all_pids <<<"$(for c in "${COLS[@]}"; do col_pids "$c"; done | tr ' ' '\n' | sort -u | tr '\n' ' ')"
srv=$(pids_ticks "${all_pids[@]}")
foreign=$(awk -v b0="$BUSY0" -v b1="$(stat_busy_ticks)" -v o0="$OWN0" -v o1="$(times_secs)" -v srv="$srv" \
  -v hz="$(getconf CLK_TCK)" 'BEGIN{f=(b1-b0)/hz-(o1-o0)-srv/hz; if (f<0) f=0; printf "%.0f", f}')
wall=$(secs "$WALL0" "$(now)")
pct=$(awk -v f="$foreign" -v w="$wall" -v n="$NCPU" 'BEGIN{printf "%.0f", 100*f/(w*n)}')
rec_i foreign_cpu - "$foreign s ($pct% of the machine over ${wall%.*} s)"
log "other processes used ${foreign} CPU-seconds during the run (${pct}% of the machine)"
(( pct >= 5 )) && note "other processes on this machine used ${foreign} CPU-seconds during the run (${pct}% of all CPU time) — numbers are skewed by that"
[[ -s $ERRLOG ]] && note "failed requests and checks are listed in bench/out/scale-errors.log ($(wc -l <"$ERRLOG") lines)"

BASELINE=""
if git -C "$ROOT" show "$BASELINE_COMMIT:bench/out/results.md" >"$WORK/baseline.md" 2>/dev/null; then
  BASELINE=$WORK/baseline.md
  rec_i baseline_source - "bench/out/results.md at commit $(git -C "$ROOT" rev-parse --short "$BASELINE_COMMIT")"
else
  note "no baseline: commit $BASELINE_COMMIT (bench/out/results.md before PostgreSQL support) is not in this repository; SQLite not compared with before"
fi

echo >&2
python3 "$LIB" scalereport "$SAMPLES" "$SCALE_OUT" ${BASELINE:+"$BASELINE"}
cp "$SAMPLES" "$OUT/scale-samples.tsv"
log "saved $SCALE_OUT"
