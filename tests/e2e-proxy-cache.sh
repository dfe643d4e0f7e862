# The Harbor model's proxy cache and its upstream, sourced by tests/e2e.sh: what Harbor's source
# does with a proxy project's pulls, shown on the model itself, before any filter is tested
# against it (tests/harbor_auth.py has the source's references). A second registry stands for the
# upstream (its repositories without the project prefix), the first for Harbor's storage; the
# model logs every call it makes to the upstream, which the cases count.

PROXY_DIR=$WORK/proxy-cache
mkdir -p "$PROXY_DIR"
UPSTREAM_PORT=$(free_port)
UPSTREAM=127.0.0.1:$UPSTREAM_PORT
start_registry "$PROXY_DIR/upstream" "$UPSTREAM_PORT" || exit 1
STORAGE_PORT=$(free_port)
STORAGE=127.0.0.1:$STORAGE_PORT
start_registry "$PROXY_DIR/storage" "$STORAGE_PORT" || exit 1
UPSTREAM_LOG=$PROXY_DIR/upstream.log
touch "$UPSTREAM_LOG"

echo "seeding the upstream $UPSTREAM"
seed_upstream() { # seed_upstream REPO:TAG LABEL [OCI_IMAGE ARGS...]: pushes an image to the upstream, prints its digest
  local layout; layout=$(mktemp -d "$PROXY_DIR/layout.XXXXXX")
  python3 "$ROOT/tests/oci_image.py" "$layout" seed "$2" "${@:3}"
  skopeo copy -q --all --dest-tls-verify=false --digestfile "$layout.digest" "oci:$layout:seed" "docker://$UPSTREAM/$1" >&2
  cat "$layout.digest"
}
PC_TAG=$(seed_upstream library/bytag:1 "pulled by tag")
PC_BURST=$(seed_upstream library/burst:1 "pulled by many at once")
PC_HEAD=$(seed_upstream library/head:1 "resolved with HEAD")
PC_BLOB=$(seed_upstream library/blob:1 "a layer of 8 MiB" --layer-bytes 8388608)
PC_INDEX=$(seed_upstream library/index:1 "a multi-platform image" --index)
PC_CROWD=$(seed_upstream library/crowd:1 "pulled through the mirror by twenty at once")
PC_SECRET=$(seed_upstream library/secret:1 "a private project's image, pulled at once by the entitled and the others")
PC_ROLLOUT=$(seed_upstream library/rollout:1 "pulled by several containerd at once")
PC_BIG=$(seed_upstream library/biglayer:1 "a layer of 8 MiB, pulled through the mirror by ten at once" --layer-bytes 8388608)
[ -n "$PC_TAG" ] && [ -n "$PC_BURST" ] && [ -n "$PC_HEAD" ] && [ -n "$PC_BLOB" ] && [ -n "$PC_INDEX" ] &&
  [ -n "$PC_CROWD" ] && [ -n "$PC_SECRET" ] && [ -n "$PC_ROLLOUT" ] && [ -n "$PC_BIG" ] || { echo "seeding the upstream failed"; exit 1; }

PC_PORT=$(free_port)
PC_HARBOR=127.0.0.1:$PC_PORT
cat >"$PROXY_DIR/harbor.json" <<JSON
{
  "name": "proxy-cache",
  "listen": "$PC_HARBOR",
  "registry": "http://$STORAGE",
  "external_url": "http://$PC_HARBOR",
  "log": "$PROXY_DIR/harbor.log",
  "upstream_log": "$UPSTREAM_LOG",
  "store_poll_seconds": 0.3,
  "store_polls": 10,
  "projects": {"hub": {"public": true, "proxy": "docker-hub", "upstream_registry": "http://$UPSTREAM"},
               "hubp": {"public": false, "proxy": "docker-hub", "upstream_registry": "http://$UPSTREAM"}},
  "robots": {"robot\$pc": {"password": "pc-secret", "access": {"hubp": ["pull"]}}}
}
JSON
start_bg "$PROXY_DIR/harbor.out" python3 "$ROOT/tests/harbor_auth.py" "$PROXY_DIR/harbor.json"
wait_for 20 "the proxy-cache harbor model" curl -s -o /dev/null "http://$PC_HARBOR/v2/" || { cat "$PROXY_DIR/harbor.out"; exit 1; }

