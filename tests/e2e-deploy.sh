# The deployment part of the end-to-end suite, sourced by tests/e2e.sh after the hardening part
# (its start_front is used here):
#   envoy/front-proxy.yaml terminating TLS, with HTTP/2, for curl, containerd and skopeo;
#   envoy/sidecar.yaml in front of a registry on loopback, keeping the https scheme clients used;
#   a k3s registries.yaml converted by `harbor-mirror import-k3s`, then pulled through with ctr;
#   the document Higress makes of envoy/higress/wasmplugin.yaml: the filter for its domain only;
#   `harbor-mirror explain` agreeing with the filter's own account of each request.
# Needs HARBOR_MIRROR_CLI (the built command-line tool) besides what e2e.sh needs, and PYTHON
# with tests/requirements-k8s.txt (tests/validate_k8s.py builds Higress's document).

mkdir -p "$WORK/deploy"
make_test_cert "$WORK/deploy/tls"
TEST_CA=$WORK/deploy/tls/tls.crt
FRONT_CONFIG=front-proxy.yaml start_front tls "http://$REGISTRY" "$WASM" \
  --tls-cert "$WORK/deploy/tls/tls.crt" --tls-key "$WORK/deploy/tls/tls.key"
FRONT_CONFIG=sidecar.yaml start_front sidecar "http://$REGISTRY" "$WASM"
FRONT_CONFIG=sidecar.yaml start_front sidecar_auth "http://$AUTH" "$WASM"
"$HARBOR_MIRROR_CLI" import-k3s "$ROOT/tests/k3s-registries.yaml" >"$WORK/deploy/k3s.json" 2>"$WORK/deploy/k3s.notes" ||
  { cat "$WORK/deploy/k3s.notes"; exit 1; }
start_front k3s "http://$REGISTRY" "$WASM" --plugin-config "$WORK/deploy/k3s.json"
# What Higress hands the plugin for the shipped resource, with this front's host as the domain.
"$PYTHON" - "$ROOT/envoy/higress/wasmplugin.yaml" "$ROOT/tests" >"$WORK/deploy/higress.json" <<'PY'
import json, sys, yaml
sys.path.insert(0, sys.argv[2])
from validate_k8s import higress_envelope
envelope = higress_envelope(yaml.safe_load(open(sys.argv[1]))["spec"])
for rule in envelope["_rules_"]:
    rule["_match_domain_"] = ["127.0.0.1"]
json.dump(envelope, sys.stdout)
PY
start_front higress "http://$REGISTRY" "$WASM" --plugin-config "$WORK/deploy/higress.json"

# --- cases ------------------------------------------------------------------------------------

