#!/usr/bin/env bash
# A real, lean Kubernetes control plane on 127.0.0.1 for the e2e suite: etcd + kube-apiserver +
# kube-controller-manager (no scheduler, no kubelet: Pods stay Pending unless the harness fakes
# them). Binaries come from build.sh ($K8S_BIN_DIR, see env.sh); etcd from PATH.
#
#   controlplane.sh start DIR   start everything with state, logs and pids in DIR (created if
#                               missing; must not already hold a running control plane)
#   controlplane.sh stop DIR    stop whatever `start DIR` started (safe to repeat; exit 0)
#   controlplane.sh status DIR  exit 0 if all three processes are alive and the apiserver is ready
#
# After `start`, DIR holds:
#   kubeconfig        admin kubeconfig (bearer token of user `admin` in group system:masters,
#                     CA = the apiserver's self-signed CA from DIR/certs, server https://127.0.0.1:PORT)
#   env               shell exports: KUBECONFIG, K8S_BIN_DIR, KUBE_APISERVER_URL, KUBE_ADMIN_TOKEN,
#                     KUBE_CA_FILE, ETCD_ENDPOINT, KCM_URL, SA_SIGNING_KEY, SA_PUBLIC_KEY
#   ca.crt            the CA that signed the apiserver's serving cert (also --root-ca-file of KCM)
#   sa.key / sa.pub   service-account token signing key pair (RSA 2048)
#   token.csv         --token-auth-file
#   logs/*.log, *.pid
#
# Knobs: K8S_BIN_DIR (binaries), ETCD_BIN (default: etcd on PATH), CONTROLPLANE_TIMEOUT (seconds
# per component, default 60), KUBE_APISERVER_EXTRA_ARGS / KCM_EXTRA_ARGS (word-split, appended).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

say() { printf '[controlplane] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

COMPONENTS_STOP_ORDER=(kube-controller-manager kube-apiserver etcd)
TIMEOUT="${CONTROLPLANE_TIMEOUT:-60}"

# free_ports N: print N distinct currently-free TCP ports on 127.0.0.1.
free_ports() {
  python3 - "$1" <<'PY' 2>/dev/null && return 0
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
PY
  # Fallback without python3: random high ports that nothing answers on.
  local out=() p
  while [ "${#out[@]}" -lt "$1" ]; do
    p=$((20000 + RANDOM % 30000))
    case " ${out[*]} " in *" $p "*) continue ;; esac
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    out+=("$p")
  done
  echo "${out[*]}"
}

