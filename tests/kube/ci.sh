#!/usr/bin/env bash
# Prepare a machine for `python3 -m pytest tests/kube`: Debian packages, the Python
# test dependencies and the control-plane binaries (built once per Kubernetes
# version, then reused from ~/.cache/flotilla/kube). Idempotent.
#
# Cold, on 2 cores: ~10 s of module download and ~5 min of build (see README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"

echo "== Debian packages"
bash tests/kube/install-deps.sh

echo "== Python dependencies"
if ! python3 -c 'import cryptography, pytest, requests, yaml' 2>/dev/null; then
  python3 -m pip install --quiet -e '.[dev]'
fi

echo "== Go toolchain"
command -v go >/dev/null || { echo "go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
go version

echo "== control plane"
start=$SECONDS
bindir="$(bash tests/kube/controlplane/build.sh)"
echo "binaries in $bindir ($((SECONDS - start)) s)"
"$bindir/kube-apiserver" --version
command -v kubectl >/dev/null || [ -x "$bindir/kubectl" ] || {
  echo "kubectl not found and not built" >&2
  exit 1
}
