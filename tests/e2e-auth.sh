# The token-auth part of the end-to-end suite, sourced by tests/e2e.sh after its fixtures are up
# (registry, dockerd, containerd, helpers). A Harbor model that follows Harbor's source
# (tests/harbor_auth.py) now stands in front of the registry, with its realm on its own address as
# Harbor's external URL would be, and every client pulls docker.io/library/alpine:3.19 through:
#   public     pass-through, docker.io -> dockerhub-proxy (public): anonymous clients
#   private    pass-through, docker.io -> dockerhub-private: clients with robot$ci's credentials
#   managed    managed mode, docker.io -> dockerhub-private: anonymous clients, robot$mirror,
#              against the model issuing Harbor's JWTs, and again (managed_opaque) against the
#              model issuing opaque tokens the filter cannot read
#   off        docker.io -> dockerhub-proxy with auth.rewrite_tokens false: docker, podman and
#              skopeo must fail (they ask tokens for their own name); containerd still pulls
# then what Harbor does that a mirror meets: the model's own behaviours pinned to Harbor's source,
# and each of them through the filter (the library/ redirect, paged tag lists, the catalog,
# writes, unknown projects and single-segment names, both realm rules); managed mode's single
# fetch per project, its failures, its backoff after refused robot credentials, and a client
# credential suite that must find none of the client's credentials at Harbor.

AUTH_LOG=$WORK/auth/auth.log
CI_CREDS='robot$ci:ci-secret'
PUSHER_CREDS='robot$pusher:pusher-secret'
mkdir -p "$WORK/auth"
touch "$AUTH_LOG"

# start_harbor NAME [JSON FIELDS]: a Harbor model on a free port, logging to AUTH_LOG with
# "harbor": NAME; sets HARBOR_<NAME> (host:port). Fields override the defaults below.
start_harbor() {
  local name=$1 extra=${2:-} port; port=$(free_port)
  cat >"$WORK/auth/harbor-$name.json" <<JSON
{
  "name": "$name",
  "listen": "127.0.0.1:$port",
  "registry": "http://$REGISTRY",
  "external_url": "http://127.0.0.1:$port",
  "log": "$AUTH_LOG",
  "projects": {
    "dockerhub-proxy": {"public": true, "proxy": "docker-hub"},
    "dockerhub-private": {"public": false, "proxy": "docker-hub"},
    "quay-private": {"public": false, "proxy": "quay"},
    "production": {"public": false},
    "slowproj": {"public": false}
  },
  "robots": {
    "robot\$mirror": {"password": "mirror-secret",
                      "access": {"dockerhub-private": ["pull"], "production": ["pull", "push"], "slowproj": ["pull"]}},
    "robot\$ci": {"password": "ci-secret", "access": {"dockerhub-private": ["pull"]}},
    "robot\$pusher": {"password": "pusher-secret", "access": {"dockerhub-private": ["pull", "push"]}}
  },
  "token_seconds": 1800,
  "token_delay": {"slowproj": 1.5}
  $extra
}
JSON
  start_bg "$WORK/auth/harbor-$name.out" python3 "$ROOT/tests/harbor_auth.py" "$WORK/auth/harbor-$name.json"
  wait_for 20 "harbor model $name" curl -s -o /dev/null "http://127.0.0.1:$port/v2/" ||
    { cat "$WORK/auth/harbor-$name.out"; exit 1; }
  printf -v "HARBOR_$name" '%s' "127.0.0.1:$port"
}
start_harbor jwt
start_harbor opaque ', "token_format": "opaque"'
# An https external URL behind a plain-HTTP hop, as 2.14+ and as 2.11 to 2.13 write the realm.
start_harbor v214 ', "external_url": "https://harbor.example.com", "harbor_version": "2.14"'
start_harbor v211 ', "external_url": "https://harbor.example.com", "harbor_version": "2.11"'
AUTH=$HARBOR_jwt
PRIVATE=$(seed_image "$WORK" "$REGISTRY" dockerhub-private/library/alpine:3.19 "alpine 3.19 from dockerhub-private" v2s2)
SLOW=$(seed_image "$WORK" "$REGISTRY" slowproj/app:1 "app behind a slow token service" oci)
[ -n "$PRIVATE" ] && [ -n "$SLOW" ] || { echo "seeding the private projects failed"; exit 1; }
# More tags of each alpine, for paged tag lists.
for repository in dockerhub-proxy/library/alpine dockerhub-private/library/alpine; do
  for tag in 3.18 3.20; do
    skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$REGISTRY/$repository:3.19" "docker://$REGISTRY/$repository:$tag"
  done
