#!/usr/bin/env bash
# Install the Debian packages the local Kubernetes test cluster needs.
# Idempotent: does nothing (not even apt-get update) when all are present.
set -euo pipefail
packages=(etcd-server iproute2 procps util-linux openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
# The package starts a system etcd on :2379; the cluster runs its own on other ports,
# but stop the system one so it does not hold memory or confuse anyone.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
  systemctl disable etcd || true
fi
