#!/usr/bin/env bash
# Installs everything the berth e2e tests need on a fresh Debian machine, skipping what is
# already present. Idempotent; a warm run does no network I/O and builds nothing.
#
#   apt:  skopeo podman umoci docker-registry wrk jq curl time sqlite3 postgresql chromium fonts-dejavu-core
#         (+ python3-pip if no pip, nodejs + npm if no node)
#   PyPI: oras (Python SDK, pinned in versions.env; it has no CLI, clients.sh drives it from Python)
#   npm:  playwright-core and axe-core for ui.sh, pinned in e2e/ui/package.json + package-lock.json, installed
#         with `npm ci` into e2e/ui/node_modules (no browser download: it drives /usr/bin/chromium)
#   Go:   the OCI distribution-spec conformance runner at the pinned pseudo-version, built into
#         ${XDG_CACHE_HOME:-$HOME/.cache}/berth-e2e/<version>/bin with GOMODCACHE/GOCACHE there.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$E2E_DIR/versions.env"

say() { printf '[setup] %s\n' "$*"; }
installed=()
skipped=()

# ---------------------------------------------------------------- apt packages
APT_PKGS=(skopeo podman umoci docker-registry wrk jq curl time sqlite3 postgresql haproxy chromium fonts-dejavu-core)
pkg_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}
missing=()
for p in "${APT_PKGS[@]}"; do
  if pkg_installed "$p"; then skipped+=("apt:$p"); else missing+=("$p"); fi
done
if ! command -v python3 >/dev/null 2>&1; then missing+=(python3); fi
if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  missing+=(python3-pip)
fi
# node + npm for ui.sh (any source: NodeSource or Debian; playwright-core needs node >= 20)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt: missing ${missing[*]}; running apt-get update + install"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for p in "${missing[@]}"; do installed+=("apt:$p"); done
else
  say "apt: all of ${APT_PKGS[*]} already installed"
fi

# ---------------------------------------------------------------- oras, boto3, prometheus-client (PyPI)
# oras: the OCI client SDK clients.sh drives; boto3: lists the bucket's multipart uploads
# through the S3 API (s3-faults.sh), which no other client here does; prometheus-client: the
# Prometheus project's own parser of the text formats, for tls.sh's scrape of /metrics; PyYAML:
# operator.sh reads the Helm chart's rendered ServiceMonitors.
py_version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
pip_install() { # pip_install NAME VERSION
  local name="$1" want="$2" have pip_err
  have="$(py_version "$name")"
  if [ "$have" = "$want" ]; then
    skipped+=("pypi:$name==$have"); say "pypi: $name $have already installed"; return 0
  fi
  say "pypi: installing $name==$want (have: ${have:-none})"
  pip_err="$(mktemp)"
  if ! python3 -m pip install -q --disable-pip-version-check "$name==$want" 2>"$pip_err"; then
    if grep -q externally-managed "$pip_err"; then # Debian's system python (PEP 668)
      python3 -m pip install -q --disable-pip-version-check --break-system-packages "$name==$want"
    else
      cat "$pip_err" >&2; rm -f "$pip_err"; exit 1
    fi
  fi
  rm -f "$pip_err"
  [ "$(py_version "$name")" = "$want" ] || { say "ERROR: $name not importable after install"; exit 1; }
  installed+=("pypi:$name==$want")
}
pip_install oras "$ORAS_PY_VERSION"
pip_install boto3 "$BOTO3_VERSION"
pip_install prometheus-client "$PROMETHEUS_CLIENT_VERSION"
pip_install PyYAML "$PYYAML_VERSION"
python3 -c 'import prometheus_client.openmetrics.parser' || { say "ERROR: python3 cannot import prometheus_client"; exit 1; }
python3 -c 'import oras.client, oras.oci' || { say "ERROR: python3 cannot import oras.client"; exit 1; }
python3 -c 'import boto3' || { say "ERROR: python3 cannot import boto3"; exit 1; }

# ---------------------------------------------------------------- playwright-core (npm)
UI_DIR="$E2E_DIR/ui"
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
[ "$node_major" -ge 20 ] || { say "ERROR: node $(node --version 2>/dev/null || echo missing) is too old for playwright-core (need >= 20)"; exit 1; }
# every dependency pinned in package.json, at its version: "name@version" lines, and what is installed
npm_want="$(node -e 'const d = require(process.argv[1]).dependencies; for (const [n, v] of Object.entries(d)) console.log(`${n}@${v}`)' "$UI_DIR/package.json")"
npm_have() {
  local dep name
  for dep in $npm_want; do
    name="${dep%@*}"
    printf '%s@%s\n' "$name" "$(node -p 'require(process.argv[1]).version' "$UI_DIR/node_modules/$name/package.json" 2>/dev/null || echo none)"
  done
}
if [ "$(npm_have)" = "$npm_want" ]; then
  skipped+=($(sed 's/^/npm:/' <<<"$npm_want"))
  say "npm: $(tr '\n' ' ' <<<"$npm_want")already installed in $UI_DIR/node_modules"
