# The discovery part of the end-to-end suite, sourced by tests/e2e.sh after the token-auth part
# (its start_mirror, the clients' pull_* helpers and the Harbor model's log helpers are used).
# Mirrors whose configuration has no `registries` at all read them from the Harbor model's
# project API: real clients pull through them, a project is added and removed while Envoy runs,
# the API is down at start and fails during a refresh, and a wrong robot password is reported.

DISC_PORT=$(free_port)
DISC=127.0.0.1:$DISC_PORT
DISCDOWN_PORT=$(free_port)
DISCDOWN=127.0.0.1:$DISCDOWN_PORT
# start_discovery_harbor NAME PORT: a Harbor model whose proxy-cache projects discovery finds.
start_discovery_harbor() {
  local name=$1 port=$2
  cat >"$WORK/auth/harbor-$name.json" <<JSON
{
  "name": "$name",
  "listen": "127.0.0.1:$port",
  "registry": "http://$REGISTRY",
  "external_url": "http://127.0.0.1:$port",
  "log": "$AUTH_LOG",
  "projects": {
    "library": {"public": true, "project_id": 1},
    "dockerhub-proxy": {"public": true, "proxy": "docker-hub", "project_id": 2},
    "quay-proxy": {"public": true, "proxy": "quay", "project_id": 3},
    "ghcr-private": {"public": false, "proxy": "github-ghcr", "project_id": 4},
    "production": {"public": false, "project_id": 5}
  },
  "robots": {
    "robot\$mirror": {"password": "mirror-secret", "access": {"ghcr-private": ["pull"], "production": ["pull", "push"]}}
  }
}
JSON
  start_bg "$WORK/auth/harbor-$name.out" python3 "$ROOT/tests/harbor_auth.py" "$WORK/auth/harbor-$name.json"
  DISCOVERY_PIDS+=("$LAST_PID")
  wait_for 20 "harbor model $name" curl -s -o /dev/null "http://127.0.0.1:$port/v2/" ||
    { cat "$WORK/auth/harbor-$name.out"; exit 1; }
}
DISCOVERY_PIDS=()
start_discovery_harbor discovery "$DISC_PORT"
start_discovery_harbor discdown "$DISCDOWN_PORT"
# The API of this one is down before any mirror asks it.
curl -s -o /dev/null -X POST -d '{"status": 503}' "http://$DISCDOWN/_model/api"

GHCR_PRIVATE=$(seed_image "$WORK" "$REGISTRY" ghcr-private/owner/tool:1.0 "tool from ghcr-private" oci)
PAUSE=$(seed_image "$WORK" "$REGISTRY" k8s-proxy/pause:3.9 "pause from k8s-proxy" oci)
[ -n "$GHCR_PRIVATE" ] && [ -n "$PAUSE" ] || { echo "seeding the discovery projects failed"; exit 1; }

DISCOVER_INTERVAL=2
discover_config() { # discover_config HARBOR [ROBOT_JSON] [AUTH_JSON]
  printf '{"discover": {"cluster": "harbor", "authority": "%s", "interval_s": %s%s}, "default_registry": "docker.io", "debug_header": true%s}' \
    "$1" "$DISCOVER_INTERVAL" "${2:+, \"robot\": $2}" "${3:+, \"auth\": $3}"
}
start_mirror disc_anon "$(discover_config "$DISC")" "http://$DISC"
start_mirror disc_managed "$(discover_config "$DISC" "" "$(managed_auth "$DISC")")" "http://$DISC"
start_mirror disc_down "$(discover_config "$DISCDOWN")" "http://$DISCDOWN"
start_mirror disc_badrobot "$(discover_config "$DISC" '{"username": "robot$mirror", "password": "wrong"}')" "http://$DISC"
DISCOVERY_PIDS+=("$PID_disc_anon" "$PID_disc_managed" "$PID_disc_down" "$PID_disc_badrobot")