done
PRIVATE_CONFIG_BLOB=$(skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/dockerhub-private/library/alpine:3.19" | jq -r .config.digest)

# Worker threads, each with its own wasm VM (the token cache is shared between them), or, for
# the module, threads of one process (one cache, one fetch per project).
MIRROR_WORKERS=2

# start_mirror NAME PLUGIN_JSON [UPSTREAM]: an Envoy with the filter in front of the Harbor model
# (or UPSTREAM); sets MIRROR_<NAME> (host:port), ENVOY_LOG_<NAME> and ADMIN_<NAME>.
start_mirror() {
  local name=$1 port admin; port=$(free_port) admin=$(free_port)
  printf '%s' "$2" >"$WORK/auth/$name.json"
  render "$WORK/auth/$name.json" "$WORK/auth/$name.yaml" "127.0.0.1:$port" "$admin" "${3:-http://$AUTH}"
  start_envoy "$WORK/auth/$name.yaml" "$WORK/auth/envoy-$name.log" "$admin" --concurrency "$MIRROR_WORKERS" \
    --log-level info --component-log-level "$LOG_COMPONENT:debug" || { cat "$WORK/auth/envoy-$name.log"; exit 1; }
  printf -v "MIRROR_$name" '%s' "127.0.0.1:$port"
  printf -v "ENVOY_LOG_$name" '%s' "$WORK/auth/envoy-$name.log"
  printf -v "ADMIN_$name" '%s' "$admin"
  printf -v "PID_$name" '%s' "$ENVOY_PID"
}
# `ghost` is a passthrough project Harbor does not have.
plugin_config() { # plugin_config PROJECT [AUTH_JSON]
  printf '{"registries": {"docker.io": {"project": "%s"}}, "default_registry": "docker.io", "passthrough_projects": ["production", "slowproj", "ghost"], "debug_header": true%s}' \
    "$1" "${2:+, \"auth\": $2}"
}
managed_auth() { # managed_auth HARBOR [PASSWORD [TIMEOUT_MS]]
  printf '{"robot": {"username": "robot$mirror", "password": "%s"}, "cluster": "harbor", "authority": "%s", "timeout_ms": %s}' \
    "${2:-mirror-secret}" "$1" "${3:-2000}"
}
start_mirror public "$(plugin_config dockerhub-proxy)"
start_mirror private "$(plugin_config dockerhub-private)"
start_mirror managed "$(plugin_config dockerhub-private "$(managed_auth "$AUTH")")"
start_mirror managed_opaque "$(plugin_config dockerhub-private "$(managed_auth "$HARBOR_opaque")")" "http://$HARBOR_opaque"
start_mirror off "$(plugin_config dockerhub-proxy '{"rewrite_tokens": false}')"
# One worker, so that concurrent requests meet in the same VM.
MIRROR_WORKERS=1 start_mirror single "$(plugin_config dockerhub-private "$(managed_auth "$AUTH")")"
# A second registry in managed mode, for a project robot$mirror lacks.
start_mirror denied '{"registries": {"docker.io": {"project": "quay-private"}}, "default_registry": "docker.io", "auth": '"$(managed_auth "$AUTH")"'}'
start_mirror badrobot "$(plugin_config dockerhub-private "$(managed_auth "$AUTH" wrong)")"
start_mirror badrobot_opaque "$(plugin_config dockerhub-private "$(managed_auth "$HARBOR_opaque" wrong)")" "http://$HARBOR_opaque"
# No default registry: a single-segment name reaches Harbor as it is.
start_mirror nodefault '{"registries": {"quay.io": {"project": "quay-private"}}}'
start_mirror v214 "$(plugin_config dockerhub-proxy)" "http://$HARBOR_v214"
start_mirror v211 "$(plugin_config dockerhub-proxy)" "http://$HARBOR_v211"
# Harbor that accepts connections and never answers: the token fetch must time out into a 503.
BLACKHOLE_PORT=$(free_port)
start_bg "$WORK/auth/blackhole.log" python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True:
    held.append(s.accept()[0])' "$BLACKHOLE_PORT"
start_mirror hanging "$(plugin_config dockerhub-private "$(managed_auth harbor mirror-secret 1000)")" "http://127.0.0.1:$BLACKHOLE_PORT"
# Harbor down: nothing listens on the token cluster's port.
TOKEN_DOWN_PORT=$(free_port)
start_mirror tokendown "$(plugin_config dockerhub-private "$(managed_auth "$AUTH")")" "http://127.0.0.1:$TOKEN_DOWN_PORT"

# --- assertions on the Harbor model's log -----------------------------------------------------

auth_lines() { tail -n +"$((AUTH_MARK + 1))" "$AUTH_LOG"; }

# auth_received JQ_FILTER WHAT: some request logged since the case began matches.
auth_received() {
  if auth_lines | jq -e -s "map(select($1)) | length > 0" >/dev/null; then
    echo "ok: harbor received $2"
  else
    echo "FAIL: harbor did not receive $2; it received:"
    auth_lines | jq -r '"    [\(.harbor)] \(.method) \(.path)?\(.query) auth=\(.auth) -> \(.status) granted=\(.granted)"'
    return 1
  fi
}

# auth_received_none JQ_FILTER WHAT: no request since the case began matches.
auth_received_none() {
  local hits; hits=$(auth_lines | jq -c "select($1)")
  [ -z "$hits" ] || { echo "FAIL: harbor received $2:"; echo "$hits" | sed 's/^/    /'; return 1; }
  echo "ok: harbor received no $2"
}

# auth_count JQ_FILTER: how many requests since the case began match.
auth_count() { auth_lines | jq -s "map(select($1)) | length"; }

# A request that carried something of the client's: any credential but the robot's (its Basic
# credentials at /service/token, its token on /v2), a cookie, a proxy credential, or a username
# in an OAuth POST's form.
CLIENT_CREDENTIAL='(.auth | IN("none", "bearer:robot$mirror", "basic:robot$mirror") | not) or .cookie or .proxy_authorization or .form_username'

# --- the clients, pointed at one mirror -------------------------------------------------------

basic_credentials() { printf '%s' "$1" | base64 -w0; } # USER:PASSWORD, as config files store it

docker_mirrors_include() { grep -qF "$1" < <(docker_cli info --format '{{json .RegistryConfig.Mirrors}}'); }

# use_docker_mirror MIRROR: reloads dockerd with MIRROR as its registry mirror.
use_docker_mirror() {
  client_config docker "http://$1" >"$WORK/docker/daemon.json"
  kill -HUP "$DOCKERD_PID"
  wait_for 20 "dockerd to reload its mirror" docker_mirrors_include "$1"
}

# pull_docker MIRROR [USER:PASSWORD [IMAGE]]: reloads dockerd with MIRROR as its registry
# mirror, pulls IMAGE (alpine:3.19) with the credentials docker would hold for Docker Hub and
# prints its digest.
pull_docker() {
  local image=${3:-alpine:3.19}
  use_docker_mirror "$1"
  docker_cli rmi -f "$image" >/dev/null 2>&1 || true
  local config=$WORK/docker/cli-$$-$RANDOM; mkdir -p "$config"
  if [ -n "${2:-}" ]; then
    printf '{"auths": {"https://index.docker.io/v1/": {"auth": "%s"}}}' "$(basic_credentials "$2")" >"$config/config.json"
  fi
  DOCKER_CONFIG=$config docker_cli pull "$image" >&2 || return 1
  docker_cli image inspect --format '{{index .RepoDigests 0}}' "$image" | sed 's/^.*@//'
}

pull_ctr() { # pull_ctr MIRROR [USER:PASSWORD [IMAGE]]
  local hosts=$WORK/hosts-auth-$1 namespace=auth-$RANDOM image=docker.io/${3:-library/alpine:3.19}
  write_hosts_toml "$hosts" docker.io containerd "http://$1"
  local user=(); [ -z "${2:-}" ] || user=(--user "$2")
  ctr_pull "$hosts" "$namespace" "$image" "${user[@]}" >&2 || return 1
  ctr_digest "$namespace" "$image"
}

# containers/image never sends --creds to a mirror (they are meant for the primary registry): it
# looks up credentials for the mirror's own host, as `podman login <mirror>` stores them.
authfile_for() { # authfile_for MIRROR [USER:PASSWORD]: prints --authfile FILE, or nothing
  [ -n "${2:-}" ] || return 0
  printf '{"auths": {"%s": {"auth": "%s"}}}' "$1" "$(basic_credentials "$2")" >"$WORK/auth-$1.json"
  printf -- '--authfile\n%s\n' "$WORK/auth-$1.json"
}

pull_podman() { # pull_podman MIRROR [USER:PASSWORD [IMAGE]]
  local image=docker.io/${3:-library/alpine:3.19}
  client_config containers "http://$1" >"$WORK/registries-$1.conf"
  local authfile; mapfile -t authfile < <(authfile_for "$1" "${2:-}")
  local REGISTRIES_CONF=$WORK/registries-$1.conf
  podman_cli rmi -f "$image" >/dev/null 2>&1 || true
  podman_cli pull "${authfile[@]}" "$image" >&2 || return 1
  podman_cli image inspect --format '{{.Digest}}' "$image"
}

pull_skopeo() { # pull_skopeo MIRROR [USER:PASSWORD [IMAGE]]
  local image=docker.io/${3:-library/alpine:3.19}
  client_config containers "http://$1" >"$WORK/registries-$1.conf"
  local authfile; mapfile -t authfile < <(authfile_for "$1" "${2:-}")
  local manifest; manifest=$(timeout 120 skopeo --registries-conf "$WORK/registries-$1.conf" inspect --raw \
    "${authfile[@]}" "docker://$image") || return 1
  printf 'sha256:%s\n' "$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)"
}

# anonymous_token MIRROR SCOPE: a token from the mirror's token path, as a client gets one.
anonymous_token() {
  curl -s "http://$1/service/token?service=harbor-registry&scope=$2" | jq -r .token
}

# header_of FILE NAME: a header's value in a curl -D dump (empty if absent); `present` tells.
header_of() { tr -d '\r' <"$1" | sed -n "s/^$2: \{0,1\}//Ip" | head -n 1; }
has_header() { tr -d '\r' <"$1" | grep -qi "^$2:"; }
status_of() { tr -d '\r' <"$1" | awk 'NR == 1 {print $2}'; }

# --- cases: pulls ---------------------------------------------------------------------------

# case_auth CLIENT SETUP: one cell of the matrix.
case_auth() {
  local client=$1 setup=$2 mirror_var=MIRROR_$2 digest
  local mirror=${!mirror_var}
  case $setup in
    public)  digest=$("pull_$client" "$mirror") ;;
    private) digest=$("pull_$client" "$mirror" "$CI_CREDS") ;;
    # docker holds Docker Hub credentials it sends to mirrors: they must not reach Harbor.
    managed*) if [ "$client" = docker ]; then digest=$(pull_docker "$mirror" 'hub-user:hub-password'); else digest=$("pull_$client" "$mirror"); fi ;;
  esac
  local expected=$ALPINE; [ "$setup" = public ] || expected=$PRIVATE
  expect_eq "$client digest through the $setup mirror" "$digest" "$expected"
  local project=dockerhub-private; [ "$setup" = public ] && project=dockerhub-proxy
  case $setup in
    public | private)
      # The client asked for its own name (containerd: both); Harbor saw only its own.
      auth_received ".path == \"/service/token\" and .method == \"GET\" and (.granted | index(\"$project/library/alpine:pull\"))" \
        "a token request granting pull on $project/library/alpine"
      auth_received_none '.path == "/service/token" and .method == "GET" and (.scopes | map(startswith("repository:library/")) | any)' \
        "token request with an unprefixed scope"
      ;;
    managed*)
      auth_received_none "$CLIENT_CREDENTIAL" "request carrying a client credential"
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
  # Harbor keeps the scope in its token, with no action on a project it does not have.
  auth_received '.path == "/service/token" and (.scopes | index("repository:library/alpine:pull")) and .granted == ["library/alpine:"]' \
    "$client's token request for its own name, granted nothing"
}

