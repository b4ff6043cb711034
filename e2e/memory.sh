#!/usr/bin/env bash
# Streams a 2 GiB random blob through berth and checks the server never buffers it:
#   1. monolithic upload: POST /v2/<name>/blobs/uploads/ then PUT <Location>?digest= with the
#      body streamed by curl -T (Content-Length: 2 GiB)
#   2. chunked upload of another 2 GiB blob: POST, then PATCH <Location> per 256 MiB chunk (Content-Range,
#      Content-Length; every PATCH follows the Location returned by the previous response),
#      then PUT <Location>?digest= with an empty body
#   after each: HEAD (Content-Length), GET streamed into sha256sum
#   3. berth's peak RSS (VmHWM of the server process) must stay below 100 MiB.
# With berth's token authentication (the default) the repositories are in the private project
# e2e/memory and every request carries a bearer token fetched from the token endpoint with the
# e2e user's credentials just before it (tokens live 300 s; each is checked when its request
# starts, so one long upload started with a fresh token is fine).
# Knobs: MEMORY_BLOB_MIB (default 2048), MEMORY_CHUNK_MIB (256), MEMORY_LIMIT_MIB (100);
# E2E_STORAGE=s3 (lib.sh) with the blobs in a bucket (e2e/s3.sh runs it so).
set -euo pipefail
E2E_NAME="${E2E_NAME:-memory}"
BERTH_PROJECTS="${BERTH_PROJECTS:-e2e/memory}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BLOB_MIB="${MEMORY_BLOB_MIB:-2048}"
CHUNK_MIB="${MEMORY_CHUNK_MIB:-256}"
LIMIT_MIB="${MEMORY_LIMIT_MIB:-100}"
SIZE=$((BLOB_MIB * 1024 * 1024))
CURL_T=(--max-time 900)

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
rate() { awk -v a="$1" -v b="$(date +%s.%N)" -v m="$BLOB_MIB" 'BEGIN { printf "%.0f", m / (b - a) }'; }

e2e_tmpdir W
step "generate a ${BLOB_MIB} MiB random blob"
t0=$(date +%s.%N)
head -c "${BLOB_MIB}M" /dev/urandom >"$W/blob.bin"
DIGEST="sha256:$(sha256sum "$W/blob.bin" | cut -d' ' -f1)"
[ "$(stat -c %s "$W/blob.bin")" -eq "$SIZE" ] || die "blob has the wrong size"
log "blob $DIGEST ($SIZE bytes) in $(elapsed "$t0")s"

step "start registry ($E2E_REGISTRY)"
start_berth "$W/registry"
hwm_mib() { local k; k="$(peak_rss_kib "$BERTH_PID")"; echo $(((k + 1023) / 1024)); }
log "server pid $BERTH_PID: VmHWM after start $(hwm_mib) MiB"


# verify_blob REPO LABEL: HEAD size + GET streamed into sha256sum
verify_blob() {
  local repo="$1" label="$2"
  http_login "repository:$repo:pull"
  if http 200 HEAD "$BERTH_URL/v2/$repo/blobs/$DIGEST"; then
    local cl; cl="$(header Content-Length)"
    [ "$cl" = "$SIZE" ] && pass "$label: HEAD blob Content-Length $cl" \
      || fail "$label: HEAD /v2/$repo/blobs/$DIGEST Content-Length '$cl', want $SIZE"
  else
    fail "$label: HEAD /v2/$repo/blobs/$DIGEST"
  fi
  local t code got
  t=$(date +%s.%N)
  http_login "repository:$repo:pull"
  code="$(curl -sS "${CURL_T[@]}" "${HTTP_AUTH[@]}" -o >(sha256sum | cut -d' ' -f1 >"$W/get.sha") -w '%{http_code}' \
            "$BERTH_URL/v2/$repo/blobs/$DIGEST" || echo "curl-error-$?")"
  # the process substitution may finish after curl returns
  local i; for i in $(seq 1 100); do [ -s "$W/get.sha" ] && break; sleep 0.1; done
  got="sha256:$(cat "$W/get.sha")"; rm -f "$W/get.sha"
  if [ "$code" = 200 ] && [ "$got" = "$DIGEST" ]; then
    pass "$label: GET /v2/$repo/blobs/<digest> streams back identical content ($(elapsed "$t")s, $(rate "$t") MiB/s)"
  else
    fail "$label: GET /v2/$repo/blobs/$DIGEST: HTTP $code, content sha256 $got (want 200 and $DIGEST)"
    show_server_log_tail 10
  fi
  log "$label: VmHWM now $(hwm_mib) MiB"
}

