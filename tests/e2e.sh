#!/usr/bin/env bash
# End-to-end suite: real Envoy with dist/harbor_mirror.wasm in front of CNCF Distribution, which
# holds generated images under Harbor-style project paths, pulled with *unprefixed* names by real
# clients: dockerd, containerd (ctr), podman, skopeo. Every pull is checked by digest and by what
# the registry received. Everything runs as processes on 127.0.0.1 on free ports; only the
# processes started here are stopped, also when a case fails.
#
# Needs ENVOY, PYTHON (with PyYAML and h2), WASM, FAULT_WASM (the fault-injection build),
# HARBOR_MIRROR_CLI (the command-line tool, which writes each client's configuration) and
# CRI_CLIENT (crates/cri-client, the kubelet's side of pulls) in the environment; ./build.sh test
# sets them. ADAPTER=module (with MODULE, the path of libharbor_mirror.so) runs the same suite
# against the dynamic module instead of the wasm filter; the few cases about wasm VMs are
# skipped there, each with its reason.
set -uo pipefail
: "${ENVOY:?path of the envoy binary}" "${PYTHON:?python with PyYAML and h2}" "${WASM:?path of harbor_mirror.wasm}"
: "${FAULT_WASM:?path of the fault-injection build of harbor_mirror.wasm}" "${HARBOR_MIRROR_CLI:?path of harbor-mirror}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$ROOT/tests/lib.sh"

# The front under test: how render.py loads it, where its counters are in /stats and
# /stats/prometheus, and the Envoy log component its lines go to.
ADAPTER=${ADAPTER:-wasm}
case $ADAPTER in
  wasm) ADAPTER_ARGS=(--wasm "$WASM") STAT=wasmcustom. PROMETHEUS=harbor_mirror_ LOG_COMPONENT=wasm ;;
  module)
    : "${MODULE:?path of libharbor_mirror.so, with ADAPTER=module}"
    ADAPTER_ARGS=(--module "$MODULE") STAT= PROMETHEUS=envoy_harbor_mirror_ LOG_COMPONENT=dynamic_modules ;;
  *) echo "ADAPTER is wasm or module, not $ADAPTER"; exit 2 ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/harbor-mirror-e2e.XXXXXX")
