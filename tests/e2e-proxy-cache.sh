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
[ -n "$PC_TAG" ] && [ -n "$PC_BURST" ] && [ -n "$PC_HEAD" ] && [ -n "$PC_BLOB" ] && [ -n "$PC_INDEX" ] ||
  { echo "seeding the upstream failed"; exit 1; }

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
  "projects": {"hub": {"public": true, "proxy": "docker-hub", "upstream_registry": "http://$UPSTREAM"}}
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
  expect_eq "upstream HEADs" "$(upstream_calls "$mark" '.kind == "manifest" and .method == "HEAD"')" 1
  expect_eq "upstream GETs" "$(upstream_calls "$mark" '.kind == "manifest" and .method == "GET"')" 1
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
  expect_eq "upstream HEADs, stored" "$(upstream_calls "$mark" '.kind == "manifest" and .method == "HEAD"')" 1
  expect_eq "upstream GETs, stored" "$(upstream_calls "$mark" '.method == "GET"')" 0
  mark=$(upstream_mark)
  expect_eq "GET by digest, stored" "$(pc_get GET "/v2/hub/library/bytag/manifests/$PC_TAG" "$PROXY_DIR/m")" 200
  expect_eq "upstream calls for a stored digest" "$(upstream_calls "$mark" 'true')" 0
  echo "ok: by tag, uncached: 1 HEAD and 1 GET upstream, an empty digest header; stored once its blobs were; then 1 HEAD and no GET; by digest, nothing"
}

case_model_a_burst_costs_one_upstream_get_per_request() {
  local mark; mark=$(upstream_mark)
  pc_control '{"delay": 0.3}'
  pc_get_at_once 5 /v2/hub/library/burst/manifests/1 burst "$PC_BURST"
  pc_control '{"delay": 0}'
  expect_eq "upstream GETs for 5 requests at once" "$(upstream_calls "$mark" '.kind == "manifest" and .method == "GET"')" 5
  echo "ok: 5 concurrent GETs of an uncached tag: 5 manifest GETs upstream (Docker Hub counts each as a pull)"
}

case_model_head_by_tag_checks_the_upstream_twice() {
  local mark; mark=$(upstream_mark)
  expect_eq "HEAD by tag" "$(pc_get HEAD /v2/hub/library/head/manifests/1 "$PROXY_DIR/h")" 200
  expect_eq "Docker-Content-Digest" "$(pc_header "$PROXY_DIR/h" Docker-Content-Digest)" "$PC_HEAD"
  expect_eq "upstream HEADs" "$(upstream_calls "$mark" '.method == "HEAD"')" 2
  expect_eq "upstream GETs" "$(upstream_calls "$mark" '.method == "GET"')" 0
  echo "ok: a HEAD of an uncached tag: 2 HEADs upstream, no GET"
}

case_model_a_layer_is_downloaded_twice_per_request() {
  local layer; layer=$(skopeo inspect --tls-verify=false --raw "docker://$UPSTREAM/library/blob:1" | jq -r '.layers[0].digest')
  expect_eq "HEAD of an uncached blob (storage only)" "$(pc_get HEAD "/v2/hub/library/blob/blobs/$layer" "$PROXY_DIR/bh")" 404
  local mark; mark=$(upstream_mark)
  expect_eq "upstream calls for a blob HEAD" "$(upstream_calls "$mark" 'true')" 0
  pc_get_at_once 3 "/v2/hub/library/blob/blobs/$layer" layer "$layer"
  wait_for 20 "the layer stored" stored "library/blob/blobs/$layer"
  expect_eq "upstream downloads for 3 GETs" "$(upstream_calls "$mark" '.kind == "blob" and .method == "GET"')" 6
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
  expect_eq "upstream GETs, first" "$(upstream_calls "$mark" '.method == "GET"')" 1
  sleep 0.5 # the list is cached by Harbor's background work, right after the GET
  mark=$(upstream_mark)
  expect_eq "GET index by tag again" "$(pc_get GET /v2/hub/library/index/manifests/1 "$PROXY_DIR/i")" 200
  expect_eq "its digest header, from the cache" "$(pc_header "$PROXY_DIR/i" Docker-Content-Digest)" "$PC_INDEX"
  expect_eq "upstream GETs, again" "$(upstream_calls "$mark" '.method == "GET"')" 0
  expect_eq "upstream HEADs, again" "$(upstream_calls "$mark" '.method == "HEAD"')" 1
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
