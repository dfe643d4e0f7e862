#!/usr/bin/env bash
# Soak: tests/soak.py's mixed client load through one Envoy (two workers) with
# dist/harbor_mirror.wasm and the e2e plugin configuration, in front of CNCF Distribution seeded
# with images under Harbor project paths; then Envoy's wasm stats and log are checked for VM
# failures. Everything on 127.0.0.1, on free ports; only what is started here is stopped.
#
#   tests/soak.sh [SECONDS] [RATE]      defaults 600 s, 200 req/s
#
# Needs ENVOY, PYTHON (with PyYAML, for envoy/render.py) and WASM in the environment, as
# tests/e2e.sh; ./build.sh soak sets them. samples.csv and summary.json go to $SOAK_OUT (default
# target/soak/<time>); the work directory (registry, Envoy's log) is removed at exit unless
# KEEP_SOAK_WORK is set. SOAK_ARGS: more tests/soak.py options (e.g. --connections 16).
set -uo pipefail
: "${ENVOY:?path of the envoy binary}" "${PYTHON:?python with PyYAML}" "${WASM:?path of harbor_mirror.wasm}"
SECONDS_TO_RUN=${1:-600}
RATE=${2:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$ROOT/tests/lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/harbor-mirror-soak.XXXXXX")
OUT=${SOAK_OUT:-$ROOT/target/soak/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
cleanup() {
  stop_started
  if [ -n "${KEEP_SOAK_WORK:-}" ]; then echo "soak: work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REGISTRY_PORT=$(free_port)
REGISTRY=127.0.0.1:$REGISTRY_PORT
start_registry "$WORK/registry" "$REGISTRY_PORT" || { cat "$WORK/registry/registry.log"; exit 1; }
echo "soak: seeding $REGISTRY"
ALPINE=$(seed_image "$WORK" "$REGISTRY" dockerhub-proxy/library/alpine:3.19 "alpine 3.19 from dockerhub-proxy (soak)" v2s2)
ETCD=$(seed_image "$WORK" "$REGISTRY" quay-proxy/coreos/etcd:v3.5 "etcd from quay-proxy (soak)" oci)
# Decoys at the unprefixed paths: a request that bypassed the rewrite would get other digests,
# which soak.py counts as unexpected answers.
seed_image "$WORK" "$REGISTRY" library/alpine:3.19 "decoy: unprefixed alpine (soak)" v2s2 >/dev/null
seed_image "$WORK" "$REGISTRY" coreos/etcd:v3.5 "decoy: unprefixed etcd (soak)" oci >/dev/null
[ -n "$ALPINE" ] && [ -n "$ETCD" ] || { echo "soak: seeding failed"; exit 1; }

MIRROR_PORT=$(free_port)
ADMIN_PORT=$(free_port)
MIRROR=127.0.0.1:$MIRROR_PORT
ENVOY_LOG=$WORK/envoy.log
"$PYTHON" "$ROOT/envoy/render.py" "$ROOT/envoy/harbor-mirror.yaml" --listen "$MIRROR" --admin-port "$ADMIN_PORT" \
  --upstream "http://$REGISTRY" --wasm "$WASM" --plugin-config "$ROOT/tests/e2e-plugin-config.json" >"$WORK/envoy.yaml" || exit 1
# The venv's envoy is a Python wrapper that execs the binary: the PID started is Envoy's own.
start_envoy "$WORK/envoy.yaml" "$ENVOY_LOG" "$ADMIN_PORT" --concurrency 2 --log-level info || { tail -n 50 "$ENVOY_LOG"; exit 1; }
echo "soak: envoy (pid $ENVOY_PID, 2 workers) with $WASM on $MIRROR, admin on $ADMIN_PORT, registry on $REGISTRY"
echo "soak: figures to $OUT"

started=$SECONDS
# shellcheck disable=SC2086 # SOAK_ARGS is split on purpose
"$PYTHON" "$ROOT/tests/soak.py" --mirror "$MIRROR" --admin-port "$ADMIN_PORT" --envoy-pid "$ENVOY_PID" \
  --seconds "$SECONDS_TO_RUN" --rate "$RATE" --out "$OUT" ${SOAK_ARGS:-}
rc=$?
echo "soak: load and sampling took $((SECONDS - started)) s"

# Afterwards, from the outside: Envoy alive, no wasm VM failure, reload or crash.
failed=0
# The digests soak.py was served at start-up are the ones seeded under the projects (not a decoy's).
check_served() { # NAME SEEDED_DIGEST
  local served; served=$(jq -r ".images.$1 // empty" "$OUT/summary.json" 2>/dev/null)
  if [ -n "$served" ] && [ "$served" != "$2" ]; then
    echo "soak: FAIL: the mirror served $1 as $served, seeded as $2"; failed=1
  fi
}
check_served alpine "$ALPINE"
check_served etcd "$ETCD"
if ! kill -0 "$ENVOY_PID" 2>/dev/null; then
  echo "soak: FAIL: Envoy (pid $ENVOY_PID) is gone"; failed=1
fi
stats=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/stats?filter=^wasm" || true)
echo "soak: Envoy's wasm stats at the end:"
echo "$stats" | sed 's/^/    /'
bad=$(echo "$stats" | awk -F': ' '$1 ~ /^wasm\./ && $1 ~ /fail|reload/ && $2 ~ /^[0-9]+$/ && $2 > 0')
if [ -z "$stats" ]; then
  echo "soak: FAIL: Envoy's admin /stats did not answer"; failed=1
elif [ -n "$bad" ]; then
  echo "soak: FAIL: wasm VM failures or reloads:"; echo "$bad" | sed 's/^/    /'; failed=1
else
  echo "soak: ok: no wasm VM failure or reload stat above 0"
fi
crashes=$(grep -E '\]\[(error|critical)\]\[wasm\]|panicked|Function: proxy_on_[a-z_]+ failed' "$ENVOY_LOG" | head -n 20)
if [ -n "$crashes" ]; then
  echo "soak: FAIL: Envoy logged wasm errors:"; echo "$crashes" | sed 's/^/    /'; failed=1
else
  echo "soak: ok: no wasm error in Envoy's log"
fi

if [ $rc -ne 0 ] || [ $failed -ne 0 ]; then
  echo "soak: FAILED (soak.py exit $rc); Envoy's log without its access log:"
  grep -v '^\[[0-9T:.Z-]*\] "' "$ENVOY_LOG" | grep -v 'server.cc:467' | tail -n 40 | sed 's/^/  | /'
  exit 1
fi
echo "soak: PASS ($SECONDS_TO_RUN s at $RATE req/s); figures in $OUT"
