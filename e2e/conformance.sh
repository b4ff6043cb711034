#!/usr/bin/env bash
# OCI distribution-spec conformance suite against a fresh berth (see versions.env for the pin).
#
# Every API and data switch a complete v1.1 registry supports is enabled: pull, push, blob /
# manifest / tag delete (all atomic), cross-repo + anonymous mount, upload cancel,
# Docker-Content-Digest headers required, tag list, referrers; image, index, nested index,
# artifact, subject, missing subject, artifact list, subject list, data field,
# nondistributable layers, custom fields, no layers, empty blob, sha512.
# Left off by default (override with the env var):
#   OCI_DATA_SPARSE=false         manifests referencing blobs that were never pushed: the spec
#                                 lets a registry reject those (MANIFEST_BLOB_UNKNOWN).
#   OCI_API_MANIFESTS_TAG_PARAM=false  PUT manifest by digest with ?tag= params: a post-1.1
#                                 ("1.1+dev") feature, not part of distribution-spec v1.1.
# Any OCI_* variable already set in the environment wins (e.g. OCI_USERNAME/OCI_PASSWORD).
#
# Authentication (berth's default): the repositories live in the private project
# `conformance`, whose Owner is lib.sh's e2e user; the suite logs in as that user
# (OCI_USERNAME/OCI_PASSWORD) and goes through the Docker token flow (401 challenge ->
# GET /jwt/auth with Basic credentials -> Bearer token) itself. BERTH_AUTH=off: no login.
#
# Results (results.yaml, junit.xml, report.html with every request/response, conformance.log)
# go to e2e/out/conformance/. Exit non-zero on any failed/errored test. Tests the suite marks
# "Skip" (the registry gave a spec-allowed "unsupported" answer to an optional feature, e.g.
# single-POST upload) are listed by name but do not fail the run unless CONFORMANCE_STRICT=1.
set -euo pipefail
E2E_NAME="${E2E_NAME:-conformance}"
BERTH_PROJECTS="${BERTH_PROJECTS:-conformance}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ -x "$CONFORMANCE_BIN" ] || die "conformance binary missing: $CONFORMANCE_BIN (run e2e/setup.sh)"

step "start registry ($E2E_REGISTRY)"
e2e_tmpdir WORK
start_berth "$WORK"

RESULTS="$E2E_OUT"
rm -f "$RESULTS"/results.yaml "$RESULTS"/junit.xml "$RESULTS"/report.html "$RESULTS"/conformance.log

export OCI_REGISTRY="$BERTH_ADDR"
export OCI_TLS="${OCI_TLS:-disabled}"
export OCI_VERSION="${OCI_VERSION:-1.1}"
export OCI_REPO1="${OCI_REPO1:-conformance/repo1}"
export OCI_REPO2="${OCI_REPO2:-conformance/repo2}"
export OCI_RESULTS_DIR="$RESULTS"
export OCI_LOG="${OCI_LOG:-warn}"
if [ "$BERTH_AUTH_ON" = 1 ] && [ -z "${OCI_USERNAME:-}" ]; then
  OCI_USERNAME="$BERTH_USER"; OCI_PASSWORD="$BERTH_PASS"
fi
[ -n "${OCI_USERNAME:-}" ] && export OCI_USERNAME
[ -n "${OCI_PASSWORD:-}" ] && export OCI_PASSWORD
export OCI_CONFIGURATION=/dev/null # never pick up a stray ./oci-conformance.yaml

# API switches
for v in PING PULL PUSH \
         BLOBS_ATOMIC BLOBS_DELETE BLOBS_DIGEST_HEADER BLOBS_MOUNT_ANONYMOUS BLOBS_UPLOAD_CANCEL \
         MANIFESTS_ATOMIC MANIFESTS_DELETE MANIFESTS_DIGEST_HEADER \
         TAGS_ATOMIC TAGS_DELETE TAGS_LIST REFERRER; do
  n="OCI_API_$v"; export "$n=${!n:-true}"
done
export OCI_API_MANIFESTS_TAG_PARAM="${OCI_API_MANIFESTS_TAG_PARAM:-false}"
# data switches
for v in IMAGE INDEX INDEX_LIST ARTIFACT SUBJECT SUBJECT_MISSING ARTIFACT_LIST SUBJECT_LIST \
         DATA_FIELD NONDISTRIBUTABLE CUSTOM_FIELDS NO_LAYERS EMPTY_BLOB SHA512; do
  n="OCI_DATA_$v"; export "$n=${!n:-true}"
done
export OCI_DATA_SPARSE="${OCI_DATA_SPARSE:-false}"

step "run conformance suite $CONFORMANCE_VERSION"
env | grep -E '^OCI_' | grep -v -E '^OCI_PASSWORD=' | sort | sed 's/^/  /'
[ -n "${OCI_PASSWORD:-}" ] && echo "  OCI_PASSWORD=(set)"
start=$(date +%s)
set +e
(cd "$E2E_SCRATCH" && "$CONFORMANCE_BIN") >"$RESULTS/conformance.log" 2>&1
rc=$?
set -e
log "conformance exited $rc after $(( $(date +%s) - start ))s; full output: $RESULTS/conformance.log"
# the runner's own API / data status tables (its full test tree is in conformance.log)
sed -n '/^API conformance:/,$p' "$RESULTS/conformance.log" | grep -v '^time=.*level=' || true

step "summary"
[ -s "$RESULTS/results.yaml" ] || die "no results.yaml written (the runner failed to start; see log above)"
[ -s "$RESULTS/junit.xml" ] || die "no junit.xml written"
python3 - "$RESULTS/junit.xml" "${CONFORMANCE_STRICT:-0}" <<'PY' >"$E2E_SCRATCH/summary" || true
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
strict = sys.argv[2] == "1"
counts = {"passed": 0, "failure": 0, "error": 0, "skipped": 0}
rows = {"failure": [], "error": [], "skipped": []}
for tc in root.iter("testcase"):
    st = tc.get("status") or "error"
    counts[st] = counts.get(st, 0) + 1
    if st != "passed":
        detail = " | ".join(l for l in (tc.findtext("system-out") or "").splitlines() if l.strip())
        rows.setdefault(st, []).append((tc.get("name").removeprefix("OCI Conformance Test/"), detail))
print("conformance: %d passed, %d failed, %d errors, %d skipped" % (
    counts["passed"], counts["failure"], counts["error"], counts["skipped"]))
for st, label in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "SKIP")):
    for name, detail in rows.get(st, []):
        print("  %-5s %s\n        %s" % (label, name, detail[:700]))
ok = (counts["failure"] == 0 and counts["error"] == 0 and counts["passed"] > 0
      and (not strict or counts["skipped"] == 0))
print("CONFORMANCE_OK" if ok else "CONFORMANCE_NOT_OK")
PY
grep -v '^CONFORMANCE_' "$E2E_SCRATCH/summary"
if grep -q '^CONFORMANCE_OK$' "$E2E_SCRATCH/summary" && [ "$rc" -eq 0 ]; then
  pass "OCI conformance ($(head -1 "$E2E_SCRATCH/summary"))"
elif grep -q '^CONFORMANCE_OK$' "$E2E_SCRATCH/summary"; then
  fail "conformance runner exited $rc although junit.xml shows no failure"
else
  fail "OCI conformance ($(head -1 "$E2E_SCRATCH/summary")); details in $RESULTS/report.html"
fi
check_replicas_shared
check_storage_used "$WORK"
finish
