#!/usr/bin/env bash
# Several replicas (issue 14): the OCI conformance suite and the real clients (skopeo, podman,
# oras: clients.sh) against 3 `berth serve` replicas on one PostgreSQL database and one data
# directory, behind haproxy sending each request to the next replica in turn (lib.sh,
# E2E_REPLICAS=3), with token authentication on. Each run also checks that every replica
# served its share of the requests. Output in e2e/out/r3-conformance and
# e2e/out/r3-clients (short names: podman refuses a run root longer than 50 characters).
set -euo pipefail
E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rc=0
E2E_REPLICAS=3 E2E_NAME=r3-conformance bash "$E2E_DIR/conformance.sh" || rc=1
E2E_REPLICAS=3 E2E_NAME=r3-clients bash "$E2E_DIR/clients.sh" || rc=1
exit "$rc"
