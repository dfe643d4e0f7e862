#!/usr/bin/env bash
# envoy --mode validate for every configuration shipped in envoy/, as shipped: it loads
# dist/harbor_mirror.wasm (relative to the repository root) and runs the filter's on_configure.
set -euo pipefail
ENVOY=${1:?usage: validate_configs.sh ENVOY}
cd "$(dirname "$0")/.."
[ -f dist/harbor_mirror.wasm ] || { echo "dist/harbor_mirror.wasm is missing: run ./build.sh build" >&2; exit 1; }
passed=0 failed=0
for config in envoy/*.yaml; do
  if log=$("$ENVOY" --mode validate -c "$config" --log-level warn 2>&1); then
    echo "ok: $config"; passed=$((passed + 1))
  else
    echo "FAIL: $config"; echo "$log" | tail -n 20; failed=$((failed + 1))
  fi
done
echo "validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