# ---------------------------------------------------------------- 1. monolithic
step "monolithic upload: POST + PUT ?digest= streaming ${BLOB_MIB} MiB"
REPO1="e2e/memory/monolithic"
http_login "repository:$REPO1:pull,push"
if http 202 POST "$BERTH_URL/v2/$REPO1/blobs/uploads/"; then
  loc="$(header Location)"
  [ -n "$loc" ] || die "POST /v2/$REPO1/blobs/uploads/ returned 202 without a Location header"
  url="$(with_query "$(abs_url "$loc")" "digest=$DIGEST")"
  t=$(date +%s.%N)
  http_login "repository:$REPO1:pull,push"
  if http 201 PUT "$url" "${CURL_T[@]}" -H "Content-Type: application/octet-stream" -T "$W/blob.bin"; then
    pass "monolithic PUT of ${BLOB_MIB} MiB accepted in $(elapsed "$t")s ($(rate "$t") MiB/s)"
    dcd="$(header Docker-Content-Digest)"
    [ "$dcd" = "$DIGEST" ] && pass "monolithic PUT: Docker-Content-Digest $dcd" \
      || fail "PUT $url: Docker-Content-Digest '$dcd', want $DIGEST"
    [ -n "$(header Location)" ] || fail "PUT $url: 201 without a Location header (spec: MUST return the blob location)"
    verify_blob "$REPO1" monolithic
  else
    fail "monolithic PUT ${BLOB_MIB} MiB to $url"; show_server_log_tail 10
  fi
else
  fail "POST /v2/$REPO1/blobs/uploads/"
fi

# ---------------------------------------------------------------- 2. chunked
# Other content, so that the chunked upload is really stored (the same digest
# would find the blob already there and only be verified).
step "generate a second ${BLOB_MIB} MiB random blob"
head -c "${BLOB_MIB}M" /dev/urandom >"$W/blob.bin"
DIGEST="sha256:$(sha256sum "$W/blob.bin" | cut -d' ' -f1)"
log "blob $DIGEST"

step "chunked upload: POST + ${CHUNK_MIB} MiB PATCHes + PUT ?digest="
REPO2="e2e/memory/chunked"
http_login "repository:$REPO2:pull,push"
if http 202 POST "$BERTH_URL/v2/$REPO2/blobs/uploads/"; then
  loc="$(header Location)"
  [ -n "$loc" ] || die "POST /v2/$REPO2/blobs/uploads/ returned 202 without a Location header"
  t=$(date +%s.%N)
  nchunks=$(((BLOB_MIB + CHUNK_MIB - 1) / CHUNK_MIB))
  ok=1
  for ((i = 0; i < nchunks; i++)); do
    start=$((i * CHUNK_MIB * 1024 * 1024))
    dd if="$W/blob.bin" of="$W/chunk" bs=1M skip=$((i * CHUNK_MIB)) count="$CHUNK_MIB" status=none
    len="$(stat -c %s "$W/chunk")"
    end=$((start + len - 1))
    url="$(abs_url "$loc")"
    http_login "repository:$REPO2:pull,push"
    if ! http 202 PATCH "$url" "${CURL_T[@]}" -H "Content-Type: application/octet-stream" \
         -H "Content-Range: $start-$end" -T "$W/chunk"; then
      fail "chunk $((i + 1))/$nchunks: PATCH $url (Content-Range: $start-$end, Content-Length: $len)"
      show_server_log_tail 10; ok=0; break
    fi
    range="$(header Range)"
    if [ "$range" != "0-$end" ]; then
      fail "chunk $((i + 1))/$nchunks: PATCH $url answered Range '$range', want '0-$end'"; ok=0
    fi
    loc="$(header Location)"
    [ -n "$loc" ] || { fail "chunk $((i + 1))/$nchunks: PATCH 202 without a Location header"; ok=0; break; }
  done
  rm -f "$W/chunk"
  if [ "$ok" = 1 ]; then
    pass "$nchunks PATCH chunks accepted, Range advanced to 0-$((SIZE - 1))"
    url="$(with_query "$(abs_url "$loc")" "digest=$DIGEST")"
    http_login "repository:$REPO2:pull,push"
    if http 201 PUT "$url" "${CURL_T[@]}" -H "Content-Type: application/octet-stream" -H "Content-Length: 0"; then
      pass "chunked upload closed with PUT ?digest= after $(elapsed "$t")s ($(rate "$t") MiB/s overall)"
      dcd="$(header Docker-Content-Digest)"
      [ "$dcd" = "$DIGEST" ] || fail "PUT $url: Docker-Content-Digest '$dcd', want $DIGEST"
      verify_blob "$REPO2" chunked
    else
      fail "closing PUT $url"; show_server_log_tail 10
    fi
  fi
else
  fail "POST /v2/$REPO2/blobs/uploads/"
fi

# ---------------------------------------------------------------- 3. peak RSS
step "peak RSS of the registry process"
rm -f "$W/blob.bin"
kib="$(peak_rss_kib "$BERTH_PID")" || die "cannot read /proc/$BERTH_PID/status (server died?)"
mib=$(((kib + 1023) / 1024))
log "registry pid $BERTH_PID peak RSS (VmHWM): $kib KiB = $mib MiB (limit < $LIMIT_MIB MiB)"
grep -E '^(VmHWM|VmRSS|VmPeak|Threads)' "/proc/$BERTH_PID/status" | sed 's/^/  /'
if [ "$mib" -lt "$LIMIT_MIB" ]; then
  pass "peak RSS $mib MiB < $LIMIT_MIB MiB while moving 2 x ${BLOB_MIB} MiB up and down"
else
  fail "peak RSS $mib MiB >= $LIMIT_MIB MiB (VmHWM of pid $BERTH_PID after the uploads/downloads above)"
fi
check_storage_used "$W/registry"
finish
