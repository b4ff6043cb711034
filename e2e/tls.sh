#!/usr/bin/env bash
# HTTPS and /metrics on the real binary with real clients (issue 16). Nothing here turns
# certificate checks off: every client trusts a CA made by this script, and only it.
#   1. openssl makes a CA and a server certificate (127.0.0.1, localhost); berth serves HTTPS
#      (--tls-cert/--tls-key) with token auth on and Prometheus /metrics on a listener of its
#      own; the /v2/ challenge names an https realm; plain HTTP on the port gets no answer
#   2. skopeo copies an OCI layout to berth and back (--dest-cert-dir/--src-cert-dir: a directory
#      holding only the test CA); manifest digests identical
#   3. podman login/push/pull with --cert-dir; the pulled image's digest is the pushed one
#   4. oras (PyPI SDK, tls_verify on, the CA in REQUESTS_CA_BUNDLE) pushes an artifact and pulls
#      it back byte for byte
#   5. /metrics scraped before and after a known list of requests and parsed with the Prometheus
#      project's OpenMetrics parser (prometheus_client): berth_http_requests_total and the
#      duration histogram's count grew by exactly the requests made, per route kind, method and
#      status, and by nothing else; auth failures by reason; bytes sent at least the bodies
#   6. the certificate files replaced (a new key, same CA; the key first, so for a moment the
#      pair does not match) while a curl pull loop runs: no request fails, and openssl s_client
#      sees the new certificate within 10 s
set -euo pipefail
E2E_NAME="${E2E_NAME:-tls}"
BERTH_PROJECTS="${BERTH_PROJECTS:-tls}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for c in openssl skopeo podman jq python3 curl; do
  command -v "$c" >/dev/null || die "$c not installed (run e2e/setup.sh)"
done
python3 -c 'import oras.client, prometheus_client.openmetrics.parser' 2>/dev/null \
  || die "python modules oras / prometheus_client missing (run e2e/setup.sh)"
[ "$E2E_REGISTRY" = berth ] || die "tls.sh tests berth's own TLS: E2E_REGISTRY=berth only"

e2e_tmpdir W
W_LC="$W/work"; mkdir -p "$W_LC"
client_sandbox "$W"

# ===================================================================== 1. CA, certificates, berth
step "a CA and server certificates made with openssl; berth serves HTTPS and /metrics"
PKI="$W/pki"; mkdir -p "$PKI" "$W/certs" "$W/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=berth e2e CA $RANDOM" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null \
  || die "openssl: CA"
# server_cert NAME: a key and a certificate the CA signed for 127.0.0.1 and localhost
server_cert() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=berth e2e $1" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null &&
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 2 -out "$PKI/$1.crt" \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n') 2>/dev/null
}
server_cert one || die "openssl: server certificate one"
server_cert two || die "openssl: server certificate two"
fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1" | cut -d= -f2; }
cp "$PKI/one.crt" "$W/tls/tls.crt"; cp "$PKI/one.key" "$W/tls/tls.key"
cp "$PKI/ca.crt" "$W/certs/ca.crt" # the cert dir of skopeo and podman: the test CA only
export CURL_CA_BUNDLE="$PKI/ca.crt" REQUESTS_CA_BUNDLE="$PKI/ca.crt"
export BERTH_TLS_CERT="$W/tls/tls.crt" BERTH_TLS_KEY="$W/tls/tls.key"
export BERTH_METRICS_ADDR="127.0.0.1:$(free_port)"
start_berth "$W/berth"
REG="$BERTH_ADDR"; REPO="tls/app"
case "$BERTH_URL" in https://*) pass "berth serves $BERTH_URL" ;; *) die "not https: $BERTH_URL" ;; esac
check "the challenge's realm is https ($BERTH_REALM)" test "$BERTH_REALM" = "https://$REG/jwt/auth"
plain="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://$REG/v2/" 2>/dev/null || true)"
check "plain HTTP on the TLS port gets no HTTP answer (got '${plain:-nothing}')" test "${plain:-000}" = 000
served="$(openssl s_client -connect "$REG" -CAfile "$PKI/ca.crt" -verify_return_error -alpn h2 </dev/null 2>"$W/s_client.err")" \
  || { cat "$W/s_client.err" >&2; fail "openssl s_client verifying the test CA"; }