# case_docker_hub_redirect_followed CLIENT: Harbor's 301 of <docker hub project>/<single> to
# library/<single> (prefixed names pass the filter as they are), followed by the client, whose
# Location it replays through the mirror.
case_docker_hub_redirect_followed() {
  local client=$1 digest
  digest=$("pull_$client" "$MIRROR_public" "" dockerhub-proxy/alpine:3.19)
  expect_eq "$client digest of dockerhub-proxy/alpine:3.19" "$digest" "$ALPINE"
  auth_received '(.path | test("^/v2/dockerhub-proxy/alpine/(manifests|blobs)/")) and .status == 301' "the request Harbor redirected (301)"
  auth_received '(.path | test("^/v2/dockerhub-proxy/library/alpine/(manifests|blobs)/")) and .status == 200' "the redirected request (200)"
  registry_received_only_under dockerhub-proxy/library
}

# --- cases: Harbor's behaviours, as the model has them from Harbor's source -------------------

# The model, straight (no filter): each behaviour the filter relies on, as Harbor's source has it.
case_harbor_model_follows_harbor_source() {
  local h=$AUTH out=$WORK/auth/model
  # core/service/token: wrong Basic credentials are an anonymous caller, after the failed-login delay.
  local started; started=$(date +%s%N)
  curl -s -u 'robot$mirror:wrong' -o "$out.body" -w '%{http_code}' \
    "http://$h/service/token?service=harbor-registry&scope=repository:dockerhub-proxy/library/alpine:pull&scope=repository:dockerhub-private/library/alpine:pull" >"$out.status"
  local waited=$((($(date +%s%N) - started) / 1000000))
  expect_eq "token status for wrong credentials" "$(cat "$out.status")" 200
  [ "$waited" -ge 1400 ] || { echo "FAIL: answered in ${waited} ms, without Harbor's 1.5 s failed-login delay"; return 1; }
  local claims; claims=$(jq -r .token "$out.body" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)
  expect_eq "its subject (anonymous: none)" "$(jq -c .sub <<<"$claims")" null
  expect_eq "its access" "$(jq -c '.access | map("\(.name):\(.actions | join(","))")' <<<"$claims")" \
    '["dockerhub-proxy/library/alpine:pull","dockerhub-private/library/alpine:"]'
  expect_eq "access_token" "$(jq -c .access_token "$out.body")" '""'
  # Another service: 400, plain text.
  curl -s -D "$out.headers" -o "$out.body" "http://$h/service/token?service=other&scope=repository:p/a:pull"
  expect_eq "status for another service" "$(status_of "$out.headers")" 400
  expect_eq "its body" "$(cat "$out.body")" "Unable to handle service: other"
  # Every action the role allows, whatever was asked; unknown projects and single names kept, empty.
  curl -s -u 'robot$mirror:mirror-secret' -o "$out.body" \
    "http://$h/service/token?service=harbor-registry&scope=repository:production/app:pull+repository:ghost/app:pull&scope=repository:alpine:pull"
  claims=$(jq -r .token "$out.body" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)
  expect_eq "the robot's token subject" "$(jq -r .sub <<<"$claims")" 'robot$mirror'
  expect_eq "the robot's access" "$(jq -c '.access | map("\(.name):\(.actions | join(","))")' <<<"$claims")" \
    '["production/app:pull,push","ghost/app:","alpine:"]'
  # artifactinfo, before any auth: a single-segment name.
  curl -s -D "$out.headers" -o "$out.body" "http://$h/v2/alpine/manifests/3.19"
  expect_eq "status for a single-segment name" "$(status_of "$out.headers")" 400
  expect_eq "its body" "$(cat "$out.body")" '{"errors":[{"code":"BAD_REQUEST","message":"bad request: invalid repository name: alpine"}]}'
  # v2auth: anonymous GET, Harbor's doubled message, its content type, no detail.
  curl -s -D "$out.headers" -o "$out.body" "http://$h/v2/dockerhub-proxy/library/alpine/manifests/3.19"
  expect_eq "anonymous status" "$(status_of "$out.headers")" 401
  expect_eq "its body" "$(cat "$out.body")" \
    '{"errors":[{"code":"UNAUTHORIZED","message":"authorize header needed to send HEAD to repository: authorize header needed to send HEAD to repository"}]}'
  expect_eq "its content type" "$(header_of "$out.headers" content-type)" 'application/json; charset=utf-8'
  expect_eq "its challenge" "$(header_of "$out.headers" www-authenticate)" \
    "Bearer realm=\"http://$h/service/token\",service=\"harbor-registry\",scope=\"repository:dockerhub-proxy/library/alpine:pull\""
  # An unknown project with an Authorization header: 401, an empty Www-Authenticate.
  curl -s -D "$out.headers" -o "$out.body" -u "$CI_CREDS" "http://$h/v2/ghost/app/manifests/1"
  expect_eq "unknown project status" "$(status_of "$out.headers")" 401
  has_header "$out.headers" www-authenticate || { echo "FAIL: no Www-Authenticate header"; return 1; }
  expect_eq "its challenge" "$(header_of "$out.headers" www-authenticate)" ""
  expect_eq "its message" "$(jq -r '.errors[0].message' "$out.body")" "project ghost not found: project ghost not found"
  # repoproxy: the library/ redirect only on GET/HEAD manifests, GET blobs, GET tags/list.
  local token; token=$(curl -s "http://$h/service/token?service=harbor-registry&scope=repository:dockerhub-proxy/alpine:pull" | jq -r .token)
  local method endpoint expected
  for row in "GET /manifests/3.19 301" "HEAD /manifests/3.19 301" "GET /blobs/$PRIVATE_CONFIG_BLOB 301" \
    "HEAD /blobs/$PRIVATE_CONFIG_BLOB 404" "GET /tags/list?n=1 301" "GET /referrers/$ALPINE 404"; do
    read -r method endpoint expected <<<"$row"
    local as=(-X "$method"); [ "$method" != HEAD ] || as=(-I)
    curl -s "${as[@]}" -D "$out.headers" -o /dev/null -H "Authorization: Bearer $token" "http://$h/v2/dockerhub-proxy/alpine$endpoint"
    expect_eq "$method dockerhub-proxy/alpine$endpoint" "$(status_of "$out.headers")" "$expected"
  done
  curl -s -D "$out.headers" -o /dev/null -H "Authorization: Bearer $token" "http://$h/v2/dockerhub-proxy/alpine/tags/list?n=1"
  expect_eq "the tag list's Location (query dropped)" "$(header_of "$out.headers" location)" /v2/dockerhub-proxy/library/alpine/tags/list
  # Writes: auth first, then the proxy project's 403.
  curl -s -X POST -D "$out.headers" -o /dev/null "http://$h/v2/dockerhub-private/library/x/blobs/uploads/"
  expect_eq "anonymous upload's challenge" "$(header_of "$out.headers" www-authenticate)" \
    "Bearer realm=\"http://$h/service/token\",service=\"harbor-registry\",scope=\"repository:dockerhub-private/library/x:pull,push\""
  token=$(curl -s -u "$CI_CREDS" "http://$h/service/token?service=harbor-registry&scope=repository:dockerhub-private/library/x:pull,push" | jq -r .token)
  curl -s -X POST -o "$out.body" -H "Authorization: Bearer $token" "http://$h/v2/dockerhub-private/library/x/blobs/uploads/"
  expect_eq "a pull-only token's upload" "$(jq -r '.errors[0].message' "$out.body")" \
    "unauthorized to access repository: dockerhub-private/library/x, action: push: unauthorized to access repository: dockerhub-private/library/x, action: push"
  token=$(curl -s -u "$PUSHER_CREDS" "http://$h/service/token?service=harbor-registry&scope=repository:dockerhub-private/library/x:pull,push" | jq -r .token)
  curl -s -X POST -D "$out.headers" -o "$out.body" -H "Authorization: Bearer $token" "http://$h/v2/dockerhub-private/library/x/blobs/uploads/"
  expect_eq "a push token's upload to a proxy project" "$(status_of "$out.headers") $(cat "$out.body")" \
    '403 {"errors":[{"code":"DENIED","message":"denied: can not push artifact to a proxy project: dockerhub-private"}]}'
  # The realm: 2.14+ the external URL's scheme with the request's Host; 2.11 to 2.13 the URL.
  expect_eq "2.14 realm" "$(challenge_of "http://$HARBOR_v214/v2/")" \
    "Bearer realm=\"https://$HARBOR_v214/service/token\",service=\"harbor-registry\""
  expect_eq "2.11 realm" "$(challenge_of "http://$HARBOR_v211/v2/")" \
    'Bearer realm="https://harbor.example.com/service/token",service="harbor-registry"'
}

