#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler from the
# k8s.io/kubernetes release pinned in go.mod, into a per-version cache outside
# the repository. Prints the directory holding the binaries on stdout.
#
# Only the first run pays for the build: if the binaries for this version are
# already cached the script returns at once. `go install` refuses
# k8s.io/kubernetes (its go.mod has replace directives), so this is a plain
# `go build` inside the wrapper module.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' go.mod)"
[ -n "$version" ] || { echo "cannot find the k8s.io/kubernetes version in go.mod" >&2; exit 1; }
cache_root="${FLOTILLA_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla/kube}"
out="$cache_root/$version"
commands=(kube-apiserver kube-controller-manager kube-scheduler)
# kubectl normally comes with the machine; build the matching one if it does not.
if [ -n "${FLOTILLA_KUBE_BUILD_KUBECTL:-}" ] || ! command -v kubectl >/dev/null; then
  commands+=(kubectl)
fi

have_all=1
for c in "${commands[@]}"; do [ -x "$out/bin/$c" ] || have_all=0; done
if [ "$have_all" = 1 ] && [ "$(cat "$out/go.sum.sha256" 2>/dev/null)" = "$(sha256sum < go.sum)" ]; then
  echo "$out/bin"
  exit 0
fi

minor="${version#v1.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X '$pkg.gitVersion=$version' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=$minor'"
  ldflags+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=$build_date'"
done

tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp/bin"
[ -d "$out/bin" ] && cp -a "$out/bin/." "$tmp/bin/"  # keep binaries a rebuild will replace
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "building Kubernetes $version control plane into $out (first run only; ~5-10 min on 2 cores)" >&2
go mod download
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" \
  "${commands[@]/#/k8s.io/kubernetes/cmd/}"
sha256sum < go.sum > "$tmp/go.sum.sha256"
rm -rf "$out"; mv "$tmp" "$out"
echo "built in $((SECONDS - start))s" >&2
echo "$out/bin"
