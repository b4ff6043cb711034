#!/usr/bin/env bash
# The operator against a real Kubernetes control plane (etcd, kube-apiserver and
# kube-controller-manager built from the k8s.io/kubernetes Go module, see k8s/):
#   1. CRDs applied with kubectl; the Helm chart rendered and applied with --dry-run=server;
#      the chart's RBAC applied for real, and the operator run with its ServiceAccount's
#      token (so the least-privilege rules are what is tested);
#   2. a Registry and a Project: Ready, every child object with its owner reference;
#      invalid objects refused by the API server with a clear message;
#   3. the registry "pod" started as a local process from the Pod the controller-manager made
#      from the operator's Deployment (command, args, env, mounted ConfigMap/Secret/PVC,
#      projected ServiceAccount token, user), marked ready: the Registry turns Ready;
#   4. skopeo pushes and pulls with the generated dockerconfigjson Secrets; flipping the
#      Project to private refuses anonymous pulls within seconds; a ServiceAccount token
#      (audience berth) pushes;
#   5. the operator is killed mid-reconcile and restarted: it converges with no duplicate
#      objects, the signing key kept, and nothing rewritten for unchanged objects;
#      a second replica stands by and takes the Lease when the leader dies;
#   6. garbage collection driven by the operator: the reviews the pushes queued are swept and
#      status.garbageCollection shows it; a CleanupPolicy run on the berth.dev/run-now
#      annotation, first as a dry run (would-delete list in status, nothing deleted), then for
#      real: exactly the expected tags go, those whose digest a Pod runs stay, the annotation is
#      removed, Events and metrics; the sweep after it frees their blobs (Registry status);
#   7. deleting the Project deletes its images; deleting the Registry garbage-collects
#      every child (controller-manager) and the finalizer removes the cluster-scoped binding;
#   8. a Registry of 3 replicas on PostgreSQL (a server the script starts) and a ReadWriteMany
#      claim: DatabaseReady, the URL from the Secret as an environment variable (never in the
#      ConfigMap), RollingUpdate with maxUnavailable 0, a PodDisruptionBudget; its 3 pods run
#      behind haproxy (the Service), push and pull spread over them; a spec change rolls the
#      pods while a push loop runs: no push or pull fails; PostgreSQL stopped: DatabaseReady False, the
#      pods unready, 503 UNAVAILABLE; started again: all recover without a restart;
#   9. a Registry of 2 replicas with blobs on S3 (an S3 server the script starts) and metadata
#      on PostgreSQL: no claim at all, the S3 credentials from a Secret as AWS_ACCESS_KEY_ID /
#      AWS_SECRET_ACCESS_KEY (never in the ConfigMap); its pods run behind haproxy, an image
#      pushed through it pulls back and its blobs are objects of the bucket.
# Prints the control-plane start time and the time to Ready.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$E2E_DIR/k8s/env.sh"

for c in jq python3 curl skopeo unshare setpriv base64 sqlite3; do
  command -v "$c" >/dev/null || die "$c is missing (run e2e/setup.sh)"
done
[ -x "$BERTH_BIN" ] || die "berth binary not found at $BERTH_BIN"

step "build the control plane (cached by version)"
bash "$E2E_DIR/k8s/build.sh" >"$E2E_OUT/build.log" 2>&1 || { tail -30 "$E2E_OUT/build.log"; die "k8s/build.sh failed"; }
grep -E 'built|cached|present|skip' "$E2E_OUT/build.log" | tail -6 || true

e2e_tmpdir W
chmod 755 "$W"
CP="$W/cp"
OPERATOR_PIDS=()
REGISTRY_POD_PID=""
cleanup_k8s() {
  set +e
  [ -n "$REGISTRY_POD_PID" ] && kill "$REGISTRY_POD_PID" 2>/dev/null
  for p in "${POD_PID[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  [ -n "${HAPROXY_PID:-}" ] && kill "$HAPROXY_PID" 2>/dev/null
  [ -e "$W/stop-pushes" ] || touch "$W/stop-pushes" 2>/dev/null
  stop_postgres
  for p in "${OPERATOR_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  bash "$E2E_DIR/k8s/controlplane.sh" stop "$CP" >/dev/null 2>&1
}
trap 'cleanup_k8s; e2e_cleanup' EXIT

step "start the control plane"
t0=$(date +%s.%N)
bash "$E2E_DIR/k8s/controlplane.sh" start "$CP" 2>&1 | tee "$E2E_OUT/controlplane.log" | grep -E 'ready|started' || true
source "$CP/env"
CP_SECONDS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
log "TIMING control plane (etcd + kube-apiserver + kube-controller-manager) ready in ${CP_SECONDS} s"
API_HOSTPORT="${KUBE_APISERVER_URL#https://}"
k() { "$K8S_BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG" "$@"; }
k version -o json | jq -r '"server " + .serverVersion.gitVersion'

# ===================================================================== CRDs and chart
step "apply crds/ and the Helm chart"
k apply -f "$REPO_ROOT/crds/" >"$E2E_OUT/crds.log"
check "CRDs established" k wait --for=condition=Established --timeout=30s \
  crd/registries.berth.dev crd/projects.berth.dev crd/cleanuppolicies.berth.dev
k create namespace berth-system >/dev/null
"$K8S_BIN_DIR/helm" template berth "$REPO_ROOT/charts/berth" -n berth-system \
  --set image.repository=berth --set image.tag=e2e >"$W/chart.yaml"
check "the rendered Helm chart is accepted by the API server (apply --dry-run=server)" \
  k apply --dry-run=server -n berth-system -f "$W/chart.yaml"
# ServiceMonitors need the Prometheus Operator's CRDs, absent here: rendered and read, not applied
"$K8S_BIN_DIR/helm" template berth "$REPO_ROOT/charts/berth" -n berth-system --set image.tag=e2e \
  --set metrics.serviceMonitor.enabled=true --set metrics.serviceMonitor.labels.release=prom >"$W/chart-sm.yaml"
check "metrics.serviceMonitor.enabled renders a ServiceMonitor for the operator and one for every Registry's metrics port" \
  python3 - "$W/chart-sm.yaml" <<'PY'