# Harbor's 401 passes the mirror as Harbor wrote it but for the realm, pointed back at the mirror.
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
    "Bearer realm=\"http://$MIRROR_off/service/token\",service=\"harbor-registry\",scope=\"repository:dockerhub-proxy/library/alpine:pull\""
  # Harbor's body and content type are left as they are.
  local out=$WORK/auth/challenge
  curl -s -D "$out.headers" -o "$out.body" "http://$MIRROR_public/v2/library/alpine/manifests/3.19"
  expect_eq "Harbor's 401 body through the mirror" "$(cat "$out.body")" \
    '{"errors":[{"code":"UNAUTHORIZED","message":"authorize header needed to send HEAD to repository: authorize header needed to send HEAD to repository"}]}'
  expect_eq "its content type" "$(header_of "$out.headers" content-type)" 'application/json; charset=utf-8'
}

# Both realm rules, an https external URL behind plain HTTP: the mirror's realm either way.
case_auth_realm_of_each_harbor_version() {
  local version mirror_var digest
  for version in v214 v211; do
    mirror_var=MIRROR_$version
    expect_eq "challenge through the mirror ($version)" "$(challenge_of "http://${!mirror_var}/v2/library/alpine/manifests/3.19")" \
      "Bearer realm=\"http://${!mirror_var}/service/token?ns=docker.io\",service=\"harbor-registry\",scope=\"repository:dockerhub-proxy/library/alpine:pull\""
    digest=$(pull_skopeo "${!mirror_var}")
    expect_eq "skopeo digest through the $version mirror" "$digest" "$ALPINE"
    auth_received ".harbor == \"$version\" and .path == \"/service/token\" and (.granted | index(\"dockerhub-proxy/library/alpine:pull\"))" \
      "the token request through the mirror ($version)"
  done
}