check "the handshake verifies against the test CA and agrees on h2 (ALPN)" grep -q "ALPN protocol: h2" <<<"$served"

# ===================================================================== 2. skopeo
step "skopeo copy layout -> berth -> layout, verifying the certificate"
SRC="$W_LC/src"
python3 "$E2E_DIR/oci_image.py" "$SRC" || die "writing the OCI layout"
SRC_DIGEST="$(jq -r '.manifests[0].digest' "$SRC/index.json")"
if run_logged skopeo-push "${SKOPEO[@]}" --debug copy --dest-cert-dir "$W/certs" \
     --dest-creds "$BERTH_USER:$BERTH_PASS" "oci:$SRC:v1" "docker://$REG/$REPO:v1"; then
  pass "skopeo push over HTTPS"
else fail "skopeo push over HTTPS (log: $E2E_OUT/skopeo-push.log)"; fi
if run_logged skopeo-pull "${SKOPEO[@]}" copy --src-cert-dir "$W/certs" \
     --src-creds "$BERTH_USER:$BERTH_PASS" "docker://$REG/$REPO:v1" "oci:$W_LC/back:v1"; then
  back="$(jq -r '.manifests[0].digest' "$W_LC/back/index.json")"
  check "skopeo pull over HTTPS: manifest $back = pushed $SRC_DIGEST" test "$back" = "$SRC_DIGEST"
else fail "skopeo pull over HTTPS (log: $E2E_OUT/skopeo-pull.log)"; fi
check "no client was told to skip verification" \
  bash -c "! grep -l -- 'tls-verify=false' '$E2E_OUT'/*.log"

# ===================================================================== 3. podman
step "podman login, push and pull with --cert-dir"
PODMAN=(podman --root "$W/podman/root" --runroot "$W/podman/run" --storage-driver vfs
        --cgroup-manager cgroupfs --events-backend none)
podman_ok=1
run_logged podman-load "${PODMAN[@]}" pull --signature-policy "$W/policy.json" "oci:$SRC:v1" \
  || { podman_ok=0; fail "podman load of the layout"; }
if [ "$podman_ok" = 1 ] && printf '%s' "$BERTH_PASS" | run_logged podman-login "${PODMAN[@]}" login \
     --cert-dir "$W/certs" -u "$BERTH_USER" --password-stdin "$REG"; then
  pass "podman login over HTTPS"
else podman_ok=0; fail "podman login over HTTPS (log: $E2E_OUT/podman-login.log)"; fi
if [ "$podman_ok" = 1 ]; then
  img="$("${PODMAN[@]}" images -q | head -1)"
  if run_logged podman-push "${PODMAN[@]}" push --cert-dir "$W/certs" --signature-policy "$W/policy.json" \
       --digestfile "$W/podman.digest" "$img" "docker://$REG/$REPO:podman"; then
    pass "podman push over HTTPS ($(cat "$W/podman.digest"))"
    run_logged podman-rmi "${PODMAN[@]}" rmi -a -f || true
    if run_logged podman-pull "${PODMAN[@]}" pull --cert-dir "$W/certs" --signature-policy "$W/policy.json" \
         "$REG/$REPO:podman"; then
      dg="$("${PODMAN[@]}" image inspect --format '{{.Digest}}' "$REG/$REPO:podman")"
      check "podman pull over HTTPS: digest $dg = pushed" test "$dg" = "$(cat "$W/podman.digest")"
    else fail "podman pull over HTTPS (log: $E2E_OUT/podman-pull.log)"; fi
  else fail "podman push over HTTPS (log: $E2E_OUT/podman-push.log)"; fi
fi

