#!/usr/bin/env bash
# The demo (README's main command until the snapshotter lands): installs what is needed, starts a
# real docker-registry on loopback in a temp dir, pushes a small two-platform image with
# imgstream's registry client, and inspects it with `imgstream inspect`. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

work="$(mktemp -d /tmp/imgstream-demo.XXXXXX)"
reg_pid=""
cleanup() {
  if [ -n "$reg_pid" ] && kill -0 "$reg_pid" 2>/dev/null; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
cat > "$work/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
YAML
echo "== starting docker-registry on 127.0.0.1:$port"
/usr/bin/docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null || { cat "$work/registry.log"; exit 1; }

ref="127.0.0.1:$port/demo/hello:v1"
echo "== pushing a demo image with imgstream's registry client"
node --conditions=imgstream-source --import tsx scripts/demo-image.ts "$ref"
echo "== imgstream inspect --plain-http $ref"
node packages/cli/dist/main.js inspect --plain-http --platform linux/amd64 "$ref"
echo "== imgstream inspect --plain-http --json --platform linux/arm64 $ref"
node packages/cli/dist/main.js inspect --plain-http --json --platform linux/arm64 "$ref"
echo "== demo done"