# pc_token REPO: an anonymous pull token for hub/REPO (the project is public).
pc_token() {
  curl -sf "http://$PC_HARBOR/service/token?service=harbor-registry&scope=repository:hub/$1:pull" | jq -r .token
}
# pc_get METHOD PATH OUT: the model's answer, headers in OUT.headers, body in OUT; prints the status.
pc_get() {
  local repository method=(-X "$1"); repository=$(sed -E 's#^/v2/hub/(.*)/(manifests|blobs)/.*#\1#' <<<"$2")
  [ "$1" != HEAD ] || method=(-I)
  curl -sS "${method[@]}" -H "Authorization: Bearer $(pc_token "$repository")" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' \
    -D "$3.headers" -o "$3" -w '%{http_code}' "http://$PC_HARBOR$2"
}
# digest_of FILE: the sha256 digest of FILE's bytes.
digest_of() { echo "sha256:$(sha256sum <"$1" | cut -d' ' -f1)"; }
# pc_get_at_once COUNT PATH NAME DIGEST: COUNT concurrent GETs of PATH, each answered 200 with
# content of DIGEST (bodies in $PROXY_DIR/NAME-1...).
pc_get_at_once() {
  local i pids=()
  for ((i = 1; i <= $1; i++)); do
    pc_get GET "$2" "$PROXY_DIR/$3-$i" >"$PROXY_DIR/$3-$i.status" &
    pids+=($!)
  done
  wait "${pids[@]}"
  for ((i = 1; i <= $1; i++)); do
    expect_eq "$3 $i" "$(cat "$PROXY_DIR/$3-$i.status")" 200
    expect_eq "$3 $i's content" "$(digest_of "$PROXY_DIR/$3-$i")" "$4"
  done
}
pc_header() { tr -d '\r' <"$1.headers" | awk -v name="$2" 'tolower($1) == tolower(name) ":" {sub(/^[^:]*: ?/, ""); print; exit}'; }
# upstream_calls MARK JQ_FILTER: how many upstream calls since line MARK match the filter.
upstream_calls() { tail -n +"$(($1 + 1))" "$UPSTREAM_LOG" | jq -c "select($2)" | wc -l; }
upstream_mark() { wc -l <"$UPSTREAM_LOG"; }
pc_control() { curl -sf -X POST -d "$1" "http://$PC_HARBOR/_model/upstream" >/dev/null; }
stored() { curl -sf -o /dev/null -I -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' "http://$STORAGE/v2/hub/$1"; }

case_model_pull_by_tag_goes_upstream_until_stored() {
  local mark; mark=$(upstream_mark)
  expect_eq "GET by tag" "$(pc_get GET /v2/hub/library/bytag/manifests/1 "$PROXY_DIR/m")" 200
  expect_eq "the manifest" "$(digest_of "$PROXY_DIR/m")" "$PC_TAG"
  expect_eq "Docker-Content-Digest relayed from the upstream by tag" "$(pc_header "$PROXY_DIR/m" Docker-Content-Digest)" ""
  grep -qi '^Docker-Content-Digest:' "$PROXY_DIR/m.headers" || { echo "FAIL: no Docker-Content-Digest header at all"; return 1; }
  expect_eq "upstream HEADs" "$(upstream_calls "$mark" '.repository == "library/bytag" and .kind == "manifest" and .method == "HEAD"')" 1
  expect_eq "upstream GETs" "$(upstream_calls "$mark" '.repository == "library/bytag" and .kind == "manifest" and .method == "GET"')" 1
  # Harbor stores the manifest only after its blobs are stored: a client pulls them.
  local blob
  for blob in $(jq -r '.config.digest, .layers[].digest' "$PROXY_DIR/m"); do
    expect_eq "GET blob $blob" "$(pc_get GET "/v2/hub/library/bytag/blobs/$blob" "$PROXY_DIR/b")" 200
    expect_eq "blob $blob" "$(digest_of "$PROXY_DIR/b")" "$blob"
  done
  wait_for 15 "the tag stored" stored library/bytag/manifests/1
  mark=$(upstream_mark)
  expect_eq "GET by tag, stored" "$(pc_get GET /v2/hub/library/bytag/manifests/1 "$PROXY_DIR/m")" 200
  expect_eq "Docker-Content-Digest from storage" "$(pc_header "$PROXY_DIR/m" Docker-Content-Digest)" "$PC_TAG"
  expect_eq "upstream HEADs, stored" "$(upstream_calls "$mark" '.repository == "library/bytag" and .kind == "manifest" and .method == "HEAD"')" 1
  expect_eq "upstream GETs, stored" "$(upstream_calls "$mark" '.repository == "library/bytag" and .method == "GET"')" 0
  mark=$(upstream_mark)
  expect_eq "GET by digest, stored" "$(pc_get GET "/v2/hub/library/bytag/manifests/$PC_TAG" "$PROXY_DIR/m")" 200
  expect_eq "upstream calls for a stored digest" "$(upstream_calls "$mark" '.repository == "library/bytag"')" 0
  echo "ok: by tag, uncached: 1 HEAD and 1 GET upstream, an empty digest header; stored once its blobs were; then 1 HEAD and no GET; by digest, nothing"
}

case_model_a_burst_costs_one_upstream_get_per_request() {
  local mark; mark=$(upstream_mark)
  pc_control '{"delay": 0.3}'
  pc_get_at_once 5 /v2/hub/library/burst/manifests/1 burst "$PC_BURST"
  pc_control '{"delay": 0}'
  expect_eq "upstream GETs for 5 requests at once" "$(upstream_calls "$mark" '.repository == "library/burst" and .kind == "manifest" and .method == "GET"')" 5
  echo "ok: 5 concurrent GETs of an uncached tag: 5 manifest GETs upstream (Docker Hub counts each as a pull)"
}

case_model_head_by_tag_checks_the_upstream_twice() {
  local mark; mark=$(upstream_mark)
  expect_eq "HEAD by tag" "$(pc_get HEAD /v2/hub/library/head/manifests/1 "$PROXY_DIR/h")" 200
  expect_eq "Docker-Content-Digest" "$(pc_header "$PROXY_DIR/h" Docker-Content-Digest)" "$PC_HEAD"
  expect_eq "upstream HEADs" "$(upstream_calls "$mark" '.repository == "library/head" and .method == "HEAD"')" 2
  expect_eq "upstream GETs" "$(upstream_calls "$mark" '.repository == "library/head" and .method == "GET"')" 0
  echo "ok: a HEAD of an uncached tag: 2 HEADs upstream, no GET"
}

case_model_a_layer_is_downloaded_twice_per_request() {
  local layer; layer=$(skopeo inspect --tls-verify=false --raw "docker://$UPSTREAM/library/blob:1" | jq -r '.layers[0].digest')
  expect_eq "HEAD of an uncached blob (storage only)" "$(pc_get HEAD "/v2/hub/library/blob/blobs/$layer" "$PROXY_DIR/bh")" 404
  local mark; mark=$(upstream_mark)
  expect_eq "upstream calls for a blob HEAD" "$(upstream_calls "$mark" '.repository == "library/blob"')" 0
  pc_get_at_once 3 "/v2/hub/library/blob/blobs/$layer" layer "$layer"
  wait_for 20 "the layer stored" stored "library/blob/blobs/$layer"
  # Of this repository: Harbor's background work stores earlier cases' missing layers meanwhile.
  expect_eq "upstream downloads for 3 GETs" "$(upstream_calls "$mark" '.kind == "blob" and .method == "GET" and .repository == "library/blob"')" 6
  expect_eq "HEAD once stored" "$(pc_get HEAD "/v2/hub/library/blob/blobs/$layer" "$PROXY_DIR/bh")" 200
  echo "ok: 3 concurrent GETs of an uncached 8 MiB layer: 6 downloads upstream (each streamed, then again to store); HEAD 404 until stored"
}

case_model_an_upstream_that_is_down_fails_pulls_by_tag() {
  stored library/bytag/manifests/1 || { echo "FAIL: the first case left nothing stored"; return 1; }
  pc_control '{"down": true}'
  local status
  status=$(pc_get GET /v2/hub/library/bytag/manifests/1 "$PROXY_DIR/d")
  local by_digest; by_digest=$(pc_get GET "/v2/hub/library/bytag/manifests/$PC_TAG" "$PROXY_DIR/dd")
  local uncached; uncached=$(pc_get GET /v2/hub/library/head/manifests/1 "$PROXY_DIR/du")
  pc_control '{"down": false}'
  expect_eq "GET by tag, stored, upstream down" "$status" 500
  expect_eq "its error" "$(jq -c . "$PROXY_DIR/d")" '{"errors":[{"code":"UNKNOWN","message":"internal server error"}]}'
  expect_eq "GET by digest, stored, upstream down" "$by_digest" 200
  expect_eq "GET by tag, not stored, upstream down" "$uncached" 500
  echo "ok: upstream down: a stored tag fails with 500 (Harbor checks the upstream first), a stored digest is served"
}

case_model_a_rate_limited_upstream_serves_what_is_stored() {
  pc_control '{"status": 429}'
  local stored_status uncached
  stored_status=$(pc_get GET /v2/hub/library/bytag/manifests/1 "$PROXY_DIR/r")
  uncached=$(pc_get GET /v2/hub/library/head/manifests/1 "$PROXY_DIR/ru")
  pc_control '{"status": null}'
  expect_eq "GET by tag, stored, 429 upstream" "$stored_status" 200
  expect_eq "GET by tag, not stored, 429 upstream" "$uncached" 429
  expect_eq "its code" "$(jq -r '.errors[0].code' "$PROXY_DIR/ru")" TOO_MANY_REQUEST
  echo "ok: upstream 429: a stored tag is served from storage, an uncached one gets 429 TOO_MANY_REQUEST"
}

case_model_an_index_is_served_from_harbors_cache_after_its_first_get() {
  local mark; mark=$(upstream_mark)
  expect_eq "GET index by tag" "$(pc_get GET /v2/hub/library/index/manifests/1 "$PROXY_DIR/i")" 200
  expect_eq "the index" "$(digest_of "$PROXY_DIR/i")" "$PC_INDEX"
  # By the tag: Harbor's background work then GETs the platforms' manifests, which a loaded
  # machine may log after the next mark.
  expect_eq "upstream GETs, first" "$(upstream_calls "$mark" '.method == "GET" and .reference == "1"')" 1
  sleep 0.5 # the list is cached by Harbor's background work, right after the GET
  mark=$(upstream_mark)
  expect_eq "GET index by tag again" "$(pc_get GET /v2/hub/library/index/manifests/1 "$PROXY_DIR/i")" 200
  expect_eq "its digest header, from the cache" "$(pc_header "$PROXY_DIR/i" Docker-Content-Digest)" "$PC_INDEX"
  expect_eq "upstream GETs, again" "$(upstream_calls "$mark" '.method == "GET" and .reference == "1"')" 0
  expect_eq "upstream HEADs, again" "$(upstream_calls "$mark" '.method == "HEAD" and .reference == "1"')" 1
  echo "ok: an index: 1 GET upstream, then served from Harbor's list cache after 1 HEAD"
}

# The model's own behaviours do not involve the adapter: one run of the suite checks them.
MODEL_ONLY="the Harbor model's own behaviours; the wasm run checks them"
WASM_ONLY=$MODEL_ONLY run_case case_model_pull_by_tag_goes_upstream_until_stored
WASM_ONLY=$MODEL_ONLY run_case case_model_a_burst_costs_one_upstream_get_per_request
WASM_ONLY=$MODEL_ONLY run_case case_model_head_by_tag_checks_the_upstream_twice
WASM_ONLY=$MODEL_ONLY run_case case_model_a_layer_is_downloaded_twice_per_request
WASM_ONLY=$MODEL_ONLY run_case case_model_an_upstream_that_is_down_fails_pulls_by_tag
WASM_ONLY=$MODEL_ONLY run_case case_model_a_rate_limited_upstream_serves_what_is_stored
WASM_ONLY=$MODEL_ONLY run_case case_model_an_index_is_served_from_harbors_cache_after_its_first_get

# --- the filter in front of the proxy cache -------------------------------------------------
# An Envoy with two workers in front of the model, docker.io -> hub (public) and quay.io -> hubp
# (private), with the contract's coalesce configuration. Its identical GETs in flight at once go
# to Harbor once per waiting list: one per Envoy for the module, one per worker VM for the wasm
# filter, which coalesces layers only (README, One upstream fetch per burst).
PCM_WORKERS=2
PCM_PORT=$(free_port)
PCM_ADMIN=$(free_port)
PCM=127.0.0.1:$PCM_PORT
cat >"$PROXY_DIR/plugin.json" <<'JSON'
{"registries": {"docker.io": {"project": "hub"}, "quay.io": {"project": "hubp"}}, "default_registry": "docker.io",
 "coalesce": {"enabled": true, "max_wait_ms": 30000}}
JSON
render "$PROXY_DIR/plugin.json" "$PROXY_DIR/envoy.yaml" "$PCM" "$PCM_ADMIN" "http://$PC_HARBOR"
start_envoy "$PROXY_DIR/envoy.yaml" "$PROXY_DIR/envoy.log" "$PCM_ADMIN" --concurrency "$PCM_WORKERS" \
  --log-level info --component-log-level "$LOG_COMPONENT:debug" || { cat "$PROXY_DIR/envoy.log"; exit 1; }
case $ADAPTER in
  module) PCM_MOST_GETS=1 ;;
  *) PCM_MOST_GETS=$PCM_WORKERS ;;