import sys, yaml
sms = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ServiceMonitor"}
op, regs = sms["berth-operator"], sms["berth-registries"]
assert op["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator", op
assert regs["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/component": "registry",
                                                   "app.kubernetes.io/managed-by": "berth-operator"}, regs
assert regs["spec"]["namespaceSelector"] == {"any": True}
assert all(d["spec"]["endpoints"][0]["port"] == "metrics" and d["metadata"]["labels"]["release"] == "prom"
           for d in sms.values())
PY
# The chart's RBAC for real: the operator runs with its ServiceAccount's token.
python3 - "$W/chart.yaml" "$W/chart-rbac.yaml" <<'PY'
import sys
docs = open(sys.argv[1]).read().split("\n---")
keep = [d for d in docs if any(f"\nkind: {k}\n" in "\n" + d + "\n" for k in
        ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"))]
open(sys.argv[2], "w").write("\n---".join(keep))
PY
k apply -n berth-system -f "$W/chart-rbac.yaml" >"$E2E_OUT/chart-rbac.log"
OP_SA="$(k get sa -n berth-system -o jsonpath='{.items[?(@.metadata.name!="default")].metadata.name}')"
OP_TOKEN="$(k create token "$OP_SA" -n berth-system --duration 2h)"
OPERATOR_KUBECONFIG="$W/operator.kubeconfig"
cat >"$OPERATOR_KUBECONFIG" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$KUBE_APISERVER_URL", certificate-authority: "$KUBE_CA_FILE"}}]
users: [{name: operator, user: {token: "$OP_TOKEN"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: operator}}]
current-context: e2e
YAML
log "operator runs as ServiceAccount berth-system/$OP_SA (the chart's RBAC)"

# start_operator NAME METRICS_PORT: berth operator in the background, log in $E2E_OUT/NAME.log
start_operator() {
  KUBECONFIG="$OPERATOR_KUBECONFIG" "$BERTH_BIN" operator --registry-address public-host \
    --metrics-listen "127.0.0.1:$2" --lease-namespace berth-system --identity "$1" \
    --registry-image berth:e2e >>"$E2E_OUT/$1.log" 2>&1 &
  OPERATOR_PIDS+=($!)
  LAST_OPERATOR_PID=$!
}
readyz_says() { [ "$(curl -fsS "http://127.0.0.1:$1/readyz")" = "$2" ]; }
leader_is() { [ "$(k get lease berth-operator -n berth-system -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" = "$1" ]; }
wait_until() { # wait_until SECONDS CMD...: poll every 0.25 s
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$deadline" ] && return 1; sleep 0.25; done
}
M1=$(free_port); M2=$(free_port)
start_operator operator-a "$M1"; OP_A=$LAST_OPERATOR_PID
check "operator-a holds the Lease and its /readyz says leader" wait_until 30 \
  bash -c "$(declare -f k leader_is readyz_says); leader_is operator-a && readyz_says $M1 leader"

# ===================================================================== Registry and Project
step "create a Registry and a Project"
k create namespace demo >/dev/null
check "kubectl apply -k config/default is accepted (dry run on the server)" \
  k apply --dry-run=server -k "$REPO_ROOT/config/default"
check "the samples in config/samples are valid as they are (dry run on the server)" \
  k apply --dry-run=server -k "$REPO_ROOT/config/samples"
k create serviceaccount builder -n demo >/dev/null
REG_PORT=$(free_port)
GC_REVIEW_DELAY=10s
k apply -f - >/dev/null <<YAML
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata: {name: berth, namespace: demo}
spec:
  replicas: 1
  publicHost: "127.0.0.1:$REG_PORT"
  service: {port: $REG_PORT}
  storage: {kind: filesystem, filesystem: {size: 1Gi}}
  # Short, so the cleanup section sees its blobs freed; not 0s: the operator sweeps whenever
  # reviews are due, and with no delay a sweep could take a pushed blob before the manifest
  # that references it arrives (the window the review delay exists for).
  garbageCollection: {reviewDelay: $GC_REVIEW_DELAY}
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: app, namespace: demo}
spec:
  registryRef: {name: berth}
  visibility: public
  members:
    - serviceAccount: {namespace: demo, name: builder}
      role: Developer
  deployTokens:
    - {name: ci-pull, scopes: [read_registry]}
  accessTokens:
    - {name: ci-push, role: Developer, scopes: [read_registry, write_registry]}
YAML
T_CREATED=$(date +%s.%N)
check "Project app is Ready" k wait --for=condition=Ready --timeout=60s project/app -n demo

step "child objects and owner references"
uid_reg="$(k get registry berth -n demo -o jsonpath='{.metadata.uid}')"
owned_by() { # owned_by KIND NAME OWNER_KIND OWNER_UID
  [ "$(k get "$1" "$2" -n demo -o jsonpath="{.metadata.ownerReferences[?(@.uid==\"$4\")].kind}" 2>/dev/null)" = "$3" ]
}
wait_until 30 k get deployment berth -n demo || true
for obj in serviceaccount/berth role/berth rolebinding/berth configmap/berth-config \
           secret/berth-signing-key persistentvolumeclaim/berth-data deployment/berth service/berth; do
  check "$obj exists, owned by Registry berth" owned_by "${obj%%/*}" "${obj#*/}" Registry "$uid_reg"
done
absent() { ! k get "$@" >/dev/null 2>&1; }
check "no PodDisruptionBudget for one replica" absent pdb berth -n demo
check "ClusterRoleBinding for TokenReview, labelled for the Registry" bash -c \
  "[ \"\$($(declare -f k); k get clusterrolebinding berth:demo:berth:tokenreview -o jsonpath='{.metadata.labels.app\.kubernetes\.io/instance} {.roleRef.name}')\" = 'berth system:auth-delegator' ]"
uid_app="$(k get project app -n demo -o jsonpath='{.metadata.uid}')"
for s in app-ci-pull app-ci-push; do
  check "secret/$s is a dockerconfigjson owned by Project app" bash -c \
    "[ \"\$($(declare -f k); k get secret $s -n demo -o jsonpath='{.type}')\" = kubernetes.io/dockerconfigjson ]"
  check "secret/$s owned by Project app" owned_by secret "$s" Project "$uid_app"
done
check "the operator published Events for the Registry" bash -c \
  "$(declare -f k); k get events -n demo --field-selector involvedObject.name=berth -o json | jq -e '[.items[] | select(.reason==\"Applied\")] | length > 0'"

step "invalid objects are refused by the API server"
# refused NAME EXPECTED_TEXT YAML: the API server refuses the object with a message containing the text
refused() {
  local out rc=0
  out="$(printf '%s\n' "$3" | k apply --dry-run=server -f - 2>&1)" || rc=$?
  printf '%s\n%s\n\n' "$1" "$out" >>"$E2E_OUT/refused.log"
  if [ "$rc" -ne 0 ] && grep -qF -- "$2" <<<"$out"; then pass "refused: $1 ($(grep -oF -- "$2" <<<"$out" | head -1))"
  else fail "not refused as expected: $1: $out"; fi
}
refused "SQLite with 3 replicas" "sqlite supports one replica only" \
  "{apiVersion: berth.dev/v1alpha1, kind: Registry, metadata: {name: bad, namespace: demo}, spec: {replicas: 3, storage: {kind: s3, s3: {endpoint: 'http://s3', bucket: bkt, credentialsSecret: {name: s}}}}}"
refused "a ReadWriteOnce volume with 2 replicas" "with a ReadWriteOnce volume supports one replica only" \
  "{apiVersion: berth.dev/v1alpha1, kind: Registry, metadata: {name: bad, namespace: demo}, spec: {replicas: 2, database: {kind: postgres, connectionSecret: {name: pg}}}}"
refused "postgres without a connection Secret" "database.connectionSecret" \
  "{apiVersion: berth.dev/v1alpha1, kind: Registry, metadata: {name: bad, namespace: demo}, spec: {database: {kind: postgres}}}"
refused "a project path with a leading underscore" "Docker clients break on those" \
  "{apiVersion: berth.dev/v1alpha1, kind: Project, metadata: {name: bad, namespace: demo}, spec: {registryRef: {name: berth}, path: _group/app}}"
refused "a project path with a double hyphen" "Docker clients break on those" \
  "{apiVersion: berth.dev/v1alpha1, kind: Project, metadata: {name: bad, namespace: demo}, spec: {registryRef: {name: berth}, path: group/my--app}}"
refused "an unknown role" 'Unsupported value: "Boss"' \
  "{apiVersion: berth.dev/v1alpha1, kind: Project, metadata: {name: bad, namespace: demo}, spec: {registryRef: {name: berth}, members: [{user: bob, role: Boss}]}}"
refused "an unknown scope" 'Unsupported value: "admin_registry"' \
  "{apiVersion: berth.dev/v1alpha1, kind: Project, metadata: {name: bad, namespace: demo}, spec: {registryRef: {name: berth}, deployTokens: [{name: t, scopes: [admin_registry]}]}}"
refused "an access token without a role" "every access token needs a role" \
  "{apiVersion: berth.dev/v1alpha1, kind: Project, metadata: {name: bad, namespace: demo}, spec: {registryRef: {name: berth}, accessTokens: [{name: t, scopes: [read_registry]}]}}"
refused "a member that is both user and ServiceAccount" "exactly one of" \
  "{apiVersion: berth.dev/v1alpha1, kind: Project, metadata: {name: bad, namespace: demo}, spec: {registryRef: {name: berth}, members: [{user: a, serviceAccount: {namespace: ci, name: s}, role: Guest}]}}"
refused "a Project without registryRef" "registryRef" \
  "{apiVersion: berth.dev/v1alpha1, kind: Project, metadata: {name: bad, namespace: demo}, spec: {}}"
refused "an invalid nameRegex" "nameRegex is not a valid regular expression" \
  "{apiVersion: berth.dev/v1alpha1, kind: CleanupPolicy, metadata: {name: bad, namespace: demo}, spec: {projectRef: {name: app}, nameRegex: 'v(.*'}}"
refused "keepN 7" 'Unsupported value: 7' \
  "{apiVersion: berth.dev/v1alpha1, kind: CleanupPolicy, metadata: {name: bad, namespace: demo}, spec: {projectRef: {name: app}, keepN: 7}}"
refused "olderThan 3d" 'Unsupported value: "3d"' \
  "{apiVersion: berth.dev/v1alpha1, kind: CleanupPolicy, metadata: {name: bad, namespace: demo}, spec: {projectRef: {name: app}, olderThan: 3d}}"
refused "cadence 2d" 'Unsupported value: "2d"' \
  "{apiVersion: berth.dev/v1alpha1, kind: CleanupPolicy, metadata: {name: bad, namespace: demo}, spec: {projectRef: {name: app}, cadence: 2d}}"
refused "both projectRef and selector" "set exactly one of projectRef" \
  "{apiVersion: berth.dev/v1alpha1, kind: CleanupPolicy, metadata: {name: bad, namespace: demo}, spec: {projectRef: {name: app}, selector: {matchLabels: {a: b}}}}"
k apply -f - >/dev/null <<'YAML'
apiVersion: berth.dev/v1alpha1
kind: CleanupPolicy
metadata: {name: weekly, namespace: demo}
spec: {projectRef: {name: app}, cadence: 7d, keepN: 10, olderThan: 30d, nameRegex: ".*", nameRegexKeep: "main|release-.*"}
YAML
check "a valid CleanupPolicy is Accepted" k wait --for=condition=Accepted --timeout=30s cleanuppolicy/weekly -n demo

# ===================================================================== the registry pod
step "start the registry pod from the operator's Deployment"
check "the controller-manager made a Pod from the Deployment" wait_until 30 \
  bash -c "$(declare -f k); k get pods -n demo -l app.kubernetes.io/instance=berth -o name | grep -q pod/"
POD="$(k get pods -n demo -l app.kubernetes.io/instance=berth -o jsonpath='{.items[0].metadata.name}')"
k get pod "$POD" -n demo -o json >"$W/pod.json"
POD_ROOT="$W/pod"
python3 "$E2E_DIR/k8s/run_pod.py" "$W/pod.json" "$POD_ROOT" "$BERTH_BIN" \
  "$K8S_BIN_DIR/kubectl" 127.0.0.1 "${API_HOSTPORT##*:}" "$KUBE_CA_FILE" \
  >"$E2E_OUT/pod-spec.json" 2>"$E2E_OUT/run_pod.err" || { cat "$E2E_OUT/run_pod.err"; die "run_pod.py failed"; }
log "pod $POD: $(cat "$E2E_OUT/pod-spec.json")"
start_pod() {
  "$POD_ROOT/launch.sh" >>"$E2E_OUT/registry-pod.log" 2>&1 &
  REGISTRY_POD_PID=$!
}
PROBE_PATH="$(jq -r .path "$POD_ROOT/probe.json")"; PROBE_PORT="$(jq -r .port "$POD_ROOT/probe.json")"
PROBE_SCHEME="$(jq -r .scheme "$POD_ROOT/probe.json" | tr 'A-Z' 'a-z')"
# as a kubelet probes: HTTPS without checking the certificate
probe_ok() { curl -fsSk -o /dev/null "$PROBE_SCHEME://127.0.0.1:$PROBE_PORT$PROBE_PATH"; }
start_pod
check "the pod's readiness probe ($PROBE_PATH on port $PROBE_PORT) passes" wait_until 30 probe_ok
check "the pod runs as the user its security context names ($(jq -r .uid "$POD_ROOT/probe.json"))" \
  pgrep -u "$(jq -r .uid "$POD_ROOT/probe.json")" -f "berth serve --config"
mark_ready() {
  local now; now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  k patch pod "$POD" -n demo --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",\"startTime\":\"$now\",
    \"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
                    {\"type\":\"Initialized\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
                    {\"type\":\"ContainersReady\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
                    {\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"}],
    \"containerStatuses\":[{\"name\":\"registry\",\"ready\":true,\"started\":true,\"restartCount\":0,\"image\":\"berth:e2e\",\"imageID\":\"\",
                            \"state\":{\"running\":{\"startedAt\":\"$now\"}}}]}}" >/dev/null
}
mark_ready
check "Registry berth is Ready" k wait --for=condition=Ready --timeout=60s registry/berth -n demo
READY_SECONDS=$(awk -v a="$T_CREATED" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
log "TIMING Registry created -> Ready (incl. starting the pod by hand): ${READY_SECONDS} s"
check "status.readyReplicas is 1 and the endpoint is the public host" bash -c \
  "$(declare -f k); [ \"\$(k get registry berth -n demo -o jsonpath='{.status.readyReplicas} {.status.endpoint}')\" = '1 127.0.0.1:$REG_PORT' ]"

# ===================================================================== clients
step "push and pull with the generated Secrets"
SRC="$W/src"
python3 "$E2E_DIR/oci_image.py" "$SRC"
REG="127.0.0.1:$REG_PORT"
IMG="$REG/demo/app/hello"
secret_authfile() { k get secret "$1" -n demo -o jsonpath='{.data.\.dockerconfigjson}' | base64 -d >"$W/$1.json"; }
secret_authfile app-ci-push; secret_authfile app-ci-pull
check "push with the ci-push access token Secret (skopeo --authfile)" run_logged push-ci-push \
  skopeo copy --dest-tls-verify=false --authfile "$W/app-ci-push.json" "oci:$SRC:v1" "docker://$IMG:v1"
check "pull with the ci-pull deploy token Secret" run_logged pull-ci-pull \
  skopeo copy --src-tls-verify=false --authfile "$W/app-ci-pull.json" "docker://$IMG:v1" "oci:$W/pulled:v1"
check "push with the read-only ci-pull Secret is refused" run_refused push-ci-pull \
  skopeo copy --dest-tls-verify=false --authfile "$W/app-ci-pull.json" "oci:$SRC:v1" "docker://$IMG:refused"
check "anonymous pull of the public project works" run_logged pull-anon-public \
  skopeo inspect --tls-verify=false --no-creds "docker://$IMG:v1"

step "flip the Project to private"
k patch project app -n demo --type=merge -p '{"spec":{"visibility":"private"}}' >/dev/null
t_flip=$(date +%s.%N)
anon_refused() { ! skopeo inspect --tls-verify=false --no-creds "docker://$IMG:v1" >/dev/null 2>&1; }
if wait_until 15 anon_refused; then
  pass "anonymous pull refused $(awk -v a="$t_flip" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s after the Project became private"
else fail "anonymous pull still works 15 s after the Project became private"; fi
check "the deploy token still pulls the private project" run_logged pull-ci-pull-private \
  skopeo inspect --tls-verify=false --authfile "$W/app-ci-pull.json" "docker://$IMG:v1"

step "push with a ServiceAccount token (TokenReview)"
SA_TOKEN="$(k create token builder -n demo --audience berth --duration 10m)"
check "push with builder's projected token (audience berth)" run_logged push-sa \
  skopeo copy --dest-tls-verify=false --dest-creds "builder:$SA_TOKEN" "oci:$SRC:v1" "docker://$IMG:sa"
WRONG_AUD="$(k create token builder -n demo --duration 10m)"
check "a token for another audience is refused" run_refused push-sa-wrong-audience \
  skopeo copy --dest-tls-verify=false --dest-creds "builder:$WRONG_AUD" "oci:$SRC:v1" "docker://$IMG:wrong"
k create serviceaccount stranger -n demo >/dev/null
STRANGER="$(k create token stranger -n demo --audience berth --duration 10m)"
check "a ServiceAccount that is not a member cannot push" run_refused push-sa-stranger \
  skopeo copy --dest-tls-verify=false --dest-creds "stranger:$STRANGER" "oci:$SRC:v1" "docker://$IMG:stranger"

# ===================================================================== convergence, leader election
step "kill the operator mid-reconcile and restart it"
snapshot() { # resourceVersions and uids of every child, the Registry and the Project (sorted)
  for kind in serviceaccount role rolebinding configmap secret persistentvolumeclaim deployment service; do
    k get "$kind" -n demo -l app.kubernetes.io/managed-by=berth-operator -o json |
      jq -r '.items[] | "\(.kind)/\(.metadata.name) \(.metadata.uid) \(.metadata.resourceVersion)"'
  done
  k get secret berth-signing-key -n demo -o jsonpath='{.metadata.uid} {.data.key\.pem}{"\n"}' | sha256sum
  k get registry berth -n demo -o jsonpath='registry {.metadata.resourceVersion}{"\n"}'
  k get project app -n demo -o jsonpath='project {.metadata.resourceVersion}{"\n"}'
}
# The pushes above queued GC reviews; once due, the operator sweeps them and writes the figures
# to the Registry's status. Wait for that, so the status is settled before the snapshot.
gc_field() { k get registry berth -n demo -o jsonpath="{.status.garbageCollection.$1}"; }
gc_settled() { [ "$(gc_field pendingReviews)" = 0 ] && [ "$(gc_field sweeps)" -ge 1 ]; }
check "the operator swept the GC reviews the pushes queued (Registry status: pendingReviews 0, sweeps >= 1)" \
  wait_until 120 gc_settled
k get registry berth -n demo -o jsonpath='{.status.garbageCollection}' >"$E2E_OUT/gc-after-pushes.json" || true
sleep 2
snapshot | sort >"$W/before.txt"
# A change for the operator to work on, killed while at it.
k apply -f - >/dev/null <<YAML
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata: {name: second, namespace: demo}
spec: {publicHost: "127.0.0.1:1", service: {port: 5999}}
YAML
sleep 0.3
kill -9 "$OP_A"
log "operator-a killed (SIGKILL) 0.3 s after Registry 'second' was created"
sleep 1
start_operator operator-b "$M2"; OP_B=$LAST_OPERATOR_PID
t_kill=$(date +%s.%N)
if wait_until 40 bash -c "$(declare -f k leader_is readyz_says); leader_is operator-b && readyz_says $M2 leader"; then
  pass "operator-b took the Lease $(awk -v a="$t_kill" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s after operator-a died (lease duration 15 s)"
else fail "operator-b did not take the Lease within 40 s"; fi
check "Registry 'second' converged: its Deployment exists" wait_until 30 k get deployment second -n demo
check "operator-b reconciled the Registries" wait_until 30 bash -c "[ \$(curl -fsS http://127.0.0.1:$M2/metrics | grep -c 'kind=\"Registry\",result=\"success\"') -ge 1 ]"
sleep 2
snapshot | sort >"$W/after.txt"
if diff "$W/before.txt" <(grep -v '/second' "$W/after.txt" ) >"$W/snapshot.diff"; then
  pass "a restarted operator rewrote nothing for unchanged objects (same uids and resourceVersions, same signing key)"
else fail "objects changed across the operator restart: $(head -c 600 "$W/snapshot.diff")"; fi
dups="$(k get deployments,services,configmaps,secrets -n demo -o json | jq -r '[.items[] | "\(.kind)/\(.metadata.name)"] | group_by(.) | map(select(length > 1)) | length')"
check "no duplicate objects" [ "$dups" = 0 ]
check "exactly 2 signing key Secrets (one per Registry)" bash -c \
  "[ \$($(declare -f k); k get secrets -n demo -o name | grep -c signing-key) = 2 ]"
M3=$(free_port)
start_operator operator-c "$M3"; OP_C=$LAST_OPERATOR_PID
check "a second live replica is ready and stands by" wait_until 20 readyz_says "$M3" standby
sleep 2
check "the Lease stays with operator-b" leader_is operator-b
check "berth_operator_leader is 1 on the leader and 0 on the standby" bash -c \
  "curl -fsS http://127.0.0.1:$M2/metrics | grep -qx 'berth_operator_leader 1' && curl -fsS http://127.0.0.1:$M3/metrics | grep -qx 'berth_operator_leader 0'"
kill "$OP_C" 2>/dev/null || true
check "operator metrics expose reconcile counts" bash -c "curl -fsS http://127.0.0.1:$M2/metrics | grep -c '^berth_operator_reconciles_total' >/dev/null"
k delete registry second -n demo --wait=false >/dev/null

# ===================================================================== cleanup policy runs, GC
step "CleanupPolicy: run-now as a dry run, then for real; images running in the cluster are kept"
CREPO="$REG/demo/app/cleanup"
# Seven distinct images (random layers, so digests and sizes differ), pushed in this order:
# the registry orders tags by the time they were pushed.
push_cleanup_tags() {
  local t
  for t in v1 v2 v3 v4 v5 v6 latest; do
    python3 "$E2E_DIR/oci_image.py" "$W/img-$t"
    run_logged "push-cleanup-$t" skopeo copy --dest-tls-verify=false --authfile "$W/app-ci-push.json" \
      "oci:$W/img-$t:v1" "docker://$CREPO:$t" || return 1
  done
}
check "push tags v1..v6 and latest of demo/app/cleanup (distinct images)" push_cleanup_tags
tags_now() { skopeo list-tags --tls-verify=false --authfile "$W/app-ci-push.json" "docker://$CREPO" | jq -r '.Tags | sort | join(" ")'; }
tags_are() { [ "$(tags_now)" = "$1" ]; }
check "the registry lists the 7 tags" tags_are "latest v1 v2 v3 v4 v5 v6"
digest_of() { skopeo inspect --tls-verify=false --authfile "$W/app-ci-push.json" --format '{{.Digest}}' "docker://$CREPO:$1"; }
D3="$(digest_of v3)"; D4="$(digest_of v4)"
log "v3 is $D3, v4 is $D4"
# nameRegex v.* (v1..v6), nameRegexKeep v1, keepN 1 (the newest candidate, v6): v2..v5 go;
# latest is never deleted.
k apply -f - >/dev/null <<'YAML'
apiVersion: berth.dev/v1alpha1
kind: CleanupPolicy
metadata: {name: tidy, namespace: demo}
spec: {projectRef: {name: app}, cadence: 1d, nameRegex: "v.*", nameRegexKeep: "v1", keepN: 1, dryRun: true}
YAML
pol() { k get cleanuppolicy tidy -n demo -o jsonpath="$1"; }
pol_jq() { k get cleanuppolicy tidy -n demo -o json | jq -e "$1" >/dev/null; }
check "CleanupPolicy tidy is Accepted" k wait --for=condition=Accepted --timeout=30s cleanuppolicy/tidy -n demo
check "... and Scheduled" k wait --for=condition=Scheduled --timeout=30s cleanuppolicy/tidy -n demo
next_run_in_a_day() { # the first run is one cadence (1d) after the policy became Scheduled
  local next left; next="$(pol '{.status.nextRun}')"; [ -n "$next" ] || return 1
  left=$(( $(date -d "$next" +%s) - $(date +%s) ))
  [ "$left" -gt $((86400 - 300)) ] && [ "$left" -le 86400 ]
}
not_run_yet() { [ -z "$(pol '{.status.lastRun}')" ]; }
check "status.nextRun is one cadence (1d) away" next_run_in_a_day
check "nothing ran yet (no status.lastRun)" not_run_yet
# dump_policy NAME: the policy as it is now, for the logs
dump_policy() { k get cleanuppolicy tidy -n demo -o yaml >"$E2E_OUT/cleanuppolicy-$1.yaml" 2>&1 || true; }
last_run_done() { # last_run_done DRY_RUN: the last run had this dryRun and succeeded
  pol_jq ".status.lastRunResult.dryRun == $1 and
    ([.status.conditions[] | select(.type == \"LastRunSucceeded\" and .status == \"True\")] | length == 1)"
}
deleted_list() { pol '{.status.lastRunResult.projects[?(@.name=="app")].repositories[?(@.name=="demo/app/cleanup")].tagsDeleted[*]}'; }
annotation_gone() { pol_jq '.metadata.annotations["berth.dev/run-now"] == null'; }
event_says() { # event_says REASON TEXT: an Event about CleanupPolicy tidy with this reason contains TEXT
  k get events -n demo --field-selector involvedObject.kind=CleanupPolicy,involvedObject.name=tidy -o json |
    jq -e --arg r "$1" --arg t "$2" '[.items[] | select(.reason == $r and ((.message // .note // "") | contains($t)))] | length > 0' >/dev/null
}

k annotate cleanuppolicy tidy -n demo berth.dev/run-now=1 >/dev/null
if wait_until 60 last_run_done true; then pass "run-now ran the dry run (lastRunResult.dryRun true, LastRunSucceeded True)"
else dump_policy dry-run; fail "the dry run did not complete within 60 s (see $E2E_OUT/cleanuppolicy-dry-run.yaml)"; fi
dump_policy dry-run
check "dry run: status lists v2 v3 v4 v5 as the tags it would delete" [ "$(deleted_list)" = "v2 v3 v4 v5" ]
check "dry run: tagsDeleted 4, labelled as a dry run triggered by run-now" \
  pol_jq '.status.lastRunResult.tagsDeleted == 4 and .status.lastRunResult.trigger == "RunNow"
    and (.status.lastRunResult.message | startswith("dry run: would delete 4 tags"))'
check "dry run: every tag is still in the registry" tags_are "latest v1 v2 v3 v4 v5 v6"
check "dry run: the run-now annotation was removed" annotation_gone
check "dry run: a CleanupDryRun Event says what would be deleted" event_says CleanupDryRun "dry run: would delete 4 tags"
next_run_a_day_after_last() {
  local l n; l="$(pol '{.status.lastRun}')"; n="$(pol '{.status.nextRun}')"
  [ -n "$l" ] && [ -n "$n" ] && [ $(( $(date -d "$n" +%s) - $(date -d "$l" +%s) )) -eq 86400 ]
}
check "dry run: status.lastRun is set and nextRun is one cadence (1d) after it" next_run_a_day_after_last

# Two Pods "run" v3 and v4 (no kubelet here: their status is written through the status
# subresource, as a kubelet would): runs-v3 pins the image by digest in its spec, runs-v4 names
# the tag and only its status' imageID carries the digest.
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: runs-v3, namespace: demo}
spec: {containers: [{name: app, image: "$CREPO@$D3"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: runs-v4, namespace: demo}
spec: {containers: [{name: app, image: "$CREPO:v4"}]}
YAML
pod_running() { # pod_running POD IMAGE IMAGE_ID
  local now; now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  k patch pod "$1" -n demo --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",\"startTime\":\"$now\",
    \"containerStatuses\":[{\"name\":\"app\",\"ready\":true,\"started\":true,\"restartCount\":0,\"image\":\"$2\",\"imageID\":\"$3\",
                            \"state\":{\"running\":{\"startedAt\":\"$now\"}}}]}}" >/dev/null
}
check "Pod runs-v3 marked Running (imageID docker-pullable://...@digest of v3)" \
  pod_running runs-v3 "$CREPO@$D3" "docker-pullable://$CREPO@$D3"
check "Pod runs-v4 marked Running (spec names the tag v4; imageID ...@digest of v4)" \
  pod_running runs-v4 "$CREPO:v4" "$CREPO@$D4"
sleep 2 # the operator's Pod watch sees the statuses
GC_BYTES_BEFORE="$(gc_field bytesDeleted)"; GC_BLOBS_BEFORE="$(gc_field blobsDeleted)"
k patch cleanuppolicy tidy -n demo --type=merge \
  -p '{"spec":{"dryRun":false},"metadata":{"annotations":{"berth.dev/run-now":"2"}}}' >/dev/null
if wait_until 60 last_run_done false; then pass "run-now ran the policy for real (dryRun false, LastRunSucceeded True)"
else dump_policy run; fail "the run did not complete within 60 s (see $E2E_OUT/cleanuppolicy-run.yaml)"; fi
dump_policy run
check "status lists exactly v2 v5 as deleted (v3 and v4 run in Pods)" [ "$(deleted_list)" = "v2 v5" ]
check "status: tagsDeleted 2, 2 tags kept as in use, bytes reclaimable > 0" \
  pol_jq '.status.lastRunResult.tagsDeleted == 2 and .status.lastRunResult.bytesReclaimable > 0
    and .status.lastRunResult.dryRun == false and .status.consecutiveFailures == null
    and ([.status.lastRunResult.projects[].repositories[] | select(.name == "demo/app/cleanup") | .keptByReason.in_use] == [2])'
check "the registry's tags list no longer has v2 and v5; latest, v1, v3, v4, v6 stay" \
  tags_are "latest v1 v3 v4 v6"
check "the run-now annotation was removed" annotation_gone
check "a CleanupRun Event says 2 tags were deleted in project demo/app" \
  event_says CleanupRun "deleted 2 tags"
metric_is() { curl -fsS "http://127.0.0.1:$M2/metrics" | grep -qx "$1"; }
check "berth_operator_cleanup_tags_deleted_total is 2 on the leader" \
  metric_is 'berth_operator_cleanup_tags_deleted_total 2'
gc_freed() {
  [ "$(gc_field blobsDeleted)" -ge $((GC_BLOBS_BEFORE + 4)) ] && [ "$(gc_field bytesDeleted)" -gt "$GC_BYTES_BEFORE" ]
}
if wait_until 150 gc_freed; then
  pass "after the operator's sweeps, Registry status.garbageCollection: blobsDeleted $GC_BLOBS_BEFORE -> $(gc_field blobsDeleted) (the layers and configs of v2 and v5), bytesDeleted $GC_BYTES_BEFORE -> $(gc_field bytesDeleted)"
else
  k get registry berth -n demo -o yaml >"$E2E_OUT/registry-gc.yaml" 2>&1 || true
  fail "the blobs of v2 and v5 were not collected within 150 s (blobsDeleted $GC_BLOBS_BEFORE -> $(gc_field blobsDeleted), bytesDeleted $GC_BYTES_BEFORE -> $(gc_field bytesDeleted); see $E2E_OUT/registry-gc.yaml)"
fi
registry_event() { # registry_event REASON: an Event about Registry berth with this reason
  k get events -n demo --field-selector involvedObject.kind=Registry,involvedObject.name=berth -o json |
    jq -e --arg r "$1" '[.items[] | select(.reason == $r)] | length > 0' >/dev/null
}
check "a GarbageCollected Event on the Registry" registry_event GarbageCollected
check "the kept in-use image v3 still pulls whole after the sweep" run_logged pull-cleanup-v3 \
  skopeo copy --src-tls-verify=false --authfile "$W/app-ci-push.json" "docker://$CREPO:v3" "oci:$W/pulled-v3:v3"
k delete pod runs-v3 runs-v4 -n demo --wait=false >/dev/null
k delete cleanuppolicy tidy -n demo >/dev/null

# ===================================================================== deletions
step "delete the Project: its images go"
k delete project app -n demo --timeout=60s >/dev/null && pass "Project app deleted (finalizer done)" || fail "Project app not deleted"
repos_left() { sqlite3 "file:$POD_ROOT/claims/berth-data/berth.db?mode=ro" "SELECT count(*) FROM repositories WHERE name = 'demo/app' OR name LIKE 'demo/app/%'"; }
check "no repository of demo/app is left in the registry's database" [ "$(repos_left)" = 0 ]
# Recreated public, the old image does not come back.
k apply -f - >/dev/null <<'YAML'
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: app, namespace: demo}
spec: {registryRef: {name: berth}, visibility: public}
YAML
k wait --for=condition=Ready --timeout=30s project/app -n demo >/dev/null
wait_until 10 bash -c "curl -fsS -o /dev/null http://$REG/v2/ ; true"
sleep 2
check "a recreated Project does not bring the old images back (manifest unknown)" run_refused pull-after-delete \
  skopeo inspect --tls-verify=false --no-creds "docker://$IMG:v1"
check "the refusal says the repository is unknown" grep -qiE 'name unknown|manifest unknown' "$E2E_OUT/pull-after-delete.log"

check "the recreated (empty) Project deletes at once" k delete project app -n demo --timeout=60s

step "delete the Registry: every child is garbage-collected"
kill "$REGISTRY_POD_PID" 2>/dev/null; wait "$REGISTRY_POD_PID" 2>/dev/null || true; REGISTRY_POD_PID=""
k delete registry berth -n demo --timeout=60s >/dev/null && pass "Registry berth deleted" || fail "Registry berth not deleted"
gone() { ! k get "$1" -n demo >/dev/null 2>&1; }
for obj in deployment/berth service/berth configmap/berth-config secret/berth-signing-key \
           serviceaccount/berth role/berth rolebinding/berth persistentvolumeclaim/berth-data; do
  check "$obj garbage-collected" wait_until 60 gone "$obj"
done
check "the ClusterRoleBinding is gone (Registry finalizer)" wait_until 30 \
  absent clusterrolebinding berth:demo:berth:tokenreview

# ===================================================================== replicas on PostgreSQL
# A Registry of 3 replicas on PostgreSQL (a server of its own, lib.sh's start_postgres) and a
# ReadWriteMany volume. Each Pod the controller-manager makes is run by hand as before (run_pod.py;
# here with its own port, RUN_POD_LISTEN, and one claims directory for all, RUN_POD_CLAIMS),
# behind haproxy standing in for the Service (each request to the next ready pod, /readyz checks).
# Then a spec change rolls the pods while a push loop runs through the proxy: with
# maxUnavailable 0 a new pod is up and ready before an old one is told to stop, and no push fails.
step "a Registry of 3 replicas on PostgreSQL"
start_postgres
check "config/samples/registry-replicas.yaml is valid as it is (dry run on the server)" \
  k apply --dry-run=server -f "$REPO_ROOT/config/samples/registry-replicas.yaml"
refused "2 replicas on sqlite, even with a ReadWriteMany volume" "sqlite supports one replica only" \
  "{apiVersion: berth.dev/v1alpha1, kind: Registry, metadata: {name: bad, namespace: demo}, spec: {replicas: 2, storage: {filesystem: {accessMode: ReadWriteMany}}}}"
PG_SECRET_WORD="e2e-s3cret-$RANDOM"
k create secret generic multi-db -n demo \
  --from-literal=url="postgres://postgres:$PG_SECRET_WORD@127.0.0.1:$PG_PORT/berth" >/dev/null
MULTI_PORT=$(free_port); FRONT_PORT=$(free_port); HA_STATS_PORT=$(free_port)
SLOTS=(); for _ in 1 2 3 4 5 6; do SLOTS+=("$(free_port)"); done
k apply -f - >/dev/null <<YAML
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata: {name: multi, namespace: demo}
spec:
  replicas: 3
  publicHost: "127.0.0.1:$FRONT_PORT"
  service: {port: $MULTI_PORT}
  storage: {kind: filesystem, filesystem: {size: 1Gi, accessMode: ReadWriteMany}}
  database: {kind: postgres, connectionSecret: {name: multi-db}, maxConnections: 8}
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: shared, namespace: demo}
spec:
  registryRef: {name: multi}
  visibility: public
  accessTokens:
    - {name: push, role: Developer, scopes: [read_registry, write_registry]}
YAML
reg_cond() { # reg_cond NAME TYPE: "status reason" of a Registry condition
  k get registry "$1" -n demo -o jsonpath="{.status.conditions[?(@.type==\"$2\")].status} {.status.conditions[?(@.type==\"$2\")].reason}"
}
reg_cond_is() { [ "$(reg_cond "$1" "$2")" = "$3" ]; }
check "DatabaseReady True (Connected): the operator reached the database before any pod ran" \
  wait_until 60 reg_cond_is multi DatabaseReady "True Connected"
check "Deployment multi: 3 replicas, RollingUpdate with maxUnavailable 0" bash -c \
  "$(declare -f k); [ \"\$(k get deployment multi -n demo -o jsonpath='{.spec.replicas} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxUnavailable}')\" = '3 RollingUpdate 0' ]"
check "the pods get BERTH_DATABASE_URL from Secret multi-db, key url" bash -c \
  "$(declare -f k); [ \"\$(k get deployment multi -n demo -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name==\"BERTH_DATABASE_URL\")].valueFrom.secretKeyRef.name}')\" = multi-db ]"
check "the ConfigMap says database kind postgres and holds neither the URL nor its password" bash -c \
  "$(declare -f k); c=\"\$(k get configmap multi-config -n demo -o jsonpath='{.data.berth\.yaml}')\"; grep -q 'kind: postgres' <<<\"\$c\" && ! grep -q -e '$PG_SECRET_WORD' -e 'postgres://' <<<\"\$c\""
check "the claim is ReadWriteMany" bash -c \
  "$(declare -f k); [ \"\$(k get pvc multi-data -n demo -o jsonpath='{.spec.accessModes[0]}')\" = ReadWriteMany ]"
check "a PodDisruptionBudget keeps all but one pod (maxUnavailable 1)" bash -c \
  "$(declare -f k); [ \"\$(k get pdb multi -n demo -o jsonpath='{.spec.maxUnavailable}')\" = 1 ]"
check "the password is in no Registry status or Event" bash -c \
  "$(declare -f k); ! { k get registry multi -n demo -o yaml; k get events -n demo -o yaml; } | grep -q '$PG_SECRET_WORD'"

# The "kubelet": runs every Pod of Registry multi that has no process yet in a free slot (port),
# marks it ready once its readiness probe passes; stops (SIGTERM) the process of every Pod being
# deleted or already gone, then removes the Pod. (The API server removes a Pod bound to no node
# at once when it is deleted, without a deletionTimestamp first: there is no kubelet to wait for.
# So most old Pods are simply missing from the next list.) haproxy sends requests to the slots
# whose /readyz answers.
declare -A POD_PID POD_SLOT
MULTI_CLAIMS="$W/multi-claims"; mkdir -p "$MULTI_CLAIMS"; chmod 755 "$MULTI_CLAIMS"
start_haproxy() { # the "Service": 127.0.0.1:$FRONT_PORT round robin over the $SLOTS answering /readyz
  local i
  {
    printf 'global\n  maxconn 2000\n'
    printf 'defaults\n  mode http\n  timeout connect 2s\n  timeout client 5m\n  timeout server 5m\n'
    printf '  option http-server-close\n  retries 3\n  option redispatch\n  retry-on conn-failure empty-response\n'
    printf 'frontend registry\n  bind 127.0.0.1:%s\n  default_backend pods\n' "$FRONT_PORT"
    printf 'backend pods\n  balance roundrobin\n  option httpchk GET /readyz\n'
    for i in "${!SLOTS[@]}"; do printf '  server s%s 127.0.0.1:%s check inter 500ms fall 1 rise 1\n' "$i" "${SLOTS[$i]}"; done
    printf 'listen stats\n  bind 127.0.0.1:%s\n  stats enable\n  stats uri /stats\n' "$HA_STATS_PORT"
  } >"$W/haproxy.cfg"
  haproxy -db -f "$W/haproxy.cfg" >>"$E2E_OUT/haproxy.log" 2>&1 &
  HAPROXY_PID=$!
}
start_haproxy
free_slot() {
  local i p used
  for i in "${!SLOTS[@]}"; do
    used=""; for p in "${POD_SLOT[@]}"; do [ "$p" = "$i" ] && used=1; done
    [ -z "$used" ] && { echo "$i"; return 0; }
  done
  return 1
}
mark_pod_ready() { # mark_pod_ready POD
  local now; now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  k patch pod "$1" -n demo --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",\"startTime\":\"$now\",
    \"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
                    {\"type\":\"Initialized\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
                    {\"type\":\"ContainersReady\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
                    {\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"}],
    \"containerStatuses\":[{\"name\":\"registry\",\"ready\":true,\"started\":true,\"restartCount\":0,\"image\":\"berth:e2e\",\"imageID\":\"\",
                            \"state\":{\"running\":{\"startedAt\":\"$now\"}}}]}}" >/dev/null
}
stop_pod_process() { # stop_pod_process POD WHY: SIGTERM, wait for it to drain and exit
  local i
  [ -n "${POD_PID[$1]:-}" ] || return 0
  log "kubelet: pod $1 $2: SIGTERM to its process"
  kill -TERM "${POD_PID[$1]}" 2>/dev/null
  for i in $(seq 1 300); do kill -0 "${POD_PID[$1]}" 2>/dev/null || break; sleep 0.1; done
  wait "${POD_PID[$1]}" 2>/dev/null || true
  unset "POD_PID[$1]" "POD_SLOT[$1]"
}
KUBELET_INSTANCE=multi  # the Registry whose Pods kubelet_pass runs
kubelet_pass() { # one pass over the Pods of Registry $KUBELET_INSTANCE
  local pods name deleting slot root port i
  pods="$(k get pods -n demo -l "app.kubernetes.io/instance=$KUBELET_INSTANCE" -o json)" || return 0
  for name in "${!POD_PID[@]}"; do
    jq -e --arg n "$name" 'any(.items[]; .metadata.name == $n)' <<<"$pods" >/dev/null ||
      stop_pod_process "$name" "is gone"
  done
  while read -r name deleting; do
    [ -n "$name" ] || continue
    if [ "$deleting" = true ]; then
      stop_pod_process "$name" "is being deleted"
      k delete pod "$name" -n demo --grace-period=0 --force >/dev/null 2>&1 || true
    elif [ -z "${POD_PID[$name]:-}" ]; then
      slot="$(free_slot)" || { log "kubelet: no free slot for $name"; continue; }
      port="${SLOTS[$slot]}"; root="$W/pods/$name"
      jq --arg n "$name" '.items[] | select(.metadata.name == $n)' <<<"$pods" >"$W/$name.json"
      RUN_POD_CLAIMS="$MULTI_CLAIMS" RUN_POD_LISTEN="127.0.0.1:$port" python3 "$E2E_DIR/k8s/run_pod.py" \
        "$W/$name.json" "$root" "$BERTH_BIN" "$K8S_BIN_DIR/kubectl" 127.0.0.1 "${API_HOSTPORT##*:}" \
        "$KUBE_CA_FILE" >>"$E2E_OUT/multi-pods.log" 2>&1 || { log "kubelet: run_pod.py failed for $name"; continue; }
      "$root/launch.sh" >>"$E2E_OUT/pod-$name.log" 2>&1 &
      POD_PID[$name]=$!; POD_SLOT[$name]=$slot
      for i in $(seq 1 300); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && break
        kill -0 "${POD_PID[$name]}" 2>/dev/null || break; sleep 0.1
      done
      if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then
        mark_pod_ready "$name"; log "kubelet: pod $name runs on 127.0.0.1:$port (slot $slot), ready"
      else log "kubelet: pod $name did not become ready (see $E2E_OUT/pod-$name.log)"; fi
    fi
  done < <(jq -r '.items[] | "\(.metadata.name) \(.metadata.deletionTimestamp != null)"' <<<"$pods")
}
deployment_settled() { # every pod of the current template ready, no other pod left
  local s; s="$(k get deployment multi -n demo -o json)"
  jq -e '.status.observedGeneration == .metadata.generation and .status.updatedReplicas == 3
         and .status.readyReplicas == 3 and .status.replicas == 3 and (.status.unavailableReplicas // 0) == 0' <<<"$s" >/dev/null &&
    [ "$(k get pods -n demo -l app.kubernetes.io/instance=multi -o name | wc -l)" -eq 3 ] &&
    [ "${#POD_PID[@]}" -eq 3 ]
}
run_kubelet_until_settled() { # run_kubelet_until_settled SECONDS
  local deadline=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kubelet_pass
    deployment_settled && return 0
    sleep 0.5
  done
  return 1
}
check "the controller-manager made 3 Pods and all run, ready (3 pods on one database and one claim)" \
  run_kubelet_until_settled 120
check "Registry multi is Ready with 3 ready replicas" k wait --for=condition=Ready --timeout=60s registry/multi -n demo
check "DatabaseReady now reports the schema the pods migrated" bash -c \
  "$(declare -f k); k get registry multi -n demo -o jsonpath='{.status.conditions[?(@.type==\"DatabaseReady\")].message}' | grep -q 'schema version'"

MREG="127.0.0.1:$FRONT_PORT"; MIMG="$MREG/demo/shared/app"
check "Project shared is Ready" k wait --for=condition=Ready --timeout=60s project/shared -n demo
secret_authfile shared-push
check "push through the proxy (requests spread over the 3 pods) with the push token Secret" run_logged multi-push \
  skopeo copy --dest-tls-verify=false --authfile "$W/shared-push.json" "oci:$SRC:v1" "docker://$MIMG:v1"
check "pull it back anonymously (public project), whole" run_logged multi-pull \
  skopeo copy --src-tls-verify=false --src-no-creds "docker://$MIMG:v1" "oci:$W/multi-pulled:v1"
served_by_all() { # served_by_all [N]: N pods (3) up behind haproxy, each sent requests
  curl -fsS "http://127.0.0.1:$HA_STATS_PORT/stats;csv" |
    awk -F, -v n="${1:-3}" '$1 == "pods" && $2 ~ /^s[0-9]+$/ && $18 == "UP" {up++; if ($8 > 0) used++} END {exit !(up == n && used == n)}'
}
check "haproxy sent requests to each of the 3 pods" served_by_all

step "rolling update of Registry multi while clients push"
# A push loop through the proxy, each round a new tag (token, blob HEADs, manifest PUT) then a
# pull of it (token, manifest, config blob: skopeo inspect), again and again.
PUSH_LOG="$E2E_OUT/multi-push-loop.log"; : >"$PUSH_LOG"
( n=0; while [ ! -e "$W/stop-pushes" ]; do
    n=$((n + 1))
    if skopeo copy -q --dest-tls-verify=false --authfile "$W/shared-push.json" "oci:$SRC:v1" \
         "docker://$MIMG:loop-$n" >/dev/null 2>>"$PUSH_LOG.err"; then echo "push ok loop-$n"
    else echo "push failed loop-$n at $(date +%T.%N)"; fi
    if skopeo inspect --tls-verify=false --no-creds "docker://$MIMG:loop-$n" >/dev/null 2>>"$PUSH_LOG.err"; then
      echo "pull ok loop-$n"
    else echo "pull failed loop-$n at $(date +%T.%N)"; fi
  done >>"$PUSH_LOG" ) &
PUSHER=$!
sleep 3
OLD_PODS="$(k get pods -n demo -l app.kubernetes.io/instance=multi -o jsonpath='{.items[*].metadata.name}')"
k patch registry multi -n demo --type=merge -p '{"spec":{"garbageCollection":{"sweepInterval":"2h"}}}' >/dev/null
T_ROLL=$(date +%s.%N)
rolled() { # no old pod left, 3 new ones ready
  local p; for p in $OLD_PODS; do k get pod "$p" -n demo >/dev/null 2>&1 && return 1; done
  deployment_settled
}
roll() {
  local deadline=$(( $(date +%s) + 240 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kubelet_pass
    # maxUnavailable 0: the Deployment never counts fewer than 3 ready pods; and how many
    # pods haproxy found answering /readyz (for the log)
    k get deployment multi -n demo -o jsonpath='{.status.readyReplicas}{"\n"}' >>"$W/ready-counts"
    curl -fsS "http://127.0.0.1:$HA_STATS_PORT/stats;csv" | awk -F, '$1 == "pods" && $2 ~ /^s[0-9]+$/ && $18 == "UP"' | wc -l >>"$W/ups"
    rolled && return 0
    sleep 0.5
  done
  return 1
}
if roll; then
  pass "the Deployment rolled to 3 new pods, one at a time, in $(awk -v a="$T_ROLL" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
else fail "the rollout did not finish within 240 s: $(k get deployment multi -n demo -o jsonpath='{.status}')"; fi
sleep 2
touch "$W/stop-pushes"; wait "$PUSHER" 2>/dev/null || true
PUSHES_OK="$(grep -c '^push ok' "$PUSH_LOG" || true)"; PUSHES_FAILED="$(grep -c '^push failed' "$PUSH_LOG" || true)"
PULLS_OK="$(grep -c '^pull ok' "$PUSH_LOG" || true)"; PULLS_FAILED="$(grep -c '^pull failed' "$PUSH_LOG" || true)"
check "no push failed during the rollout ($PUSHES_OK pushes, $PUSHES_FAILED failed; errors in $PUSH_LOG.err)" \
  [ "$PUSHES_FAILED" = 0 -a "$PUSHES_OK" -gt 5 ]
check "no pull failed during the rollout ($PULLS_OK pulls, $PULLS_FAILED failed)" \
  [ "$PULLS_FAILED" = 0 -a "$PULLS_OK" -gt 5 ]
loop_tags_listed() { # every tag the push loop was told was pushed is in the tag list
  local token tags t
  token="$(curl -fsS "http://$MREG/jwt/auth?service=berth&scope=repository:demo/shared/app:pull" | jq -r .token)"
  tags="$(curl -fsS -H "Authorization: Bearer $token" "http://$MREG/v2/demo/shared/app/tags/list?n=10000" | jq -r '.tags[]')"
  for t in $(grep '^push ok' "$PUSH_LOG" | awk '{print $3}'); do
    grep -qx "$t" <<<"$tags" || { log "tag $t acknowledged but not listed"; return 1; }
  done
}
check "every tag the loop pushed is listed after the rollout" loop_tags_listed
check "the Deployment never had fewer than 3 ready pods during the rollout (maxUnavailable 0)" \
  bash -c "[ \$(sort -n '$W/ready-counts' | head -1) -ge 3 ]"
log "pods answering /readyz behind haproxy during the rollout: min $(sort -n "$W/ups" | head -1), max $(sort -n "$W/ups" | tail -1)"
check "Registry multi is Ready again after the rollout" k wait --for=condition=Ready --timeout=60s registry/multi -n demo
check "the image pulls whole from the new pods" run_logged multi-pull-after \
  skopeo copy --src-tls-verify=false --src-no-creds "docker://$MIMG:v1" "oci:$W/multi-pulled-2:v1"

step "the database goes away and comes back"
stop_postgres
check "DatabaseReady turns False (Unreachable) while PostgreSQL is down" \
  wait_until 60 reg_cond_is multi DatabaseReady "False Unreachable"
pods_unready() { ! curl -fsS -o /dev/null "http://127.0.0.1:$FRONT_PORT/v2/" 2>/dev/null || \
  [ "$(curl -fsS "http://127.0.0.1:$HA_STATS_PORT/stats;csv" | awk -F, '$1 == "pods" && $2 ~ /^s[0-9]+$/ && $18 == "UP"' | wc -l)" -eq 0 ]; }
check "the pods' readiness probes fail: haproxy takes every pod out" wait_until 30 pods_unready
one_pod() { for p in "${POD_SLOT[@]}"; do echo "${SLOTS[$p]}"; return; done; }
POD_PORT="$(one_pod)"
ANON="$(curl -fsS "http://127.0.0.1:$POD_PORT/jwt/auth?service=berth&scope=repository:demo/shared/app:pull" | jq -r .token)"
check "a pod asked directly answers 503 (not 500) while the database is down" \
  http 503 GET "http://127.0.0.1:$POD_PORT/v2/demo/shared/app/manifests/v1" -H "Authorization: Bearer $ANON"
check "... with the code UNAVAILABLE and a Retry-After header" \
  bash -c "grep -q UNAVAILABLE '$HTTP_BODY' && [ -n '$(header retry-after)' ]"
run_postgres
check "DatabaseReady turns True again once PostgreSQL is back" \
  wait_until 60 reg_cond_is multi DatabaseReady "True Connected"
pods_ready() { [ "$(curl -fsS "http://127.0.0.1:$HA_STATS_PORT/stats;csv" | awk -F, '$1 == "pods" && $2 ~ /^s[0-9]+$/ && $18 == "UP"' | wc -l)" -eq 3 ]; }
check "every pod is ready again (their pools reconnect; no restart)" wait_until 60 pods_ready
check "push through the proxy works again" run_logged multi-push-after-outage \
  skopeo copy --dest-tls-verify=false --authfile "$W/shared-push.json" "oci:$SRC:v1" "docker://$MIMG:after-outage"
check "and the pushed tag pulls back whole" run_logged multi-pull-after-outage \
  skopeo copy --src-tls-verify=false --src-no-creds "docker://$MIMG:after-outage" "oci:$W/multi-pulled-3:v1"
check "the pods kept running through the outage (same processes)" bash -c \
  "for p in ${POD_PID[*]}; do kill -0 \$p || exit 1; done"

step "delete Registry multi"
for name in "${!POD_PID[@]}"; do kill -TERM "${POD_PID[$name]}" 2>/dev/null; done
for name in "${!POD_PID[@]}"; do wait "${POD_PID[$name]}" 2>/dev/null || true; unset "POD_PID[$name]" "POD_SLOT[$name]"; done
kill "$HAPROXY_PID" 2>/dev/null; wait "$HAPROXY_PID" 2>/dev/null || true; HAPROXY_PID=""
k delete project shared -n demo --timeout=60s >/dev/null 2>&1 || true
k delete registry multi -n demo --timeout=60s >/dev/null && pass "Registry multi deleted" || fail "Registry multi not deleted"

# ===================================================================== blobs on S3, no volume
# A Registry of 2 replicas with blobs on S3 (an S3 server of its own, lib.sh's start_s3) and
# metadata on PostgreSQL (a database of its own on the server above): the operator makes no
# claim at all, and the S3 credentials reach the pods from a Secret as AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY, never through the ConfigMap. Its pods run by hand as above, behind a
# haproxy of their own; an image pushed through it (requests spread over both pods) pulls back,
# and its blobs are in the bucket.
step "a Registry of 2 replicas on PostgreSQL with blobs on S3 (no volume)"
start_s3
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres objects || fail "createdb objects"
k create secret generic objects-s3 -n demo --from-literal=accessKeyId="$AWS_ACCESS_KEY_ID" \
  --from-literal=secretAccessKey="$AWS_SECRET_ACCESS_KEY" >/dev/null
k create secret generic objects-db -n demo \
  --from-literal=url="postgres://postgres@127.0.0.1:$PG_PORT/objects" >/dev/null
OBJ_PORT=$(free_port); FRONT_PORT=$(free_port); HA_STATS_PORT=$(free_port)
SLOTS=(); for _ in 1 2 3 4; do SLOTS+=("$(free_port)"); done
k apply -f - >/dev/null <<YAML
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata: {name: objects, namespace: demo}
spec:
  replicas: 2
  publicHost: "127.0.0.1:$FRONT_PORT"
  service: {port: $OBJ_PORT}
  storage:
    kind: s3
    s3: {endpoint: "$S3_ENDPOINT", bucket: "$S3_BUCKET", pathStyle: true, credentialsSecret: {name: objects-s3}}
  database: {kind: postgres, connectionSecret: {name: objects-db}, maxConnections: 8}
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: stored, namespace: demo}
spec:
  registryRef: {name: objects}
  visibility: public
  accessTokens:
    - {name: push, role: Developer, scopes: [read_registry, write_registry]}
YAML
check "Deployment objects: 2 replicas" wait_until 60 bash -c \
  "$(declare -f k); [ \"\$(k get deployment objects -n demo -o jsonpath='{.spec.replicas}')\" = 2 ]"
check "no PersistentVolumeClaim for Registry objects, and no claim volume in its pods" bash -c \
  "$(declare -f k); [ -z \"\$(k get pvc -n demo -l app.kubernetes.io/instance=objects -o name)\" ] && ! k get pvc objects-data -n demo >/dev/null 2>&1 &&
   k get deployment objects -n demo -o json | jq -e '[.spec.template.spec.volumes[]? | select(.persistentVolumeClaim)] | length == 0' >/dev/null"
env_from_secret() { # env_from_secret VAR: "secret/key" the pods' VAR comes from
  k get deployment objects -n demo -o json |
    jq -r --arg v "$1" '.spec.template.spec.containers[0].env[] | select(.name == $v) | "\(.valueFrom.secretKeyRef.name)/\(.valueFrom.secretKeyRef.key)"'
}
check "the pods get AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from Secret objects-s3" bash -c \
  "$(declare -f k env_from_secret); [ \"\$(env_from_secret AWS_ACCESS_KEY_ID)\" = objects-s3/accessKeyId ] && [ \"\$(env_from_secret AWS_SECRET_ACCESS_KEY)\" = objects-s3/secretAccessKey ]"
check "the ConfigMap says storage kind s3 with the bucket, and holds no credential" bash -c \
  "$(declare -f k); c=\"\$(k get configmap objects-config -n demo -o jsonpath='{.data.berth\.yaml}')\"; grep -q 'kind: s3' <<<\"\$c\" && grep -q '$S3_BUCKET' <<<\"\$c\" && ! grep -q -e '$AWS_SECRET_ACCESS_KEY' -e '$AWS_ACCESS_KEY_ID' <<<\"\$c\""
start_haproxy
KUBELET_INSTANCE=objects
objects_settled() {
  k get deployment objects -n demo -o json | jq -e '.status.readyReplicas == 2 and .status.replicas == 2' >/dev/null &&
    [ "${#POD_PID[@]}" -eq 2 ]
}
run_objects_kubelet() { local i; for i in $(seq 1 240); do kubelet_pass; objects_settled && return 0; sleep 0.5; done; return 1; }
check "the controller-manager made 2 Pods and both run, ready, with no volume but their config" run_objects_kubelet
check "Registry objects is Ready" k wait --for=condition=Ready --timeout=60s registry/objects -n demo
check "Project stored is Ready" k wait --for=condition=Ready --timeout=60s project/stored -n demo
OIMG="127.0.0.1:$FRONT_PORT/demo/stored/app"
secret_authfile stored-push
check "push through the proxy (requests spread over the 2 pods) with the push token Secret" run_logged objects-push \
  skopeo copy --dest-tls-verify=false --authfile "$W/stored-push.json" "oci:$SRC:v1" "docker://$OIMG:v1"
check "pull it back anonymously, whole" run_logged objects-pull \
  skopeo copy --src-tls-verify=false --src-no-creds "docker://$OIMG:v1" "oci:$W/objects-pulled:v1"
check "haproxy sent requests to both pods" served_by_all 2
bucket_has_the_layers() { # the config and every layer of the pushed image are objects of the bucket
  local d keys m
  keys="$(python3 - <<'PY'
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ["S3_BUCKET"], Prefix="blobs/"):
    for o in page.get("Contents", []):
        print(o["Key"])
PY
)"
  m="$(jq -r '.manifests[0].digest' "$W/objects-pulled/index.json")"
  for d in $(jq -r '.config.digest, .layers[].digest' "$W/objects-pulled/blobs/sha256/${m#sha256:}"); do
    d="${d#sha256:}"
    grep -qx "blobs/sha256/${d:0:2}/$d" <<<"$keys" || { log "blob $d is not in the bucket"; return 1; }
  done
  log "the bucket holds $(wc -l <<<"$keys") blobs, the image's $(jq '.layers | length' "$W/objects-pulled/blobs/sha256/${m#sha256:}") layers and config among them"
}
check "the image's blobs are objects of the bucket" bucket_has_the_layers
for name in "${!POD_PID[@]}"; do kill -TERM "${POD_PID[$name]}" 2>/dev/null; done
for name in "${!POD_PID[@]}"; do wait "${POD_PID[$name]}" 2>/dev/null || true; unset "POD_PID[$name]" "POD_SLOT[$name]"; done
kill "$HAPROXY_PID" 2>/dev/null; wait "$HAPROXY_PID" 2>/dev/null || true; HAPROXY_PID=""
k delete project stored -n demo --timeout=60s >/dev/null 2>&1 || true
k delete registry objects -n demo --timeout=60s >/dev/null && pass "Registry objects deleted" || fail "Registry objects not deleted"
stop_s3
stop_postgres

# ===================================================================== TLS
step "a Registry with spec.tls.secretName: its pod serves HTTPS, clients verify the CA"
PKI="$W/pki"; mkdir -p "$PKI" "$W/tls-certs"
TLS_PORT=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=berth operator e2e CA" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null &&
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=secure" \
  -keyout "$PKI/tls.key" -out "$PKI/tls.csr" 2>/dev/null &&
openssl x509 -req -in "$PKI/tls.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 2 \
  -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:secure.demo.svc\nextendedKeyUsage=serverAuth\n') \
  -out "$PKI/tls.crt" 2>/dev/null || die "openssl: the test CA and certificate"
cp "$PKI/ca.crt" "$W/tls-certs/ca.crt" # skopeo's cert dir: the test CA only
k create secret generic secure-tls -n demo --type=kubernetes.io/tls --from-file=tls.crt="$PKI/tls.crt" \
  --from-file=tls.key="$PKI/tls.key" --from-file=ca.crt="$PKI/ca.crt" >/dev/null
k apply -f - >/dev/null <<YAML
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata: {name: secure, namespace: demo}
spec:
  publicHost: "127.0.0.1:$TLS_PORT"
  service: {port: $TLS_PORT}
  tls: {secretName: secure-tls}
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: sealed, namespace: demo}
spec:
  registryRef: {name: secure}
  visibility: private
  accessTokens:
    - {name: push, role: Developer, scopes: [read_registry, write_registry]}
YAML
check "TLSReady True (SecretPresent)" wait_until 60 reg_cond_is secure TLSReady "True SecretPresent"
check "status.url is https://127.0.0.1:$TLS_PORT (status.endpoint stays host:port)" bash -c \
  "$(declare -f k); [ \"\$(k get registry secure -n demo -o jsonpath='{.status.url} {.status.endpoint}')\" = 'https://127.0.0.1:$TLS_PORT 127.0.0.1:$TLS_PORT' ]"
check "Deployment secure mounts Secret secure-tls whole and probes over HTTPS" bash -c \
  "$(declare -f k); k get deployment secure -n demo -o json | jq -e '.spec.template.spec | ([.volumes[] | select(.name == \"tls\") | .secret.secretName] == [\"secure-tls\"]) and (.containers[0].readinessProbe.httpGet.scheme == \"HTTPS\") and ([.containers[0].volumeMounts[] | select(.name == \"tls\" and .subPath == null) | .mountPath] == [\"/etc/berth/tls\"])' >/dev/null"
check "the ConfigMap points tls at the mounted files" bash -c \
  "$(declare -f k); k get configmap secure-config -n demo -o jsonpath='{.data.berth\.yaml}' | grep -q 'certFile: /etc/berth/tls/tls.crt'"
check "the controller-manager made a Pod for Registry secure" wait_until 30 \
  bash -c "$(declare -f k); k get pods -n demo -l app.kubernetes.io/instance=secure -o name | grep -q pod/"
SPOD="$(k get pods -n demo -l app.kubernetes.io/instance=secure -o jsonpath='{.items[0].metadata.name}')"
k get pod "$SPOD" -n demo -o json >"$W/secure-pod.json"
python3 "$E2E_DIR/k8s/run_pod.py" "$W/secure-pod.json" "$W/secure-pod" "$BERTH_BIN" \
  "$K8S_BIN_DIR/kubectl" 127.0.0.1 "${API_HOSTPORT##*:}" "$KUBE_CA_FILE" \
  >>"$E2E_OUT/secure-pod-spec.json" 2>&1 || die "run_pod.py failed for $SPOD"
check "the pod's probe is HTTPS" test "$(jq -r .scheme "$W/secure-pod/probe.json")" = HTTPS
"$W/secure-pod/launch.sh" >>"$E2E_OUT/secure-pod.log" 2>&1 &
SECURE_PID=$!
secure_v2() { [ "$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.crt" "https://127.0.0.1:$TLS_PORT/v2/")" = 401 ]; }
check "the pod serves https://127.0.0.1:$TLS_PORT/v2/ with the Secret's certificate (verified with the CA)" \
  wait_until 30 secure_v2
mark_pod_ready "$SPOD"
check "Registry secure is Ready" k wait --for=condition=Ready --timeout=60s registry/secure -n demo
check "the operator reads the registry's GC figures over https (status.garbageCollection)" wait_until 60 \
  bash -c "$(declare -f k); [ -n \"\$(k get registry secure -n demo -o jsonpath='{.status.garbageCollection.sweeps}')\" ]"
check "Project sealed is Ready" k wait --for=condition=Ready --timeout=60s project/sealed -n demo
secret_authfile sealed-push
SIMG="127.0.0.1:$TLS_PORT/demo/sealed/app"
check "skopeo push over https with the push token Secret, verifying the CA (--dest-cert-dir)" run_logged secure-push \
  skopeo copy --dest-cert-dir "$W/tls-certs" --authfile "$W/sealed-push.json" "oci:$SRC:v1" "docker://$SIMG:v1"
check "skopeo pull back over https, verifying the CA" run_logged secure-pull \
  skopeo copy --src-cert-dir "$W/tls-certs" --authfile "$W/sealed-push.json" "docker://$SIMG:v1" "oci:$W/secure-pulled:v1"
SMETRICS="$(sed -n 's#.*metrics on http://\([0-9.:]*\)/metrics.*#\1#p' "$E2E_OUT/secure-pod.log" | tail -1)"
check "the pod serves /metrics (on $SMETRICS here; 9090 in a cluster)" bash -c \
  "curl -fsS 'http://$SMETRICS/metrics' | grep -q '^berth_http_requests_total{route=\"manifest\",method=\"PUT\",status=\"201\"}'"
kill -TERM "$SECURE_PID" 2>/dev/null; wait "$SECURE_PID" 2>/dev/null || true
k delete project sealed -n demo --timeout=60s >/dev/null 2>&1 || true
k delete registry secure -n demo --timeout=60s >/dev/null && pass "Registry secure deleted" || fail "Registry secure not deleted"

step "tls.issuerRef on an API server without cert-manager: TLSReady says so"
k apply -f - >/dev/null <<YAML
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata: {name: issued, namespace: demo}
spec:
  tls: {issuerRef: {name: ca-issuer, kind: ClusterIssuer}}
YAML
check "TLSReady False (CertManagerMissing)" wait_until 60 reg_cond_is issued TLSReady "False CertManagerMissing"
check "a Registry with both secretName and issuerRef is refused by the API server" bash -c \
  "$(declare -f k); ! k apply -f - >/dev/null 2>&1 <<'YAML'
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata: {name: both, namespace: demo}
spec:
  tls: {secretName: x, issuerRef: {name: y}}
YAML"
k delete registry issued -n demo --timeout=60s >/dev/null 2>&1 || true

log "TIMING control plane ready in ${CP_SECONDS} s; Registry Ready ${READY_SECONDS} s after creation"
finish
