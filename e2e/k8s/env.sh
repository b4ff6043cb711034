# shellcheck shell=bash
# Paths for the e2e Kubernetes control plane. Source it (bash): `source e2e/k8s/env.sh`.
# Sets (each may be overridden from the environment before sourcing):
#   K8S_VERSION, K8S_STAGING_VERSION, HELM_VERSION   from versions.env
#   BERTH_E2E_CACHE   ${XDG_CACHE_HOME:-$HOME/.cache}/berth-e2e
#   K8S_BIN_DIR       $BERTH_E2E_CACHE/k8s-$K8S_VERSION/bin  (kube-apiserver, kube-controller-manager,
#                     kubectl, helm)
#   K8S_GOMODCACHE / K8S_GOCACHE   persistent Go module / build caches under $BERTH_E2E_CACHE/go
K8S_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$K8S_DIR/versions.env"
BERTH_E2E_CACHE="${BERTH_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth-e2e}"
K8S_BIN_DIR="${K8S_BIN_DIR:-$BERTH_E2E_CACHE/k8s-$K8S_VERSION/bin}"
K8S_GOMODCACHE="${K8S_GOMODCACHE:-$BERTH_E2E_CACHE/go/mod}"
K8S_GOCACHE="${K8S_GOCACHE:-$BERTH_E2E_CACHE/go/build}"
export K8S_DIR K8S_VERSION K8S_STAGING_VERSION HELM_VERSION BERTH_E2E_CACHE K8S_BIN_DIR K8S_GOMODCACHE K8S_GOCACHE