cleanup() {
  stop_started
  # dockerd's own containerd outlives a dockerd that was killed; it is ours too.
  local pid; pid=$(cat "$WORK/docker/exec/containerd/containerd.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
  umount_all "$WORK"
  [ -n "${KEEP_E2E_WORK:-}" ] || rm -rf "$WORK"
}
umount_all() { grep -o " $1[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- fixtures ---------------------------------------------------------------------------------

REGISTRY_PORT=$(free_port)
REGISTRY=127.0.0.1:$REGISTRY_PORT
REGISTRY_LOG=$WORK/registry/registry.log
start_registry "$WORK/registry" "$REGISTRY_PORT" || exit 1

echo "seeding $REGISTRY with images under Harbor project paths"
ALPINE=$(seed_image "$WORK" "$REGISTRY" dockerhub-proxy/library/alpine:3.19 "alpine 3.19 from dockerhub-proxy" v2s2)
ETCD=$(seed_image "$WORK" "$REGISTRY" quay-proxy/coreos/etcd:v3.5 "etcd from quay-proxy" oci)
TOOL=$(seed_image "$WORK" "$REGISTRY" ghcr-proxy/owner/tool:1.0 "tool from ghcr-proxy" oci)
APP=$(seed_image "$WORK" "$REGISTRY" production/app:1 "app from production" oci)
# Decoys at the unprefixed paths: a pull that bypassed the rewrite would get these digests.
seed_image "$WORK" "$REGISTRY" library/alpine:3.19 "decoy: unprefixed alpine" v2s2 >/dev/null
seed_image "$WORK" "$REGISTRY" coreos/etcd:v3.5 "decoy: unprefixed etcd" oci >/dev/null
[ -n "$ALPINE" ] && [ -n "$ETCD" ] && [ -n "$TOOL" ] && [ -n "$APP" ] || { echo "seeding failed"; exit 1; }

MIRROR_PORT=$(free_port)
ADMIN_PORT=$(free_port)
MIRROR=127.0.0.1:$MIRROR_PORT
ENVOY_LOG=$WORK/envoy.log
render() { # render PLUGIN_CONFIG OUT [LISTEN ADMIN_PORT UPSTREAM]
  "$PYTHON" "$ROOT/envoy/render.py" "$ROOT/envoy/harbor-mirror.yaml" --listen "${3:-$MIRROR}" \
    --admin-port "${4:-$ADMIN_PORT}" --upstream "${5:-http://$REGISTRY}" "${ADAPTER_ARGS[@]}" --plugin-config "$1" >"$2"
}
render "$ROOT/tests/e2e-plugin-config.json" "$WORK/envoy.yaml"
start_envoy "$WORK/envoy.yaml" "$ENVOY_LOG" "$ADMIN_PORT" --log-level info --component-log-level "$LOG_COMPONENT:debug" || {
  cat "$ENVOY_LOG"; exit 1; }
echo "envoy with the $ADAPTER adapter on $MIRROR, registry on $REGISTRY"

# dockerd, with the README's daemon.json.
DOCKER_SOCK=$WORK/docker/docker.sock
mkdir -p "$WORK/docker"
client_config docker "http://$MIRROR" >"$WORK/docker/daemon.json"
start_bg "$WORK/docker/dockerd.log" dockerd --config-file "$WORK/docker/daemon.json" \
  --data-root "$WORK/docker/data" --exec-root "$WORK/docker/exec" --pidfile "$WORK/docker/docker.pid" \
  -H "unix://$DOCKER_SOCK" --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs
DOCKERD_PID=$LAST_PID
docker_cli() { timeout 120 docker -H "unix://$DOCKER_SOCK" "$@"; }

# containerd, for ctr.
CONTAINERD_SOCK=$WORK/containerd/containerd.sock
mkdir -p "$WORK/containerd"
cat >"$WORK/containerd/config.toml" <<EOF
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
EOF
start_bg "$WORK/containerd/containerd.log" containerd --config "$WORK/containerd/config.toml"
ctr_pull() { # ctr_pull HOSTS_DIR NAMESPACE REF [PULL OPTIONS...]
  timeout 120 ctr -a "$CONTAINERD_SOCK" -n "$2" images pull --snapshotter native --hosts-dir "$1" "${@:4}" "$3"
}
ctr_digest() { # ctr_digest NAMESPACE REF
  ctr -a "$CONTAINERD_SOCK" -n "$1" images ls "name==$2" | awk 'NR == 2 {print $3}'
}
write_hosts_toml() { # write_hosts_toml DIR REGISTRY RECIPE MIRROR_URL...
  mkdir -p "$1/$2"
  client_config "$3" "${@:4}" >"$1/$2/hosts.toml"
}

# podman and skopeo: registries.conf with the mirror.
client_config containers "http://$MIRROR" >"$WORK/registries.conf"
podman_cli() { # with REGISTRIES_CONF set, that registries.conf instead of the suite's
  CONTAINERS_REGISTRIES_CONF=${REGISTRIES_CONF:-$WORK/registries.conf} timeout 120 podman --root "$WORK/podman/root" \
    --runroot "$WORK/podman/run" --storage-driver vfs --cgroup-manager cgroupfs --events-backend file "$@"
}

wait_for 60 dockerd docker_cli version || { cat "$WORK/docker/dockerd.log"; exit 1; }
wait_for 30 containerd ctr -a "$CONTAINERD_SOCK" version || { cat "$WORK/containerd/containerd.log"; exit 1; }

# --- assertions -------------------------------------------------------------------------------

CASE_MARK=0
# Lines the registry logged since the current case began.
registry_lines() { tail -n +"$((CASE_MARK + 1))" "$REGISTRY_LOG"; }

# registry_received METHODS PATH: the registry answered one of METHODS ("GET|HEAD") for PATH
# (path without query).
registry_received() {
  if registry_lines | "$PYTHON" -c '
import json, sys
methods, path = sys.argv[1].split("|"), sys.argv[2]
for line in sys.stdin:
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    uri = entry.get("http.request.uri", "").split("?")[0]
    if entry.get("http.request.method") in methods and uri == path and "http.response.status" in entry:
        sys.exit(0)
sys.exit(1)' "$1" "$2"; then
    echo "ok: registry received $1 $2"
  else
    echo "FAIL: registry did not receive $1 $2; it received:"
    registry_lines | grep -o '"http.request.method":"[A-Z]*"\|"http.request.uri":"[^"]*"' | paste - - | sed 's/^/    /'
    return 1
  fi
}

# registry_received_nothing_but PREFIX...: every repository path the registry saw is under one
# of the prefixes (the /v2/ ping aside).
registry_received_only_under() {
  local uris; uris=$(registry_lines | grep -o '"http.request.uri":"[^"]*"' | cut -d'"' -f4 | sort -u)
  local uri prefix ok=0
  for uri in $uris; do
    [ "$uri" = /v2/ ] && continue
    local under=
    for prefix in "$@"; do [[ $uri == "/v2/$prefix/"* ]] && under=1; done
    [ -n "$under" ] || { echo "FAIL: registry received $uri, outside $*"; ok=1; }
  done
  return $ok
}

expect_eq() { # expect_eq WHAT ACTUAL EXPECTED
  if [ "$2" = "$3" ]; then echo "ok: $1 = $3"; else echo "FAIL: $1 is '$2', expected '$3'"; return 1; fi
}

# challenge_of URL [CURL OPTIONS...]: the WWW-Authenticate value of the answer to a GET of URL.
challenge_of() {
  local url=$1; shift
  curl -s -o /dev/null -D - "$@" "$url" | tr -d '\r' | sed -n 's/^www-authenticate: //Ip'
}

# expect_refusal METHOD PATH STATUS CODE [HOST]: the mirror answers with the OCI error.
expect_refusal() {
  local out; out=$(curl -s -X "$1" -H "Host: ${5:-$MIRROR}" -o "$WORK/body" -w '%{http_code}' "http://$MIRROR$2")
  expect_eq "status of $1 $2" "$out" "$3" || return 1
  local code; code=$(jq -r '.errors[0].code' "$WORK/body" 2>/dev/null)
  expect_eq "OCI error code of $1 $2" "$code" "$4" || { cat "$WORK/body"; return 1; }
  jq -e '.errors[0].message | length > 0' "$WORK/body" >/dev/null || { echo "FAIL: no message"; return 1; }
  echo "    $(cat "$WORK/body")"
}

# --- cases ------------------------------------------------------------------------------------

case_docker_registry_mirror() {
  docker_cli pull alpine:3.19
  local digests; digests=$(docker_cli image inspect --format '{{json .RepoDigests}}' alpine:3.19)
  expect_eq "docker's RepoDigests" "$digests" "[\"alpine@$ALPINE\"]"
  # Docker falls back to Docker Hub when the mirror fails: the mirror must have served it.
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  registry_received_only_under dockerhub-proxy
}

case_containerd_docker_io_hosts_toml() {
  write_hosts_toml "$WORK/hosts-docker" docker.io containerd "http://$MIRROR"
  ctr_pull "$WORK/hosts-docker" docker-io docker.io/library/alpine:3.19
  expect_eq "ctr image digest" "$(ctr_digest docker-io docker.io/library/alpine:3.19)" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  registry_received_only_under dockerhub-proxy
}

case_containerd_default_hosts_toml_routes_by_ns() {
  write_hosts_toml "$WORK/hosts-default" _default containerd-default "http://$MIRROR"
  ctr_pull "$WORK/hosts-default" default quay.io/coreos/etcd:v3.5
  ctr_pull "$WORK/hosts-default" default ghcr.io/owner/tool:1.0
  expect_eq "quay.io image digest" "$(ctr_digest default quay.io/coreos/etcd:v3.5)" "$ETCD"
  expect_eq "ghcr.io image digest" "$(ctr_digest default ghcr.io/owner/tool:1.0)" "$TOOL"
  registry_received 'GET|HEAD' /v2/quay-proxy/coreos/etcd/manifests/v3.5
  registry_received 'GET|HEAD' /v2/ghcr-proxy/owner/tool/manifests/1.0
  registry_received_only_under quay-proxy ghcr-proxy
}

case_containerd_alias_mirror_url() {
  # containerd appends /v2 to the mirror URL's path: requests arrive as /quay.io/v2/...
  write_hosts_toml "$WORK/hosts-alias" quay.io containerd-default "http://$MIRROR/quay.io"
  ctr_pull "$WORK/hosts-alias" alias quay.io/coreos/etcd:v3.5
  expect_eq "ctr image digest" "$(ctr_digest alias quay.io/coreos/etcd:v3.5)" "$ETCD"
  registry_received 'GET|HEAD' /v2/quay-proxy/coreos/etcd/manifests/v3.5
  registry_received_only_under quay-proxy
}

case_podman_registries_conf_mirror() {
  podman_cli pull docker.io/library/alpine:3.19
  expect_eq "podman image digest" "$(podman_cli image inspect --format '{{.Digest}}' docker.io/library/alpine:3.19)" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  registry_received_only_under dockerhub-proxy
}

case_skopeo_default_registry_and_host_routing() {
  # Through registries.conf: docker.io names go to the default registry's project.
  local digest
  digest=sha256:$(skopeo --registries-conf "$WORK/registries.conf" inspect --raw docker://docker.io/library/alpine:3.19 | sha256sum | cut -d' ' -f1)
  expect_eq "skopeo digest via registries.conf" "$digest" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  # Straight at the mirror by a host name routed to quay.io: localhost is in quay.io's hosts.
  skopeo copy -q --src-tls-verify=false "docker://localhost:$MIRROR_PORT/coreos/etcd:v3.5" "oci:$WORK/skopeo-etcd:x"
  digest=$(skopeo inspect --format '{{.Digest}}' "oci:$WORK/skopeo-etcd:x")
  expect_eq "skopeo digest via host routing" "$digest" "$ETCD"
  registry_received 'GET|HEAD' /v2/quay-proxy/coreos/etcd/manifests/v3.5
  registry_received_only_under dockerhub-proxy quay-proxy
}

case_k3s_rewrite_rule_through_containerd() {
  ctr_pull "$WORK/hosts-docker" rewrite docker.io/ksd-test/app:1
  expect_eq "ctr image digest" "$(ctr_digest rewrite docker.io/ksd-test/app:1)" "$APP"
  registry_received 'GET|HEAD' /v2/production/app/manifests/1
  registry_received_only_under production
}

case_refusals_have_oci_error_bodies() {
  # A push through the mirror: refused before anything is written.
  python3 "$ROOT/tests/oci_image.py" "$WORK/to-push" x "an image to push"
  if skopeo copy -q --dest-tls-verify=false "oci:$WORK/to-push:x" "docker://$MIRROR/library/pushed:1" 2>"$WORK/push.err"; then
    echo "FAIL: a push through the read-only mirror succeeded"; return 1
  fi
  echo "ok: skopeo push failed: $(tail -n 1 "$WORK/push.err")"
  grep -q 'read-only' "$WORK/push.err" || { echo "FAIL: skopeo's error does not show the mirror's cause"; return 1; }
  expect_refusal POST /v2/library/pushed/blobs/uploads/ 405 UNSUPPORTED
  expect_refusal PUT /v2/library/pushed/manifests/1 405 UNSUPPORTED
  [ ! -e "$WORK/registry/storage/docker/registry/v2/repositories/dockerhub-proxy/library/pushed" ] &&
    [ ! -e "$WORK/registry/storage/docker/registry/v2/repositories/library/pushed" ] ||
    { echo "FAIL: the registry stored a pushed repository"; return 1; }
  if grep -q '"http.request.method":"\(POST\|PUT\|PATCH\)"' < <(registry_lines); then
    echo "FAIL: a write reached the registry"; return 1
  fi
  echo "ok: no write reached the registry"
  expect_refusal GET '/v2/library/alpine/manifests/3.19?ns=gcr.io' 404 NAME_UNKNOWN
  expect_refusal GET /v2/library/evil/manifests/1 403 DENIED
  expect_refusal GET /v2/Library/Alpine/manifests/3.19 400 NAME_INVALID
  expect_refusal GET /v2/library/al..pine/manifests/3.19 400 NAME_INVALID
  expect_refusal GET "/v2/library/$(printf 'a%.0s' $(seq 260))/manifests/1" 400 NAME_INVALID
  # HEAD replies carry no body; the status is the refusal.
  expect_eq "status of HEAD with an invalid name" \
    "$(curl -s -I -o /dev/null -w '%{http_code}' "http://$MIRROR/v2/Library/Alpine/manifests/3.19")" 400
  local header; header=$(curl -s -D - -o /dev/null "http://$MIRROR/v2/library/alpine/manifests/3.19" | tr -d '\r' | grep -i '^x-harbor-mirror:')
  expect_eq "debug header" "$header" "x-harbor-mirror: rewrote: registry=docker.io by=default rule=project path=/v2/dockerhub-proxy/library/alpine/manifests/3.19"
  registry_received_only_under dockerhub-proxy
}

case_metrics_count_what_was_done() {
  past_the_filters_tick
  local stats; stats=$(curl -s "http://127.0.0.1:$ADMIN_PORT/stats?filter=harbor_mirror")
  echo "$stats" | sed 's/^/    /'
  local rewritten; rewritten=$(echo "$stats" | awk -F': ' '$1 == "'"$STAT"'harbor_mirror.rewritten" {print $2}')
  local rejected; rejected=$(echo "$stats" | awk -F': ' '$1 == "'"$STAT"'harbor_mirror.rejected" {print $2}')
  local quay; quay=$(echo "$stats" | awk -F': ' '$1 == "'"$STAT"'harbor_mirror.registry.quay.io.rewritten" {print $2}')
  [ "${rewritten:-0}" -gt 10 ] && [ "${rejected:-0}" -ge 7 ] && [ "${quay:-0}" -ge 3 ] ||
    { echo "FAIL: counters too low: rewritten=$rewritten rejected=$rejected quay.io=$quay"; return 1; }
  # Read it whole first: grep -q stops at the first match, and under pipefail curl's write
  # error into the closed pipe would fail the check.
  local prometheus; prometheus=$(curl -s "http://127.0.0.1:$ADMIN_PORT/stats/prometheus")
  grep -q "^${PROMETHEUS}rewritten" <<<"$prometheus" ||
    { echo "FAIL: ${PROMETHEUS}rewritten missing from /stats/prometheus"; return 1; }
  echo "ok: counters rewritten=$rewritten rejected=$rejected registry.quay.io.rewritten=$quay"
}

# logged_since LINE TEXT: Envoy's log has TEXT at or after line LINE.
logged_since() { tail -n +"$1" "$ENVOY_LOG" | grep -qF "$2"; }

# The filter reads Envoy's log level on its tick, not per request: a level set through the admin
# API applies within a tick (500 ms).
case_log_level_set_at_run_time_applies() {
  local path=/v2/library/alpine/manifests/3.19 line='HEAD /v2/library/alpine/manifests/3.19: rewrote'
  curl -s -X POST "http://127.0.0.1:$ADMIN_PORT/logging?$LOG_COMPONENT=info" >/dev/null
  sleep 1
  local mark; mark=$(wc -l <"$ENVOY_LOG")
  curl -s -I -o /dev/null "http://$MIRROR$path"
  sleep 1
  if logged_since "$((mark + 1))" "$line"; then echo "FAIL: a debug line at level info"; return 1; fi
  curl -s -X POST "http://127.0.0.1:$ADMIN_PORT/logging?$LOG_COMPONENT=debug" >/dev/null
  sleep 1
  curl -s -I -o /dev/null "http://$MIRROR$path"
  wait_for 5 "the debug line" logged_since "$((mark + 1))" "$line" ||
    { echo "FAIL: no debug line after the level went back to debug"; return 1; }
  echo "ok: no debug line at info; at debug again, the next request logged one"
}

case_bad_configurations_stop_envoy() {
  local rows=(
    'not json|configuration: expected ident at line 1 column 2'
    '{"registries": {"docker.io": {"projct": "p"}}}|registries["docker.io"]: unknown field `projct`'
    '{"registries": {"quay.io": {"rewrite": {"(": "x"}}}}|registries["quay.io"].rewrite["("]:'
    '{"registries": {"quay.io": {"project": ""}}}|registries["quay.io"].project: must not be empty'
    '{"registries": {"quay.io": {}}, "default_registry": "docker.io"}|default_registry: "docker.io" is not one of the configured registries'
    '{"registries": {"quay.io": {"hosts": ["m"]}, "ghcr.io": {"hosts": ["m"]}}}|registries["ghcr.io"].hosts["m"]: duplicate host'
    '{"discover": {"cluster": "harbor", "authority": "h", "interval_s": 0}}|discover.interval_s: must be between 1 and 86400'
    '{"default_registry": "docker.io"}|registries: is required (or discover, to read them from harbor)'
  )
  local row config expected i=0 failed=0
  for row in "${rows[@]}"; do
    config=${row%%|*} expected=${row#*|} i=$((i + 1))
    printf '%s' "$config" >"$WORK/bad-$i.json"
    render "$WORK/bad-$i.json" "$WORK/bad-$i.yaml"
    if "$ENVOY" --mode validate -c "$WORK/bad-$i.yaml" >"$WORK/bad-$i.log" 2>&1; then
      echo "FAIL: envoy accepted $config"; failed=1; continue
    fi
    local line; line=$(grep -F "invalid configuration: $expected" "$WORK/bad-$i.log" || true)
    if [ "$(grep -c 'invalid configuration' "$WORK/bad-$i.log")" -eq 1 ] && [ -n "$line" ]; then
      echo "ok: refused with: ${line#*harbor_mirror*: }"
    else
      echo "FAIL: no single log line naming '$expected' for $config:"; grep -i 'wasm\|error' "$WORK/bad-$i.log"; failed=1
      continue
    fi
    # `harbor-mirror check` says the same.
    local checked; checked=$("$HARBOR_MIRROR_CLI" check "$WORK/bad-$i.json" 2>&1) &&
      { echo "FAIL: harbor-mirror check accepted $config"; failed=1; continue; }
    expect_eq "harbor-mirror check's error" "${checked#harbor-mirror: }" "invalid configuration: ${line#*invalid configuration: }" ||
      failed=1
  done
  return $failed
}

# --- runner -----------------------------------------------------------------------------------

PASSED=0 FAILED=0 SKIPPED=0 FAILED_CASES=()
# run_case FUNCTION [ARGS...]: runs one case in a subshell with set -e; on failure prints the
# log of the Envoy the case used (CASE_ENVOY_LOG, set by the case's setup, else the main one).
# E2E_CASES (an extended regex, for development) runs only the cases whose name matches.
run_case() {
  local name="$*" started=$SECONDS envoy_log=${CASE_ENVOY_LOG:-$ENVOY_LOG}
  [[ $name =~ ${E2E_CASES:-.} ]] || return 0
  if [ -n "${WASM_ONLY:-}" ] && [ "$ADAPTER" != wasm ]; then
    SKIPPED=$((SKIPPED + 1)); echo "--- $name"; echo "SKIP $name ($ADAPTER adapter): $WASM_ONLY"; return 0
  fi
  if [ -n "${MODULE_ONLY:-}" ] && [ "$ADAPTER" != module ]; then
    SKIPPED=$((SKIPPED + 1)); echo "--- $name"; echo "SKIP $name ($ADAPTER adapter): $MODULE_ONLY"; return 0
  fi
  CASE_MARK=$(wc -l <"$REGISTRY_LOG")
  AUTH_MARK=$(wc -l <"${AUTH_LOG:-/dev/null}")
  local envoy_mark; envoy_mark=$(wc -l <"$envoy_log")
  echo "--- $name"
  (set -e; "$@") >"$WORK/case.log" 2>&1
  local rc=$?
  sed 's/^/  /' "$WORK/case.log"
  if [ $rc -eq 0 ]; then
    PASSED=$((PASSED + 1)); echo "PASS $name ($((SECONDS - started))s)"
  else
    FAILED=$((FAILED + 1)); FAILED_CASES+=("$name")
    echo "FAIL $name (exit $rc); Envoy's log for this case:"
    sleep 1
    tail -n +"$((envoy_mark + 1))" "$envoy_log" | tail -n 60 | sed 's/^/  | /'
  fi
}

run_case case_docker_registry_mirror
run_case case_containerd_docker_io_hosts_toml
run_case case_containerd_default_hosts_toml_routes_by_ns
run_case case_containerd_alias_mirror_url
run_case case_podman_registries_conf_mirror
run_case case_skopeo_default_registry_and_host_routing
run_case case_k3s_rewrite_rule_through_containerd
run_case case_refusals_have_oci_error_bodies
run_case case_metrics_count_what_was_done
run_case case_log_level_set_at_run_time_applies
run_case case_bad_configurations_stop_envoy

# The token-auth matrix: the same clients against a Harbor-semantics token service.
# shellcheck source=tests/e2e-auth.sh
. "$ROOT/tests/e2e-auth.sh"

# The Harbor model's proxy cache and its upstream, shown doing what Harbor's source does.
# shellcheck source=tests/e2e-proxy-cache.sh
. "$ROOT/tests/e2e-proxy-cache.sh"

# Discovery: mirrors configured with Harbor's address alone.
# shellcheck source=tests/e2e-discovery.sh
. "$ROOT/tests/e2e-discovery.sh"

# The kubelet path: containerd's CRI plugin, a k3s certs.d tree, pulls as the kubelet makes them.
# shellcheck source=tests/e2e-cri.sh
. "$ROOT/tests/e2e-cri.sh"

# Hostile requests, Harbor down or hanging, a configuration change under load, a crashed VM.
# shellcheck source=tests/e2e-hardening.sh
. "$ROOT/tests/e2e-hardening.sh"

# The shipped TLS front proxy and sidecar, a k3s registries.yaml imported, the CLI's explain.
# shellcheck source=tests/e2e-deploy.sh
. "$ROOT/tests/e2e-deploy.sh"

echo
[ $FAILED -eq 0 ] || echo "failed: ${FAILED_CASES[*]}"
echo "e2e ($ADAPTER adapter): $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ $FAILED -eq 0 ]
