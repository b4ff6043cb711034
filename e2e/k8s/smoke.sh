#!/usr/bin/env bash
# Smoke test of the e2e control plane: builds (if needed, via build.sh), starts it in a temp dir,
# checks Deployments -> ReplicaSets -> Pods, ownerReference garbage collection, TokenRequest with
# audience `berth` + TokenReview, helm against the cluster; then stops it. One PASS/FAIL line per
# check; exits non-zero on any failure. SMOKE_SKIP_BUILD=1 skips build.sh; SMOKE_KEEP=1 keeps the dir.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

say() { printf '[smoke] %s\n' "$*"; }
passed=0 failed=0
pass() { printf 'PASS: %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; failed=$((failed + 1)); }
# eventually SECS CMD...: retry CMD every 0.5 s until it succeeds or SECS pass.
eventually() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

if [ -z "${SMOKE_SKIP_BUILD:-}" ]; then
  "$HERE/build.sh" || { fail "build.sh"; echo "0 passed, 1 failed"; exit 1; }
fi

DIR="$(mktemp -d "${TMPDIR:-/tmp}/berth-k8s-smoke.XXXXXX")"
cleanup() {
  "$HERE/controlplane.sh" stop "$DIR" || true
  if [ -n "${SMOKE_KEEP:-}" ] || [ "$failed" -gt 0 ]; then say "kept $DIR (logs in $DIR/logs)"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

if "$HERE/controlplane.sh" start "$DIR"; then
  pass "control plane started"
else
  fail "control plane start"; echo "$passed passed, $failed failed"; exit 1
fi
export KUBECONFIG="$DIR/kubeconfig"
k() { "$K8S_BIN_DIR/kubectl" "$@"; }

# ---------------------------------------------------------------------------------- kubectl get ns
if out="$(k get ns 2>&1)" && grep -q '^default ' <<<"$out" && grep -q '^kube-system ' <<<"$out"; then
  pass "kubectl get ns ($(tail -n +2 <<<"$out" | awk '{print $1}' | tr '\n' ' '))"
else
  fail "kubectl get ns: $out"
fi
server_version="$(k version -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | tail -1)"
if [ "$server_version" = "$K8S_VERSION" ]; then pass "server version $server_version"; else fail "server version '$server_version' != $K8S_VERSION"; fi

# ------------------------------------------------------------- Deployment -> ReplicaSet -> Pod
k apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      containers:
      - name: c
        image: berth.invalid/smoke:1
EOF
t0=$(date +%s.%N)
has_rs() { [ -n "$(k get rs -n default -l app=smoke -o name)" ]; }
has_pod() { [ -n "$(k get pods -n default -l app=smoke -o name)" ]; }
if eventually 30 has_rs; then
  owner="$(k get rs -n default -l app=smoke -o jsonpath='{.items[0].metadata.ownerReferences[0].kind}/{.items[0].metadata.ownerReferences[0].name}')"
  pass "Deployment created ReplicaSet $(k get rs -n default -l app=smoke -o name) (owner $owner)"
else
  fail "no ReplicaSet for Deployment smoke within 30 s"
fi
if eventually 30 has_pod; then
  pass "ReplicaSet created Pod $(k get pods -n default -l app=smoke -o name) (phase $(k get pods -n default -l app=smoke -o jsonpath='{.items[0].status.phase}')) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
else
  fail "no Pod for Deployment smoke within 30 s"
fi

# --------------------------------------------------------------- ownerReference garbage collection
k create configmap gc-parent -n default --from-literal=a=b >/dev/null
parent_uid="$(k get configmap gc-parent -n default -o jsonpath='{.metadata.uid}')"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: gc-child
  namespace: default
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: gc-parent
    uid: $parent_uid
data: {a: b}
EOF
if k get configmap gc-child -n default >/dev/null 2>&1; then
  k delete configmap gc-parent -n default --wait=true >/dev/null
  t0=$(date +%s.%N)
  child_gone() { ! k get configmap gc-child -n default >/dev/null 2>&1; }
  if eventually 30 child_gone; then
    pass "garbage collector deleted gc-child $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s after its owner"
  else
    fail "gc-child still there 30 s after deleting its owner gc-parent"
  fi
else
  fail "could not create gc-child with an ownerReference"
fi

# ------------------------------------------------------------------ TokenRequest + TokenReview
k create serviceaccount smoke-sa -n default >/dev/null
token="$(k create token smoke-sa -n default --audience berth --duration 10m 2>&1)"
if [ "$(grep -o '\.' <<<"$token" | wc -l)" = 2 ]; then
  pass "kubectl create token smoke-sa --audience berth"
else
  fail "kubectl create token: $token"
fi
review() { # review AUDIENCE -> TokenReview status as YAML
  k create -o yaml -f - <<EOF
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec:
  token: $token
  audiences: [$1]
EOF
}
out="$(review berth 2>&1)"
if grep -q 'authenticated: true' <<<"$out" && grep -q 'username: system:serviceaccount:default:smoke-sa' <<<"$out" \
   && grep -A2 '^  audiences:' <<<"$out" | grep -q -- '- berth'; then
  pass "TokenReview (audiences [berth]) authenticated system:serviceaccount:default:smoke-sa"
else
  fail "TokenReview (audiences [berth]): $out"
fi
out="$(review not-berth 2>&1)"
if grep -q 'authenticated: true' <<<"$out"; then
  fail "TokenReview with audiences [not-berth] authenticated a token for audience berth"
else
  pass "TokenReview with audiences [not-berth] rejects it"
fi

# ----------------------------------------------------------------------------------------- helm
if out="$("$K8S_BIN_DIR/helm" version --short 2>&1)" && [[ "$out" == "$HELM_VERSION"* ]] \
   && "$K8S_BIN_DIR/helm" --kubeconfig "$KUBECONFIG" list -A >/dev/null 2>&1; then
  pass "helm $out talks to the cluster (helm list -A)"
else
  fail "helm: $out; $("$K8S_BIN_DIR/helm" --kubeconfig "$KUBECONFIG" list -A 2>&1 | tail -3)"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