case_front_proxy_terminates_tls_with_http2() {
  local url=https://$FRONT_tls
  local out
  out=$(curl -s --http2 --cacert "$TEST_CA" -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -o "$WORK/deploy/manifest" -w '%{http_version} %{http_code}' "$url/v2/library/alpine/manifests/3.19")
  expect_eq "curl over TLS: HTTP version and status" "$out" "2 200"
  expect_eq "manifest digest" "sha256:$(sha256sum <"$WORK/deploy/manifest" | cut -d' ' -f1)" "$ALPINE"
  # containerd, from the https recipe, trusting the test CA.
  write_hosts_toml "$WORK/hosts-tls" docker.io containerd "$url"
  printf '  ca = "%s"\n' "$TEST_CA" >>"$WORK/hosts-tls/docker.io/hosts.toml"
  ctr_pull "$WORK/hosts-tls" tls docker.io/library/alpine:3.19
  expect_eq "ctr digest over TLS" "$(ctr_digest tls docker.io/library/alpine:3.19)" "$ALPINE"
  # skopeo through the https registries.conf recipe; --cert-dir holds the CA.
  client_config containers "$url" >"$WORK/deploy/registries-tls.conf"
  mkdir -p "$WORK/deploy/certs" && cp "$TEST_CA" "$WORK/deploy/certs/ca.crt"
  local digest
  digest=sha256:$(skopeo --registries-conf "$WORK/deploy/registries-tls.conf" inspect --cert-dir "$WORK/deploy/certs" \
    --raw docker://docker.io/library/alpine:3.19 | sha256sum | cut -d' ' -f1)
  expect_eq "skopeo digest over TLS" "$digest" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  registry_received_only_under dockerhub-proxy
  # The access log names each request's protocol (Envoy flushes it every few seconds).
  local waited=0
  until [ "$(grep -c 'alpine/manifests/3.19 HTTP/' "$ENVOY_LOG_tls")" -ge 3 ] || [ $waited -ge 40 ]; do
    sleep 0.5; waited=$((waited + 1))
  done
  grep -q '"GET /v2/dockerhub-proxy/library/alpine/manifests/3.19 HTTP/2"' "$ENVOY_LOG_tls" ||
    { echo "FAIL: no HTTP/2 request in the access log"; return 1; }
  echo "ok: access log protocols: $(grep -o 'HTTP/[0-9.]*"' "$ENVOY_LOG_tls" | sort | uniq -c | tr -s ' \n' ' ')"
}

case_sidecar_keeps_the_scheme_clients_used() {
  local digest
  digest=sha256:$(skopeo inspect --tls-verify=false --raw "docker://$FRONT_sidecar/library/alpine:3.19" | sha256sum | cut -d' ' -f1)
  expect_eq "digest through the sidecar" "$digest" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  # Harbor's challenge through the sidecar: the realm is on the host and scheme clients used
  # (https, at the ingress), not the sidecar's plain port.
  local challenge
  challenge=$(challenge_of "http://$FRONT_sidecar_auth/v2/" -H 'Host: harbor.example.com')
  echo "    $challenge"
  [[ $challenge == 'Bearer realm="https://harbor.example.com/service/token'* ]] ||
    { echo "FAIL: the realm is not https://harbor.example.com/service/token"; return 1; }
}

case_k3s_registries_yaml_imported_and_pulled() {
  sed 's/^/    /' "$WORK/deploy/k3s.notes"
  grep -q 'configs\["harbor.example.com"\].auth: credentials are not carried over' "$WORK/deploy/k3s.notes" ||
    { echo "FAIL: import-k3s did not say the credentials stay behind"; return 1; }
  "$HARBOR_MIRROR_CLI" check "$WORK/deploy/k3s.json"
  write_hosts_toml "$WORK/hosts-k3s" _default containerd-default "http://$FRONT_k3s"
  ctr_pull "$WORK/hosts-k3s" k3s docker.io/ksd-test/app:1
  ctr_pull "$WORK/hosts-k3s" k3s docker.io/library/alpine:3.19
  ctr_pull "$WORK/hosts-k3s" k3s quay.io/coreos/etcd:v3.5
  expect_eq "rewritten app digest" "$(ctr_digest k3s docker.io/ksd-test/app:1)" "$APP"
  expect_eq "alpine digest" "$(ctr_digest k3s docker.io/library/alpine:3.19)" "$ALPINE"
  expect_eq "etcd digest" "$(ctr_digest k3s quay.io/coreos/etcd:v3.5)" "$ETCD"
  registry_received 'GET|HEAD' /v2/production/app/manifests/1
  registry_received_only_under production dockerhub-proxy quay-proxy
}

case_cli_explain_agrees_with_the_filter() {
  local requests=(
    '/v2/library/alpine/manifests/3.19'
    '/v2/ksd-test/app/manifests/1'
    '/v2/coreos/etcd/manifests/v3.5?ns=quay.io'
    '/dockerhub/v2/library/alpine/tags/list'
    '/v2/library/evil/manifests/1'
    '/v2/library/al..pine/manifests/3.19'
    '/service/token?service=harbor-registry&scope=repository:library/alpine:pull'
  )
  local path explained header failed=0
  for path in "${requests[@]}"; do
    explained=$("$HARBOR_MIRROR_CLI" explain "$ROOT/tests/e2e-plugin-config.json" "GET $path" --host "$MIRROR" |
      sed -n 's/^summary:  //p')
    header=$(curl -s -o /dev/null -D - "http://$MIRROR$path" | tr -d '\r' | sed -n 's/^x-harbor-mirror: //Ip')
    expect_eq "explain of GET $path" "$explained" "$header" || failed=1
  done
  return $failed
}

case_higress_rules_keep_the_filter_to_harbors_domain() {
  cat "$WORK/deploy/higress.json"; echo
  grep -o 'configured [0-9]* registries for 127.0.0.1 in' "$ENVOY_LOG_higress" | head -n 1
  # Harbor's domain: rewritten.
  local digest
  digest=sha256:$(skopeo inspect --tls-verify=false --raw "docker://$FRONT_higress/library/alpine:3.19" | sha256sum | cut -d' ' -f1)
  expect_eq "digest on Harbor's domain" "$digest" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  # Another domain on the same gateway: not the filter's, the path reaches the upstream as sent.
  digest=sha256:$(curl -s -H 'Host: grafana.example.com' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$FRONT_higress/v2/library/alpine/manifests/3.19" | sha256sum | cut -d' ' -f1)
  [ "$digest" != "$ALPINE" ] || { echo "FAIL: the other domain's request was rewritten"; return 1; }
  registry_received 'GET' /v2/library/alpine/manifests/3.19
  echo "ok: grafana.example.com got the unprefixed decoy ($digest)"
}

run_case case_front_proxy_terminates_tls_with_http2
run_case case_sidecar_keeps_the_scheme_clients_used
run_case case_k3s_registries_yaml_imported_and_pulled
run_case case_higress_rules_keep_the_filter_to_harbors_domain
run_case case_cli_explain_agrees_with_the_filter