# Tag lists, paged by Harbor's Link header (which names Harbor's repository), through the mirror.
case_tag_list_paged_through_the_mirror() {
  local out=$WORK/auth/tags mirror token path=/v2/library/alpine/tags/list?n=1 tags=() page=0
  token=$(anonymous_token "$MIRROR_public" 'repository:library/alpine:pull')
  for mirror in "$MIRROR_public" "$MIRROR_managed"; do
    tags=() page=0 path=/v2/library/alpine/tags/list?n=1
    local auth=(); [ "$mirror" = "$MIRROR_managed" ] || auth=(-H "Authorization: Bearer $token")
    while [ -n "$path" ] && [ $page -lt 10 ]; do
      curl -s -D "$out.headers" -o "$out.body" "${auth[@]}" "http://$mirror$path"
      expect_eq "status of page $page" "$(status_of "$out.headers")" 200
      tags+=("$(jq -r '.tags | join(",")' "$out.body")")
      path=$(header_of "$out.headers" link | sed -n 's/^<\([^>]*\)>; rel="next"$/\1/p')
      [ -z "$path" ] || [[ $path == /v2/dockerhub-*/library/alpine/tags/list\?* ]] ||
        { echo "FAIL: the Link does not carry Harbor's name: $path"; return 1; }
      page=$((page + 1))
    done
    expect_eq "tags through $mirror, page by page" "${tags[*]}" "3.18 3.19 3.20"
  done
  # skopeo lists them through the mirror.
  expect_eq "skopeo list-tags" "$(skopeo list-tags --tls-verify=false "docker://$MIRROR_public/library/alpine" | jq -c .Tags)" \
    '["3.18","3.19","3.20"]'
}