# ===================================================================== 4. oras
step "oras (python SDK) push and pull, certificate verified"
mkdir -p "$W/oras/out"
head -c 100000 /dev/urandom >"$W/oras/artifact.bin"
if (cd "$W/oras" && ORAS_USER="$BERTH_USER" ORAS_PASS="$BERTH_PASS" \
      python3 - "$REG" "$REPO" >"$E2E_OUT/oras.log" 2>&1) <<'PY'
import hashlib, os, sys
import oras.client
reg, repo = sys.argv[1:3]
client = oras.client.OrasClient(hostname=reg, insecure=False, tls_verify=True)
client.login(username=os.environ["ORAS_USER"], password=os.environ["ORAS_PASS"], hostname=reg,
             config_path=os.path.abspath("docker-config.json"))
# oras-py reuses a cached token whatever its scope (its issue #67): drop it when the registry
# answers insufficient_scope, as clients.sh does
_authenticate = client.auth.authenticate_request
def authenticate_request(original, headers, refresh=False):
    insufficient = "insufficient_scope" in original.headers.get("Www-Authenticate", "")
    return _authenticate(original, headers, refresh=refresh or insufficient)
client.auth.authenticate_request = authenticate_request
resp = client.push(target=f"{reg}/{repo}:artifact", files=["artifact.bin:application/octet-stream"])
print("push:", resp.status_code)
resp.raise_for_status()
got = client.pull(target=f"{reg}/{repo}:artifact", outdir="out")
print("pulled:", got)
want = hashlib.sha256(open("artifact.bin", "rb").read()).hexdigest()
have = hashlib.sha256(open(got[0], "rb").read()).hexdigest()
assert want == have, (want, have)
print("same bytes", have)
PY
then pass "oras push and pull over HTTPS: same bytes"
else fail "oras over HTTPS (log: $E2E_OUT/oras.log)"; tail -n 15 "$E2E_OUT/oras.log" | sed 's/^/    /' >&2; fi

# ===================================================================== 5. metrics
step "/metrics before and after known requests, parsed with prometheus_client"
TOKEN="$(registry_token "repository:$REPO:pull")" || die "token for $REPO"
LAYER="$(jq -r '.layers[0].digest' "$SRC/blobs/sha256/${SRC_DIGEST#sha256:}")"
if python3 - "$BERTH_URL" "http://$BERTH_METRICS_ADDR/metrics" "$PKI/ca.crt" "$TOKEN" "$REPO" "$LAYER" \
     >"$E2E_OUT/metrics.log" 2>&1 <<'PY'
import collections, ssl, sys, urllib.error, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
base, metrics_url, ca, token, repo, layer = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)

def scrape():
    with urllib.request.urlopen(metrics_url) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text"), r.headers["Content-Type"]
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples

def call(method, path, auth):
    req = urllib.request.Request(base + path, method=method)
    if auth:
        req.add_header("Authorization", "Bearer " + token)
    req.add_header("Accept", "application/vnd.oci.image.manifest.v1+json")
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            return r.status, len(r.read())
    except urllib.error.HTTPError as e:
        return e.code, len(e.read())

plan = ([("GET", f"/v2/{repo}/blobs/{layer}", True, 200, "blob")] * 3
        + [("HEAD", f"/v2/{repo}/manifests/v1", True, 200, "manifest")] * 2
        + [("GET", f"/v2/{repo}/manifests/v1", True, 200, "manifest")]
        + [("GET", f"/v2/{repo}/blobs/sha256:" + "0" * 64, True, 404, "blob")]
        + [("GET", f"/v2/{repo}/tags/list", True, 200, "tags")]
        + [("GET", "/v2/", False, 401, "base")] * 4
        + [("GET", f"/v2/{repo}/tags/list", False, 401, "tags")])
before = scrape()
made = collections.Counter()
body_bytes = 0
for method, path, auth, want, route in plan:
    status, n = call(method, path, auth)
    assert status == want, (method, path, status, want)
    made[(route, method, str(status))] += 1
    body_bytes += n
after = scrape()

def delta(name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)

