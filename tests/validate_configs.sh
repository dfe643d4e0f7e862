#!/usr/bin/env bash
# envoy --mode validate for every configuration shipped in envoy/: each loads
# dist/harbor_mirror.wasm or dist/libharbor_mirror.so (relative to the repository root) and runs
# the filter's configuration.
# Files are validated as shipped, except that a TLS-terminating listener (front-proxy.yaml) gets a
# generated certificate in place of /etc/envoy/tls. Then the forms the suite and `./build.sh up`
# render from them: each with a plain-http upstream, and the front proxies with an https one.
set -euo pipefail
ENVOY=${1:?usage: validate_configs.sh ENVOY PYTHON}
PYTHON=${2:?usage: validate_configs.sh ENVOY PYTHON (with PyYAML)}
cd "$(dirname "$0")/.."
. tests/lib.sh
for artifact in dist/harbor_mirror.wasm dist/libharbor_mirror.so; do
  [ -f "$artifact" ] || { echo "$artifact is missing: run ./build.sh build" >&2; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/harbor-mirror-validate.XXXXXX")
trap 'rm -rf "$work"' EXIT
make_test_cert "$work/tls"

configs=()
for shipped in envoy/*.yaml; do
  name=$(basename "$shipped" .yaml)
  tls=(); grep -q DownstreamTlsContext "$shipped" && tls=(--tls-cert "$work/tls/tls.crt" --tls-key "$work/tls/tls.key")
  if [ ${#tls[@]} -eq 0 ]; then
    configs+=("$shipped")
  else
    "$PYTHON" envoy/render.py "$shipped" "${tls[@]}" >"$work/$name.yaml"
    configs+=("$work/$name.yaml")
  fi
  upstreams=(http://127.0.0.1:5001)
  [ "$name" = sidecar ] || upstreams+=(https://harbor.example.com)
  front=(--wasm "$PWD/dist/harbor_mirror.wasm")
  grep -q dynamic_modules "$shipped" && front=(--module "$PWD/dist/libharbor_mirror.so")
  for upstream in "${upstreams[@]}"; do
    out=$work/$name-${upstream%%:*}.yaml
    "$PYTHON" envoy/render.py "$shipped" --listen 127.0.0.1:5000 --admin-port 9901 \
      --upstream "$upstream" "${front[@]}" "${tls[@]}" >"$out"
    configs+=("$out")
  done
done
passed=0 failed=0
# What every shipped configuration promises (README, Deployment), read from the files themselves.
if "$PYTHON" - envoy/*.yaml <<'PY'; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
import json
import sys
import yaml

def typed(entries, suffix):
    return [e["typed_config"] for e in entries if e.get("typed_config", {}).get("@type", "").endswith(suffix)]

ok = True
for path in sys.argv[1:]:
    config = yaml.safe_load(open(path))
    problems = []
    if config["admin"]["address"]["socket_address"]["address"] != "127.0.0.1":
        problems.append("admin is not on 127.0.0.1 only")
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for hcm in typed(chain["filters"], "HttpConnectionManager"):
                if not hcm.get("access_log"):
                    problems.append("no access log")
                formats = json.dumps(hcm.get("access_log"))
                modules = typed(hcm["http_filters"], ".dynamic_modules.v3.DynamicModuleFilter")
                key = "harbor_mirror.original_path" if modules else "wasm.harbor_mirror.original_path"
                if f"%FILTER_STATE({key}:PLAIN)%" not in formats:
                    problems.append(f"the access log does not show the original path ({key})")
                for module in modules:
                    if module["dynamic_module_config"].get("metrics_namespace") != "harbor_mirror":
                        problems.append("the module's metrics_namespace is not harbor_mirror")
                    if module.get("filter_name") != "harbor_mirror":
                        problems.append("the module's filter_name is not harbor_mirror")
                    plugin = json.loads(module["filter_config"]["value"])
                    if plugin.get("log_original_path") is not True:
                        problems.append("the plugin configuration does not set log_original_path")
                if not hcm.get("request_headers_timeout"):
                    problems.append("no request_headers_timeout")
                if not hcm.get("local_reply_config"):
                    problems.append("no local_reply_config (OCI bodies for Envoy's 503s)")
                for wasm in typed(hcm["http_filters"], ".wasm.v3.Wasm"):
                    if wasm["config"].get("failure_policy") != "FAIL_RELOAD":
                        problems.append("the wasm filter's failure_policy is not FAIL_RELOAD")
                    plugin = json.loads(wasm["config"]["configuration"]["value"])
                    if plugin.get("log_original_path") is not True:
                        problems.append("the plugin configuration does not set log_original_path")
            tls = chain.get("transport_socket", {}).get("typed_config", {})
            if tls and "h2" not in tls["common_tls_context"].get("alpn_protocols", []):
                problems.append("TLS without h2 in ALPN")
    for cluster in config["static_resources"]["clusters"]:
        if not cluster.get("connect_timeout"):
            problems.append(f"cluster {cluster['name']} has no connect_timeout")
    print(f"{'FAIL' if problems else 'ok'}: {path}: " + ("; ".join(problems) or
          "admin on 127.0.0.1, access log with the original path, connect and request-headers timeouts, OCI local replies, FAIL_RELOAD (wasm)"))
    ok = ok and not problems
sys.exit(0 if ok else 1)
PY
for config in "${configs[@]}"; do
  if log=$("$ENVOY" --mode validate -c "$config" --log-level warn 2>&1); then
    echo "ok: $config"; passed=$((passed + 1))
  else
    echo "FAIL: $config"; echo "$log" | tail -n 20; failed=$((failed + 1))
  fi
done
echo "validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
