#!/usr/bin/env bash
# Runs the whole e2e suite: setup.sh, then conformance.sh, clients.sh, replicas.sh, s3.sh, s3-faults.sh, auth.sh, tls.sh, image.sh, ui.sh, operator.sh, memory.sh (each
# in its own process with its own registry and temp dirs). Prints one summary line per script and,
# last, "N passed, N failed" counting scripts; exits non-zero if any script failed.
#   E2E_SCRIPTS="conformance clients"   run a subset (setup always runs first)
# Other knobs (BERTH_BIN, E2E_REGISTRY, BERTH_AUTH, E2E_KEEP, ...) are described in lib.sh.
set -euo pipefail
E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

scripts=(setup)
for s in ${E2E_SCRIPTS:-conformance clients replicas s3 s3-faults auth tls image ui operator memory}; do scripts+=("${s%.sh}"); done

names=(); results=(); times=()
passed=0; failed=0
for s in "${scripts[@]}"; do
  printf '\n######## e2e/%s.sh  (%s)\n' "$s" "$(date +%H:%M:%S)"
  t0=$(date +%s)
  rc=0
  bash "$E2E_DIR/$s.sh" || rc=$?
  dt=$(( $(date +%s) - t0 ))
  names+=("$s.sh"); times+=("$dt")
  if [ "$rc" -eq 0 ]; then results+=(PASS); passed=$((passed + 1))
  else results+=("FAIL(exit $rc)"); failed=$((failed + 1)); fi
  printf '######## e2e/%s.sh: %s in %ss\n' "$s" "${results[-1]}" "$dt"
done

auth="${BERTH_AUTH:-on}"; [ "${E2E_REGISTRY:-berth}" = reference ] && auth=off
printf '\n######## e2e summary (registry: %s, auth: %s)\n' "${E2E_REGISTRY:-berth}" "$auth"
for i in "${!names[@]}"; do
  printf '  %-16s %-14s %5ss\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
