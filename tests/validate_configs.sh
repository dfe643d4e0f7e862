#!/usr/bin/env bash
# envoy --mode validate for every configuration shipped in envoy/, as shipped: it loads
# dist/harbor_mirror.wasm (relative to the repository root) and runs the filter's on_configure.
# With PYTHON (having PyYAML) also the two forms `./build.sh up` renders from
# envoy/harbor-mirror.yaml: a plain-http upstream and an https one (HARBOR_URL).
set -euo pipefail
ENVOY=${1:?usage: validate_configs.sh ENVOY [PYTHON]}
PYTHON=${2:-}
cd "$(dirname "$0")/.."
[ -f dist/harbor_mirror.wasm ] || { echo "dist/harbor_mirror.wasm is missing: run ./build.sh build" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/harbor-mirror-validate.XXXXXX")
trap 'rm -rf "$work"' EXIT
configs=(envoy/*.yaml)
if [ -n "$PYTHON" ]; then
  for upstream in http://127.0.0.1:5001 https://harbor.example.com; do
    out=$work/up-${upstream%%:*}.yaml
    "$PYTHON" envoy/render.py envoy/harbor-mirror.yaml --listen 127.0.0.1:5000 --admin-port 9901 \
      --upstream "$upstream" --wasm "$PWD/dist/harbor_mirror.wasm" >"$out"
    configs+=("$out")
  done
fi
passed=0 failed=0
for config in "${configs[@]}"; do
  if log=$("$ENVOY" --mode validate -c "$config" --log-level warn 2>&1); then
    echo "ok: $config"; passed=$((passed + 1))
  else
    echo "FAIL: $config"; echo "$log" | tail -n 20; failed=$((failed + 1))
  fi
done
echo "validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
