#!/usr/bin/env bash
# Blobs on S3-compatible object storage (issue 15): the OCI conformance suite and the real
# clients (skopeo, podman, oras: clients.sh) against berth keeping its blobs in a bucket of a
# real S3-compatible server (s3s-fs on 127.0.0.1, lib.sh E2E_STORAGE=s3): one `berth serve`
# on SQLite, then 3 replicas on one PostgreSQL database behind the round-robin proxy with no
# shared data directory for blobs. Each run also checks that the blobs are in the bucket and
# not in the data directory; the clients' run on 3 replicas has blob GETs redirected to
# presigned URLs of the bucket (storage.s3.redirect). memory.sh on S3: a 2 GiB blob pushed (monolithic and chunked)
# and pulled with berth's peak RSS under 100 MiB. Output in e2e/out/s3-* (short names:
# podman's run root limit).
set -euo pipefail
E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rc=0
E2E_STORAGE=s3 E2E_NAME=s3-conformance bash "$E2E_DIR/conformance.sh" || rc=1
E2E_STORAGE=s3 E2E_NAME=s3-clients bash "$E2E_DIR/clients.sh" || rc=1
E2E_STORAGE=s3 E2E_NAME=s3-memory bash "$E2E_DIR/memory.sh" || rc=1
E2E_STORAGE=s3 E2E_REPLICAS=3 E2E_NAME=s3r3-conformance bash "$E2E_DIR/conformance.sh" || rc=1
E2E_STORAGE=s3 E2E_REPLICAS=3 BERTH_S3_EXTRA="redirect: true" E2E_NAME=s3r3-clients bash "$E2E_DIR/clients.sh" || rc=1
exit "$rc"