esac
# containerd's Accept list for a manifest.
CONTAINERD_ACCEPT='application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*'

# pcm_token NS REPO [CURL OPTIONS...]: a pull token for REPO asked through the mirror (the filter
# maps its scope to the registry's project).
pcm_token() {
  curl -sf "${@:3}" "http://$PCM/service/token?service=harbor-registry&scope=repository:$2:pull&ns=$1" | jq -r .token
}
# pcm_get_many OUT_PREFIX PATH TOKEN...: one concurrent GET of PATH through the mirror per TOKEN
# ("-" for none), each its own connection, containerd's Accept; status in OUT_PREFIX-N.status.
pcm_get_many() {
  local prefix=$1 path=$2 i=0 token pids=(); shift 2
  for token in "$@"; do
    i=$((i + 1))
    local auth=(); [ "$token" = - ] || auth=(-H "Authorization: Bearer $token")
    curl -sS "${auth[@]}" -H "Accept: $CONTAINERD_ACCEPT" -o "$prefix-$i" -w '%{http_code}' "http://$PCM$path" >"$prefix-$i.status" &
    pids+=($!)
  done
  wait "${pids[@]}"
}
# pcm_get_at_once COUNT PATH NAME TOKEN DIGEST: COUNT concurrent GETs of PATH through the mirror
# with TOKEN, each answered 200 with content of DIGEST (bodies in $PROXY_DIR/NAME-1...).
pcm_get_at_once() {
  local tokens=() i
  for ((i = 0; i < $1; i++)); do tokens+=("$4"); done
  pcm_get_many "$PROXY_DIR/$3" "$2" "${tokens[@]}"
  for ((i = 1; i <= $1; i++)); do
    expect_eq "GET $i" "$(cat "$PROXY_DIR/$3-$i.status")" 200
    expect_eq "GET $i's content" "$(digest_of "$PROXY_DIR/$3-$i")" "$5"
  done
}
pcm_stat() { # pcm_stat NAME: the filter's counter NAME (without harbor_mirror.) in the mirror's /stats
  curl -s "http://127.0.0.1:$PCM_ADMIN/stats?filter=harbor_mirror" | awk -F': ' -v name="${STAT}harbor_mirror.$1" '$1 == name {print $2}'
}
# at_most WHAT ACTUAL LIMIT
at_most() {
  if [ "$2" -ge 1 ] && [ "$2" -le "$3" ]; then echo "ok: $1 = $2 (1 to $3)"; else echo "FAIL: $1 is $2, expected 1 to $3"; return 1; fi
}

