#!/usr/bin/env bash
# bench/tags.sh — a page of tags sorted by size in a repository of
# 1,000,000 tags (issue 17: "tags ordered by size in O(page)").
#
# For each backend (berth on SQLite, berth on PostgreSQL ×1) and each
# repository size in SIZES: one image is pushed (benchlib populate), then
# SIZE − 1 more manifests are written straight into the database, copies of
# the pushed one with other digests and each a byte bigger than the last
# (sizes as a PUT stores them), each under a tag of its own (the worst case:
# no two tags share a manifest); on PostgreSQL with the triggers off for
# that write (no GC reviews queued; sweeps are off anyway). berth is started on the database and the
# web UI's repository page (the one that sorts by size; the GitLab API has no
# size order) is fetched REPS times for: page 1 by name, page 1 by size
# (biggest first), and page 50 by size; the median time of each is printed,
# with size ÷ name (both pages count the matching tags the same way, so the
# name page is the O(page) yardstick; target: size within 2× of it at the
# largest SIZE). Checked: the size page starts with the biggest tag.
#
# With BERTH_OLD_BIN (a berth built before the sizes were stored), the
# database is made by it (its schema), it is measured too (OLD_REPS times:
# it sizes every tag per page), and the new binary's start-up on a copy of
# it includes migration 0010 (which sizes every stored manifest): printed.
#
# Usage: bench/tags.sh [--quick] [--help]
#   --quick      SIZES="1000 20000", 3 repetitions (checking the script)
#
# Environment (defaults in brackets):
#   BERTH_BIN       berth binary [${CARGO_TARGET_DIR:-<repo>/target}/release/berth]
#   BERTH_OLD_BIN   an older berth to compare with [none]
#   SIZES           tags per repository [1000 1000000]
#   REPS            fetches of each page [11]
#   OLD_REPS        fetches of each page by BERTH_OLD_BIN [1]
#   COLS            backends [sqlite pg1]
#   BENCH_TMP       where the temp dir goes (a real disk, not tmpfs) [/var/tmp]
#   WAIT_IDLE_SECONDS  how long to wait for other CPU load to stop [300]
#   TAGS_OUT        the markdown table [bench/out/tags.md]
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
if (( QUICK )); then : "${SIZES:=1000 20000}" "${REPS:=3}"; fi
BERTH_BIN=${BERTH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/berth}
BERTH_OLD_BIN=${BERTH_OLD_BIN:-}
read -r -a SIZES <<<"${SIZES:-1000 1000000}"
REPS=${REPS:-11}
OLD_REPS=${OLD_REPS:-1}
read -r -a COLS <<<"${COLS:-sqlite pg1}"
BENCH_TMP=${BENCH_TMP:-/var/tmp}
TAGS_OUT=${TAGS_OUT:-$OUT/tags.md}
REPO=bench/tags