# five_in_a_row SECONDS CMD...: until CMD succeeds five times in a row, at most SECONDS. Each
# try is a new connection, so the streak spans Envoy's workers: with the wasm filter every
# worker's VM adopts a new mapping on its own tick, and one worker's answer says nothing of the
# others'.
five_in_a_row() {
  local deadline=$((SECONDS + $1)) streak=0
  shift
  while [ $streak -lt 5 ]; do
    if "$@"; then streak=$((streak + 1)); sleep 0.2; continue; fi
    streak=0
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# answers MIRROR PATH STATUS: GET PATH through MIRROR answers STATUS (body in $WORK/body, the
# status in ANSWERED).
answers() {
  ANSWERED=$(curl -s -o "$WORK/body" -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$1$2")
  [ "$ANSWERED" = "$3" ]
}

# routes MIRROR: the mirror routes by a mapping (a pull is not answered 503; the status in ANSWERED).
routes() {
  ANSWERED=$(curl -s -o /dev/null -w '%{http_code}' "http://$1/v2/library/alpine/manifests/3.19")
  [ "$ANSWERED" != 503 ]
}

# discovered MIRROR PATH STATUS SECONDS: waits until GET PATH through MIRROR answers STATUS, five
# times in a row.
discovered() {
  if five_in_a_row "$4" answers "$1" "$2" "$3"; then
    echo "ok: GET $2 through $1 = $3, five times in a row"
  else
    echo "FAIL: GET $2 through $1 is $ANSWERED after ${4}s, not $3: $(cat "$WORK/body")"
    return 1
  fi
}

# wait_discovered MIRROR SECONDS: waits until the mirror routes by a mapping (no more 503), five
# times in a row.
wait_discovered() {
  if five_in_a_row "$2" routes "$1"; then
    echo "ok: $1 routes by a discovered mapping ($ANSWERED)"
  else
    echo "FAIL: $1 still answers 503 after ${2}s"
    return 1
  fi
}

stat_of() { # stat_of ADMIN NAME: one of the front's stats (NAME without wasmcustom.)
  past_the_filters_tick
  curl -s "http://127.0.0.1:$1/stats?filter=harbor_mirror.discovery" | awk -F': ' -v name="$STAT$2" '$1 == name {print $2}'
}

# --- cases ------------------------------------------------------------------------------------

# Every client through a mirror configured with Harbor's address alone.
case_discovery_serves_every_client() {
  wait_discovered "$MIRROR_disc_anon" 15
  expect_eq "docker digest" "$(pull_docker "$MIRROR_disc_anon")" "$ALPINE"
  expect_eq "podman digest" "$(pull_podman "$MIRROR_disc_anon")" "$ALPINE"
  expect_eq "skopeo digest" "$(pull_skopeo "$MIRROR_disc_anon")" "$ALPINE"
  # containerd's _default mirror, routed by ns to the discovered quay.io project.
  write_hosts_toml "$WORK/hosts-disc" _default containerd-default "http://$MIRROR_disc_anon"
  ctr_pull "$WORK/hosts-disc" disc quay.io/coreos/etcd:v3.5
  expect_eq "ctr digest for quay.io" "$(ctr_digest disc quay.io/coreos/etcd:v3.5)" "$ETCD"
  # Since the suite began: the first refresh may come before the case.
  AUTH_MARK=0 auth_received '.harbor == "discovery" and .path == "/api/v2.0/projects" and (.query | test("q=registry_id%3D%5B1~%5D")) and .auth == "none"' \
    "the anonymous project list"
  AUTH_MARK=0 auth_received '.harbor == "discovery" and .path == "/api/v2.0/projects/quay-proxy/summary" and .status == 200' "quay-proxy's summary"
  grep -q 'discovery: registries added docker.io (dockerhub-proxy), quay.io (quay-proxy)' "$ENVOY_LOG_disc_anon" ||
    { echo "FAIL: no info line naming the discovered registries"; return 1; }
  echo "ok: logged $(grep -o 'discovery: registries added[^"]*' "$ENVOY_LOG_disc_anon" | head -n 1)"
}

# A private project is discovered with the robot's credentials (auth.robot), not anonymously.
case_discovery_sees_private_projects_with_the_robot_only() {
  discovered "$MIRROR_disc_managed" '/v2/owner/tool/manifests/1.0?ns=ghcr.io' 200 15
  write_hosts_toml "$WORK/hosts-disc-managed" _default containerd-default "http://$MIRROR_disc_managed"
  ctr_pull "$WORK/hosts-disc-managed" disc-managed ghcr.io/owner/tool:1.0
  expect_eq "ctr digest for the private ghcr.io project" "$(ctr_digest disc-managed ghcr.io/owner/tool:1.0)" "$GHCR_PRIVATE"
  expect_oci_error "$MIRROR_disc_anon" '/v2/owner/tool/manifests/1.0?ns=ghcr.io' 404 NAME_UNKNOWN "(from ns) is not served by this mirror"
  AUTH_MARK=0 auth_received '.harbor == "discovery" and .path == "/api/v2.0/projects/ghcr-private/summary" and .auth == "basic:robot$mirror"' \
    "the private project's summary, asked as the robot"
  AUTH_MARK=0 auth_received_none '.harbor == "discovery" and (.path | startswith("/api/")) and .auth != "none" and .auth != "basic:robot$mirror"' \
    "API request with other credentials"
}

# A project added in Harbor is served within an interval, a removed one is gone within one.
# (Through the managed mirror, whose robot token makes a served manifest a 200.)
case_discovery_follows_projects_added_and_removed() {
  expect_oci_error "$MIRROR_disc_managed" '/v2/pause/manifests/3.9?ns=registry.k8s.io' 404 NAME_UNKNOWN "registry.k8s.io"
  curl -s -o /dev/null -X POST -d '{"name": "k8s-proxy", "public": true, "proxy": "docker-registry", "upstream": "https://registry.k8s.io"}' \
    "http://$DISC/_model/projects"
  discovered "$MIRROR_disc_managed" '/v2/pause/manifests/3.9?ns=registry.k8s.io' 200 $((3 * DISCOVER_INTERVAL + 4))
  expect_eq "its digest" "sha256:$(sha256sum <"$WORK/body" | cut -d' ' -f1)" "$PAUSE"
  grep -q 'discovery: registries added registry.k8s.io (k8s-proxy)' "$ENVOY_LOG_disc_managed" || { echo "FAIL: the addition was not logged"; return 1; }
  curl -s -o /dev/null -X DELETE "http://$DISC/_model/projects/k8s-proxy"
  discovered "$MIRROR_disc_managed" '/v2/pause/manifests/3.9?ns=registry.k8s.io' 404 $((3 * DISCOVER_INTERVAL + 4))
  wait_for 5 "the removal in the log" grep -q 'discovery: registries removed registry.k8s.io (k8s-proxy)' "$ENVOY_LOG_disc_managed" ||
    { echo "FAIL: the removal was not logged"; return 1; }
  echo "ok: added and removed, each logged"
}

# Harbor's API down at start: 503 naming discovery (clients fall back), the ping as usual; once
# the API is up, served.
case_discovery_waits_for_the_api_with_503() {
  expect_oci_error "$MIRROR_disc_down" /v2/library/alpine/manifests/3.19 503 UNAVAILABLE "has not read its registries from harbor's API yet"
  expect_eq "the ping, Harbor's own challenge" "$(curl -s -o /dev/null -w '%{http_code}' "http://$MIRROR_disc_down/v2/")" 401
  grep -q 'discovery: harbor answered 503 for page 1 of the project list' "$ENVOY_LOG_disc_down" || { echo "FAIL: the failure was not logged"; return 1; }
  curl -s -o /dev/null -X POST -d '{"status": null}' "http://$DISCDOWN/_model/api"
  wait_discovered "$MIRROR_disc_down" 15
  expect_eq "skopeo digest once the API is up" "$(pull_skopeo "$MIRROR_disc_down")" "$ALPINE"
}

# A refresh that fails keeps the last good mapping: pulls keep working, the failure is counted.
case_discovery_keeps_the_last_good_mapping() {
  wait_discovered "$MIRROR_disc_down" 15
  local failures_before; failures_before=$(stat_of "$ADMIN_disc_down" harbor_mirror.discovery.failures)
  curl -s -o /dev/null -X POST -d '{"status": 500}' "http://$DISCDOWN/_model/api"
  sleep $((2 * DISCOVER_INTERVAL + 6))
  expect_eq "skopeo digest while the API fails" "$(pull_skopeo "$MIRROR_disc_down")" "$ALPINE"
  local failures; failures=$(stat_of "$ADMIN_disc_down" harbor_mirror.discovery.failures)
  [ "${failures:-0}" -gt "${failures_before:-0}" ] || { echo "FAIL: discovery.failures stayed ${failures:-0}"; return 1; }
  echo "ok: discovery.failures went from ${failures_before:-0} to $failures"
  grep -q 'keeping the last good mapping: docker.io (dockerhub-proxy), quay.io (quay-proxy)' "$ENVOY_LOG_disc_down" ||
    { echo "FAIL: the kept mapping was not logged"; return 1; }
  curl -s -o /dev/null -X POST -d '{"status": null}' "http://$DISCDOWN/_model/api"
}

# One refresh per interval per Envoy, whatever its worker count (shared data and a lease).
case_discovery_once_per_interval_per_envoy() {
  wait_discovered "$MIRROR_disc_anon" 15
  local window=12
  sleep "$window"
  local lists; lists=$(auth_count '.harbor == "discovery" and .path == "/api/v2.0/projects" and .auth == "none"')
  echo "anonymous project lists in ${window}s: $lists (interval ${DISCOVER_INTERVAL}s, $MIRROR_WORKERS workers)"
  [ "$lists" -ge 2 ] && [ "$lists" -le $((window / DISCOVER_INTERVAL + 2)) ] ||
    { echo "FAIL: expected about one list per interval for the Envoy"; return 1; }
  expect_eq "discovery.registries gauge" "$(stat_of "$ADMIN_disc_anon" harbor_mirror.discovery.registries)" 2
  expect_eq "discovery.registries gauge with the robot" "$(stat_of "$ADMIN_disc_managed" harbor_mirror.discovery.registries)" 3
  [ "$(stat_of "$ADMIN_disc_anon" harbor_mirror.discovery.refreshes)" -ge 2 ] || { echo "FAIL: refreshes not counted"; return 1; }
}

# A wrong robot password: Harbor's API would list the public projects only; the credentials are
# checked at the token service first, and the failure says so.
case_discovery_reports_wrong_robot_credentials() {
  expect_oci_error "$MIRROR_disc_badrobot" /v2/library/alpine/manifests/3.19 503 UNAVAILABLE "has not read its registries"
  # The first refresh may still be waiting out Harbor's failed-login delay.
  wait_for 10 "the refusal in the log" grep -q 'discovery: harbor refused the robot credentials of discover.robot (or auth.robot), robot\$mirror' \
    "$ENVOY_LOG_disc_badrobot" || { echo "FAIL: the refused credentials were not logged"; return 1; }
  if grep -q 'mirror-secret\|wrong"' "$ENVOY_LOG_disc_badrobot"; then echo "FAIL: a password is in the log"; return 1; fi
  echo "ok: the credentials were refused, and said so without the password"
}

# The command line reads the same mapping, for inspection or to freeze it into a static
# configuration, and explain takes it.
case_cli_discover_prints_the_mapping() {
  printf '{"username": "robot$mirror", "password": "mirror-secret"}' >"$WORK/auth/robot.json"
  "$HARBOR_MIRROR_CLI" discover "http://$DISC" --robot-file "$WORK/auth/robot.json" >"$WORK/auth/discovered.json" 2>"$WORK/auth/discover.err" ||
    { cat "$WORK/auth/discover.err"; return 1; }
  cat "$WORK/auth/discovered.json" | sed 's/^/    /'
  expect_eq "the discovered registries" "$(jq -c '.registries' "$WORK/auth/discovered.json")" \
    '{"docker.io":{"project":"dockerhub-proxy"},"ghcr.io":{"project":"ghcr-private"},"quay.io":{"project":"quay-proxy"}}'
  "$HARBOR_MIRROR_CLI" check "$WORK/auth/discovered.json"
  expect_eq "explain with it" "$("$HARBOR_MIRROR_CLI" explain "$WORK/auth/discovered.json" 'GET /v2/owner/tool/manifests/1.0?ns=ghcr.io' | sed -n 's/^path: *//p')" \
    /v2/ghcr-private/owner/tool/manifests/1.0
  "$HARBOR_MIRROR_CLI" discover "http://$DISC" >"$WORK/auth/discovered-anon.json"
  expect_eq "anonymously" "$(jq -c '.registries | keys' "$WORK/auth/discovered-anon.json")" '["docker.io","quay.io"]'
}

CASE_ENVOY_LOG=$WORK/auth/envoy-disc_anon.log run_case case_discovery_serves_every_client
CASE_ENVOY_LOG=$WORK/auth/envoy-disc_managed.log run_case case_discovery_sees_private_projects_with_the_robot_only
CASE_ENVOY_LOG=$WORK/auth/envoy-disc_managed.log run_case case_discovery_follows_projects_added_and_removed
CASE_ENVOY_LOG=$WORK/auth/envoy-disc_down.log run_case case_discovery_waits_for_the_api_with_503
CASE_ENVOY_LOG=$WORK/auth/envoy-disc_down.log run_case case_discovery_keeps_the_last_good_mapping
CASE_ENVOY_LOG=$WORK/auth/envoy-disc_anon.log run_case case_discovery_once_per_interval_per_envoy
CASE_ENVOY_LOG=$WORK/auth/envoy-disc_badrobot.log run_case case_discovery_reports_wrong_robot_credentials
run_case case_cli_discover_prints_the_mapping

# These mirrors refresh every ${DISCOVER_INTERVAL}s into the Harbor model's shared log (the bad
# robot's failed login among them): stopped here, they cannot show up in a later case's requests.
for pid in "${DISCOVERY_PIDS[@]}"; do stop_pid "$pid"; done
