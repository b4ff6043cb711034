#!/usr/bin/env bash
# bench/gc.sh — garbage collection at scale (issue 17): one sweep over
# IMAGES manifests and IMAGES × BLOBS blobs (default 10,000 and 100,000), and
# the push latency while it runs against the push latency idle.
#
# For each column (berth on SQLite, berth on PostgreSQL ×1, and the reference,
# distribution 2.8): IMAGES small images of BLOBS unique blobs each are pushed
# (benchlib gcload: 8 threads, each blob one POST ?digest=), then every tag is
# deleted on berth (its sweep deletes the untagged manifests, which queues their
# blobs), every manifest by digest on the reference. berth's review delay is 0 s, so one sweep then reviews
# all of it; the garbage is left 2 s to age first (reviews of uploads younger
# than 1 s are taken one per transaction, see src/registry/gc.rs). One client
# pushes small images back to back (benchlib pushlat) for IDLE_SECONDS before
# the sweep (idle) and again during it; p99 of each is printed with the ratio.
# Checked afterwards: the sweep's counts equal the garbage, no review left,
# and exactly the garbage's blob files are gone from the disk. The reference has no online collector: its column is its offline
# `registry garbage-collect --delete-untagged` on the same garbage (the
# server stopped), reviews/s counted as (manifests + blobs) / seconds.
#
# Usage: bench/gc.sh [--quick] [--help]
#   --quick      1,000 images × 10 blobs, 5 s idle pushes (checking the script)
#
# Environment (defaults in brackets):
#   BERTH_BIN       berth binary [${CARGO_TARGET_DIR:-<repo>/target}/release/berth]
#   IMAGES          manifests of garbage [10000]
#   BLOBS           blobs per image [10]
#   IDLE_SECONDS    idle push-latency measurement [15]
#   COLS            columns to run [sqlite pg1 ref]
#   BENCH_TMP       where the temp dir goes (a real disk, not tmpfs) [/var/tmp]
#   WAIT_IDLE_SECONDS  how long to wait for other CPU load to stop [300]
#   GC_OUT          the markdown table [bench/out/gc.md]
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
if (( QUICK )); then : "${IMAGES:=1000}" "${IDLE_SECONDS:=5}"; fi
BERTH_BIN=${BERTH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/berth}
IMAGES=${IMAGES:-10000}
BLOBS=${BLOBS:-10}
IDLE_SECONDS=${IDLE_SECONDS:-15}
read -r -a COLS <<<"${COLS:-sqlite pg1 ref}"
BENCH_TMP=${BENCH_TMP:-/var/tmp}
GC_OUT=${GC_OUT:-$OUT/gc.md}

