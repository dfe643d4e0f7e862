# The token-auth part of the end-to-end suite, sourced by tests/e2e.sh after its fixtures are up
# (registry, dockerd, containerd, helpers). A Harbor-semantics token service (tests/harbor_auth.py)
# now stands in front of the registry, with its realm on its own address as Harbor's external URL
# would be, and every client pulls docker.io/library/alpine:3.19 through four mirrors:
#   public     pass-through, docker.io -> dockerhub-proxy (public): anonymous clients
#   private    pass-through, docker.io -> dockerhub-private: clients with robot$ci's credentials
#   managed    managed mode, docker.io -> dockerhub-private: anonymous clients, robot$mirror
#   off        docker.io -> dockerhub-proxy with auth.rewrite_tokens false: docker, podman and
#              skopeo must fail (they ask tokens for their own name); containerd still pulls
# plus managed mode's single fetch per project, its failures, and containerd's OAuth POST.

AUTH_PORT=$(free_port)
AUTH=127.0.0.1:$AUTH_PORT
AUTH_LOG=$WORK/auth/auth.log
CI_CREDS='robot$ci:ci-secret'
mkdir -p "$WORK/auth"
cat >"$WORK/auth/config.json" <<JSON
{
  "listen": "$AUTH",
  "registry": "http://$REGISTRY",
  "external_url": "http://$AUTH",
  "log": "$AUTH_LOG",
  "projects": {
    "dockerhub-proxy": {"public": true, "proxy": true},
    "dockerhub-private": {"public": false, "proxy": true},
    "quay-private": {"public": false, "proxy": true},
    "production": {"public": false, "proxy": false},
    "slowproj": {"public": false, "proxy": false}
  },
  "robots": {
    "robot\$mirror": {"password": "mirror-secret", "projects": ["dockerhub-private", "production", "slowproj"]},
    "robot\$ci": {"password": "ci-secret", "projects": ["dockerhub-private"]}
  },
  "token_seconds": 1800,
  "token_delay": {"slowproj": 1.5}
}
JSON
touch "$AUTH_LOG"
start_bg "$WORK/auth/harbor_auth.out" python3 "$ROOT/tests/harbor_auth.py" "$WORK/auth/config.json"
wait_for 20 "harbor_auth on $AUTH" curl -s -o /dev/null "http://$AUTH/v2/" || { cat "$WORK/auth/harbor_auth.out"; exit 1; }
PRIVATE=$(seed_image "$WORK" "$REGISTRY" dockerhub-private/library/alpine:3.19 "alpine 3.19 from dockerhub-private" v2s2)
SLOW=$(seed_image "$WORK" "$REGISTRY" slowproj/app:1 "app behind a slow token service" oci)
[ -n "$PRIVATE" ] && [ -n "$SLOW" ] || { echo "seeding the private projects failed"; exit 1; }

# Worker threads, each with its own wasm VM: the token cache is shared between them.
MIRROR_WORKERS=2

