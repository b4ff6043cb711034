#!/usr/bin/env bash
# bench/run.sh — side-by-side benchmark: berth vs the CNCF reference registry
# (github.com/distribution/distribution 2.8, Debian package `docker-registry`).
#
# Both registries run on this machine at the same time (each idle while the
# other is measured) and get exactly the same work, in alternating order.
# The result table (markdown) is printed at the end and saved to
# bench/out/results.md; raw logs go to bench/out/.
# berth runs with --no-auth (like the reference); at the end it is restarted with
# token authentication to measure manifest GET req/s with a bearer token against
# the same load without authentication (the "Authentication overhead" table).
#
# At the very end it runs bench/scale.sh, then bench/gc.sh (GC over 100,000
# blobs with push latency; both skipped with --no-scale) (berth on SQLite, on PostgreSQL with 1
# replica and with 3 behind haproxy, beside the reference: request rates, manifest
# PUT, GC sweep rate) and appends its table to bench/out/results.md.
#
# With --s3 both keep their blobs in S3-compatible object storage instead: one
# versitygw server on 127.0.0.1 (built by e2e/setup.sh), a bucket each; the
# reference with its `s3` driver, berth with storage.kind s3; both stream blobs
# through themselves (the reference's redirect is off, as berth's default).
# Results then go to bench/out/s3/ and the scale phase is skipped.
#
# Usage: bench/run.sh [--ref-both] [--quick] [--no-scale] [--s3] [--help]
#   --ref-both   put a second reference registry in the "berth" column (to test
#                the script itself when there is no berth binary yet)
#   --quick      small sizes / short load tests, for checking the script only
#                (passed on to bench/scale.sh)
#   --no-scale   do not run bench/scale.sh at the end
#   --s3         blobs on S3 (versitygw) for both registries; implies --no-scale
#
# Environment (defaults in brackets):
#   BERTH_BIN       berth binary [<repo>/target/release/berth]
#   BLOB_MIB        raw blob and big-layer size, MiB [512]
#   CHUNK_MIB       PATCH chunk size for the chunked upload, MiB [16]
#   RUNS            repetitions for uploads, downloads and skopeo (median) [3]
#   WARM_GETS       warm downloads per run after the first GET, alternating [2]
#   LAYERS          layers in the many-layer image [50]
#   LAYER_KIB       size of each of those layers, KiB [2048]
#   NTAGS           tags in the tags/list repository [1000]
#   LOAD_SECONDS    duration of each request/s measurement [10]
#   WARMUP_SECONDS  unrecorded warm-up before each of them [2]
#   CONNS           load-test concurrency [32]
#   PIN             split | none — CPU placement during load tests [split]
#   BENCH_TMP       where the temp dir goes (a real disk, not tmpfs) [/var/tmp]
#   WAIT_IDLE_SECONDS  how long to wait for other CPU load to stop [300]
#   SKIP_LIMITS=1   skip building/running examples/machine_limits.rs
#   GC_BLOBS, GC_BLOB_BYTES, BASELINE_COMMIT  passed on to bench/scale.sh (see its --help)
set -Euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
LIB=$HERE/benchlib.py

REF_BOTH=0
QUICK=0
SCALE=1
S3=0
for a in "$@"; do
  case $a in
    --ref-both) REF_BOTH=1 ;;
    --quick) QUICK=1 ;;
    --no-scale) SCALE=0 ;;
    --s3) S3=1; SCALE=0; OUT=$HERE/out/s3 ;;
    -h|--help) sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done

if (( QUICK )); then
  : "${BLOB_MIB:=64}" "${RUNS:=1}" "${LAYERS:=5}" "${LAYER_KIB:=512}" "${NTAGS:=100}"
  : "${LOAD_SECONDS:=2}" "${WARMUP_SECONDS:=1}"
fi
BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
BLOB_MIB=${BLOB_MIB:-512}
CHUNK_MIB=${CHUNK_MIB:-16}
RUNS=${RUNS:-3}
WARM_GETS=${WARM_GETS:-2}
LAYERS=${LAYERS:-50}
LAYER_KIB=${LAYER_KIB:-2048}
NTAGS=${NTAGS:-1000}
LOAD_SECONDS=${LOAD_SECONDS:-10}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
CONNS=${CONNS:-32}
PIN=${PIN:-split}
BENCH_TMP=${BENCH_TMP:-/var/tmp}

REGS=(ref berth)           # internal keys; "berth" may be a 2nd reference (--ref-both)
BLOB_REPO=bench/blobs
TAGS_REPO=bench/tags
ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'

