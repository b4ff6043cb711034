#!/usr/bin/env bash
# Faults with blobs on S3 (issue 15), berth on a bucket of a real S3-compatible server (versitygw,
# lib.sh E2E_STORAGE=s3 E2E_S3_SERVER=versitygw: it answers ListMultipartUploads, which s3s-fs does
# not), authentication off (not what this tests):
#   1. SIGKILL during multipart uploads: three uploads of 48 MiB stream slowly (curl
#      --limit-rate) so that each has an S3 multipart upload open, listed through the S3 API
#      (boto3's ListMultipartUploads); berth is killed; after the restart no partial blob is
#      in the bucket, one interrupted session resumes (status, PATCH of the rest, PUT) and
#      pulls back with its digest, the two others expire (gc.uploadExpiry 60s), and then no
#      multipart upload is left in the bucket and nothing under uploads/.
#   2. The S3 server stopped for 10 s while pushes run in a loop: every push answers 201, or
#      503 UNAVAILABLE naming the blob storage (with Retry-After); pushes succeed again once it
#      is back; every acknowledged blob pulls back with its digest.
#   3. storage.s3.redirect: a blob GET answers 307 to a presigned URL that gives the blob; a
#      ranged GET is served by berth. Then fsck --verify-digests of the bucket is clean.
#   4. The S3 server over TLS (a CA and certificate made here): berth without storage.s3.caFile
#      refuses to start, naming storage.s3 and the certificate; with caFile it serves the blobs
#      stored before and takes a new push; insecureSkipVerify also connects.
set -euo pipefail
E2E_STORAGE=s3 BERTH_AUTH=off E2E_S3_SERVER=versitygw
export E2E_STORAGE BERTH_AUTH E2E_S3_SERVER
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Expiry soon, sweeps often; blobs no manifest holds are kept (reviewDelay).
export BERTH_EXTRA_CONFIG='gc:
  reviewDelay: 1h
  sweepInterval: 2s
  uploadExpiry: 60s'

e2e_tmpdir W
start_berth "$W/registry"
REPO=faults/app

# multipart_uploads: the multipart uploads in progress in the bucket, one key per line.
multipart_uploads() {
  python3 - <<'PY'
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])
r = s3.list_multipart_uploads(Bucket=os.environ["S3_BUCKET"])
for u in r.get("Uploads", []):
    print(u["Key"], u["UploadId"])
PY
}
# objects PREFIX: the keys under PREFIX in the bucket (through the S3 API).
objects() {
  PREFIX="$1" python3 - <<'PY'
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ["S3_BUCKET"], Prefix=os.environ["PREFIX"]):
    for o in page.get("Contents", []):
        print(o["Key"], o["Size"])
PY
}
sha() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

# ---------------------------------------------------------------- 1. SIGKILL
step "SIGKILL during multipart uploads"
locs=(); digests=(); pids=()
for i in 0 1 2; do
  head -c $((48 << 20)) /dev/urandom >"$W/blob$i"
  digests+=("$(sha "$W/blob$i")")
  http 202 POST "$BERTH_URL/v2/$REPO/blobs/uploads/" || die "POST upload $i"
  locs+=("$(abs_url "$(header Location)")")
  curl -sS -o /dev/null --limit-rate 4M -X PATCH -H "Content-Type: application/octet-stream" \
    --data-binary @"$W/blob$i" "${locs[$i]}" 2>/dev/null &
  pids+=($!)
done
open_mpu=""
for _ in $(seq 1 100); do
  open_mpu="$(multipart_uploads | wc -l)"
  [ "$open_mpu" -ge 3 ] && break
  sleep 0.2
done
[ "$open_mpu" -ge 3 ] && pass "3 uploads streaming: $open_mpu multipart uploads open in the bucket" \
  || fail "only $open_mpu multipart uploads open while 3 uploads stream"
