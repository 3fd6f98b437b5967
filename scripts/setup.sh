#!/usr/bin/env bash
# Installs everything imgstream's demo and tests need on a fresh Debian 12 machine (as root):
# Debian packages, the npm workspace (npm ci) and the build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  docker-registry   # a real OCI registry (distribution 2.8) for tests and the demo
  nginx-light       # the benchmark registry's blob storage, which the registry redirects downloads to
  containerd runc   # the container runtime imgstream plugs into
  libfuse2 fuse3    # fuse-native's libfuse2; fusermount3
  skopeo umoci      # image plumbing and ground truth in tests
  stargz-snapshotter # ctr-remote, for eStargz interop tests
  busybox-static    # a static binary to run in test containers
  zstd iproute2 apache2-utils
  attr              # setfattr/getfattr: layer xattrs, overlay opaque markers, xattr checks in tests
  time              # GNU time: peak RSS of ctr in the time-to-ready benchmark's runner test
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian service units would hold the default ports and sockets; tests start their own.
for svc in docker-registry nginx containerd; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done

echo "== npm ci"
npm ci --no-audit --no-fund
echo "== build"
npm run build