log() { printf '[gc %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
mkdir -p "$OUT"
WORK=$(source "$HERE/lib.sh"; make_work_dir berth-gc)
chmod 755 "$WORK"
SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN (set BERTH_BIN)"
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"

PIDS=() PG_PID=""
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  [[ -n $PG_PID ]] && stop_pid "$PG_PID" INT
  cp "$WORK"/*.log "$OUT/" 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

freeport() { python3 "$LIB" freeport; }
wait_http() { # url what pid
  local i
  for i in $(seq 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1") == 200 ]] && return 0
    kill -0 "$3" 2>/dev/null || die "$2 exited during start-up (bench/out/gc-*.log)"
    sleep 0.1
  done
  die "$2 not ready after 30 s"
}
start_postgres() {
  pg_start gc-
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres berth || die "createdb failed"
}
start_col() { # col -> BASE, DATA, PID
  local c=$1 port
  port=$(freeport); BASE=http://127.0.0.1:$port; DATA=$WORK/data-$c; mkdir -p "$DATA"
  case $c in
    ref)
      ref_config "$DATA" "$port" >"$WORK/ref.yml"
      docker-registry serve "$WORK/ref.yml" >>"$WORK/gc-server-ref.log" 2>&1 &
      PID=$! ;;
    sqlite|pg1)
      printf 'gc:\n  reviewDelay: 0s\n  sweepInterval: 24h\n' >"$WORK/berth.yaml"
      if [[ $c == pg1 ]]; then
        [[ -n $PG_PID ]] || start_postgres
        printf 'database:\n  kind: postgres\n' >>"$WORK/berth.yaml"
        export BERTH_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/berth"
      else
        unset BERTH_DATABASE_URL
      fi
      env -u BERTH_CONFIG RUST_LOG="${RUST_LOG:-info}" "$BERTH_BIN" serve --config "$WORK/berth.yaml" \
        --listen "127.0.0.1:$port" --data-dir "$DATA" --no-auth >>"$WORK/gc-server-$c.log" 2>&1 &
      PID=$! ;;
  esac
  PIDS+=("$PID"); echo "$PID" >>"$WORK/.servers"
  wait_http "$BASE/v2/" "$c" "$PID"
}
blob_files() { # col data
  if [[ $1 == ref ]]; then find "$2/docker/registry/v2/blobs" -type f -name data | wc -l
  else find "$2/blobs" -type f | wc -l; fi
}
pushes() { # base repo seconds|- (- : until $WORK/sweeping is gone) -> JSON
  local stop=$WORK/sweeping
  if [[ $3 != - ]]; then
    stop=$WORK/pushing; touch "$stop"
    ( sleep "$3"; rm -f "$stop" ) &
  fi
  python3 "$LIB" pushlat "$1" "$2" "$stop" --min-pushes 20
}

declare -A RATE=() P99I=() P99S=() DETAIL=() OK=()
wait_for_quiet
for c in "${COLS[@]}"; do
  start_col "$c"
  log "$c: pushing $IMAGES images × $BLOBS blobs, then deleting their manifests"
  untag=--untag; [[ $c == ref ]] && untag=""
  load=$(python3 "$LIB" gcload "$BASE" bench/gc "$IMAGES" "$BLOBS" $untag) || die "$c: gcload failed: $load"
  log "$c: $load"
  idle=$(pushes "$BASE" bench/lat "$IDLE_SECONDS")
  log "$c: idle pushes $idle"
  f1=$(blob_files "$c" "$DATA")
  sleep 2   # the upload grace (1 s) and some
  if [[ $c == ref ]]; then
    stop_pid "$PID"; PIDS=("${PIDS[@]/$PID}")
    t0=$(now)
    docker-registry garbage-collect --delete-untagged "$WORK/ref.yml" >"$WORK/gc-ref-collect.log" 2>&1 \
      || die "reference garbage-collect failed (bench/out/gc-ref-collect.log)"
    secs=$(secs "$t0" "$(now)")
    f2=$(blob_files "$c" "$DATA")
    gone=$((f1 - f2))
    # Manifests are blobs on its disk too: what went is the images' manifests and blobs.
    RATE[$c]=$(awk -v n="$gone" -v s="$secs" 'BEGIN{printf "%.0f", n/s}')
    DETAIL[$c]="offline, server stopped: $gone blob files (manifests and blobs) in $secs s"
    P99I[$c]=$(jq -r .p99_ms <<<"$idle"); P99S[$c]="—"
    OK[$c]=$([[ $gone -ge $((IMAGES * (BLOBS + 1))) ]] && echo yes || echo no)
    continue
  fi
  touch "$WORK/sweeping"
  pushes "$BASE" bench/lat - >"$WORK/during.json" &
  pusher=$!
  sj=$(python3 "$LIB" sweep "$BASE")
  rm -f "$WORK/sweeping"
  wait "$pusher"
  during=$(cat "$WORK/during.json")
  log "$c: sweep $sj"
  log "$c: pushes during the sweep $during"
  secs=$(jq -r .seconds <<<"$sj")
  reviews=$(( $(jq -r .blob_reviews <<<"$sj") + IMAGES ))
  md=$(jq -r .manifests_deleted <<<"$sj"); bd=$(jq -r .blobs_deleted <<<"$sj")
  # Blobs another request held a lock on are skipped, for a later sweep:
  # one more, untimed, must finish the garbage.
  again=$(python3 "$LIB" sweep "$BASE")
  md=$((md + $(jq -r .manifests_deleted <<<"$again"))); bd2=$(jq -r .blobs_deleted <<<"$again")
  st=$(curl -fsS "$BASE/api/v1/gc")
  f2=$(blob_files "$c" "$DATA")
  added=$((2 * $(jq -r .pushes <<<"$during")))   # each push during the sweep: 2 blob files
  RATE[$c]=$(awk -v n="$reviews" -v s="$secs" 'BEGIN{printf "%.0f", n/s}')
  DETAIL[$c]="$md manifests, $bd blobs deleted (+$bd2 by a second sweep), $reviews reviews in $secs s; blob files $f1 -> $f2 (+$added pushed meanwhile); reviews left $(jq -r '.pending_blob_reviews + .pending_manifest_reviews' <<<"$st")"
  bd=$((bd + bd2))
  P99I[$c]=$(jq -r .p99_ms <<<"$idle"); P99S[$c]=$(jq -r .p99_ms <<<"$during")
  # Everything the pushes during the sweep uploaded is live (tagged); the
  # garbage is gone exactly.
  if [[ $md == "$IMAGES" && $bd == $((IMAGES * BLOBS)) && $((f1 + added - f2)) == $((IMAGES * BLOBS)) ]]; then
    OK[$c]=yes
  else
    OK[$c]=no
  fi
  stop_pid "$PID"; PIDS=("${PIDS[@]/$PID}")
done

{
  echo "### GC sweep over $IMAGES manifests / $((IMAGES * BLOBS)) blobs ($(date -u +%F), $(git -C "$ROOT" rev-parse --short HEAD))"
  echo
  echo "| column | reviews/s | target ≥ 5,000 | push p99 idle (ms) | push p99 during the sweep (ms) | ratio (target ≤ 1.2) | checks | detail |"
  echo "|---|---|---|---|---|---|---|---|"
  for c in "${COLS[@]}"; do
    ratio="—"; met="—"; rmet=""
    if [[ $c != ref ]]; then
      ratio=$(awk -v a="${P99S[$c]}" -v b="${P99I[$c]}" 'BEGIN{printf "%.2f", a/b}')
      met=$(awk -v r="${RATE[$c]}" 'BEGIN{print (r >= 5000) ? "met" : "not met"}')
      rmet=$(awk -v r="$ratio" 'BEGIN{print (r <= 1.2) ? " (met)" : " (not met)"}')
    fi
    echo "| $c | ${RATE[$c]} | $met | ${P99I[$c]} | ${P99S[$c]} | $ratio$rmet | ${OK[$c]} | ${DETAIL[$c]} |"
  done
} | tee "$GC_OUT"