case_filter_a_burst_of_manifest_gets_costs_one_upstream_get() {
  local token; token=$(pcm_token docker.io library/crowd)
  [ -n "$token" ] && [ "$token" != null ] || { echo "FAIL: no token through the mirror"; return 1; }
  local mark; mark=$(upstream_mark)
  pc_control '{"delay": 1.0}'
  pcm_get_at_once 20 "/v2/library/crowd/manifests/1?ns=docker.io" crowd "$token" "$PC_CROWD"
  pc_control '{"delay": 0}'
  at_most "upstream manifest GETs for 20 at once ($ADAPTER)" \
    "$(upstream_calls "$mark" '.kind == "manifest" and .method == "GET" and .repository == "library/crowd"')" "$PCM_MOST_GETS"
  sleep 1 # the wasm VMs hand their counts over on their 500 ms tick
  local waited released; waited=$(pcm_stat coalesce.waited) released=$(pcm_stat coalesce.released)
  expect_eq "waiting requests served the first one's manifest" "$released" "$waited"
  [ "${waited:-0}" -ge $((20 - PCM_MOST_GETS)) ] || { echo "FAIL: coalesce.waited is ${waited:-0}"; return 1; }
  echo "ok: 20 containerd-style GETs at once of a tag only the upstream has: all 200 with its digest; $waited waited"
}