# The catalog needs a system admin: Harbor's Basic challenge reaches the client unharmed.
case_catalog_passes_unharmed() {
  local out=$WORK/auth/catalog mirror
  for mirror in "$MIRROR_public" "$MIRROR_managed"; do
    curl -s -D "$out.headers" -o "$out.body" "http://$mirror/v2/_catalog"
    expect_eq "catalog status through $mirror" "$(status_of "$out.headers")" 401
    expect_eq "its challenge" "$(header_of "$out.headers" www-authenticate)" 'Basic realm="harbor"'
    expect_eq "its message" "$(jq -r '.errors[0].message' "$out.body")" \
      "unauthorized to list catalog: unauthorized to list catalog"
  done
}

# Writes to a prefixed name pass the read-only filter (it refuses only what it rewrote): Harbor's
# auth comes first, then its refusal of pushes to a proxy project.
case_writes_meet_harbors_auth_then_its_proxy_refusal() {
  local out=$WORK/auth/writes
  curl -s -X POST -D "$out.headers" -o /dev/null "http://$MIRROR_private/v2/dockerhub-private/library/pushed/blobs/uploads/"
  # A name already under a project selects no registry: the realm has no ns.
  expect_eq "anonymous upload's challenge through the mirror" "$(header_of "$out.headers" www-authenticate)" \
    "Bearer realm=\"http://$MIRROR_private/service/token\",service=\"harbor-registry\",scope=\"repository:dockerhub-private/library/pushed:pull,push\""
  python3 "$ROOT/tests/oci_image.py" "$WORK/auth/to-push" x "an image to push"
  local creds expected
  for creds in "$CI_CREDS" "$PUSHER_CREDS"; do
    case $creds in
      "$CI_CREDS") expected='action: push' ;;
      *) expected='can not push artifact to a proxy project: dockerhub-private' ;;
    esac
    if skopeo copy -q --dest-tls-verify=false --dest-creds "$creds" "oci:$WORK/auth/to-push:x" \
      "docker://$MIRROR_private/dockerhub-private/library/pushed:1" 2>"$out.err"; then
      echo "FAIL: a push to a proxy project succeeded"; return 1
    fi
    grep -qF "$expected" "$out.err" || { echo "FAIL: skopeo's error does not say '$expected':"; cat "$out.err"; return 1; }
    echo "ok: push as ${creds%%:*} refused: $expected"
  done
  if grep -q '"http.request.method":"\(POST\|PUT\|PATCH\)"' < <(registry_lines); then
    echo "FAIL: a write reached the registry"; return 1
  fi
  echo "ok: no write reached the registry"
}

