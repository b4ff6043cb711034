# bench/lib.sh — what the bench scripts (run.sh, scale.sh, gc.sh, tags.sh) share: recording
# samples, curl with headers and body kept, waiting for the machine to go
# quiet, counting CPU used by others, stopping servers, and the reference
# registry's config. Sourced after the script has set WORK (its temp dir) and
# SAMPLES (its samples file) and defined log.

rec_s() { printf 's\t%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SAMPLES"; }
rec_i() { printf 'i\t%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SAMPLES"; }
note() { printf 'n\t-\t-\t%s\n' "$*" >>"$SAMPLES"; log "note: $*"; }
now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.4f", b-a}'; }

# curl wrapper: sets CODE; headers in $WORK/h, body in $WORK/b.
req() { # method url [curl args]
  local m=$1 u=$2; shift 2
  CODE=$(curl -sS -X "$m" -D "$WORK/h" -o "$WORK/b" -w '%{http_code}' -H 'Expect:' "$@" "$u" 2>"$WORK/curlerr") \
    || CODE="000($(tr '\n' ' ' <"$WORK/curlerr"))"
}
hdr() { grep -i "^$1:" "$WORK/h" | tail -1 | cut -d' ' -f2- | tr -d '\r'; }

# SIGTERM (or the signal given), up to 10 s to exit, then SIGKILL.
stop_pid() { # pid [signal]
  local p=$1 i
  kill "-${2:-TERM}" "$p" 2>/dev/null || return 0
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}

# Other work on the box (a compile, say) skews everything: wait a while for
# it to go quiet (WAIT_IDLE_SECONDS, default 300), then go on regardless and
# say so in the report.
cpu_busy() { # percent of all CPUs busy over $1 seconds
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat); sleep "$1"
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); t=(y[1]-x[1])+(y[2]-x[2]); printf "%.0f", (t>0 ? 100*(y[1]-x[1])/t : 0)}'
}
busy_procs() { top -b -n 2 -d 1 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 >= 10 {printf "%s %s%%, ", $12, $9}'; }
wait_for_quiet() {
  local waited=0 busy
  busy=$(cpu_busy 3)
  while (( busy > 25 && waited < ${WAIT_IDLE_SECONDS:-300} )); do
    (( waited == 0 )) && log "machine busy (${busy}% CPU: $(busy_procs)); waiting up to ${WAIT_IDLE_SECONDS:-300} s for it to go quiet"
    sleep 7; waited=$((waited + 10)); busy=$(cpu_busy 3)
  done
  rec_i busy_start - "$busy"
  if (( busy > 25 )); then
    note "machine was busy when the run started (${busy}% of all CPUs: $(busy_procs)) — numbers may be skewed"
  fi
}

# CPU used by anything that is not this script, its children or the servers:
# `times >"$WORK/times"` in the script's own shell (a $(...) subshell would
# report its own, ~0), then times_secs; stat_busy_ticks for the machine.
stat_busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
times_secs() { awk '{for (i=1;i<=NF;i++){ split($i,a,/[ms]/); s+=a[1]*60+a[2] }} END{printf "%.2f", s}' "$WORK/times"; }

# The reference registry's config: filesystem storage in DIR, deletes on,
# listening on 127.0.0.1:PORT.
ref_config() { # dir port
  cat <<CONF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $1
  delete:
    enabled: true
  # As in Debian's default config; makes blob HEAD/GET cheaper for the reference.
  cache:
    blobdescriptor: inmemory
  redirect:
    disable: true
http:
  addr: 127.0.0.1:$2
  secret: bench-$RANDOM$RANDOM
CONF
}

# After a load run: parses its output FILE (TOOL: wrk or hey), records
# KEY_rps, KEY_p50 and KEY_p99 for column COL, counts non-2xx or unwanted
# answers as a failure, and logs the figures with the CPU the servers used
# (clock ticks C0 to C1 over LOAD_SECONDS) and the load generator's. WHO
# names the column in the log ("server" or "servers'").
record_load() { # col label key tool url file c0 c1 who
  local col=$1 label=$2 key=$3 tool=$4 url=$5 f=$6 c0=$7 c1=$8 who=$9
  local j rps p50 p99 bad gcpu scpu
  j=$(python3 "$LIB" loadparse "$tool" "$f")
  rps=$(jq -r '.rps // "ERR"' <<<"$j"); p50=$(jq -r '.p50_ms // "ERR"' <<<"$j"); p99=$(jq -r '.p99_ms // "ERR"' <<<"$j")
  bad=$(jq -r '.bad' <<<"$j")
  gcpu=$(awk '/^GEN_CPU/{ if ($2>0) printf "%.0f", 100*($3+$4)/$2 }' "$f")
  scpu=$(awk -v a="$c0" -v b="$c1" -v t="$LOAD_SECONDS" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.0f", 100*(b-a)/hz/t}')
  rec_s "${key}_rps" "$col" "$rps"; rec_s "${key}_p50" "$col" "$p50"; rec_s "${key}_p99" "$col" "$p99"
  if [[ $bad != 0 ]]; then
    : >"$WORK/b"; fail "$col" "$tool $url: $bad of $(jq -r .requests <<<"$j") responses were errors or not as wanted ($(jq -r .detail <<<"$j")); see bench/out/$(basename "$f")"
    note "$label $key: $bad error/unwanted responses under load"
  fi
  if [[ -n $gcpu ]] && (( gcpu >= 90 )) && [[ $PIN == split ]]; then
    note "$label $key: load generator used ${gcpu}% of its core — it may be the bottleneck ($who used ${scpu}% CPU)"
  fi
  log "$label $key: $rps req/s, p50 $p50 ms, p99 $p99 ms ($who CPU ${scpu}%, generator CPU ${gcpu:-?}%)"
}

# Installs from Debian what is missing: the package of each command in PKG_OF
# (command -> package) that is not found, and the packages given.
install_missing() { # [package...]
  local c missing=("$@")
  for c in "${!PKG_OF[@]}"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("${PKG_OF[$c]}")
  done
  ((${#missing[@]})) || return 0
  log "installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -qq >/dev/null || die "apt-get update failed"
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# Makes the run's temp dir $BENCH_TMP/NAME.XXXXXX (its .owner: this shell's
# pid) and prints it, after removing the dirs of earlier runs of NAME that
# were killed (their owner is gone) and killing the servers they left (pids
# in .servers whose command line names the dir).
make_work_dir() { # name
  local d p
  mkdir -p "$BENCH_TMP"
  for d in "$BENCH_TMP/$1".*; do
    [[ -d $d && -f $d/.owner ]] || continue
    kill -0 "$(cat "$d/.owner")" 2>/dev/null && continue
    for p in $(cat "$d/.servers" 2>/dev/null); do
      grep -qs "$d" "/proc/$p/cmdline" && kill -9 "$p" 2>/dev/null
    done
    rm -rf "$d"
  done
  d=$(mktemp -d "$BENCH_TMP/$1.XXXXXX")
  echo $$ >"$d/.owner"
  echo "$d"
}

# A throwaway PostgreSQL: initdb in $WORK/pg, the server on 127.0.0.1 as the
# postgres user, durable (fsync and synchronous_commit on: PostgreSQL's
# defaults, said out loud), with the extra server arguments given (-c
# name=value ...); logs in $WORK/PREFIXpostgres.log and
# $WORK/PREFIXpostgres-initdb.log. Sets PG_BIN, PG_PORT and PG_PID (also
# written to $WORK/.servers).
pg_start() { # log-prefix [server args...]
  local prefix=$1 d=$WORK/pg i; shift
  PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)
  [[ -x $PG_BIN/initdb ]] || die "PostgreSQL not found under /usr/lib/postgresql (apt-get install postgresql)"
  mkdir -p "$d"; chown postgres: "$d"
  setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/initdb" -D "$d/data" --auth=trust \
    --username=postgres -E UTF8 --locale=C >"$WORK/${prefix}postgres-initdb.log" 2>&1 \
    || { tail -20 "$WORK/${prefix}postgres-initdb.log" >&2; die "initdb failed"; }
  PG_PORT=$(python3 "$LIB" freeport)
  setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/postgres" -D "$d/data" -k "$d" \
    -p "$PG_PORT" -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on "$@" \
    >"$WORK/${prefix}postgres.log" 2>&1 &
  PG_PID=$!; echo "$PG_PID" >>"$WORK/.servers"
  for i in $(seq 300); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres && return 0
    kill -0 "$PG_PID" 2>/dev/null || { tail -20 "$WORK/${prefix}postgres.log" >&2; die "PostgreSQL exited at start"; }
    sleep 0.1
  done
  die "PostgreSQL not ready within 30 s"
}