bad = 0
for (route, method, status), n in sorted(made.items()):
    got = delta("berth_http_requests_total", route=route, method=method, status=status)
    hist = delta("berth_http_request_duration_seconds_count", route=route, method=method, status=status)
    ok = got == n and hist == n
    bad += not ok
    print(f"{'ok ' if ok else 'BAD'} {route:9} {method:5} {status}: made {n}, requests_total +{got:g}, duration count +{hist:g}")
total = sum(v - before.get(k, 0) for k, v in after.items() if k[0] == "berth_http_requests_total")
print(f"all berth_http_requests_total: +{total:g} for {len(plan)} requests made")
bad += total != len(plan)
no_token = delta("berth_auth_failures_total", reason="no_token")
print(f"berth_auth_failures_total{{reason=no_token}}: +{no_token:g} (want 5)")
bad += no_token != 5
sent = delta("berth_http_sent_bytes_total")
received = delta("berth_http_received_bytes_total")
print(f"bytes sent +{sent:g} (bodies {body_bytes}), received +{received:g}")
bad += not (sent >= body_bytes > 0 and received > 0)
for name in ("berth_uploads_in_progress", "berth_blob_transfers_max", "berth_db_pool_max_connections",
             "berth_gc_sweeps_total", "berth_gc_pending_reviews"):
    present = any(k[0] == name for k in after)
    print(f"{name}: {'present' if present else 'MISSING'}")
    bad += not present
sys.exit(1 if bad else 0)
PY
then pass "metrics counted exactly the requests made ($(grep -c '^ok ' "$E2E_OUT/metrics.log") label sets; $E2E_OUT/metrics.log)"
  sed 's/^/    /' "$E2E_OUT/metrics.log"
else fail "metrics do not match the requests made (log: $E2E_OUT/metrics.log)"; sed 's/^/    /' "$E2E_OUT/metrics.log" >&2; fi

# ===================================================================== 6. certificate rotation
step "certificate files replaced under a pull loop"
TOKEN="$(registry_token "repository:$REPO:pull")" || die "token for $REPO"
rm -f "$W/stop"
(
  ok=0 failed=0
  while [ ! -e "$W/stop" ]; do
    code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $TOKEN" \
      "$BERTH_URL/v2/$REPO/blobs/$LAYER" 2>>"$W/loop.err" || true)"
    if [ "$code" = 200 ]; then ok=$((ok + 1)); else failed=$((failed + 1)); echo "got '$code'" >>"$W/loop.err"; fi
  done
  echo "$ok $failed" >"$W/loop.result"
) &
LOOP=$!
sleep 1
# the key first, then the certificate: each replaced in one rename, as the kubelet does
cp "$PKI/two.key" "$W/tls/tls.key.new" && mv "$W/tls/tls.key.new" "$W/tls/tls.key"
sleep 1.5
cp "$PKI/two.crt" "$W/tls/tls.crt.new" && mv "$W/tls/tls.crt.new" "$W/tls/tls.crt"
want="$(fingerprint "$PKI/two.crt")"; t0=$(date +%s%N); seen=""
for _ in $(seq 1 100); do
  seen="$(openssl s_client -connect "$REG" -CAfile "$PKI/ca.crt" -verify_return_error </dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2 || true)"
  [ "$seen" = "$want" ] && break
  sleep 0.1
done
took=$(( ($(date +%s%N) - t0) / 1000000 ))
check "the new certificate is served ${took} ms after its file was replaced" test "$seen" = "$want"
sleep 1
touch "$W/stop"; wait "$LOOP" || true
read -r loop_ok loop_failed <"$W/loop.result"
check "pull loop across the rotation: $loop_ok pulls, $loop_failed failed" \
  test "$loop_failed" = 0 -a "$loop_ok" -gt 10
[ -s "$W/loop.err" ] && sed 's/^/    /' "$W/loop.err" | head -5 >&2
check "berth kept the old certificate while the pair did not match, and said so" \
  grep -q "does not belong to the certificate" "$BERTH_LOG"
check "berth logged the renewal" grep -q "serving the renewed certificate" "$BERTH_LOG"

stop_berth
finish
