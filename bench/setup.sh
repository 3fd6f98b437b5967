#!/usr/bin/env bash
# Debian packages the time-to-ready benchmark needs beyond scripts/setup.sh's (as root). Safe to run again.
set -euo pipefail
PACKAGES=(
  containerd runc docker-registry nginx-light skopeo stargz-snapshotter busybox-static  # also in scripts/setup.sh
  iproute2 util-linux strace time   # ip netns / tc tbf, nsenter + fincore, the working-set trace, peak RSS
  librsvg2-bin fonts-dejavu-core     # rsvg-convert for the report's PNG chart
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian service units would hold the default ports; the benchmark starts its own servers.
for svc in docker-registry nginx; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
# The images are built from Debian's archive: the apt lists must be there.
if ! apt-cache show python3-scipy >/dev/null 2>&1; then apt-get update -q; fi