# start_mirror NAME PLUGIN_JSON [UPSTREAM]: an Envoy with the filter in front of the token
# service (or UPSTREAM); sets MIRROR_<NAME> (host:port) and ENVOY_LOG_<NAME>.
start_mirror() {
  local name=$1 port admin; port=$(free_port) admin=$(free_port)
  printf '%s' "$2" >"$WORK/auth/$name.json"
  render "$WORK/auth/$name.json" "$WORK/auth/$name.yaml" "127.0.0.1:$port" "$admin" "${3:-http://$AUTH}"
  start_envoy "$WORK/auth/$name.yaml" "$WORK/auth/envoy-$name.log" "$admin" --concurrency "$MIRROR_WORKERS" \
    --log-level info --component-log-level wasm:debug || { cat "$WORK/auth/envoy-$name.log"; exit 1; }
  printf -v "MIRROR_$name" '%s' "127.0.0.1:$port"
  printf -v "ENVOY_LOG_$name" '%s' "$WORK/auth/envoy-$name.log"
  printf -v "ADMIN_$name" '%s' "$admin"
}
plugin_config() { # plugin_config PROJECT [AUTH_JSON]
  printf '{"registries": {"docker.io": {"project": "%s"}}, "default_registry": "docker.io", "passthrough_projects": ["production", "slowproj"], "debug_header": true%s}' \
    "$1" "${2:+, \"auth\": $2}"
}
MANAGED_AUTH='{"robot": {"username": "robot$mirror", "password": "mirror-secret"}, "cluster": "harbor", "authority": "'$AUTH'", "timeout_ms": 2000}'
start_mirror public "$(plugin_config dockerhub-proxy)"
start_mirror private "$(plugin_config dockerhub-private)"
start_mirror managed "$(plugin_config dockerhub-private "$MANAGED_AUTH")"
start_mirror off "$(plugin_config dockerhub-proxy '{"rewrite_tokens": false}')"
# One worker, so that concurrent requests meet in the same VM.
MIRROR_WORKERS=1 start_mirror single "$(plugin_config dockerhub-private "$MANAGED_AUTH")"
# A second registry in managed mode, for a project robot$mirror lacks.
start_mirror denied '{"registries": {"docker.io": {"project": "quay-private"}}, "default_registry": "docker.io", "auth": '"$MANAGED_AUTH"'}'
start_mirror badrobot "$(plugin_config dockerhub-private '{"robot": {"username": "robot$mirror", "password": "wrong"}, "cluster": "harbor", "authority": "'$AUTH'"}')"
# Harbor that accepts connections and never answers: the token fetch must time out into a 503.
BLACKHOLE_PORT=$(free_port)
start_bg "$WORK/auth/blackhole.log" python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True:
    held.append(s.accept()[0])' "$BLACKHOLE_PORT"
start_mirror hanging "$(plugin_config dockerhub-private '{"robot": {"username": "robot$mirror", "password": "mirror-secret"}, "cluster": "harbor", "authority": "harbor", "timeout_ms": 1000}')" "http://127.0.0.1:$BLACKHOLE_PORT"
# Harbor down: nothing listens on the token cluster's port.
TOKEN_DOWN_PORT=$(free_port)
start_mirror tokendown "$(plugin_config dockerhub-private "$MANAGED_AUTH")" "http://127.0.0.1:$TOKEN_DOWN_PORT"

# --- assertions on the token service's log ----------------------------------------------------

auth_lines() { tail -n +"$((AUTH_MARK + 1))" "$AUTH_LOG"; }

# auth_received JQ_FILTER WHAT: some request logged since the case began matches.
auth_received() {
  if auth_lines | jq -e -s "map(select($1)) | length > 0" >/dev/null; then
    echo "ok: token service received $2"
  else
    echo "FAIL: token service did not receive $2; it received:"
    auth_lines | jq -r '"    \(.method) \(.path)?\(.query) auth=\(.auth) -> \(.status) granted=\(.granted)"'
    return 1
  fi
}

# auth_received_none JQ_FILTER WHAT: no request since the case began matches.
auth_received_none() {
  local hits; hits=$(auth_lines | jq -c "select($1)")
  [ -z "$hits" ] || { echo "FAIL: token service received $2:"; echo "$hits" | sed 's/^/    /'; return 1; }
  echo "ok: token service received no $2"
}

# --- the clients, pointed at one mirror -------------------------------------------------------

basic_credentials() { printf '%s' "$1" | base64 -w0; } # USER:PASSWORD, as config files store it

docker_mirrors_include() { grep -qF "$1" < <(docker_cli info --format '{{json .RegistryConfig.Mirrors}}'); }

# pull_docker MIRROR [USER:PASSWORD]: reloads dockerd with MIRROR as its registry mirror, pulls
# alpine:3.19 (with the credentials docker would hold for Docker Hub) and prints its digest.
pull_docker() {
  client_config docker "http://$1" >"$WORK/docker/daemon.json"
  kill -HUP "$DOCKERD_PID"
  wait_for 20 "dockerd to reload its mirror" docker_mirrors_include "$1"
  docker_cli rmi -f alpine:3.19 >/dev/null 2>&1 || true
  local config=$WORK/docker/cli-$$-$RANDOM; mkdir -p "$config"
  if [ -n "${2:-}" ]; then
    printf '{"auths": {"https://index.docker.io/v1/": {"auth": "%s"}}}' "$(basic_credentials "$2")" >"$config/config.json"
  fi
  DOCKER_CONFIG=$config docker_cli pull alpine:3.19 >&2 || return 1
  docker_cli image inspect --format '{{index .RepoDigests 0}}' alpine:3.19 | sed 's/^alpine@//'
}

