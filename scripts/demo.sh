#!/usr/bin/env bash
# The README's main job: start a container from an image that streams, and compare with a full pull.
#
# On a fresh Debian 12 machine (as root) it installs what it needs (scripts/setup.sh), starts a real
# docker-registry on loopback, builds and pushes a demo image (busybox + DEMO_DATA_MB MiB of data
# files, gzip layers), indexes it with `imgstream index`, then measures the time until the
# container printed its first line:
#   1. full pull: a fresh private containerd, `ctr images pull` with the overlayfs snapshotter, `ctr run`;
#   2. streamed:  a fresh private containerd + imgstreamd (FUSE server + proxy snapshotter),
#                 `ctr-remote images rpull --snapshotter imgstream`, `ctr run --snapshotter imgstream`.
# Everything (processes, mounts, temp dirs) is cleaned up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DATA_MB="${DEMO_DATA_MB:-192}"

[ "${IMGSTREAM_DEMO_SKIP_SETUP:-}" = 1 ] || bash scripts/setup.sh

work="$(mktemp -d /tmp/imgstream-demo.XXXXXX)"
pids=()
cleanup() {
  set +e
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p="${pids[$i]}"
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null
      for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$p" 2>/dev/null
    fi
  done
  # containers' runc state and anything still mounted below the work dir
  for ns in imgstream-demo-full imgstream-demo-stream; do rm -rf "/run/containerd/runc/$ns"; done
  awk -v d="$work/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
wait_for() { # wait_for DESCRIPTION COMMAND...
  local what="$1"; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; return 1
}

# --- registry -------------------------------------------------------------------------------
port="$(free_port)"
cat > "$work/registry.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YAML
echo "== docker-registry on 127.0.0.1:$port"
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
wait_for registry curl -fsS "http://127.0.0.1:$port/v2/"

ref="127.0.0.1:$port/demo/app:v1"
echo "== building and pushing $ref"
node --conditions=imgstream-source --import tsx scripts/demo-stream-image.ts "$ref" "$DEMO_DATA_MB"
echo "== imgstream index --plain-http $ref"
node packages/cli/dist/main.js index --plain-http "$ref"

# --- containerd -----------------------------------------------------------------------------
start_containerd() { # start_containerd NAME [PROXY_SOCKET]
  local base="$work/$1" proxy=""
  mkdir -p "$base"
  if [ -n "${2:-}" ]; then
    proxy="[proxy_plugins.imgstream]
  type = \"snapshot\"
  address = \"$2\""
  fi
  cat > "$base/config.toml" <<TOML
version = 2
root = "$base/root"
state = "$base/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$base/containerd.sock"
[ttrpc]
  address = "$base/containerd.sock.ttrpc"
[debug]
  address = "$base/containerd.sock.debug"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$base/opt"
$proxy
TOML
  containerd --config "$base/config.toml" >"$base/containerd.log" 2>&1 &
  pids+=($!)
  wait_for containerd ctr -a "$base/containerd.sock" version
}

# Runs the container and prints the ms from START_MS until its first line of output.
first_line_ms() { # first_line_ms START_MS ctr-args...
  local start="$1"; shift
  local line t
  line="$("$@" | { IFS= read -r l; echo "$(now_ms) $l"; cat >/dev/null; })"
  t="${line%% *}"
  echo "   container said: ${line#* }" >&2
  echo $((t - start))
}

cmd=(/bin/busybox sh -c 'cat /app/hello.txt; cat /etc/hostname')

echo "== 1/2 full pull with the overlayfs snapshotter (fresh containerd, empty content store)"
start_containerd full
ctr_full=(ctr -a "$work/full/containerd.sock" -n imgstream-demo-full)
t0="$(now_ms)"
"${ctr_full[@]}" images pull --plain-http --snapshotter overlayfs "$ref" >/dev/null
pulled_full="$(($(now_ms) - t0))"
full_ms="$(first_line_ms "$t0" "${ctr_full[@]}" run --rm --snapshotter overlayfs "$ref" demo-full "${cmd[@]}")"
echo "   pull + unpack: ${pulled_full} ms; first line after ${full_ms} ms"
"${ctr_full[@]}" images rm --sync "$ref" >/dev/null

echo "== 2/2 streamed through imgstreamd (fresh containerd, empty layer cache)"
d="$work/imgstreamd"
mkdir -p "$d"
node examples/imgstreamd/dist/main.js \
  --mount_point="$d/mnt" --socket="$d/snapshotter.sock" --control_socket="$d/control.sock" \
  --snapshotter_root="$d/snapshotter" --layer_cache_dir="$d/layers" --images_in_use_db_path="$d/images-in-use.json" \
  --metrics_address="127.0.0.1:$(free_port)" --plain_http_loopback >"$d/imgstreamd.log" 2>&1 &
pids+=($!)
wait_for imgstreamd test -S "$d/snapshotter.sock"
wait_for imgstreamd grep -q 'control socket listening' "$d/imgstreamd.log"
start_containerd stream "$d/snapshotter.sock"
ctr_stream=(ctr -a "$work/stream/containerd.sock" -n imgstream-demo-stream)
t0="$(now_ms)"
ctr-remote -a "$work/stream/containerd.sock" -n imgstream-demo-stream images rpull --plain-http --snapshotter imgstream "$ref" >/dev/null
pulled_stream="$(($(now_ms) - t0))"
stream_ms="$(first_line_ms "$t0" "${ctr_stream[@]}" run --rm --snapshotter imgstream "$ref" demo-stream "${cmd[@]}")"
echo "   rpull (remote snapshots): ${pulled_stream} ms; first line after ${stream_ms} ms"
echo "   imgstreamd said:"
grep -E 'layer is streamed|not streamed|remote snapshot' "$d/imgstreamd.log" | sed 's/^/     /' | head -12
"${ctr_stream[@]}" images rm --sync "$ref" >/dev/null

echo
echo "== time to the container's first line (image: $((DEMO_DATA_MB / 2 * 2)) MiB of data + busybox, gzip, loopback registry)"
printf '   full pull (overlayfs):  %6d ms\n' "$full_ms"
printf "   imgstream (streamed):   %6d ms   (speed-up %s×)\n" "$stream_ms" "$(awk -v a="$full_ms" -v b="$stream_ms" 'BEGIN { printf "%.1f", a / (b > 0 ? b : 1) }')"
echo "== demo done"