# Harbor's answers the filter passes as they are: a project Harbor does not have, a
# single-segment name when no registry applies, another token service.
case_harbor_errors_pass_unchanged() {
  local out=$WORK/auth/errors
  curl -s -D "$out.headers" -o "$out.body" -u "$CI_CREDS" "http://$MIRROR_private/v2/ghost/app/manifests/1"
  expect_eq "unknown project status" "$(status_of "$out.headers")" 401
  expect_eq "its empty Www-Authenticate" "$(header_of "$out.headers" www-authenticate)" ""
  expect_eq "its message" "$(jq -r '.errors[0].message' "$out.body")" "project ghost not found: project ghost not found"
  curl -s -D "$out.headers" -o "$out.body" "http://$MIRROR_nodefault/v2/alpine/manifests/3.19"
  expect_eq "single-segment name, no registry" "$(status_of "$out.headers") $(cat "$out.body")" \
    '400 {"errors":[{"code":"BAD_REQUEST","message":"bad request: invalid repository name: alpine"}]}'
  curl -s -D "$out.headers" -o "$out.body" "http://$MIRROR_public/service/token?service=other&scope=repository:library/alpine:pull"
  expect_eq "another service" "$(status_of "$out.headers") $(cat "$out.body")" "400 Unable to handle service: other"
  auth_received '.path == "/service/token" and (.query | test("service=other")) and (.query | test("dockerhub-proxy"))' \
    "the token request, its scope mapped"
  # Wrong credentials are an anonymous caller at Harbor: the pull fails, and says so.
  if pull_skopeo "$MIRROR_private" 'robot$ci:wrong' >/dev/null 2>"$out.err"; then
    echo "FAIL: a pull with wrong credentials succeeded"; return 1
  fi
  grep -qi 'unauthorized\|authentication required' "$out.err" || { echo "FAIL: skopeo's error:"; cat "$out.err"; return 1; }
  echo "ok: skopeo with wrong credentials failed: $(tail -n 1 "$out.err" | cut -c1-160)"
  auth_received '.path == "/service/token" and .auth == "basic-invalid:robot$ci" and .status == 200 and .granted == ["dockerhub-private/library/alpine:"]' \
    "the anonymous token Harbor gave for wrong credentials"
}

# --- cases: managed mode --------------------------------------------------------------------