pull_ctr() { # pull_ctr MIRROR [USER:PASSWORD]
  local hosts=$WORK/hosts-auth-$1 namespace=auth-$RANDOM
  write_hosts_toml "$hosts" docker.io containerd "http://$1"
  local user=(); [ -z "${2:-}" ] || user=(--user "$2")
  ctr_pull "$hosts" "$namespace" docker.io/library/alpine:3.19 "${user[@]}" >&2 || return 1
  ctr_digest "$namespace" docker.io/library/alpine:3.19
}

# containers/image never sends --creds to a mirror (they are meant for the primary registry): it
# looks up credentials for the mirror's own host, as `podman login <mirror>` stores them.
authfile_for() { # authfile_for MIRROR [USER:PASSWORD]: prints --authfile FILE, or nothing
  [ -n "${2:-}" ] || return 0
  printf '{"auths": {"%s": {"auth": "%s"}}}' "$1" "$(basic_credentials "$2")" >"$WORK/auth-$1.json"
  printf -- '--authfile\n%s\n' "$WORK/auth-$1.json"
}

pull_podman() { # pull_podman MIRROR [USER:PASSWORD]
  client_config containers "http://$1" >"$WORK/registries-$1.conf"
  local authfile; mapfile -t authfile < <(authfile_for "$@")
  local REGISTRIES_CONF=$WORK/registries-$1.conf
  podman_cli rmi -f docker.io/library/alpine:3.19 >/dev/null 2>&1 || true
  podman_cli pull "${authfile[@]}" docker.io/library/alpine:3.19 >&2 || return 1
  podman_cli image inspect --format '{{.Digest}}' docker.io/library/alpine:3.19
}

pull_skopeo() { # pull_skopeo MIRROR [USER:PASSWORD]
  client_config containers "http://$1" >"$WORK/registries-$1.conf"
  local authfile; mapfile -t authfile < <(authfile_for "$@")
  local manifest; manifest=$(timeout 120 skopeo --registries-conf "$WORK/registries-$1.conf" inspect --raw \
    "${authfile[@]}" docker://docker.io/library/alpine:3.19) || return 1
  printf 'sha256:%s\n' "$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)"
}

# --- cases ------------------------------------------------------------------------------------

# case_auth CLIENT SETUP: one cell of the matrix.
case_auth() {
  local client=$1 setup=$2 mirror_var=MIRROR_$2 digest
  local mirror=${!mirror_var}
  case $setup in
    public)  digest=$("pull_$client" "$mirror") ;;
    private) digest=$("pull_$client" "$mirror" "$CI_CREDS") ;;
    # docker holds Docker Hub credentials it sends to mirrors: they must not reach Harbor.
    managed) if [ "$client" = docker ]; then digest=$(pull_docker "$mirror" 'hub-user:hub-password'); else digest=$("pull_$client" "$mirror"); fi ;;
  esac
  local expected=$ALPINE; [ "$setup" = public ] || expected=$PRIVATE
  expect_eq "$client digest through the $setup mirror" "$digest" "$expected"
  local project=dockerhub-private; [ "$setup" = public ] && project=dockerhub-proxy
  case $setup in
    public | private)
      # The client asked for its own name (containerd: both); the token service saw only Harbor's.
      auth_received ".path == \"/service/token\" and .method == \"GET\" and (.granted | index(\"$project/library/alpine:pull\"))" \
        "a token request granting pull on $project/library/alpine"
      auth_received_none '.path == "/service/token" and .method == "GET" and (.scopes | map(startswith("repository:library/")) | any)' \
        "token request with an unprefixed scope"
      ;;
    managed)
      auth_received_none '(.auth | startswith("basic:hub-user") or startswith("basic-invalid") or startswith("basic:robot$ci"))' \
        "request carrying a client credential"
      auth_received ".path == \"/v2/$project/library/alpine/manifests/3.19\" and .auth == \"bearer:robot\$mirror\" and .status == 200" \
        "the manifest request with robot\$mirror's token"
      ;;
  esac
  [ "$setup" != private ] || [ "$client" != ctr ] ||
    auth_received '.path == "/service/token" and .method == "POST" and .status == 405' "containerd's OAuth POST, answered 405 before its GET"
}