else
  say "npm: npm ci in $UI_DIR (want: $(tr '\n' ' ' <<<"$npm_want")have: $(npm_have | tr '\n' ' '))"
  # no browser download: ui.sh launches the Debian chromium
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$UI_DIR" --no-audit --no-fund --loglevel=error
  [ "$(npm_have)" = "$npm_want" ] || { say "ERROR: after npm ci: $(npm_have | tr '\n' ' ')want $npm_want"; exit 1; }
  installed+=($(sed 's/^/npm:/' <<<"$npm_want"))
fi

# ---------------------------------------------------------------- conformance (Go)
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/berth-e2e/$CONFORMANCE_VERSION"
CONF_BIN="$CACHE_ROOT/bin/conformance"
if [ -x "$CONF_BIN" ]; then
  skipped+=("go:conformance@$CONFORMANCE_VERSION")
  say "go: conformance $CONFORMANCE_VERSION already built at $CONF_BIN"
else
  if ! command -v go >/dev/null 2>&1; then
    if [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; else
      say "ERROR: no Go toolchain (need go >= 1.24 for the conformance module)"; exit 1
    fi
  fi
  mkdir -p "$CACHE_ROOT/bin"
  export GOMODCACHE="$CACHE_ROOT/gomod" GOCACHE="$CACHE_ROOT/gocache" GOBIN="$CACHE_ROOT/bin"
  export GOFLAGS="-modcacherw" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  say "go: resolving $CONFORMANCE_MODULE@$CONFORMANCE_VERSION ($(go version))"
  if ! go list -m -json "$CONFORMANCE_MODULE@$CONFORMANCE_VERSION" >/dev/null; then
    say "ERROR: $CONFORMANCE_MODULE@$CONFORMANCE_VERSION does not resolve; available:"
    go list -m -json "$CONFORMANCE_MODULE@latest" || true
    exit 1
  fi
  say "go: building conformance (cold cache: ~1 min on 2 cores)"
  (cd "$CACHE_ROOT" && go install "$CONFORMANCE_MODULE@$CONFORMANCE_VERSION")
  [ -x "$CONF_BIN" ] || { say "ERROR: go install produced no $CONF_BIN"; exit 1; }
  installed+=("go:conformance@$CONFORMANCE_VERSION")
fi

# ---------------------------------------------------------------- versitygw (Go)
# The S3 server of s3-faults.sh: it answers ListMultipartUploads, which s3s-fs does not.
VGW_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/berth-e2e/versitygw-$VERSITYGW_VERSION"
VGW_BIN="$VGW_ROOT/bin/versitygw"
if [ -x "$VGW_BIN" ]; then
  skipped+=("go:versitygw@$VERSITYGW_VERSION")
  say "go: versitygw $VERSITYGW_VERSION already built at $VGW_BIN"
else
  command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
  command -v go >/dev/null 2>&1 || { say "ERROR: no Go toolchain (needed to build versitygw)"; exit 1; }
  mkdir -p "$VGW_ROOT/bin"
  say "go: building versitygw $VERSITYGW_VERSION (cold cache: a few minutes on 2 cores)"
  (cd "$VGW_ROOT" && GOMODCACHE="$VGW_ROOT/gomod" GOCACHE="$VGW_ROOT/gocache" GOBIN="$VGW_ROOT/bin" \
     GOFLAGS="-modcacherw" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" \
     go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
  [ -x "$VGW_BIN" ] || { say "ERROR: go install produced no $VGW_BIN"; exit 1; }
  installed+=("go:versitygw@$VERSITYGW_VERSION")
fi

# ---------------------------------------------------------------- sanity
for c in skopeo podman umoci docker-registry wrk jq curl sqlite3 /usr/bin/time chromium node npm; do
  command -v "$c" >/dev/null 2>&1 || { say "ERROR: $c not on PATH after install"; exit 1; }
done
say "installed: ${installed[*]:-(nothing)}"
say "skipped (already present): ${skipped[*]:-(nothing)}"
say "conformance binary: $CONF_BIN"
say "OK"