log() { printf '\033[1m[bench %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
# Helpers shared with the other bench script (functions only).
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"

# --------------------------------------------------------------------------- #
# Prerequisites: install what is missing from Debian.
declare -A PKG_OF=(
  [curl]=curl [jq]=jq [skopeo]=skopeo [wrk]=wrk [hey]=hey
  [docker-registry]=docker-registry [taskset]=util-linux [openssl]=openssl
  [python3]=python3 [split]=coreutils [/usr/bin/time]=time
)
install_missing
[[ -f /etc/containers/policy.json ]] || log "note: no /etc/containers/policy.json; using skopeo --insecure-policy anyway"

if (( ! REF_BOTH )) && [[ ! -x $BERTH_BIN ]]; then
  die "no berth binary at $BERTH_BIN (set BERTH_BIN, or use --ref-both to test the script)"
fi

# --------------------------------------------------------------------------- #
# Temp dir, processes, cleanup. Leftovers of a run killed with SIGKILL are
# cleaned too (their pid file names a dead process).
mkdir -p "$BENCH_TMP" "$OUT"
WORK=$(make_work_dir berth-bench)
declare -A PID=() PORT=() BASE=() SLOG=() DATA=() HWM=() DIED=()

cleanup() {
  local rc=$? r
  trap - EXIT INT TERM
  for r in "${!PID[@]}"; do
    [[ -n ${PID[$r]} ]] && stop_pid "${PID[$r]}"
    [[ -f ${SLOG[$r]:-} ]] && tail -c 2000000 "${SLOG[$r]}" >"$OUT/server-$r.log"
  done
  wait 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

SAMPLES=$WORK/samples.tsv
ERRLOG=$OUT/errors.log
: >"$SAMPLES"
: >"$ERRLOG"
rm -f "$OUT"/server-*.log "$OUT"/load-*.txt
mbps() { awk -v n="$1" -v s="$2" 'BEGIN{ if (s>0) printf "%.1f", n/1e6/s; else print "ERR" }'; }
# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Server CPU-seconds per GB (10^9 bytes) between two cpu_ticks readings.
cpu_per_gb() { # ticks0 ticks1 bytes
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN{ printf "%.2f", (b-a)/hz/(n/1e9) }'
}
label() { if [[ $1 == berth ]] && (( REF_BOTH )); then echo "berth(=ref#2)"; else echo "$1"; fi; }

# A failed request: logged with method, URL, status and body, for the report.
fail() { # reg what
  local msg="[$(label "$1")] $2"
  echo "$msg" >>"$ERRLOG"
  if [[ -s $WORK/b ]]; then
    echo "    body: $(head -c 400 "$WORK/b" | tr '\n' ' ')" >>"$ERRLOG"
  fi
  log "request failed: $msg"
}
absurl() { # base location
  case $2 in http://*|https://*) echo "$2" ;; /*) echo "$1$2" ;; *) echo "$1/$2" ;; esac
}
addq() { if [[ $1 == *\?* ]]; then echo "$1&$2"; else echo "$1?$2"; fi; }

# --------------------------------------------------------------------------- #
# Machine limits: sha256 with the sha2 crate (one core) and durable writes.
# The crate may be mid-edit; retry a few times.
ML_OK=0
if [[ ${SKIP_LIMITS:-0} != 1 ]]; then
  if command -v cargo >/dev/null 2>&1; then
    for attempt in 1 2 3 4; do
      log "building examples/machine_limits (attempt $attempt)"
      if (cd "$ROOT" && cargo build --release --example machine_limits) >"$OUT/machine_limits-build.log" 2>&1; then
        ML_OK=1; break
      fi
      (( attempt < 4 )) && { log "build failed (crate mid-edit?); retrying in 150 s"; sleep 150; }
    done
    (( ML_OK )) || note "machine_limits example did not build (see bench/out/machine_limits-build.log)"
  else
    note "cargo not found: machine limits skipped"
  fi
fi

wait_for_quiet

if (( ML_OK )); then
  ml=$("${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/machine_limits" "$WORK") || ml=""
  rec_i sha256_MBps - "$(sed -n 's/^sha256_single_core_MBps=//p' <<<"$ml")"
  rec_i durable_write_MBps - "$(sed -n 's/^durable_write_MBps=//p' <<<"$ml")"
  rec_i loopback_tcp_MBps - "$(sed -n 's/^loopback_tcp_MBps=//p' <<<"$ml")"
  log "machine limits: $(tr '\n' ' ' <<<"$ml")"
fi

# CPU used by anything that is not this script, its children or the servers.
times >"$WORK/times"
BUSY0=$(stat_busy_ticks); OWN0=$(times_secs); WALL0=$(now)

# --------------------------------------------------------------------------- #
# Servers.
# --s3: one versitygw (posix backend) for both, run as nobody from a copy
# (root's home is closed to it), a bucket per registry. versitygw rather than
# s3s-fs: the reference's s3 driver resumes an upload by listing multipart
# uploads (ListMultipartUploads), which s3s-fs does not answer.
S3_ENDPOINT=""
start_s3() {
  local bin=${BERTH_VERSITYGW:-${XDG_CACHE_HOME:-$HOME/.cache}/berth-e2e/versitygw-v1.8.0/bin/versitygw} port i b
  [[ -x $bin ]] || die "no versitygw at $bin: e2e/setup.sh builds it (Go module proxy)"
  python3 -c 'import boto3' 2>/dev/null || die "python3 cannot import boto3: e2e/setup.sh installs it"
  mkdir -p "$WORK/s3/root"
  cp "$bin" "$WORK/s3/versitygw"; chmod 755 "$WORK" "$WORK/s3" "$WORK/s3/versitygw"
  chown -R nobody: "$WORK/s3/root"
  port=$(python3 "$LIB" freeport)
  S3_KEY=bench; S3_SECRET=bench-$(openssl rand -hex 8)
  setpriv --reuid=nobody --regid=nogroup --clear-groups "$WORK/s3/versitygw" --access "$S3_KEY" \
    --secret "$S3_SECRET" --port "127.0.0.1:$port" posix "$WORK/s3/root" >"$WORK/s3/log" 2>&1 &
  PID[s3]=$!; SLOG[s3]=$WORK/s3/log
  echo "${PID[s3]}" >>"$WORK/.servers"
  S3_ENDPOINT=http://127.0.0.1:$port
  for i in $(seq 300); do curl -s -o /dev/null "$S3_ENDPOINT/" && break; sleep 0.1; done
  for b in ref ref2 berth; do
    AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET python3 -c '
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").create_bucket(Bucket=sys.argv[2])' \
      "$S3_ENDPOINT" "$b" || die "cannot create bucket $b on $S3_ENDPOINT"
  done
  log "versitygw on $S3_ENDPOINT (pid ${PID[s3]})"
}
# The reference's storage section on S3: the s3 driver (path-style requests
# with regionendpoint), as fast as it goes: 5 MiB chunks, no encryption, http.
ref_s3_config() { # dir port bucket
  ref_config "$1" "$2" | python3 -c '
import sys
text = sys.stdin.read()
old = "  filesystem:\n    rootdirectory: %s\n" % sys.argv[1]
new = ("  s3:\n    accesskey: %s\n    secretkey: %s\n    region: us-east-1\n"
       "    regionendpoint: %s\n    bucket: %s\n    secure: false\n    v4auth: true\n"
       "    encrypt: false\n    chunksize: 5242880\n    rootdirectory: /\n") % tuple(sys.argv[2:6])
assert old in text
print(text.replace(old, new), end="")' "$1" "$S3_KEY" "$S3_SECRET" "$S3_ENDPOINT" "$3"
}
start_ref() { # reg
  local r=$1
  DATA[$r]=$WORK/data-$r
  mkdir -p "${DATA[$r]}"
  if (( S3 )); then
    ref_s3_config "${DATA[$r]}" "${PORT[$r]}" "$([[ $r == ref ]] && echo ref || echo ref2)" >"$WORK/ref-$r.yml"
    if (( REDIRECT )); then  # its default: blob GETs answered with a presigned URL
      python3 -c 'import sys; p = sys.argv[1]; t = open(p).read(); o = "  redirect:\n    disable: true\n"
assert o in t; open(p, "w").write(t.replace(o, ""))' "$WORK/ref-$r.yml"
    fi
  else
    ref_config "${DATA[$r]}" "${PORT[$r]}" >"$WORK/ref-$r.yml"
  fi
  if (( TLS )); then
    printf '  tls:\n    certificate: %s\n    key: %s\n' "$TLS_DIR/a.crt" "$TLS_DIR/a.key" >>"$WORK/ref-$r.yml"
  fi
  # AWS_CA_BUNDLE (set on some machines for a proxy) makes its S3 client refuse to start.
  env -u AWS_CA_BUNDLE docker-registry serve "$WORK/ref-$r.yml" >"${SLOG[$r]}" 2>&1 &
  PID[$r]=$!
}
# berth runs with --no-auth like the reference (which has no authentication), except in the
# "auth overhead" phase at the end, where it is restarted on the same data dir with token
# authentication (BERTH_AUTH_MODE=1) and a manifest directory declaring the project "bench".
BERTH_AUTH_MODE=0
# --s3: 1 while both registries answer blob GETs with a redirect to a presigned URL.
REDIRECT=0
# 1 while both registries serve HTTPS (the TLS download rows), with the test
# certificate of tests/tls (localhost, 127.0.0.1; signed by tests/tls/ca.crt).
TLS=0
TLS_DIR=$ROOT/tests/tls
AUTH_USER=bench-owner
AUTH_PASS=bench-$(openssl rand -hex 12)
write_bench_manifests() { # dir
  mkdir -p "$1"
  cat >"$1/bench.yaml" <<EOF
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: bench}
spec:
  path: bench
  visibility: private
  members:
    - {user: $AUTH_USER, role: Owner}
---
apiVersion: v1
kind: Secret
metadata:
  name: $AUTH_USER-pat
  labels: {berth.dev/user: $AUTH_USER}
stringData: {token: $AUTH_PASS}
EOF
}
start_berth() {
  DATA[berth]=$WORK/data-berth
  mkdir -p "${DATA[berth]}"
  local auth=(--no-auth)
  if (( BERTH_AUTH_MODE )); then
    write_bench_manifests "$WORK/manifests"
    auth=(--manifest-dir "$WORK/manifests")
  fi
  if (( S3 )); then
    printf 'storage:\n  kind: s3\n  s3: {endpoint: %s, bucket: berth, region: us-east-1, pathStyle: true, redirect: %s}\n' \
      "$S3_ENDPOINT" "$( (( REDIRECT )) && echo true || echo false)" >"$WORK/berth-s3.yaml"
    auth+=(--config "$WORK/berth-s3.yaml")
  fi
  (( TLS )) && auth+=(--tls-cert "$TLS_DIR/a.crt" --tls-key "$TLS_DIR/a.key")
  # Quiet logs like the reference's "level: warn" (if berth reads RUST_LOG).
  RUST_LOG=${RUST_LOG:-warn} AWS_ACCESS_KEY_ID=${S3_KEY:-} AWS_SECRET_ACCESS_KEY=${S3_SECRET:-} \
    "$BERTH_BIN" serve --listen "127.0.0.1:${PORT[berth]}" \
    --data-dir "${DATA[berth]}" "${auth[@]}" >"${SLOG[berth]}" 2>&1 &
  PID[berth]=$!
}
# /v2/ answers 200 without authentication, 401 (a Bearer challenge) with it.
ping_ok() { # reg
  local want=200 code
  [[ $1 == berth ]] && (( BERTH_AUTH_MODE )) && want=401
  code=$(curl -sS --cacert "$TLS_DIR/ca.crt" -o /dev/null -w '%{http_code}' "${BASE[$1]}/v2/" 2>/dev/null)
  [[ $code == "$want" ]]
}
start_reg() { # reg [restart]
  local r=$1 i
  PORT[$r]=$(python3 "$LIB" freeport)
  BASE[$r]=http://127.0.0.1:${PORT[$r]}
  (( TLS )) && BASE[$r]=https://127.0.0.1:${PORT[$r]}
  SLOG[$r]=$WORK/server-$r.log
  if [[ $r == berth ]] && (( ! REF_BOTH )); then start_berth; else start_ref "$r"; fi
  echo "${PID[$r]}" >>"$WORK/.servers"
  for i in $(seq 300); do
    if ! kill -0 "${PID[$r]}" 2>/dev/null; then
      tail -20 "${SLOG[$r]}" >&2
      die "$(label "$r") exited during start-up (log above)"
    fi
    ping_ok "$r" && break
    sleep 0.1
  done
  ping_ok "$r" || die "$(label "$r") not ready after 30 s (GET /v2/: $(curl -sS -o /dev/null -w '%{http_code}' "${BASE[$r]}/v2/"))"
  sleep 1
  [[ -z ${2:-} ]] && rec_s rss_idle "$r" "$(awk '/^VmRSS:/{printf "%.1f", $2/1024}' "/proc/${PID[$r]}/status")"
  log "$(label "$r") up on ${BASE[$r]} (pid ${PID[$r]})"
}
# Peak RSS is VmHWM; sampled after every phase so a crash keeps the last value.
check_alive() { # phase
  local r
  for r in "${REGS[@]}"; do
    if kill -0 "${PID[$r]}" 2>/dev/null; then
      HWM[$r]=$(awk -v prev="${HWM[$r]:-0}" '/^VmHWM:/{v=$2/1024; if (prev>v) v=prev; printf "%.1f", v}' "/proc/${PID[$r]}/status")
    else
      wait "${PID[$r]}" 2>/dev/null; local st=$?
      note "$(label "$r") exited (status $st) during: $1 — restarted on the same data dir; peak RSS is the max over both processes; log tail in bench/out/server-$r.log"
      cp "${SLOG[$r]}" "${SLOG[$r]}.crash$RANDOM"
      DIED[$r]=1
      start_reg "$r" restart
    fi
  done
}

log "work dir $WORK"
rec_i date - "$(date -u '+%Y-%m-%d %H:%M UTC')"
rec_i machine - "$(nproc) × $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
rec_i workdir_fs - "$(df -hT "$WORK" | awk 'NR==2{print $2" on "$1}')"
rec_i blob_mib - "$BLOB_MIB"; rec_i chunk_mib - "$CHUNK_MIB"; rec_i runs - "$RUNS"
rec_i layers - "$LAYERS"; rec_i many_mib - "$(( LAYERS * LAYER_KIB / 1024 ))"; rec_i ntags - "$NTAGS"
rec_i wrk_duration - "${LOAD_SECONDS}s"; rec_i wrk_conns - "$CONNS"
if [[ $PIN == split ]]; then
  rec_i wrk_pin - "server pinned to CPU 0 and load generator to CPU 1 (1 thread)"
else
  rec_i wrk_pin - "no CPU pinning"
fi
rec_i ref_version - "$(docker-registry --version 2>&1 | head -1)"
if (( REF_BOTH )); then
  rec_i berth_version - "(none: 2nd reference registry instance, --ref-both)"
  rec_i berth_label - "berth (= ref #2)"
else
  # Run a copy: the binary in target/ may be rebuilt while we run.
  cp -p "$BERTH_BIN" "$WORK/berth"
  rec_i berth_version - "$("$WORK/berth" --version 2>/dev/null | head -1) $BERTH_BIN built $(date -u -r "$BERTH_BIN" '+%Y-%m-%d %H:%M UTC'), sha256 $(openssl dgst -sha256 -r "$WORK/berth" | cut -c1-12), repo $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-commit)"
  BERTH_BIN=$WORK/berth
  rec_i berth_label - "berth"
fi
if (( S3 )); then
  start_s3
  rec_i storage - "S3: versitygw v1.8.0 (posix backend, $(df -T "$WORK" | awk 'NR==2{print $2}')) on 127.0.0.1, one server, a bucket each; the reference's s3 driver with 5 MiB chunks, its redirect off; berth storage.kind s3, redirect off (both redirecting for the one row that says so)"
else
  rec_i storage - "filesystem"
fi
for r in "${REGS[@]}"; do start_reg "$r"; done

# --------------------------------------------------------------------------- #
# Raw blob upload / download with curl.
make_blob() { # file -> prints digest
  openssl enc -aes-128-ctr -K "$(openssl rand -hex 16)" -iv "$(openssl rand -hex 16)" \
    -in /dev/zero 2>/dev/null | head -c "$((BLOB_MIB << 20))" >"$1"
  echo "sha256:$(openssl dgst -sha256 -r "$1" | cut -d' ' -f1)"
}
# Verify (untimed) that the registry now has the blob with the right size.
verify_blob() { # reg digest size what
  req HEAD "${BASE[$1]}/v2/$BLOB_REPO/blobs/$2" -I
  local len; len=$(hdr content-length)
  if [[ $CODE != 200 || $len != "$3" ]]; then
    fail "$1" "after $4: HEAD /v2/$BLOB_REPO/blobs/$2 -> $CODE, Content-Length '$len' (want 200, $3)"
  fi
}
upload_mono() { # reg file digest [repo] -> prints "MB/s CPU-s/GB" or ERR
  local r=$1 f=$2 d=$3 repo=${4:-$BLOB_REPO} size t0 t1 url c0 c1
  size=$(stat -c %s "$f")
  c0=$(cpu_ticks "${PID[$r]}")
  t0=$(now)
  req POST "${BASE[$r]}/v2/$repo/blobs/uploads/" -H 'Content-Length: 0'
  if [[ $CODE != 202 ]]; then fail "$r" "POST /v2/$repo/blobs/uploads/ -> $CODE (want 202)"; echo ERR; return; fi
  url=$(addq "$(absurl "${BASE[$r]}" "$(hdr location)")" "digest=$d")
  req PUT "$url" -H 'Content-Type: application/octet-stream' -T "$f"
  t1=$(now)
  c1=$(cpu_ticks "${PID[$r]}")
  if [[ $CODE != 201 ]]; then fail "$r" "monolithic PUT $url ($size bytes) -> $CODE (want 201)"; echo ERR; return; fi
  BLOB_REPO=$repo verify_blob "$r" "$d" "$size" "monolithic upload"
  echo "$(mbps "$size" "$(secs "$t0" "$t1")") $(cpu_per_gb "$c0" "$c1" "$size")"
}
upload_chunked() { # reg file digest chunkdir -> prints MB/s or ERR
  local r=$1 f=$2 d=$3 cdir=$4 size t0 t1 url c csz off=0 end rng
  size=$(stat -c %s "$f")
  t0=$(now)
  req POST "${BASE[$r]}/v2/$BLOB_REPO/blobs/uploads/" -H 'Content-Length: 0'
  if [[ $CODE != 202 ]]; then fail "$r" "POST /v2/$BLOB_REPO/blobs/uploads/ -> $CODE (want 202)"; echo ERR; return; fi
  url=$(absurl "${BASE[$r]}" "$(hdr location)")
  for c in "$cdir"/c.*; do
    csz=$(stat -c %s "$c"); end=$((off + csz - 1))
    req PATCH "$url" -H 'Content-Type: application/octet-stream' -H "Content-Range: $off-$end" -T "$c"
    if [[ $CODE != 202 ]]; then
      fail "$r" "PATCH $url Content-Range: $off-$end -> $CODE (want 202)"; echo ERR; return
    fi
    rng=$(hdr range)
    if [[ $rng != "0-$end" && $rng != "bytes=0-$end" ]]; then
      fail "$r" "PATCH $url Content-Range: $off-$end -> Range: '$rng' (want 0-$end)"
    fi
    url=$(absurl "${BASE[$r]}" "$(hdr location)")
    off=$((end + 1))
  done
  local tc; tc=$(now)
  req PUT "$(addq "$url" "digest=$d")" -H 'Content-Type: application/octet-stream' --data-binary ''
  t1=$(now)
  if [[ $CODE != 201 ]]; then fail "$r" "closing PUT $(addq "$url" "digest=$d") (empty body) -> $CODE (want 201)"; echo ERR; return; fi
  verify_blob "$r" "$d" "$size" "chunked upload"
  echo "$(mbps "$size" "$(secs "$t0" "$t1")") $(secs "$tc" "$t1")"  # MB/s, closing PUT seconds
}
download() { # reg digest size [from to] -> prints MB/s or ERR; with from/to a ranged GET
  local r=$1 d=$2 size=$3 out code got t want=200 n=$3
  local -a range=()
  if [[ -n ${4:-} ]]; then range=(-H "Range: bytes=$4-$5"); want=206; n=$(($5 - $4 + 1)); fi
  out=$(curl -sS --cacert "$TLS_DIR/ca.crt" -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
        "${range[@]}" "${BASE[$r]}/v2/$BLOB_REPO/blobs/$d" 2>&1) || true
  read -r code got t <<<"$out"
  if [[ $code != "$want" || $got != "$n" ]]; then
    : >"$WORK/b"; fail "$r" "GET /v2/$BLOB_REPO/blobs/$d ${range[*]} -> '$out' (want $want and $n bytes)"; echo ERR; return
  fi
  mbps "$n" "$t"
}
order_for() { if (( $1 % 2 )); then echo "ref berth"; else echo "berth ref"; fi; }

log "blob upload/download: $RUNS runs × ${BLOB_MIB} MiB (chunks of ${CHUNK_MIB} MiB)"
for run in $(seq "$RUNS"); do
  bm=$WORK/blob-mono; bc=$WORK/blob-chunked; cdir=$WORK/chunks
  dm=$(make_blob "$bm"); dc=$(make_blob "$bc")
  rm -rf "$cdir"; mkdir -p "$cdir"
  split -b "${CHUNK_MIB}M" -d -a 5 "$bc" "$cdir/c."
  for r in $(order_for "$run"); do
    sync; read -r v cpu <<<"$(upload_mono "$r" "$bm" "$dm")"
    rec_s upload_mono "$r" "$v"; rec_s upload_mono_cpu "$r" "${cpu:-ERR}"
    log "run $run $(label "$r"): monolithic upload $v MB/s, ${cpu:-?} server CPU-s/GB"
  done
  # The same blob again, to another repository (CI pushing a base layer).
  for r in $(order_for "$run"); do
    sync; read -r v cpu <<<"$(upload_mono "$r" "$bm" "$dm" "bench/again-$run")"
    rec_s upload_again "$r" "$v"; rec_s upload_again_cpu "$r" "${cpu:-ERR}"
    log "run $run $(label "$r"): the same blob to another repository $v MB/s, ${cpu:-?} server CPU-s/GB"
  done
  for r in $(order_for "$run"); do
    sync; read -r v vc <<<"$(upload_chunked "$r" "$bc" "$dc" "$cdir")"
    rec_s upload_chunked "$r" "$v"; rec_s upload_chunked_close "$r" "${vc:-ERR}"
    log "run $run $(label "$r"): chunked upload $v MB/s (closing PUT ${vc:-?} s)"
  done
  size=$((BLOB_MIB << 20))
  for r in $(order_for "$run"); do
    sync; v=$(download "$r" "$dc" "$size"); rec_s download_first "$r" "$v"
    log "run $run $(label "$r"): first download right after the upload $v MB/s"
  done
  for i in $(seq "$WARM_GETS"); do
    for r in $(order_for "$((run + i))"); do
      v=$(download "$r" "$dm" "$size"); rec_s download "$r" "$v"
      log "run $run $(label "$r"): download (warm) $v MB/s"
      # Half the blob from an offset that is not page-aligned.
      v=$(download "$r" "$dm" "$size" 4097 "$((size / 2 + 4096))"); rec_s download_range "$r" "$v"
      log "run $run $(label "$r"): ranged download (warm, half the blob) $v MB/s"
    done
  done
  for r in $(order_for "$run"); do
    if (( run == 1 )); then  # untimed: the bytes must be right too
      got="sha256:$(curl -sS "${BASE[$r]}/v2/$BLOB_REPO/blobs/$dm" | openssl dgst -sha256 -r | cut -d' ' -f1)"
      [[ $got == "$dm" ]] || { : >"$WORK/b"; fail "$r" "GET /v2/$BLOB_REPO/blobs/$dm returned content with digest $got"; }
      got="sha256:$(curl -sS "${BASE[$r]}/v2/$BLOB_REPO/blobs/$dc" | openssl dgst -sha256 -r | cut -d' ' -f1)"
      [[ $got == "$dc" ]] || { : >"$WORK/b"; fail "$r" "GET /v2/$BLOB_REPO/blobs/$dc (chunked upload) returned content with digest $got"; }
      got="sha256:$(curl -sS -H "Range: bytes=4097-$((size / 2 + 4096))" "${BASE[$r]}/v2/$BLOB_REPO/blobs/$dm" | openssl dgst -sha256 -r | cut -d' ' -f1)"
      want="sha256:$(tail -c +4098 "$bm" | head -c "$((size / 2))" | openssl dgst -sha256 -r | cut -d' ' -f1)"
      [[ $got == "$want" ]] || { : >"$WORK/b"; fail "$r" "ranged GET of $dm returned other bytes"; }
    fi
  done
  (( run == RUNS )) && TLS_BLOB=$dm
  rm -rf "$bm" "$bc" "$cdir"
done
check_alive "blob upload/download"

# --s3: downloads through a presigned redirect (GET -> 307 -> the S3 server,
# curl -L), both registries restarted with redirects on (the reference's
# default), then back to serving blobs themselves for the rest of the run.
download_redirect() { # reg digest size -> prints MB/s or ERR
  local r=$1 d=$2 size=$3 out code got t hops
  out=$(curl -sS -L -o /dev/null -w '%{http_code} %{size_download} %{time_total} %{num_redirects}' \
        "${BASE[$r]}/v2/$BLOB_REPO/blobs/$d" 2>&1) || true
  read -r code got t hops <<<"$out"
  if [[ $code != 200 || $got != "$size" || $hops != 1 ]]; then
    fail "$r" "GET /v2/$BLOB_REPO/blobs/$d following redirects -> '$out' (want 200, $size bytes, 1 redirect)"; echo ERR; return
  fi
  mbps "$size" "$t"
}
restart_all() { # keeps each process's peak RSS before stopping it
  local r
  check_alive "before a restart"
  for r in "${REGS[@]}"; do
    stop_pid "${PID[$r]}"; wait "${PID[$r]}" 2>/dev/null
    start_reg "$r" restart
  done
}
if (( S3 )); then
  log "blob download through presigned redirects: $RUNS runs × ${BLOB_MIB} MiB"
  bm=$WORK/blob-mono; dm=$(make_blob "$bm")
  for r in "${REGS[@]}"; do
    sync; v=$(upload_mono "$r" "$bm" "$dm"); [[ $v == ERR ]] && fail "$r" "upload for the redirect phase"
  done
  rm -f "$bm"
  REDIRECT=1; restart_all
  for run in $(seq "$RUNS"); do
    for r in $(order_for "$run"); do
      sync; v=$(download_redirect "$r" "$dm" "$((BLOB_MIB << 20))"); rec_s download_redirect "$r" "$v"
      log "run $run $(label "$r"): download through a redirect $v MB/s"
    done
  done
  check_alive "blob download through redirects"
  REDIRECT=0; restart_all
fi

# Downloads over HTTPS: both restarted with the test certificate (berth
# --tls-cert/--tls-key, the reference's http.tls), the last run's blob fetched
# RUNS × WARM_GETS times alternating (curl trusts tests/tls/ca.crt), then both
# restarted as before. Same rows for plain HTTP above.
if (( ! S3 )) && [[ -n ${TLS_BLOB:-} ]]; then
  log "blob download over TLS: $RUNS × $WARM_GETS runs × ${BLOB_MIB} MiB"
  TLS=1; restart_all
  for run in $(seq "$((RUNS * WARM_GETS))"); do
    for r in $(order_for "$run"); do
      v=$(download "$r" "$TLS_BLOB" "$((BLOB_MIB << 20))"); rec_s download_tls "$r" "$v"
      log "run $run $(label "$r"): download over TLS $v MB/s"
    done
  done
  check_alive "blob download over TLS"
  TLS=0; restart_all
fi

# --------------------------------------------------------------------------- #
# skopeo push/pull of OCI layouts (gzip level-0 layers: valid tar+gzip, so
# skopeo copies them as they are instead of recompressing on push).
skopeo_copy() { # reg what src dst -> prints seconds or ERR
  local r=$1 what=$2 t0 t1
  t0=$(now)
  if skopeo --insecure-policy copy --retry-times 0 --dest-tls-verify=false --src-tls-verify=false \
       "$3" "$4" >"$WORK/skopeo.log" 2>&1; then
    t1=$(now); secs "$t0" "$t1"
  else
    : >"$WORK/b"
    fail "$r" "skopeo $what ($3 -> $4) failed: $(grep -v '^Copying\|^Writing\|^Storing' "$WORK/skopeo.log" | tail -3 | tr '\n' ' ')"
    echo ERR
  fi
}
log "skopeo: $RUNS runs of 1 × ${BLOB_MIB} MiB and ${LAYERS} × ${LAYER_KIB} KiB images"
for run in $(seq "$RUNS"); do
  big=$WORK/img-big; many=$WORK/img-many
  rm -rf "$big" "$many"
  bigj=$(python3 "$LIB" mklayout "$big" latest --layers 1 --layer-bytes "$((BLOB_MIB << 20))") || die "mklayout failed"
  manyj=$(python3 "$LIB" mklayout "$many" latest --layers "$LAYERS" --layer-bytes "$((LAYER_KIB << 10))" --files-per-layer 4) || die "mklayout failed"
  for r in $(order_for "$run"); do
    host=127.0.0.1:${PORT[$r]}
    for kind in big many; do
      src=$WORK/img-$kind; dst=$WORK/pull-$kind
      want=$(jq -r .manifest <<<"$([[ $kind == big ]] && echo "$bigj" || echo "$manyj")")
      sync; v=$(skopeo_copy "$r" "push $kind" "oci:$src:latest" "docker://$host/bench/$kind-$run:latest")
      rec_s "skopeo_push_$kind" "$r" "$v"
      rm -rf "$dst"
      sync; v2=$(skopeo_copy "$r" "pull $kind" "docker://$host/bench/$kind-$run:latest" "oci:$dst:latest")
      rec_s "skopeo_pull_$kind" "$r" "$v2"
      if [[ $v2 != ERR ]]; then  # same manifest back (skopeo checked every blob digest)
        got=$(jq -r '.manifests[0].digest' "$dst/index.json")
        [[ $got == "$want" ]] || { : >"$WORK/b"; fail "$r" "skopeo pull $kind: manifest $got, pushed $want"; }
      fi
      rm -rf "$dst"
      log "run $run $(label "$r"): skopeo $kind push $v s, pull $v2 s"
    done
  done
  rm -rf "$big" "$many"
done
check_alive "skopeo push/pull"

# --------------------------------------------------------------------------- #
# Request rate: manifest GET by tag, blob HEAD, tags/list of NTAGS tags.
#
# CPU placement (PIN=split, the default): this box has 2 cores, and the load
# generator needs CPU too. Unpinned, the generator and the server fight for the
# same cores, and the faster server is penalised more (its generator works
# harder). So during these measurements every thread of the server under test
# is pinned to CPU 0 (taskset -a -p) and the generator runs single-threaded on
# CPU 1: each registry gets exactly one core, the generator the other. The
# generator's CPU use is recorded; if it saturates its core the row is marked.
# wrk is used for the GETs; wrk 4.1 cannot do HEAD (it waits for a body of
# Content-Length bytes that never comes), so blob HEAD uses `hey`.
NCPU=$(nproc)
pin_server() { (( NCPU >= 2 )) && [[ $PIN == split ]] && taskset -a -p -c 0 "${PID[$1]}" >/dev/null; true; }
unpin_server() { (( NCPU >= 2 )) && [[ $PIN == split ]] && taskset -a -p -c "0-$((NCPU - 1))" "${PID[$1]}" >/dev/null; true; }
gen_prefix() { if (( NCPU >= 2 )) && [[ $PIN == split ]]; then echo "taskset -c 1"; fi; }

load_test() { # reg key tool url [extra request header, wrk only]
  local r=$1 key=$2 tool=$3 url=$4 extra=${5:-} f=$OUT/load-$2-$1.txt threads=2 g0 g1 c0 c1 j
  [[ $PIN == split ]] && threads=1
  local -a cmd
  if [[ $tool == wrk ]]; then
    cmd=(wrk -t"$threads" -c"$CONNS" --latency -H "Accept: $ACCEPT")
    [[ -n $extra ]] && cmd+=(-H "$extra")
  else
    cmd=(hey -c "$CONNS" -m HEAD -cpus "$threads")
  fi
  pin_server "$r"
  # shellcheck disable=SC2046
  if [[ $tool == wrk ]]; then
    $(gen_prefix) "${cmd[@]}" -d"${WARMUP_SECONDS}s" "$url" >/dev/null 2>&1
  else
    $(gen_prefix) "${cmd[@]}" -z "${WARMUP_SECONDS}s" "$url" >/dev/null 2>&1
  fi
  c0=$(cpu_ticks "${PID[$r]}")
  if [[ $tool == wrk ]]; then
    $(gen_prefix) /usr/bin/time -f 'GEN_CPU %e %U %S' "${cmd[@]}" -d"${LOAD_SECONDS}s" "$url" >"$f" 2>&1
  else
    $(gen_prefix) /usr/bin/time -f 'GEN_CPU %e %U %S' "${cmd[@]}" -z "${LOAD_SECONDS}s" "$url" >"$f" 2>&1
  fi
  c1=$(cpu_ticks "${PID[$r]}")
  unpin_server "$r"
  record_load "$r" "$(label "$r")" "$key" "$tool" "$url" "$f" "$c0" "$c1" "server"
}

log "populating $TAGS_REPO with $NTAGS tags"
for r in "${REGS[@]}"; do
  pj=$(python3 "$LIB" populate "${BASE[$r]}" "$TAGS_REPO" "$NTAGS" 2>"$WORK/populate.err") \
    || die "populate $(label "$r") failed: $(tail -3 "$WORK/populate.err")"
  LAYER_DIGEST=$(jq -r .layer <<<"$pj"); MANIFEST_DIGEST=$(jq -r .manifest <<<"$pj")
  rec_s manifest_put_all "$r" "$(jq -r .tag_put_seconds <<<"$pj")"
  log "$(label "$r"): $NTAGS manifest PUTs in $(jq -r .tag_put_seconds <<<"$pj") s"
  # Sanity checks (untimed) so a fast wrong answer is not mistaken for a fast one.
  mid=$(printf 'tag-%04d' $((NTAGS / 2)))
  req GET "${BASE[$r]}/v2/$TAGS_REPO/manifests/$mid" -H "Accept: $ACCEPT"
  ct=$(hdr content-type); dcd=$(hdr docker-content-digest)
  if [[ $CODE != 200 || $ct != application/vnd.oci.image.manifest.v1+json* || $dcd != "$MANIFEST_DIGEST" ]]; then
    fail "$r" "GET /v2/$TAGS_REPO/manifests/$mid -> $CODE, Content-Type '$ct', Docker-Content-Digest '$dcd' (want 200, OCI manifest, $MANIFEST_DIGEST)"
  fi
  req HEAD "${BASE[$r]}/v2/$TAGS_REPO/blobs/$LAYER_DIGEST" -I
  [[ $CODE == 200 ]] || fail "$r" "HEAD /v2/$TAGS_REPO/blobs/$LAYER_DIGEST -> $CODE (want 200)"
  req GET "${BASE[$r]}/v2/$TAGS_REPO/tags/list"
  ntag=$(jq -r '.tags | length' "$WORK/b" 2>/dev/null || echo "?"); link=$(hdr link)
  rec_i tags_returned "$r" "$ntag"
  if [[ $CODE != 200 || $ntag != "$NTAGS" ]]; then
    note "$(label "$r"): GET /v2/$TAGS_REPO/tags/list -> $CODE with $ntag tags${link:+ and Link: $link} (pushed $NTAGS); tags/list req/s is for that response"
  fi
  eval "LAYER_$r=\$LAYER_DIGEST"; eval "MANIFEST_$r=\$MANIFEST_DIGEST"
done

log "load tests: ${LOAD_SECONDS}s each at concurrency $CONNS (PIN=$PIN)"
for r in "${REGS[@]}"; do
  load_test "$r" manifest_get wrk "${BASE[$r]}/v2/$TAGS_REPO/manifests/$(printf 'tag-%04d' $((NTAGS / 2)))"
done
for r in "${REGS[@]}"; do
  ld=LAYER_$r
  load_test "$r" blob_head hey "${BASE[$r]}/v2/$TAGS_REPO/blobs/${!ld}"
done
for r in "${REGS[@]}"; do
  load_test "$r" tags_list wrk "${BASE[$r]}/v2/$TAGS_REPO/tags/list"
done
check_alive "load tests"

# --------------------------------------------------------------------------- #
# Authentication overhead (berth only): manifest GET by tag without authentication, then
# berth restarted on the same data dir with token authentication, and the same load with a
# bearer token (fetched once from /jwt/auth with Basic credentials, as clients do; valid
# 300 s, far longer than the test). Measured back to back so the two are comparable.
if (( REF_BOTH )); then
  note "auth overhead not measured: --ref-both has no berth"
else
  MURL_PATH="/v2/$TAGS_REPO/manifests/$(printf 'tag-%04d' $((NTAGS / 2)))"
  log "auth overhead: manifest GET without auth (again), then with a bearer token"
  load_test berth manifest_get_noauth wrk "${BASE[berth]}$MURL_PATH"
  HWM[berth]=$(awk -v prev="${HWM[berth]:-0}" '/^VmHWM:/{v=$2/1024; if (prev>v) v=prev; printf "%.1f", v}' "/proc/${PID[berth]}/status")
  stop_pid "${PID[berth]}"; wait "${PID[berth]}" 2>/dev/null
  BERTH_AUTH_MODE=1
  start_reg berth restart
  req GET "${BASE[berth]}$MURL_PATH" -H "Accept: $ACCEPT"
  chal=$(hdr www-authenticate)
  if [[ $CODE != 401 || $chal != Bearer* ]]; then
    fail berth "auth on: GET $MURL_PATH without a token -> $CODE, WWW-Authenticate '$chal' (want 401 and a Bearer challenge)"
  fi
  req GET "${BASE[berth]}/jwt/auth?service=berth&scope=repository:$TAGS_REPO:pull" -u "$AUTH_USER:$AUTH_PASS"
  TOKEN=$(jq -r '.token // empty' "$WORK/b" 2>/dev/null)
  if [[ $CODE != 200 || -z $TOKEN ]]; then
    fail berth "GET /jwt/auth?service=berth&scope=repository:$TAGS_REPO:pull (Basic $AUTH_USER) -> $CODE (want 200 and a token)"
    note "auth overhead not measured: no token from berth's /jwt/auth"
  else
    req GET "${BASE[berth]}$MURL_PATH" -H "Accept: $ACCEPT" -H "Authorization: Bearer $TOKEN"
    dcd=$(hdr docker-content-digest)
    if [[ $CODE != 200 || $dcd != "$MANIFEST_berth" ]]; then
      fail berth "auth on: GET $MURL_PATH with a bearer token -> $CODE, Docker-Content-Digest '$dcd' (want 200, $MANIFEST_berth)"
    fi
    load_test berth manifest_get_auth wrk "${BASE[berth]}$MURL_PATH" "Authorization: Bearer $TOKEN"
  fi
  check_alive "auth overhead"
fi

# --------------------------------------------------------------------------- #
for r in "${REGS[@]}"; do rec_s rss_peak "$r" "${HWM[$r]}"; done
times >"$WORK/times"
srv=0
for r in "${REGS[@]}"; do srv=$((srv + $(cpu_ticks "${PID[$r]}"))); done
foreign=$(awk -v b0="$BUSY0" -v b1="$(stat_busy_ticks)" -v o0="$OWN0" -v o1="$(times_secs)" -v srv="$srv" \
  -v hz="$(getconf CLK_TCK)" 'BEGIN{f=(b1-b0)/hz-(o1-o0)-srv/hz; if (f<0) f=0; printf "%.0f", f}')
wall=$(secs "$WALL0" "$(now)")
pct=$(awk -v f="$foreign" -v w="$wall" -v n="$(nproc)" 'BEGIN{printf "%.0f", 100*f/(w*n)}')
rec_i foreign_cpu - "$foreign s ($pct% of the machine over ${wall%.*} s)"
log "other processes used ${foreign} CPU-seconds during the run (${pct}% of the machine)"
(( pct >= 5 )) && note "other processes on this machine used ${foreign} CPU-seconds during the run (${pct}% of all CPU time) — numbers are skewed by that"
[[ -s $ERRLOG ]] && note "failed requests are listed in bench/out/errors.log ($(wc -l <"$ERRLOG") lines)"

echo >&2
python3 "$LIB" report "$SAMPLES" "$OUT/results.md"
cp "$SAMPLES" "$OUT/samples.tsv"
log "saved $OUT/results.md"

# --------------------------------------------------------------------------- #
# The scale phase (bench/scale.sh): its own servers, so these are stopped first;
# same load settings; its table goes below this one in results.md.
if (( SCALE )) && (( REF_BOTH )); then
  log "scale phase skipped: --ref-both has no berth binary"
  # shellcheck disable=SC2016
  printf '\n## berth on PostgreSQL and SQLite vs the reference\n\nNot measured: `--ref-both` has no berth binary.\n' >>"$OUT/results.md"
elif (( SCALE )); then
  for r in "${!PID[@]}"; do
    [[ -n ${PID[$r]} ]] && stop_pid "${PID[$r]}" && wait "${PID[$r]}" 2>/dev/null
    [[ -f ${SLOG[$r]:-} ]] && tail -c 2000000 "${SLOG[$r]}" >"$OUT/server-$r.log"
    PID[$r]=""
  done
  log "scale phase: bench/scale.sh (log in bench/out/scale.log)"
  scale_args=(); (( QUICK )) && scale_args=(--quick)
  if env BERTH_BIN="$BERTH_BIN" NTAGS="$NTAGS" LOAD_SECONDS="$LOAD_SECONDS" WARMUP_SECONDS="$WARMUP_SECONDS" \
       CONNS="$CONNS" PIN="$PIN" BENCH_TMP="$BENCH_TMP" WAIT_IDLE_SECONDS=60 SCALE_OUT="$OUT/scale.md" \
       "$HERE/scale.sh" "${scale_args[@]}" >"$OUT/scale.log" 2>&1; then
    { echo; cat "$OUT/scale.md"; } >>"$OUT/results.md"
    cat "$OUT/scale.md"
    log "scale table appended to $OUT/results.md"
  else
    rc=$?
    log "bench/scale.sh failed (exit $rc); last lines of bench/out/scale.log:"
    tail -15 "$OUT/scale.log" >&2
    printf '\n## berth on PostgreSQL and SQLite vs the reference\n\nbench/scale.sh failed (exit %s); see bench/out/scale.log.\n' "$rc" >>"$OUT/results.md"
    exit "$rc"
  fi
fi

# --------------------------------------------------------------------------- #
# The GC phase (bench/gc.sh, issue 17): one sweep over 10,000 manifests /
# 100,000 blobs and the push latency during it; its table goes last.
if (( SCALE )) && ! (( REF_BOTH )); then
  log "GC phase: bench/gc.sh (log in bench/out/gc.log)"
  gc_args=(); (( QUICK )) && gc_args=(--quick)
  if env BERTH_BIN="$BERTH_BIN" BENCH_TMP="$BENCH_TMP" WAIT_IDLE_SECONDS=60 GC_OUT="$OUT/gc.md" \
       "$HERE/gc.sh" "${gc_args[@]}" >"$OUT/gc.log" 2>&1; then
    { echo; cat "$OUT/gc.md"; } >>"$OUT/results.md"
    cat "$OUT/gc.md"
  else
    rc=$?
    log "bench/gc.sh failed (exit $rc); last lines of bench/out/gc.log:"
    tail -15 "$OUT/gc.log" >&2
    exit "$rc"
  fi
fi