log() { printf '[tags %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
mkdir -p "$OUT"
WORK=$(source "$HERE/lib.sh"; make_work_dir berth-tags)
chmod 755 "$WORK"
SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN (set BERTH_BIN)"
[[ -z $BERTH_OLD_BIN || -x $BERTH_OLD_BIN ]] || die "BERTH_OLD_BIN $BERTH_OLD_BIN is not executable"
command -v sqlite3 >/dev/null || die "sqlite3 is needed (apt-get install sqlite3)"

PID="" PG_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $PID ]] && stop_pid "$PID"
  [[ -n $PG_PID ]] && stop_pid "$PG_PID" INT
  cp "$WORK"/*.log "$OUT/" 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

freeport() { python3 "$LIB" freeport; }
psql_do() { # database sql
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -c "$2" >/dev/null
}

# Starts BIN on backend C (SQLite: data dir DATA; PostgreSQL: database DB);
# sets PID and BASE, and STARTUP (seconds until /v2/ answered).
start_berth() { # bin col data db
  local bin=$1 c=$2 data=$3 db=$4 port i t0
  port=$(freeport); BASE=http://127.0.0.1:$port
  printf 'gc:\n  sweepInterval: 24h\n' >"$WORK/berth.yaml"
  if [[ $c == pg1 ]]; then
    printf 'database:\n  kind: postgres\n' >>"$WORK/berth.yaml"
    export BERTH_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db"
  else
    unset BERTH_DATABASE_URL
  fi
  t0=$(now)
  env -u BERTH_CONFIG RUST_LOG="${RUST_LOG:-info}" "$bin" serve --config "$WORK/berth.yaml" \
    --listen "127.0.0.1:$port" --data-dir "$data" --no-auth >>"$WORK/tags-server-$c.log" 2>&1 &
  PID=$!
  for i in $(seq 36000); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/v2/") == 200 ]] && break
    kill -0 "$PID" 2>/dev/null || die "berth ($bin) exited during start-up (bench/out/tags-server-$c.log)"
    sleep 0.1
  done
  STARTUP=$(secs "$t0" "$(now)")
}
stop_berth() { stop_pid "$PID"; PID=""; }

# The SQL writing N-1 copies of the seed manifest (tag tag-0000) with their
# tags; with the stored sizes when the schema has them.
copies_sql() { # col n sized(0|1)
  local c=$1 n=$2 sized=$3 digest tag series ms="" mv="" ts="" tv=""
  if (( sized )); then
    ms=", total_size"; mv=", m.total_size + k.i"; ts=", total_size"; tv=", total_size"
  fi
  if [[ $c == pg1 ]]; then
    series="generate_series(1, $n - 1) AS k(i)"
    digest="'sha256:' || lpad(k.i::text, 64, '0')"
    tag="'c' || lpad((id - s.seed)::text, 7, '0')"
  else
    series="(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < $n - 1) SELECT i FROM r) k"
    digest="'sha256:' || printf('%064d', k.i)"
    tag="'c' || printf('%07d', id - s.seed)"
  fi
  # PostgreSQL: the triggers off for the bulk write (each tag's would bump
  # the repository row's tag version again, a million times in one
  # transaction: quadratic in PostgreSQL), the tag version bumped once after.
  [[ $c == pg1 ]] && echo "SET session_replication_role = replica;"
  cat <<SQL
CREATE TEMP TABLE seed AS SELECT manifest_id AS seed FROM tags WHERE name = 'tag-0000';
INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, config_digest,
                       subject_digest, annotations, payload, created_at$ms)
SELECT m.repository_id, $digest, m.media_type, m.artifact_type, m.size + k.i, m.config_digest,
       NULL, NULL, m.payload, m.created_at$mv
  FROM $series, manifests m, seed s WHERE m.id = s.seed;
INSERT INTO manifest_blobs (manifest_id, digest)
SELECT m.id, mb.digest FROM manifests m, seed s, manifest_blobs mb
 WHERE m.id > s.seed AND mb.manifest_id = s.seed;
INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at$ts)
SELECT repository_id, $tag, id, created_at, created_at$tv
  FROM manifests, seed s WHERE id > s.seed;
SQL
  [[ $c == pg1 ]] && echo "UPDATE repositories SET tags_version = tags_version + 1;"
  return 0
}
has_sizes() { # col data db
  if [[ $1 == pg1 ]]; then
    [[ $("$PG_BIN/psql" -X -tA -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$3" -c \
      "SELECT count(*) FROM information_schema.columns WHERE table_name = 'tags' AND column_name = 'total_size'") == 1 ]]
  else
    [[ $(sqlite3 "$2/berth.db" "SELECT count(*) FROM pragma_table_info('tags') WHERE name = 'total_size'") == 1 ]]
  fi
}

# Median milliseconds of REPS fetches of URL (after one unmeasured when
# REPS >= 3); "failed (CODE)" if one is not 200. The body of the last is in
# $WORK/page.
page_ms() { # url reps
  local i t code times=()
  (( $2 >= 3 )) && { curl -s -o /dev/null --max-time 1200 "$1" || true; }
  for i in $(seq "$2"); do
    read -r code t < <(curl -s -o "$WORK/page" -w '%{http_code} %{time_total}\n' --max-time 1200 "$1")
    if [[ $code != 200 ]]; then
      log "GET $1 answered $code after $t s: $(head -c 300 "$WORK/page" | tr '\n' ' ')"
      echo "failed ($code)"; return 0
    fi
    times+=("$t")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END{printf "%.1f", 1000*(NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}

# Measures the three pages with BIN on the database; records a row.
measure() { # label bin col n data db reps
  local label=$1 bin=$2 c=$3 n=$4 data=$5 db=$6 reps=$7 url name size deep first ok
  start_berth "$bin" "$c" "$data" "$db"
  log "$c $n tags, $label: up in $STARTUP s"
  id=$(repo_id_of "$c" "$data" "$db")
  url="$BASE/ui/projects/bench/repositories/$id?per_page=100"
  name=$(page_ms "$url&sort=name" "$reps")
  size=$(page_ms "$url&sort=size&order=desc" "$reps")
  first=$(grep -o 'tags/c[0-9]\{7\}' "$WORK/page" | head -1 | cut -d/ -f2)
  deep=$(page_ms "$url&sort=size&order=desc&page=50" "$reps")
  ok=no; [[ $first == "$(printf 'c%07d' $((n - 1)))" ]] && ok=yes
  log "$c $n tags, $label: by name $name ms, by size $size ms, by size page 50 $deep ms; first by size $first (check $ok)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$n" "$label" "$name" "$size" "$deep" "$STARTUP" "$ok" >>"$WORK/rows"
  stop_berth
}
repo_id_of() { # col data db
  if [[ $1 == pg1 ]]; then
    "$PG_BIN/psql" -X -tA -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$3" -c "SELECT id FROM repositories WHERE name = '$REPO'"
  else
    sqlite3 "$2/berth.db" "SELECT id FROM repositories WHERE name = '$REPO'"
  fi
}

: >"$WORK/rows"
wait_for_quiet
for c in "${COLS[@]}"; do
  [[ $c == pg1 && -z $PG_PID ]] && pg_start tags-
  for n in "${SIZES[@]}"; do
    maker=${BERTH_OLD_BIN:-$BERTH_BIN}
    data=$WORK/data-$c-$n; db=tags_$n; mkdir -p "$data"
    [[ $c == pg1 ]] && psql_do postgres "CREATE DATABASE $db"
    start_berth "$maker" "$c" "$data" "$db"
    python3 "$LIB" populate "$BASE" "$REPO" 1 >/dev/null || die "$c: pushing the seed image failed"
    stop_berth
    sized=0; has_sizes "$c" "$data" "$db" && sized=1
    t0=$(now)
    if [[ $c == pg1 ]]; then
      copies_sql "$c" "$n" "$sized" | "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" >/dev/null \
        || die "$c: writing $n tags failed"
      psql_do "$db" "VACUUM ANALYZE"
    else
      copies_sql "$c" "$n" "$sized" | sqlite3 "$data/berth.db" || die "$c: writing $n tags failed"
    fi
    log "$c: $n tags written in $(secs "$t0" "$(now)") s (by ${maker##*/}, stored sizes: $sized)"
    if [[ -n $BERTH_OLD_BIN ]]; then
      # The new binary gets a copy (it migrates it); the old one the original.
      if [[ $c == pg1 ]]; then
        psql_do postgres "CREATE DATABASE ${db}_new TEMPLATE $db"
      else
        cp -a "$data" "$data-new"
      fi
      measure "old" "$BERTH_OLD_BIN" "$c" "$n" "$data" "$db" "$OLD_REPS"
      measure "new" "$BERTH_BIN" "$c" "$n" "$data-new" "${db}_new" "$REPS"
      rm -rf "$data-new"
    else
      measure "new" "$BERTH_BIN" "$c" "$n" "$data" "$db" "$REPS"
    fi
    rm -rf "$data"
  done
