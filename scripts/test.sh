#!/usr/bin/env bash
# The test command: installs what the tests need, builds, type-checks, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== typecheck"
npm run typecheck
echo "== lint"
npm run lint
echo "== test"
npm test