# Managed mode: concurrent requests on a cold project share one fetch per VM.
case_managed_fetches_once_per_project() {
  past_the_filters_tick
  local stats_before; stats_before=$(curl -s "http://127.0.0.1:$ADMIN_managed/stats?filter=harbor_mirror.token")
  local i codes=()
  for i in $(seq 12); do
    curl -s -o /dev/null -w '%{http_code}\n' -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://$MIRROR_managed/v2/production/app/manifests/1" >"$WORK/auth/concurrent-$i" &
  done
  wait
  for i in $(seq 12); do codes+=("$(cat "$WORK/auth/concurrent-$i")"); done
  expect_eq "statuses of 12 concurrent requests" "$(printf '%s ' "${codes[@]}")" "$(printf '200 %.0s' $(seq 12))"
  local fetches; fetches=$(auth_count '.path == "/service/token" and (.scopes | index("repository:production/app:pull"))')
  echo "token requests for project production: $fetches (worker VMs: $MIRROR_WORKERS)"
  local most=$MIRROR_WORKERS; [ "$ADAPTER" != module ] || most=1 # the module: one cache for all workers
  [ "$fetches" -ge 1 ] && [ "$fetches" -le "$most" ] || { echo "FAIL: expected $most fetches at most"; return 1; }
  # Harbor grants every action the robot's role allows, push included; the filter pulls with it.
  auth_received '.path == "/service/token" and .granted == ["production/app:pull,push"]' "a grant beyond what was asked"
  past_the_filters_tick
  local stats; stats=$(curl -s "http://127.0.0.1:$ADMIN_managed/stats?filter=harbor_mirror.token")
  echo "$stats" | sed 's/^/    /'
  counter() { echo "$1" | awk -F': ' -v name="${STAT}harbor_mirror.token.$2" '$1 == name {print $2}'; }
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
  if [ "$ADAPTER" = module ]; then
    # The module's token calls are the configuration's (Envoy's main thread): the first
    # request's end does not cancel its call, so one token request served both.
    expect_eq "token requests for project slowproj" "$(auth_count '.path == "/service/token" and (.scopes | index("repository:slowproj/app:pull"))')" 1
    return
  fi
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
  # A project Harbor does not have: Harbor's token has it with no action (the JWT says so), or,
  # with opaque tokens, Harbor's 401 to the forwarded request becomes the mirror's 403.
  expect_oci_error "$MIRROR_managed" /v2/ghost/app/manifests/1 403 DENIED "no pull on project ghost"
  expect_oci_error "$MIRROR_managed_opaque" /v2/ghost/app/manifests/1 403 DENIED "harbor refused robot robot\$mirror's token for project ghost"
  auth_received '.harbor == "opaque" and .path == "/v2/ghost/app/manifests/1" and .status == 401' "the 401 the opaque token got"
  expect_oci_error "$MIRROR_badrobot" /v2/library/alpine/manifests/3.19 503 UNAVAILABLE \
    "did not accept the robot credentials of auth.robot (robot\$mirror)"
  expect_oci_error "$MIRROR_badrobot_opaque" /v2/library/alpine/manifests/3.19 403 DENIED \
    "or harbor did not accept auth.robot's credentials"
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

# Wrong robot credentials: Harbor answers with an anonymous token after its failed-login delay.
# Clients get 503 naming auth.robot, and Harbor sees one login per project per backoff window.
case_managed_bad_robot_password_backs_off() {
  local path=/v2/production/app/manifests/1 i started=$SECONDS
  past_the_filters_tick
  local stats_before; stats_before=$(curl -s "http://127.0.0.1:$ADMIN_badrobot/stats?filter=harbor_mirror.token.fetch_failures")
  for i in 1 2 3 4 5 6; do
    expect_oci_error "$MIRROR_badrobot" "$path" 503 UNAVAILABLE "auth.robot" >/dev/null ||
      { echo "FAIL: request $i was not a 503 naming auth.robot: $(cat "$WORK/body")"; return 1; }
  done
  echo "ok: 6 requests answered 503 naming auth.robot in $((SECONDS - started)) s: $(jq -r '.errors[0].message' "$WORK/body")"
  expect_eq "token requests for project production" "$(auth_count '.path == "/service/token" and (.scopes | index("repository:production/app:pull"))')" 1
  auth_received '.path == "/service/token" and .auth == "basic-invalid:robot$mirror"' "the failed login"
  sleep 6  # past the backoff window
  expect_oci_error "$MIRROR_badrobot" "$path" 503 UNAVAILABLE "auth.robot"
  expect_eq "token requests after the window" "$(auth_count '.path == "/service/token" and (.scopes | index("repository:production/app:pull"))')" 2
  past_the_filters_tick
  local stats; stats=$(curl -s "http://127.0.0.1:$ADMIN_badrobot/stats?filter=harbor_mirror.token.fetch_failures")
  local before after; before=$(awk -F': ' '{print $2}' <<<"$stats_before") after=$(awk -F': ' '{print $2}' <<<"$stats")
  expect_eq "token.fetch_failures counted" "$((after - before))" 2
}

# No client credential reaches Harbor in managed mode: crafted requests with Basic and Bearer
# credentials, a proxy credential and cookies, to every kind of path. The pulls are the robot's.
case_managed_keeps_client_credentials_from_harbor() {
  local mirror out=$WORK/auth/leak path expected row credential
  local credentials=(
    "Authorization: Basic $(basic_credentials 'hub-user:hub-password')"
    'Authorization: Bearer client-token-from-elsewhere'
    "Proxy-Authorization: Basic $(basic_credentials 'proxy-user:proxy-password')"
    'Cookie: sid=client-session; harbor-lang=en-us'
  )
  for mirror in "$MIRROR_managed" "$MIRROR_managed_opaque"; do
    for row in "/v2/ 200" "/v2/library/alpine/manifests/3.19 200" "/v2/library/alpine/blobs/$PRIVATE_CONFIG_BLOB 200" \
      "/service/token?service=harbor-registry&scope=repository:library/alpine:pull 404" "/api/v2.0/projects 404" "/c/login 404"; do
      read -r path expected <<<"$row"
      for credential in "${credentials[@]}"; do
        curl -s -o "$out.body" -w '%{http_code}' -H "$credential" -H "Cookie: other=1" \
          -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$mirror$path" >"$out.status"
        expect_eq "$path with ${credential%%:*} through $mirror" "$(cat "$out.status")" "$expected" >/dev/null ||
          { echo "FAIL: $path with ${credential%%:*} through $mirror: $(cat "$out.status") $(cat "$out.body")"; return 1; }
      done
      echo "ok: $path with each client credential through $mirror: $expected"
    done
  done
  auth_received_none "$CLIENT_CREDENTIAL" "request carrying a client credential"
  auth_received_none '(.path | startswith("/v2/")) or (.path == "/service/token" and .auth == "basic:robot$mirror") | not' \
    "request outside /v2 but the filter's own token requests"
  expect_eq "manifest and blob requests Harbor served, each with robot\$mirror's token" \
    "$(auth_count '(.path | test("/(manifests|blobs)/")) and .auth == "bearer:robot$mirror" and .status == 200')" $((2 * 2 * ${#credentials[@]}))
}

for client in docker ctr podman skopeo; do
  for setup in public private managed managed_opaque; do
    CASE_ENVOY_LOG=$WORK/auth/envoy-$setup.log run_case case_auth "$client" "$setup"
  done
  CASE_ENVOY_LOG=$WORK/auth/envoy-off.log run_case case_auth_off "$client"
  CASE_ENVOY_LOG=$WORK/auth/envoy-public.log run_case case_docker_hub_redirect_followed "$client"
done
run_case case_harbor_model_follows_harbor_source
CASE_ENVOY_LOG=$WORK/auth/envoy-private.log run_case case_auth_challenge_points_back_at_the_mirror
CASE_ENVOY_LOG=$WORK/auth/envoy-v211.log run_case case_auth_realm_of_each_harbor_version
CASE_ENVOY_LOG=$WORK/auth/envoy-public.log run_case case_tag_list_paged_through_the_mirror
CASE_ENVOY_LOG=$WORK/auth/envoy-managed.log run_case case_catalog_passes_unharmed
CASE_ENVOY_LOG=$WORK/auth/envoy-private.log run_case case_writes_meet_harbors_auth_then_its_proxy_refusal
CASE_ENVOY_LOG=$WORK/auth/envoy-private.log run_case case_harbor_errors_pass_unchanged
CASE_ENVOY_LOG=$WORK/auth/envoy-managed.log run_case case_managed_fetches_once_per_project
CASE_ENVOY_LOG=$WORK/auth/envoy-single.log run_case case_managed_fetch_survives_its_request
CASE_ENVOY_LOG=$WORK/auth/envoy-managed_opaque.log run_case case_managed_failures_are_answered
CASE_ENVOY_LOG=$WORK/auth/envoy-badrobot.log run_case case_managed_bad_robot_password_backs_off
CASE_ENVOY_LOG=$WORK/auth/envoy-managed.log run_case case_managed_keeps_client_credentials_from_harbor
