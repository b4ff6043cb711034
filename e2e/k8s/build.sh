#!/usr/bin/env bash
# Builds the e2e Kubernetes control plane from Go modules (no container images, no downloads of
# prebuilt binaries) and installs etcd from Debian. Idempotent: a warm run builds nothing.
#
#   kube-apiserver, kube-controller-manager, kubectl  k8s.io/kubernetes $K8S_VERSION   (./go.mod)
#   helm                                              helm.sh/helm/v4 $HELM_VERSION   (./helm/go.mod)
#   etcd                                              Debian package etcd-server (apt), if missing
#
# Binaries go to $K8S_BIN_DIR = ${XDG_CACHE_HOME:-~/.cache}/berth-e2e/k8s-$K8S_VERSION/bin; Go's module
# and build caches to ~/.cache/berth-e2e/go/{mod,build} (see env.sh). The last line printed is
# `K8S_BIN_DIR=<dir>`.
#
# Cold build on 2 cores: see README.md (roughly 10+ minutes, a few GiB of RAM). Env knobs:
#   K8S_BUILD_PARALLEL (default 2)  -> go build -p
#   K8S_FORCE_REBUILD=1             -> rebuild even if the binaries exist
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

say() { printf '[k8s-build] %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# ------------------------------------------------------------------------------------------- etcd
if command -v etcd >/dev/null 2>&1; then
  say "etcd: $(command -v etcd) ($(etcd --version 2>/dev/null | head -1))"
else
  say "etcd: missing; installing Debian etcd-server"
  export DEBIAN_FRONTEND=noninteractive
  apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  # The package's postinst would start an etcd service on the default ports (2379/2380); we only
  # want the binary. policy-rc.d exit 101 = "action forbidden" tells invoke-rc.d not to start it.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  rc=0
  { apt_get install -y -qq --no-install-recommends etcd-server >/dev/null 2>&1 ||
    { apt_get update -qq && apt_get install -y -qq --no-install-recommends etcd-server >/dev/null; }; } || rc=$?
  [ -n "$made_policy" ] && rm -f "$policy"
  [ "$rc" = 0 ] || { say "ERROR: apt-get install etcd-server failed ($rc)"; exit 1; }
  command -v etcd >/dev/null 2>&1 || { say "ERROR: etcd not on PATH after installing etcd-server"; exit 1; }
  say "etcd: installed $(etcd --version 2>/dev/null | head -1)"
fi
command -v openssl >/dev/null 2>&1 || {
  say "openssl missing; installing"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq openssl >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
}

# --------------------------------------------------------------------------------------- Go builds
command -v go >/dev/null 2>&1 || { [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"; }
command -v go >/dev/null 2>&1 || { say "ERROR: no Go toolchain on PATH (need go >= 1.26 for helm v4)"; exit 1; }

mkdir -p "$K8S_BIN_DIR" "$K8S_GOMODCACHE" "$K8S_GOCACHE"
export GOMODCACHE="$K8S_GOMODCACHE" GOCACHE="$K8S_GOCACHE"
# go.sum is committed: -mod=readonly never rewrites go.mod/go.sum in the work tree.
# GOTOOLCHAIN=local: use the installed Go; both modules need at most go 1.26.0.
export GOFLAGS="-modcacherw -mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
PAR="${K8S_BUILD_PARALLEL:-2}"

k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done
helm_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

# Peak memory: sample MemAvailable while building (system-wide; the Go compiler and linker are
# separate processes, so one process's max RSS under-reports).
mem_kib() { awk -v k="$1" '$1==k":"{print $2}' /proc/meminfo; }
mem_total=$(mem_kib MemTotal)
peak_file="$(mktemp)"
sampler_pid=
start_sampler() {
  local base; base=$((mem_total - $(mem_kib MemAvailable)))
  echo "$base $base" >"$peak_file"
  ( max=$base
    while sleep 0.5; do
      used=$((mem_total - $(mem_kib MemAvailable)))
      if [ "$used" -gt "$max" ]; then max=$used; echo "$base $max" >"$peak_file"; fi
    done ) &
  sampler_pid=$!
}
stop_sampler() { [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=; }
trap 'stop_sampler; rm -f "$peak_file"' EXIT

built=() skipped=() failed=()
cpu_total=0
total_start=$(now)
# build NAME MODULE_DIR PACKAGE LDFLAGS STAMP
build() {
  local name=$1 dir=$2 pkg=$3 ldflags=$4 stamp=$5 out="$K8S_BIN_DIR/$1"
  if [ -z "${K8S_FORCE_REBUILD:-}" ] && [ -x "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$stamp" ]; then
    skipped+=("$name"); say "$name: already built ($stamp) at $out"; return 0
  fi
  say "$name: building $pkg ($stamp, -p $PAR) ..."
  local t0 rss_file; t0=$(now); rss_file="$(mktemp)"
  local -a timer=()
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -o "$rss_file" -f '%M %U %S')
  if (cd "$dir" && "${timer[@]}" go build -p "$PAR" -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg"); then
    mv -f "$out.tmp" "$out"; echo "$stamp" >"$out.version"
    local rss=""
    [ -s "$rss_file" ] && rss="$(awk 'END{printf ", %.0f CPU-s, largest process %.1f GiB", $2+$3, $1/1048576}' "$rss_file")"
    say "$name: built in $(elapsed "$t0") s ($(du -h "$out" | cut -f1)$rss)"
    [ -s "$rss_file" ] && cpu_total=$(awk -v t="$cpu_total" 'END{printf "%.0f", t+$2+$3}' "$rss_file")
    built+=("$name")
  else
    rm -f "$out.tmp"; say "ERROR: $name failed after $(elapsed "$t0") s"; failed+=("$name")
  fi
  rm -f "$rss_file"
}

need_build=
for b in kube-apiserver kube-controller-manager kubectl; do
  [ -x "$K8S_BIN_DIR/$b" ] && [ "$(cat "$K8S_BIN_DIR/$b.version" 2>/dev/null)" = "$K8S_VERSION" ] || need_build=1
done
[ -x "$K8S_BIN_DIR/helm" ] && [ "$(cat "$K8S_BIN_DIR/helm.version" 2>/dev/null)" = "$HELM_VERSION" ] || need_build=1
[ -n "${K8S_FORCE_REBUILD:-}" ] && need_build=1
[ -n "$need_build" ] && start_sampler

build kube-apiserver "$HERE" k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags" "$K8S_VERSION"
build kube-controller-manager "$HERE" k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags" "$K8S_VERSION"
build kubectl "$HERE" k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags" "$K8S_VERSION"
build helm "$HERE/helm" helm.sh/helm/v4/cmd/helm "$helm_ldflags" "$HELM_VERSION"

if [ -n "$need_build" ]; then
  stop_sampler
  read -r base peak <"$peak_file"
  say "builds took $(elapsed "$total_start") s in all (${cpu_total} CPU-s); peak memory in use on the machine" \
      "$(awk -v p="$peak" -v b="$base" 'BEGIN{printf "%.1f GiB (%.1f GiB above the %.1f GiB before the build)", p/1048576, (p-b)/1048576, b/1048576}')"
fi
say "built: ${built[*]:-(nothing)}; already there: ${skipped[*]:-(nothing)}"
[ "${#failed[@]}" = 0 ] || { say "FAILED: ${failed[*]}"; exit 1; }
"$K8S_BIN_DIR/kubectl" version --client 2>/dev/null | sed 's/^/[k8s-build] /' || true
echo "K8S_BIN_DIR=$K8S_BIN_DIR"