case_filter_a_waiting_request_gets_only_what_its_own_credentials_may_read() {
  # Harbor's token access is per project (src/common/security/v2token/context.go keys it by
  # project name): a token for another project's repository is the one that must not read.
  local entitled other
  entitled=$(pcm_token quay.io library/secret -u 'robot$pc:pc-secret')
  other=$(pcm_token docker.io library/crowd)
  [ -n "$entitled" ] && [ "$entitled" != null ] || { echo "FAIL: no token for the private project"; return 1; }
  local mark; mark=$(upstream_mark)
  pc_control '{"delay": 1.0}'
  pcm_get_many "$PROXY_DIR/first" "/v2/library/secret/manifests/1?ns=quay.io" "$entitled" &
  local first=$!
  sleep 0.3 # the first is in flight at Harbor, waiting on the upstream
  pcm_get_many "$PROXY_DIR/secret" "/v2/library/secret/manifests/1?ns=quay.io" "$entitled" "$entitled" - "$other"
  wait "$first"
  pc_control '{"delay": 0}'
  expect_eq "the first" "$(cat "$PROXY_DIR/first-1.status")" 200
  local i
  for i in 1 2; do
    expect_eq "entitled $i" "$(cat "$PROXY_DIR/secret-$i.status")" 200
    expect_eq "entitled $i's manifest" "$(digest_of "$PROXY_DIR/secret-$i")" "$PC_SECRET"
  done
  expect_eq "without a token" "$(cat "$PROXY_DIR/secret-3.status")" 401
  expect_eq "its error" "$(jq -r '.errors[0].code' "$PROXY_DIR/secret-3")" UNAUTHORIZED
  expect_eq "with a token for another project" "$(cat "$PROXY_DIR/secret-4.status")" 401
  if grep -q schemaVersion "$PROXY_DIR/secret-3" "$PROXY_DIR/secret-4"; then echo "FAIL: a refused request got the manifest"; return 1; fi
  at_most "upstream manifest GETs ($ADAPTER)" \
    "$(upstream_calls "$mark" '.kind == "manifest" and .method == "GET" and .repository == "library/secret"')" "$PCM_MOST_GETS"
  echo "ok: the entitled got the manifest, the request without a token and the one with another project's token got Harbor's 401"
}