done

{
  echo "### A page of 100 tags sorted by size ($(date -u +%F), $(git -C "$ROOT" rev-parse --short HEAD))"
  echo
  echo "Median ms of a web UI repository page (REPS=$REPS; old binary: $OLD_REPS), each tag on a manifest of its own."
  echo
  echo "| backend | tags | binary | page 1 by name (ms) | page 1 by size (ms) | page 50 by size (ms) | size ÷ name | start-up (s) | biggest first |"
  echo "|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' '{r = ($4+0 > 0 && $5+0 > 0) ? sprintf("%.2f", $5/$4) : "—"; printf "| %s | %\047d | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, r, $7, $8}' "$WORK/rows"
  echo
  big=${SIZES[-1]}
  awk -F'\t' -v big="$big" '$2 == big && $3 == "new" && $4+0 > 0 {r = $5/$4; printf "Target (page by size within 2× of page by name at %\047d tags), %s: %.2f× — %s\n\n", big, $1, r, (r <= 2 && $8 == "yes") ? "met" : "not met"}' "$WORK/rows"
  if [[ -n $BERTH_OLD_BIN ]]; then
    echo "Old: $BERTH_OLD_BIN. The new binary's start-up on the old binary's database includes migration 0010 (sizing every stored manifest)."
  fi
} | tee "$TAGS_OUT"
