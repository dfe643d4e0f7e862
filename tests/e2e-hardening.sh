# The hardening part of the end-to-end suite, sourced by tests/e2e.sh after the auth part (its
# registry, Envoy, clients and the auth part's never-answering server are up):
#   hostile requests over HTTP/1.1 and HTTP/2 against the main mirror (tests/hostile.py);
#   Harbor down or hanging: a fast 503 with an OCI body, and clients falling back past it;
#   a new plugin configuration applied under load (LDS), dropping no request;
#   a VM that crashes (a fault-injection build) reloaded by failure_policy: FAIL_RELOAD.
# Needs FAULT_WASM (the fault-injection build) besides what e2e.sh needs.

mkdir -p "$WORK/hardening"

# start_front NAME UPSTREAM WASM [RENDER ARGS...]: an Envoy (FRONT_WORKERS workers, default 2)
# from a shipped configuration (FRONT_CONFIG, default harbor-mirror.yaml) with the e2e plugin
# configuration, and the front under test (WASM is used by the wasm front only); sets
# FRONT_<NAME>, ADMIN_<NAME>, ENVOY_LOG_<NAME>, PID_<NAME>.
start_front() {
  local name=$1 upstream=$2 wasm=$3; shift 3
  local port admin; port=$(free_port) admin=$(free_port)
  local adapter=("${ADAPTER_ARGS[@]}"); [ "$ADAPTER" != wasm ] || adapter=(--wasm "$wasm")
  "$PYTHON" "$ROOT/envoy/render.py" "$ROOT/envoy/${FRONT_CONFIG:-harbor-mirror.yaml}" --listen "127.0.0.1:$port" --admin-port "$admin" \
    --upstream "$upstream" "${adapter[@]}" --plugin-config "$ROOT/tests/e2e-plugin-config.json" "$@" \
    >"$WORK/hardening/$name.yaml"
  start_envoy "$WORK/hardening/$name.yaml" "$WORK/hardening/envoy-$name.log" "$admin" --concurrency "${FRONT_WORKERS:-2}" \
    --log-level info --component-log-level "$LOG_COMPONENT:debug" || { cat "$WORK/hardening/envoy-$name.log"; exit 1; }
  printf -v "FRONT_$name" '%s' "127.0.0.1:$port"
  printf -v "ADMIN_$name" '%s' "$admin"
  printf -v "ENVOY_LOG_$name" '%s' "$WORK/hardening/envoy-$name.log"
  printf -v "PID_$name" '%s' "$ENVOY_PID"
}

DOWN_PORT=$(free_port) # nothing listens there
start_front down "http://127.0.0.1:$DOWN_PORT" "$WASM"
start_front hanging "http://127.0.0.1:$BLACKHOLE_PORT" "$WASM"
# One worker: the requests after the crash meet the crashed VM, not a healthy sibling.
[ "$ADAPTER" != wasm ] || FRONT_WORKERS=1 start_front crashing "http://$REGISTRY" "$FAULT_WASM"
LDS_FILE=$WORK/hardening/lds/listeners.yaml
mkdir -p "$(dirname "$LDS_FILE")"
start_front reloaded "http://$REGISTRY" "$WASM" --lds "$LDS_FILE"

# --- cases ------------------------------------------------------------------------------------

case_hostile_requests_get_oci_errors() {
  "$PYTHON" "$ROOT/tests/hostile.py" --mirror "$MIRROR" --admin-port "$ADMIN_PORT" --registry-log "$REGISTRY_LOG" \
    --project dockerhub-proxy --project quay-proxy --project ghcr-proxy --project production
}

status_is() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$2")" = "$1" ]; } # STATUS URL

# expect_unavailable FRONT MAX_SECONDS: a manifest GET gets 503 UNAVAILABLE within MAX_SECONDS.
expect_unavailable() {
  local started; started=$(date +%s.%N)
  local status; status=$(curl -s -m 60 -o "$WORK/body" -w '%{http_code}' "http://$1/v2/library/alpine/manifests/3.19")
  local took; took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
  expect_eq "status through $1" "$status" 503
  expect_eq "OCI error code" "$(jq -r '.errors[0].code' "$WORK/body")" UNAVAILABLE
  echo "    $(cat "$WORK/body") in ${took}s"
  python3 -c "import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))" "$took" "$2" ||
    { echo "FAIL: took ${took}s, more than $2 s"; return 1; }
}

case_harbor_down_is_a_fast_503() {
  expect_unavailable "$FRONT_down" 1
  # The ping too: clients check /v2/ first, and fall back on its failure.
  expect_eq "ping status" "$(curl -s -o /dev/null -w '%{http_code}' "http://$FRONT_down/v2/")" 503
}

case_harbor_hanging_is_a_503_after_the_idle_timeout() {
  # The shipped per-try idle timeout is 15 s.
  expect_unavailable "$FRONT_hanging" 17
}