# case_auth_off CLIENT: without the filter's token handling docker, podman and skopeo cannot pull.
case_auth_off() {
  local client=$1
  if [ "$client" = ctr ]; then
    # containerd asks tokens for the challenge's scope too, so it pulls without the rewrite.
    expect_eq "ctr digest with token handling off" "$(pull_ctr "$MIRROR_off")" "$ALPINE"
    return
  fi
  if digest=$("pull_$client" "$MIRROR_off" 2>"$WORK/auth/off-$client.err"); then
    echo "FAIL: $client pulled ($digest) with token handling off"; return 1
  fi
  echo "ok: $client failed: $(grep -v '^\s*$' "$WORK/auth/off-$client.err" | tail -n 1 | cut -c1-200)"
  auth_received '.path == "/service/token" and (.scopes | index("repository:library/alpine:pull")) and (.granted | length == 0)' \
    "$client's token request for its own name, granted nothing"
}

# The challenge seen by a client: Harbor's realm pointed back at the mirror, scope kept.
case_auth_challenge_points_back_at_the_mirror() {
  local challenge; challenge=$(challenge_of "http://$MIRROR_private/v2/library/alpine/manifests/3.19")
  expect_eq "challenge through the mirror" "$challenge" \
    "Bearer realm=\"http://$MIRROR_private/service/token?ns=docker.io\",service=\"harbor-registry\",scope=\"repository:dockerhub-private/library/alpine:pull\""
  # Behind a TLS proxy (an ingress before an Istio sidecar): the scheme it forwards.
  challenge=$(challenge_of "http://$MIRROR_private/v2/library/alpine/manifests/3.19" -H 'X-Forwarded-Proto: https')
  expect_eq "challenge behind a TLS proxy" "$challenge" \
    "Bearer realm=\"https://$MIRROR_private/service/token?ns=docker.io\",service=\"harbor-registry\",scope=\"repository:dockerhub-private/library/alpine:pull\""
  challenge=$(challenge_of "http://$MIRROR_private/v2/library/alpine/manifests/3.19" -u 'someone:else')
  expect_eq "Basic challenge after an unusable Authorization" "$challenge" \
    "Bearer realm=\"http://$MIRROR_private/service/token?ns=docker.io\",service=\"harbor-registry\",scope=\"repository:dockerhub-private/library/alpine:pull\""
  challenge=$(challenge_of "http://$MIRROR_off/v2/library/alpine/manifests/3.19")
  expect_eq "challenge with token handling off (Harbor's own)" "$challenge" \
    "Bearer realm=\"http://$AUTH/service/token\",service=\"harbor-registry\",scope=\"repository:dockerhub-proxy/library/alpine:pull\""
}

# Managed mode: concurrent requests on a cold project share one fetch per VM.
case_managed_fetches_once_per_project() {
  local stats_before; stats_before=$(curl -s "http://127.0.0.1:$ADMIN_managed/stats?filter=harbor_mirror.token")
  local i codes=()
  for i in $(seq 12); do
    curl -s -o /dev/null -w '%{http_code}\n' -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://$MIRROR_managed/v2/production/app/manifests/1" >"$WORK/auth/concurrent-$i" &
  done
  wait
  for i in $(seq 12); do codes+=("$(cat "$WORK/auth/concurrent-$i")"); done
  expect_eq "statuses of 12 concurrent requests" "$(printf '%s ' "${codes[@]}")" "$(printf '200 %.0s' $(seq 12))"
  local fetches; fetches=$(auth_lines | jq -s 'map(select(.path == "/service/token" and (.scopes | index("repository:production/app:pull")))) | length')
  echo "token requests for project production: $fetches (worker VMs: $MIRROR_WORKERS)"
  [ "$fetches" -ge 1 ] && [ "$fetches" -le "$MIRROR_WORKERS" ] || { echo "FAIL: expected one fetch per VM at most"; return 1; }
  local stats; stats=$(curl -s "http://127.0.0.1:$ADMIN_managed/stats?filter=harbor_mirror.token")
  echo "$stats" | sed 's/^/    /'
  counter() { echo "$1" | awk -F': ' -v name="wasmcustom.harbor_mirror.token.$2" '$1 == name {print $2}'; }
  expect_eq "token.fetches counted" "$(($(counter "$stats" fetches) - $(counter "$stats_before" fetches)))" "$fetches"
  [ "$(counter "$stats" cache_hits)" -gt "$(counter "$stats_before" cache_hits)" ] || { echo "FAIL: no cache hit counted"; return 1; }
}