case_filter_containerd_pulls_at_once_share_the_manifest_gets() {
  # Real pulls: each ctr resolves the tag (HEAD), then GETs the manifest by digest, first without
  # its token (401), then with it; how their GETs meet depends on that dance, so the check is that
  # every pull gets its image and that they cost fewer upstream GETs than pulls.
  local hosts=$PROXY_DIR/hosts pulls=6
  write_hosts_toml "$hosts" docker.io containerd "http://$PCM"
  local mark; mark=$(upstream_mark)
  # Each upstream call takes 1.5 s: the pulls' GETs by digest meet however their starts spread.
  pc_control '{"delay": 1.5}'
  local i pids=()
  for ((i = 1; i <= pulls; i++)); do
    ctr_pull "$hosts" "rollout$i" docker.io/library/rollout:1 >"$PROXY_DIR/ctr-$i.log" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || { failed=1; cat "$PROXY_DIR/ctr-$((i + 1)).log"; }; done
  pc_control '{"delay": 0}'
  [ $failed -eq 0 ] || { echo "FAIL: a pull failed"; return 1; }
  for ((i = 1; i <= pulls; i++)); do
    expect_eq "ctr pull $i" "$(ctr_digest "rollout$i" docker.io/library/rollout:1)" "$PC_ROLLOUT"
  done
  at_most "upstream manifest GETs for $pulls pulls at once ($ADAPTER)" \
    "$(upstream_calls "$mark" '.kind == "manifest" and .method == "GET" and .repository == "library/rollout"')" $((pulls - 1))
  echo "ok: $pulls ctr pulls at once of an image only the upstream has, each with its digest"
}