case_clients_fall_back_past_a_dead_mirror() {
  # containerd: the dead mirror first, the working one second.
  write_hosts_toml "$WORK/hosts-fallback" docker.io containerd "http://$FRONT_down" "http://$MIRROR"
  local started=$SECONDS
  ctr_pull "$WORK/hosts-fallback" fallback docker.io/library/alpine:3.19
  expect_eq "ctr digest past a dead mirror" "$(ctr_digest fallback docker.io/library/alpine:3.19)" "$ALPINE"
  echo "    pulled in $((SECONDS - started))s"
  # skopeo (containers/image): registries.conf with both mirrors.
  client_config containers "http://$FRONT_down" "http://$MIRROR" >"$WORK/registries-fallback.conf"
  local digest
  digest=sha256:$(skopeo --registries-conf "$WORK/registries-fallback.conf" inspect --raw docker://docker.io/library/alpine:3.19 | sha256sum | cut -d' ' -f1)
  expect_eq "skopeo digest past a dead mirror" "$digest" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
}

# The filter's decision for a registry.k8s.io pull, from its debug header.
k8s_decision() {
  curl -s -D - -o /dev/null "http://$FRONT_reloaded/v2/pause/manifests/3.9?ns=registry.k8s.io" | tr -d '\r' |
    sed -n 's/^x-harbor-mirror: //Ip'
}

k8s_decision_is() { [ "$(k8s_decision)" = "$1" ]; }

case_new_plugin_configuration_under_load_drops_no_request() {
  expect_eq "decision before" "$(k8s_decision)" 'refused 404 NAME_UNKNOWN: registry "registry.k8s.io" (from ns) is not served by this mirror'
  "$PYTHON" "$ROOT/tests/soak.py" --mirror "$FRONT_reloaded" --admin-port "$ADMIN_reloaded" --envoy-pid "$PID_reloaded" \
    --seconds 20 --rate 150 --config-change --out "$WORK/hardening/reload-load" >"$WORK/hardening/reload-load.log" 2>&1 &
  local load=$!
  sleep 6
  # The new configuration adds registry.k8s.io; the listener file is replaced under the load.
  jq '.registries["registry.k8s.io"] = {"project": "k8s-proxy"}' "$ROOT/tests/e2e-plugin-config.json" >"$WORK/hardening/reloaded.json"
  "$PYTHON" "$ROOT/envoy/render.py" "$ROOT/envoy/${FRONT_CONFIG:-harbor-mirror.yaml}" --listen "$FRONT_reloaded" --admin-port "$ADMIN_reloaded" \
    --upstream "http://$REGISTRY" "${ADAPTER_ARGS[@]}" --plugin-config "$WORK/hardening/reloaded.json" --lds "$LDS_FILE" >/dev/null
  local after='rewrote: registry=registry.k8s.io by=ns rule=project path=/v2/k8s-proxy/pause/manifests/3.9'
  wait_for 20 "the new configuration" k8s_decision_is "$after" || true
  expect_eq "decision after" "$(k8s_decision)" "$after"
  local rc=0; wait "$load" || rc=$?
  sed 's/^/    /' "$WORK/hardening/reload-load.log" | tail -n 15
  expect_eq "load generator's verdict (sent == answered, every status as expected)" "$rc" 0
  local updates; updates=$(curl -s "http://127.0.0.1:$ADMIN_reloaded/stats" | awk -F': ' '$1 == "listener_manager.listener_in_place_updated" || $1 == "listener_manager.listener_modified" {s += $2} END {print s + 0}')
  [ "$updates" -ge 1 ] || { echo "FAIL: Envoy did not update the listener"; return 1; }
  echo "ok: Envoy updated the listener ($updates)"
}

case_crashed_vm_is_reloaded() {
  local stats_url="http://127.0.0.1:$ADMIN_crashing/stats?filter=^wasm"
  local good="http://$FRONT_crashing/v2/library/alpine/manifests/3.19"
  expect_eq "a pull before the crash" "$(curl -s -o /dev/null -w '%{http_code}' "$good")" 200
  # The faulting request: the VM aborts, as a bug would.
  local status; status=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-harbor-mirror-fault: abort' "$good")
  echo "    the faulting request got $status"
  grep -q 'fault injection: aborting the VM' "$ENVOY_LOG_crashing" || { echo "FAIL: the VM did not abort"; return 1; }
  # FAIL_RELOAD: the next requests get a fresh VM that maps names again.
  wait_for 10 "a pull after the crash" status_is 200 "$good"
  local header; header=$(curl -s -D - -o /dev/null "$good" | tr -d '\r' | grep -i '^x-harbor-mirror:')
  expect_eq "decision after the reload" "$header" "x-harbor-mirror: rewrote: registry=docker.io by=default rule=project path=/v2/dockerhub-proxy/library/alpine/manifests/3.19"
  local stats; stats=$(curl -s "$stats_url")
  echo "$stats" | grep reload | sed 's/^/    /'
  local reloads; reloads=$(echo "$stats" | awk -F': ' '$1 == "wasm.harbor_mirror.vm_reload_success" {print $2}')
  [ "${reloads:-0}" -ge 1 ] || { echo "FAIL: no VM reload counted"; return 1; }
  echo "ok: vm_reload_success=$reloads"
}

run_case case_hostile_requests_get_oci_errors
CASE_ENVOY_LOG=$ENVOY_LOG_down run_case case_harbor_down_is_a_fast_503
CASE_ENVOY_LOG=$ENVOY_LOG_hanging run_case case_harbor_hanging_is_a_503_after_the_idle_timeout
CASE_ENVOY_LOG=$ENVOY_LOG_down run_case case_clients_fall_back_past_a_dead_mirror
CASE_ENVOY_LOG=$ENVOY_LOG_reloaded run_case case_new_plugin_configuration_under_load_drops_no_request
WASM_ONLY="a native module has no VM to reload: a crash in it is Envoy's crash" CASE_ENVOY_LOG=${ENVOY_LOG_crashing:-} run_case case_crashed_vm_is_reloaded