# Managed mode: the request that started a fetch goes away; the one waiting for the same
# project still gets its answer (the root context fetches again).
case_managed_fetch_survives_its_request() {
  local accept='Accept: application/vnd.oci.image.manifest.v1+json' started=$SECONDS
  curl -s -o /dev/null -m 0.5 -H "$accept" "http://$MIRROR_single/v2/slowproj/app/manifests/1" &
  local quitter=$!
  sleep 0.2
  local status; status=$(curl -s -o "$WORK/body" -m 15 -w '%{http_code}' -H "$accept" "http://$MIRROR_single/v2/slowproj/app/manifests/1")
  wait "$quitter" || true
  expect_eq "status of the request that waited" "$status" 200
  expect_eq "its manifest digest" "sha256:$(sha256sum <"$WORK/body" | cut -d' ' -f1)" "$SLOW"
  echo "answered after $((SECONDS - started))s"
  grep -q 'token fetch for project slowproj lost its request; fetching again' "$ENVOY_LOG_single" ||
    { echo "FAIL: the root context did not fetch again"; return 1; }
  echo "ok: the root context fetched again"
}

# expect_oci_error MIRROR PATH STATUS CODE MESSAGE_PART [MAX_SECONDS]
expect_oci_error() {
  local started=$SECONDS out
  out=$(curl -s -m 30 -o "$WORK/body" -w '%{http_code}' "http://$1$2")
  expect_eq "status of GET $2 through $1" "$out" "$3"
  expect_eq "OCI error code" "$(jq -r '.errors[0].code' "$WORK/body")" "$4"
  grep -qF "$5" "$WORK/body" || { echo "FAIL: message does not say '$5': $(cat "$WORK/body")"; return 1; }
  echo "    $(cat "$WORK/body") in $((SECONDS - started))s"
  [ $((SECONDS - started)) -le "${6:-10}" ] || { echo "FAIL: took longer than ${6:-10}s"; return 1; }
}

case_managed_failures_are_answered() {
  expect_oci_error "$MIRROR_denied" /v2/library/alpine/manifests/3.19 403 DENIED "no pull on project quay-private"
  expect_oci_error "$MIRROR_badrobot" /v2/library/alpine/manifests/3.19 503 UNAVAILABLE "refused the mirror's robot credentials (robot\$mirror)"
  expect_oci_error "$MIRROR_hanging" /v2/library/alpine/manifests/3.19 503 UNAVAILABLE "did not answer" 5
  expect_oci_error "$MIRROR_tokendown" /v2/library/alpine/manifests/3.19 503 UNAVAILABLE "could not reach it" 2
  # The ping is the filter's own answer in managed mode.
  expect_eq "managed ping" "$(curl -s -w ' %{http_code}' "http://$MIRROR_managed/v2/")" "{} 200"
  local log
  for log in "$ENVOY_LOG_managed" "$ENVOY_LOG_denied" "$ENVOY_LOG_badrobot" "$ENVOY_LOG_hanging" "$ENVOY_LOG_tokendown"; do
    if grep -q 'mirror-secret\|wrong"\|cm9ib3QkbWlycm9y' "$log"; then echo "FAIL: a secret is in $log"; return 1; fi
  done
  echo "ok: no robot password or Basic value in any Envoy log"
}

for client in docker ctr podman skopeo; do
  for setup in public private managed; do
    CASE_ENVOY_LOG=$WORK/auth/envoy-$setup.log run_case case_auth "$client" "$setup"
  done
  CASE_ENVOY_LOG=$WORK/auth/envoy-off.log run_case case_auth_off "$client"
done
CASE_ENVOY_LOG=$WORK/auth/envoy-private.log run_case case_auth_challenge_points_back_at_the_mirror
CASE_ENVOY_LOG=$WORK/auth/envoy-managed.log run_case case_managed_fetches_once_per_project
CASE_ENVOY_LOG=$WORK/auth/envoy-single.log run_case case_managed_fetch_survives_its_request
CASE_ENVOY_LOG=$WORK/auth/envoy-hanging.log run_case case_managed_failures_are_answered