case_filter_a_burst_of_layer_gets_costs_at_most_two_downloads() {
  local layer; layer=$(skopeo inspect --tls-verify=false --raw "docker://$UPSTREAM/library/biglayer:1" | jq -r '.layers[0].digest')
  local token; token=$(pcm_token docker.io library/biglayer)
  local mark; mark=$(upstream_mark)
  pc_control '{"delay": 1.0}'
  pcm_get_at_once 10 "/v2/library/biglayer/blobs/$layer?ns=docker.io" big "$token" "$layer"
  pc_control '{"delay": 0}'
  # Harbor streams the layer and downloads it again to store it: 2 per leader (one per waiting list).
  at_most "upstream downloads for 10 GETs at once ($ADAPTER)" \
    "$(upstream_calls "$mark" '.kind == "blob" and .method == "GET" and .repository == "library/biglayer"')" $((2 * PCM_MOST_GETS))
  echo "ok: 10 GETs at once of an 8 MiB layer only the upstream has: all 200 with its sha256"
}

# The wasm filter coalesces layers only: reading a manifest's answer would make every answer's
# every chunk enter its VM (README, One upstream fetch per burst).
LAYERS_ONLY="the wasm filter coalesces layers, not manifests"
MODULE_ONLY=$LAYERS_ONLY run_case case_filter_a_burst_of_manifest_gets_costs_one_upstream_get
run_case case_filter_a_burst_of_layer_gets_costs_at_most_two_downloads
MODULE_ONLY=$LAYERS_ONLY run_case case_filter_a_waiting_request_gets_only_what_its_own_credentials_may_read
MODULE_ONLY=$LAYERS_ONLY run_case case_filter_containerd_pulls_at_once_share_the_manifest_gets