sleep 2
kill -KILL "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true
log "killed berth (pid $BERTH_PID) with 3 uploads in flight"
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
left_blobs="$(objects blobs/ | wc -l)"
[ "$left_blobs" -eq 0 ] && pass "no blob in the bucket after the kill (nothing partial visible)" \
  || fail "$left_blobs objects under blobs/ after the kill: $(objects blobs/ | head -3)"

start_berth "$W/registry"
# The session of upload 0 resumes: its status says what is stored, the rest follows.
url="$BERTH_URL/v2/${locs[0]#*/v2/}"
http 204 GET "$url" || die "GET $url: no upload status after the restart"
stored="$(header Range)"
offset=$(( ${stored#0-} + 1 )); [ "$stored" = "0-0" ] && offset=0
log "upload 0: the restarted berth holds $offset bytes (Range $stored)"
tail -c +$((offset + 1)) "$W/blob0" >"$W/rest0"
# The killed process's lease on the session runs out first (up to 30 s): 503 until then.
for _ in $(seq 1 45); do
  http '202|503' PATCH "$url" -H "Content-Type: application/octet-stream" \
    -H "Content-Range: $offset-$(( (48 << 20) - 1 ))" --data-binary @"$W/rest0" || break
  [ "$HTTP_STATUS" = 202 ] && break
  sleep 1
done
if [ "$HTTP_STATUS" = 202 ] \
   && http 201 PUT "$(with_query "$BERTH_URL/v2/${locs[0]#*/v2/}" "digest=${digests[0]}")"; then
  pass "the interrupted upload resumed from byte $offset and completed"
else
  fail "resuming the interrupted upload"; show_server_log_tail 10
fi
if curl -sS -o "$W/got0" "$BERTH_URL/v2/$REPO/blobs/${digests[0]}" && [ "$(sha "$W/got0")" = "${digests[0]}" ]; then
  pass "the resumed blob pulls back with digest ${digests[0]}"
else fail "GET of the resumed blob: $(sha "$W/got0" 2>/dev/null)"; fi

step "the two other sessions expire, with their multipart uploads"
left=""
for _ in $(seq 1 120); do
  left="$(multipart_uploads | wc -l) $(objects uploads/ | wc -l)"
  [ "$left" = "0 0" ] && break
  sleep 1
done
if [ "$left" = "0 0" ]; then
  pass "after the upload expiry: no multipart upload in the bucket (ListMultipartUploads) and nothing under uploads/"
else
  fail "after the upload expiry, multipart uploads and objects under uploads/: $left"; multipart_uploads; objects uploads/
fi
for i in 1 2; do
  http 404 GET "$BERTH_URL/v2/$REPO/blobs/uploads/${locs[$i]##*/uploads/}" \
    && pass "upload $i: expired (404 BLOB_UPLOAD_UNKNOWN)" || fail "upload $i: still known"
done

# ---------------------------------------------------------------- 2. S3 outage
step "the S3 server stopped for 10 s during pushes"
: >"$W/pushes"
push_loop() {
  local n=0 code url d
  while [ ! -e "$W/stop" ]; do
    n=$((n + 1))
    head -c $((256 << 10)) /dev/urandom >"$W/p$n"; d="$(sha "$W/p$n")"
    code="$(curl -sS -o "$W/p$n.body" -D "$W/p$n.hdrs" -w '%{http_code}' -X POST "$BERTH_URL/v2/$REPO/blobs/uploads/")"
    if [ "$code" = 202 ]; then
      url="$BERTH_URL$(tr -d '\r' <"$W/p$n.hdrs" | awk 'tolower($1)=="location:" {print $2}')"
      code="$(curl -sS -o "$W/p$n.body" -D "$W/p$n.hdrs" -w '%{http_code}' -X PUT \
        -H "Content-Type: application/octet-stream" --data-binary @"$W/p$n" "$(with_query "$url" "digest=$d")")"
    fi
    echo "$(date +%s.%N) $n $code $d" >>"$W/pushes"
    sleep 0.1
  done
}
push_loop & loop_pid=$!
sleep 3
stop_s3; t_stop=$(date +%s.%N); log "s3s-fs stopped"
sleep 10
run_s3; t_back=$(date +%s.%N); log "s3s-fs back"
sleep 5
touch "$W/stop"; wait "$loop_pid"
awk '{print $3}' "$W/pushes" | sort | uniq -c | sed 's/^/  /'
bad="$(awk '$3 != 201 && $3 != 503' "$W/pushes" | wc -l)"
n503="$(awk '$3 == 503' "$W/pushes" | wc -l)"
[ "$bad" -eq 0 ] && pass "every push answered 201 or 503 ($(wc -l <"$W/pushes") pushes, $n503 refused with 503)" \
  || fail "$bad pushes answered something else than 201 or 503: $(awk '$3 != 201 && $3 != 503' "$W/pushes" | head -3)"
if [ "$n503" -gt 0 ]; then
  n="$(awk '$3 == 503 {print $2; exit}' "$W/pushes")"
  if grep -q '"UNAVAILABLE"' "$W/p$n.body" && grep -qi 'blob storage is unavailable' "$W/p$n.body" \
     && grep -qi '^retry-after:' "$W/p$n.hdrs"; then
    pass "a push during the outage: 503 UNAVAILABLE, Retry-After, $(head -c 200 "$W/p$n.body")"
  else fail "a 503 during the outage without the clear error: $(cat "$W/p$n.hdrs" "$W/p$n.body" | head -20)"; fi
else fail "no push was refused while the S3 server was down"; fi
after="$(awk -v t="$t_back" '$1 > t + 2 && $3 != 201' "$W/pushes" | wc -l)"
ok_after="$(awk -v t="$t_back" '$1 > t + 2 && $3 == 201' "$W/pushes" | wc -l)"
[ "$after" -eq 0 ] && [ "$ok_after" -gt 0 ] && pass "$ok_after pushes after the S3 server returned, all 201" \
  || fail "after the S3 server returned: $ok_after pushes 201, $after not"
bad=0
while read -r _ n code d; do
  [ "$code" = 201 ] || continue
  curl -sS -o "$W/g" "$BERTH_URL/v2/$REPO/blobs/$d" && [ "$(sha "$W/g")" = "$d" ] || bad=$((bad + 1))
done <"$W/pushes"
[ "$bad" -eq 0 ] && pass "every acknowledged push pulls back with its digest" || fail "$bad acknowledged pushes do not pull back"

step "blob GETs redirected to presigned URLs (storage.s3.redirect)"
stop_berth
BERTH_S3_EXTRA="redirect: true" start_berth "$W/registry"
d="$(awk '$3 == 201 {print $4; exit}' "$W/pushes")"
if http 307 GET "$BERTH_URL/v2/$REPO/blobs/$d"; then
  loc="$(header Location)"
  case "$loc" in
    "$S3_ENDPOINT/"*X-Amz-Signature=*) pass "GET blob: 307 to a presigned URL of the bucket" ;;
    *) fail "GET blob: 307 to '$loc', not a presigned URL of $S3_ENDPOINT" ;;
  esac
  curl -sS -L -o "$W/g" "$BERTH_URL/v2/$REPO/blobs/$d" && [ "$(sha "$W/g")" = "$d" ] \
    && pass "following the redirect gives the blob ($d)" || fail "the redirect does not give the blob"
  http 206 GET "$BERTH_URL/v2/$REPO/blobs/$d" -H "Range: bytes=0-9" \
    && pass "a ranged GET is served by berth itself (206)" || fail "ranged GET with redirects on"
else
  fail "GET blob with storage.s3.redirect: no 307"
fi

step "fsck of the data directory and the bucket"
stop_berth
if "$BERTH_BIN" fsck --config "$W/registry/berth-s3.yaml" --data-dir "$W/registry/data" --verify-digests >"$E2E_OUT/fsck.log" 2>&1; then
  pass "fsck --verify-digests clean: $(tail -1 "$E2E_OUT/fsck.log")"
else
  fail "fsck found problems: $(tail -5 "$E2E_OUT/fsck.log")"
fi

step "S3 endpoint over TLS (storage.s3.caFile, insecureSkipVerify)"
# Beside the S3 server's root: nobody (it runs the server) can read there, not in $W.
T="$(dirname "$S3_ROOT")/tls"; mkdir -p "$T"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=berth e2e CA" \
  -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$T/s3.key" -out "$T/s3.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$T/ext"
openssl x509 -req -in "$T/s3.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 1 \
  -extfile "$T/ext" -out "$T/s3.pem" 2>/dev/null
chmod 755 "$T"; chmod 644 "$T"/*
stop_s3
S3_TLS_CERT="$T/s3.pem" S3_TLS_KEY="$T/s3.key" S3_TLS_CA="$T/ca.pem"
S3_ENDPOINT="https://${S3_ENDPOINT#http://}"
export S3_ENDPOINT
run_s3
# Without the CA: berth stops at start and says why.
s3_config "$W/no-ca.yaml"
set +e
timeout 60 "$BERTH_BIN" serve --listen "127.0.0.1:$(free_port)" --data-dir "$W/registry/data" --no-auth \
  --config "$W/no-ca.yaml" >"$E2E_OUT/no-ca.log" 2>&1
st=$?
set -e
if [ "$st" -ne 0 ] && [ "$st" -ne 124 ] && grep -q 'storage.s3' "$E2E_OUT/no-ca.log" \
   && grep -qiE 'certificate|UnknownIssuer' "$E2E_OUT/no-ca.log"; then
  pass "without storage.s3.caFile berth stops at start (status $st): $(grep -m1 'storage.s3' "$E2E_OUT/no-ca.log" | cut -c1-240)"
else
  fail "an S3 endpoint with an unknown CA (status $st): $(tail -3 "$E2E_OUT/no-ca.log")"
fi
d="$(awk '$3 == 201 {print $4; exit}' "$W/pushes")"
BERTH_S3_EXTRA="caFile: $T/ca.pem" start_berth "$W/registry"
curl -sS -o "$W/g" "$BERTH_URL/v2/$REPO/blobs/$d" && [ "$(sha "$W/g")" = "$d" ] \
  && pass "with caFile: a blob stored before pulls back over TLS ($d)" || fail "with caFile: $d does not pull back"
head -c $((7 << 20)) /dev/urandom >"$W/tls-blob"
td="$(sha "$W/tls-blob")"
if http 202 POST "$BERTH_URL/v2/$REPO/blobs/uploads/" \
   && http 201 PUT "$(abs_url "$(header Location)")$( [[ "$(header Location)" == *\?* ]] && echo '&' || echo '?')digest=$td" \
        -H "Content-Type: application/octet-stream" --data-binary @"$W/tls-blob" \
   && curl -sS -o "$W/g" "$BERTH_URL/v2/$REPO/blobs/$td" && [ "$(sha "$W/g")" = "$td" ]; then
  pass "with caFile: a 7 MiB push (two multipart parts) over TLS pulls back"
else
  fail "with caFile: a push over TLS ($td) failed"
fi
[ -n "$(AWS_CA_BUNDLE="$T/ca.pem" objects "blobs/sha256/${td:7:2}/${td:7}")" ] \
  && pass "the blob pushed over TLS is in the bucket" || fail "the blob pushed over TLS is not in the bucket"
stop_berth
BERTH_S3_EXTRA="insecureSkipVerify: true" start_berth "$W/registry"
curl -sS -o "$W/g" "$BERTH_URL/v2/$REPO/blobs/$td" && [ "$(sha "$W/g")" = "$td" ] \
  && pass "insecureSkipVerify: connects without the CA and serves the blob" || fail "insecureSkipVerify: no blob"
stop_berth
finish