# pid_alive NAME DIR: the pid in DIR/NAME.pid is running and is (still) that binary.
pid_alive() {
  local f="$2/$1.pid" pid
  [ -s "$f" ] || return 1
  pid="$(cat "$f")"
  [ -d "/proc/$pid" ] || return 1
  local exe; exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  exe="${exe##*/}"; [ "${exe%% (deleted)}" = "$1" ] || return 1
  # a zombie (exited, not yet reaped) counts as dead
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

stop_one() {
  local name=$1 dir=$2 f="$2/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if pid_alive "$name" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do pid_alive "$name" "$dir" || break; sleep 0.1; done
    if pid_alive "$name" "$dir"; then
      say "$name (pid $pid) ignored SIGTERM for 10 s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do pid_alive "$name" "$dir" || break; sleep 0.1; done
    fi
    say "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

cmd_stop() {
  local dir=$1 c
  [ -d "$dir" ] || { say "nothing to stop in $dir (no such directory)"; return 0; }
  for c in "${COMPONENTS_STOP_ORDER[@]}"; do stop_one "$c" "$dir"; done
  return 0
}

# wait_for NAME DIR SECONDS CMD...: poll CMD until it succeeds; fail early if NAME's process died.
wait_for() {
  local name=$1 dir=$2 secs=$3; shift 3
  local deadline; deadline=$(( $(date +%s) + secs ))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! pid_alive "$name" "$dir"; then
      say "$name exited; last lines of $dir/logs/$name.log:" >&2
      tail -n 30 "$dir/logs/$name.log" >&2 || true
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "$name not ready after ${secs} s; last lines of $dir/logs/$name.log:" >&2
      tail -n 30 "$dir/logs/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# spawn NAME DIR BIN ARGS...: start in the background, stdin from /dev/null, output to the log.
spawn() {
  local name=$1 dir=$2; shift 2
  "$@" </dev/null >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

cmd_start() {
  local dir=$1 c
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  for c in "${COMPONENTS_STOP_ORDER[@]}"; do
    pid_alive "$c" "$dir" && die "$c already running in $dir (pid $(cat "$dir/$c.pid")); run: $0 stop $dir"
  done

  local apiserver="$K8S_BIN_DIR/kube-apiserver" kcm="$K8S_BIN_DIR/kube-controller-manager"
  local kubectl="$K8S_BIN_DIR/kubectl" etcd="${ETCD_BIN:-$(command -v etcd || true)}"
  for b in "$apiserver" "$kcm" "$kubectl"; do
    [ -x "$b" ] || die "$b missing: run $HERE/build.sh first"
  done
  { [ -n "$etcd" ] && [ -x "$etcd" ]; } || die "etcd not on PATH: run $HERE/build.sh (installs Debian etcd-server)"
  command -v openssl >/dev/null || die "openssl missing"
  command -v curl >/dev/null || die "curl missing"

  rm -rf "$dir/etcd" "$dir/certs" "$dir/certs-kcm" "$dir/logs"
  mkdir -p "$dir/logs" "$dir/certs" "$dir/certs-kcm"
  # If anything below fails, do not leave half a control plane running.
  CP_DIR="$dir"
  # shellcheck disable=SC2154  # rc is assigned inside the trap string
  trap 'rc=$?; if [ $rc -ne 0 ]; then say "start failed; stopping what was started" >&2; cmd_stop "$CP_DIR" >&2; fi' EXIT

  local t_all; t_all=$(now)
  local etcd_port etcd_peer api_port kcm_port
  read -r etcd_port etcd_peer api_port kcm_port <<<"$(free_ports 4)"

  # ------------------------------------------------------------------------------------ etcd
  local t0; t0=$(now)
  local etcd_url="http://127.0.0.1:$etcd_port"
  spawn etcd "$dir" "$etcd" \
    --name berth-e2e --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "berth-e2e=http://127.0.0.1:$etcd_peer" \
    --initial-cluster-state new \
    --logger zap --log-level warn
  wait_for etcd "$dir" "$TIMEOUT" sh -c "curl -fsS '$etcd_url/health' | grep -q '\"health\":\"true\"'" ||
    die "etcd did not become healthy"
  say "etcd ready in $(elapsed "$t0") s ($etcd_url, $("$etcd" --version | head -1))"

  # ------------------------------------------------------------------ keys and token file
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  local token; token="$(openssl rand -hex 32)"
  printf '%s,admin,admin,"system:masters"\n' "$token" >"$dir/token.csv"
  chmod 600 "$dir/sa.key" "$dir/token.csv"

  # ---------------------------------------------------------------------- kube-apiserver
  t0=$(now)
  local issuer=https://kubernetes.default.svc
  local api_url="https://127.0.0.1:$api_port"
  # shellcheck disable=SC2086
  spawn kube-apiserver "$dir" "$apiserver" \
    --etcd-servers="$etcd_url" \
    --cert-dir="$dir/certs" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC \
    --token-auth-file="$dir/token.csv" \
    --service-account-issuer="$issuer" \
    --service-account-key-file="$dir/sa.pub" \
    --service-account-signing-key-file="$dir/sa.key" \
    --api-audiences="$issuer" \
    --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --profiling=false \
    ${KUBE_APISERVER_EXTRA_ARGS:-}
  # The serving cert appears in cert-dir before the port opens; /readyz needs etcd + RBAC bootstrap.
  wait_for kube-apiserver "$dir" "$TIMEOUT" \
    curl -fsSk -H "Authorization: Bearer $token" "$api_url/readyz" || die "kube-apiserver did not become ready"

  # apiserver.crt = serving cert followed by the self-signed CA that issued it (SANs include
  # 127.0.0.1). Use that CA in the kubeconfig; fall back to insecure-skip-tls-verify if the CA
  # does not verify the server (so a change upstream degrades instead of breaking).
  awk 'BEGIN{n=0} /-----BEGIN CERTIFICATE-----/{n++} n>=2{print}' "$dir/certs/apiserver.crt" >"$dir/ca.crt"
  local tls_line
  if [ -s "$dir/ca.crt" ] && curl -fsS --cacert "$dir/ca.crt" -H "Authorization: Bearer $token" "$api_url/readyz" >/dev/null 2>&1; then
    tls_line="    certificate-authority-data: $(base64 -w0 <"$dir/ca.crt")"
  else
    say "WARNING: apiserver CA from $dir/certs/apiserver.crt does not verify $api_url; kubeconfig uses insecure-skip-tls-verify" >&2
    cp "$dir/certs/apiserver.crt" "$dir/ca.crt"
    tls_line="    insecure-skip-tls-verify: true"
  fi
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-e2e
  cluster:
    server: $api_url
$tls_line
users:
- name: admin
  user:
    token: $token
contexts:
- name: berth-e2e
  context:
    cluster: berth-e2e
    user: admin
    namespace: default
current-context: berth-e2e
EOF
  chmod 600 "$dir/kubeconfig"
  say "kube-apiserver ready in $(elapsed "$t0") s ($api_url)"

  # ------------------------------------------------------------- kube-controller-manager
  t0=$(now)
  local kcm_url="https://127.0.0.1:$kcm_port"
  # shellcheck disable=SC2086
  spawn kube-controller-manager "$dir" "$kcm" \
    --kubeconfig="$dir/kubeconfig" \
    --authentication-kubeconfig="$dir/kubeconfig" \
    --authorization-kubeconfig="$dir/kubeconfig" \
    --authentication-skip-lookup=true \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$dir/certs-kcm" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=false \
    --service-account-private-key-file="$dir/sa.key" \
    --root-ca-file="$dir/ca.crt" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --profiling=false \
    ${KCM_EXTRA_ARGS:-}
  wait_for kube-controller-manager "$dir" "$TIMEOUT" curl -fsSk "$kcm_url/healthz" ||
    die "kube-controller-manager did not become healthy"
  # Healthy is not yet working: wait until the serviceaccount controller made `default/default`.
  wait_for kube-controller-manager "$dir" "$TIMEOUT" \
    "$kubectl" --kubeconfig "$dir/kubeconfig" get serviceaccount default -n default ||
    die "kube-controller-manager did not create the default ServiceAccount"
  say "kube-controller-manager ready in $(elapsed "$t0") s ($kcm_url)"

  cat >"$dir/env" <<EOF
export KUBECONFIG='$dir/kubeconfig'
export K8S_BIN_DIR='$K8S_BIN_DIR'
export KUBE_APISERVER_URL='$api_url'
export KUBE_ADMIN_TOKEN='$token'
export KUBE_CA_FILE='$dir/ca.crt'
export ETCD_ENDPOINT='$etcd_url'
export KCM_URL='$kcm_url'
export SA_SIGNING_KEY='$dir/sa.key'
export SA_PUBLIC_KEY='$dir/sa.pub'
EOF
  trap - EXIT
  say "control plane ready in $(elapsed "$t_all") s"
  say "KUBECONFIG=$dir/kubeconfig  (source $dir/env for all variables; PATH += $K8S_BIN_DIR)"
}

cmd_status() {
  local dir=$1 c ok=0
  for c in etcd kube-apiserver kube-controller-manager; do
    if pid_alive "$c" "$dir"; then say "$c: running (pid $(cat "$dir/$c.pid"))"; else say "$c: not running"; ok=1; fi
  done
  if [ "$ok" = 0 ] && [ -f "$dir/kubeconfig" ]; then
    "$K8S_BIN_DIR/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null 2>&1 || { say "kube-apiserver: not ready"; ok=1; }
  fi
  return "$ok"
}

[ $# -eq 2 ] || usage
case "$1" in
  start) cmd_start "$2" ;;
  stop) cmd_stop "$2" ;;
  status) cmd_status "$2" ;;
  *) usage ;;
esac
