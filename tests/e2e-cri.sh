# The kubelet path of the end-to-end suite, sourced by tests/e2e.sh after the discovery part (the
# mirrors of the token-auth part and the Harbor model's log helpers are used): containerd with
# its CRI plugin, `config_path` at a certs.d tree written as k3s writes it for the registries.yaml
# `harbor-mirror clients --only k3s` prints, and pulls made as the kubelet makes them (CRI
# ImageService PullImage with a pod sandbox configuration and an imagePullSecret's AuthConfig)
# by crates/cri-client. The upstream registries are unreachable here: a pull that bypassed the
# mirror fails.
: "${CRI_CLIENT:?path of the cri-client binary (crates/cri-client)}"

CRI_DIR=$WORK/cri
CRI_SOCK=$CRI_DIR/containerd.sock
CRI_CERTS=$CRI_DIR/certs.d
mkdir -p "$CRI_DIR/cni/bin" "$CRI_DIR/cni/conf" "$CRI_CERTS"
cat >"$CRI_DIR/config.toml" <<EOF
version = 2
root = "$CRI_DIR/root"
state = "$CRI_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CRI_SOCK"
[ttrpc]
  address = "$CRI_SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable_apparmor = true
  disable_cgroup = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CRI_DIR/cni/bin"
    conf_dir = "$CRI_DIR/cni/conf"
  # As k3s and RKE2 configure it: mirrors from the certs.d tree, and a registries.yaml
  # "configs:" entry's credentials for the private mirror (the node's Harbor robot).
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CRI_CERTS"
  [plugins."io.containerd.grpc.v1.cri".registry.configs."$MIRROR_private".auth]
    username = "${CI_CREDS%%:*}"
    password = "${CI_CREDS#*:}"
EOF
CRI_LOG=$CRI_DIR/containerd.log
start_bg "$CRI_LOG" containerd --config "$CRI_DIR/config.toml"
wait_for 30 "containerd with its CRI plugin" "$CRI_CLIENT" --socket "$CRI_SOCK" list || { cat "$CRI_LOG"; exit 1; }

# k3s_mirror MIRROR: the node's certs.d as k3s writes it for `clients --only k3s` with MIRROR.
# containerd reads hosts.toml at every pull, so a case switches mirrors by writing it anew.
k3s_mirror() {
  client_config k3s "http://$1" >"$CRI_DIR/registries.yaml"
  rm -rf "$CRI_CERTS" && mkdir -p "$CRI_CERTS"
  "$PYTHON" "$ROOT/tests/k3s_hosts.py" "$CRI_DIR/registries.yaml" "$CRI_CERTS"
}

# cri_pull IMAGE [cri-client pull options]: pulls as the kubelet does; prints the repo digest.
cri_pull() {
  timeout 120 "$CRI_CLIENT" --socket "$CRI_SOCK" pull "$@" --pod default/web-0 >"$CRI_DIR/pull.out" 2>"$CRI_DIR/pull.err" ||
    { cat "$CRI_DIR/pull.err" >&2; return 1; }
  sed 's/^/    /' "$CRI_DIR/pull.out" >&2
  sed -n 's/^repo_digests: //p' "$CRI_DIR/pull.out" | tr ' ' '\n' | sed -n 's/^.*@//p' | head -n 1
}

# access_logged WHAT PATH ORIGINAL: the mirror's access log (envoy/harbor-mirror.yaml, with
# log_original_path) has a line for PATH as Harbor got it and ORIGINAL as containerd sent it.
access_logged() {
  local line=" /v2/$2\" 200 .* original=/v2/$3\$"
  wait_for 5 "$1 in the access log" grep -qE "$line" "$ENVOY_LOG" ||
    { echo "FAIL: no access log line for $1"; grep ' original=' "$ENVOY_LOG" | tail -n 5 | sed 's/^/  | /'; return 1; }
  echo "ok: the access log shows $1: $(grep -E "$line" "$ENVOY_LOG" | tail -n 1)"
}

cri_forget() { "$CRI_CLIENT" --socket "$CRI_SOCK" remove "$1" >/dev/null 2>&1 || true; }

# --- cases ------------------------------------------------------------------------------------

case_cri_pulls_through_the_k3s_certs_d() {
  k3s_mirror "$MIRROR"
  echo "    certs.d as k3s writes it:"; find "$CRI_CERTS" -name hosts.toml -exec sh -c 'echo "    $1:"; sed "s/^/      /" "$1"' _ {} \;
  cri_forget docker.io/library/alpine:3.19
  expect_eq "docker.io digest" "$(cri_pull docker.io/library/alpine:3.19)" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  # _default: another registry, routed by containerd's ns.
  cri_forget quay.io/coreos/etcd:v3.5
  expect_eq "quay.io digest through _default" "$(cri_pull quay.io/coreos/etcd:v3.5)" "$ETCD"
  registry_received 'GET|HEAD' /v2/quay-proxy/coreos/etcd/manifests/v3.5
  # A k3s rewrite rule, done by the filter (upstream containerd has no rewrite).
  cri_forget docker.io/ksd-test/app:1
  expect_eq "digest through the rewrite rule" "$(cri_pull docker.io/ksd-test/app:1)" "$APP"
  registry_received 'GET|HEAD' /v2/production/app/manifests/1
  registry_received_only_under dockerhub-proxy quay-proxy production
  # The operator's view of the same pulls.
  access_logged "the docker.io pull" 'dockerhub-proxy/library/alpine/manifests/3\.19' 'library/alpine/manifests/3\.19\?ns=docker\.io'
  access_logged "the _default pull" 'quay-proxy/coreos/etcd/manifests/v3\.5' 'coreos/etcd/manifests/v3\.5\?ns=quay\.io'
  access_logged "the rewritten pull" 'production/app/manifests/1' 'ksd-test/app/manifests/1\?ns=docker\.io'
}

# The image already present: the kubelet's pull resolves it through the mirror again and keeps it.
case_cri_image_already_present() {
  k3s_mirror "$MIRROR"
  cri_pull docker.io/library/alpine:3.19 >/dev/null
  expect_eq "digest of the second pull" "$(cri_pull docker.io/library/alpine:3.19)" "$ALPINE"
  registry_received 'GET|HEAD' /v2/dockerhub-proxy/library/alpine/manifests/3.19
  grep -q "^id: sha256:" <("$CRI_CLIENT" --socket "$CRI_SOCK" status docker.io/library/alpine:3.19) || { echo "FAIL: ImageStatus lost it"; return 1; }
  grep -q "alpine@$ALPINE" <("$CRI_CLIENT" --socket "$CRI_SOCK" list) || { echo "FAIL: ListImages lacks it"; return 1; }
  "$CRI_CLIENT" --socket "$CRI_SOCK" remove docker.io/library/alpine:3.19
  expect_eq "ImageStatus after RemoveImage" "$("$CRI_CLIENT" --socket "$CRI_SOCK" status docker.io/library/alpine:3.19)" absent
}

# Pass-through, a private project, and a node whose containerd holds Harbor credentials for the
# mirror (registries.yaml `configs:`): with no imagePullSecret they reach Harbor, first in an OAuth
# POST's form (Harbor answers 405; the filter does not rewrite the form's scope), then as Basic on
# the token GET.
case_cri_node_credentials_reach_harbor() {
  k3s_mirror "$MIRROR_private"
  cri_forget docker.io/library/alpine:3.19
  expect_eq "digest with the node's credentials" "$(cri_pull docker.io/library/alpine:3.19)" "$PRIVATE"
  auth_received '.path == "/service/token" and .method == "POST" and .status == 405 and .form_username == "robot$ci" and (.scopes | index("repository:library/alpine:pull"))' \
    "containerd's OAuth POST with the node's robot in its form, the scope as the client named it"
  auth_received '.path == "/service/token" and .method == "GET" and .auth == "basic:robot$ci" and (.granted | index("dockerhub-private/library/alpine:pull"))' \
    "the node's robot as Basic credentials on the token request"
  # With config_path, containerd's resolver and fetcher authorize apart: one pull, two challenges
  # (three in one CI run of 2026-12-04, where containerd's fetches raced; never one).
  local gets; gets=$(auth_count '.path == "/service/token" and .method == "GET"')
  [ "$gets" -ge 2 ] && [ "$gets" -le 3 ] || { echo "FAIL: $gets token GETs for one pull, expected 2 (or 3)"; return 1; }
  echo "ok: $gets token GETs for one pull"
}

# The pod's imagePullSecret for docker.io wins over the node's credentials: containerd sends
# PullImage's AuthConfig to every host it tries when server_address is empty, which the kubelet
# leaves it. In pass-through mode a Docker Hub secret reaches Harbor, which refuses it, and the
# node's robot is not tried.
case_cri_pod_secret_overrides_the_node_credentials() {
  k3s_mirror "$MIRROR_private"
  cri_forget docker.io/library/alpine:3.19
  if cri_pull docker.io/library/alpine:3.19 --user 'hub-user:hub-password' 2>"$CRI_DIR/hub.err" >/dev/null; then
    echo "FAIL: pulled a private image with a Docker Hub secret"; return 1
  fi
  echo "ok: with a Docker Hub pull secret the pull fails: $(tail -n 1 "$CRI_DIR/hub.err" | cut -c1-200)"
  auth_received '.method == "POST" and .form_username == "hub-user"' "the pod's Docker Hub username in containerd's OAuth POST"
  auth_received '.method == "GET" and .auth == "basic-invalid:hub-user"' "the pod's Docker Hub secret as Basic credentials (a failed login)"
  auth_received_none '.auth == "basic:robot$ci" or .form_username == "robot$ci"' "request with the node's robot"
}

# A pull secret that is a Harbor robot (stored under docker.io, as the kubelet matches secrets to
# the image's registry) works: it is the credential Harbor gets.
case_cri_pull_secret_reaches_harbor_in_pass_through() {
  k3s_mirror "$MIRROR_private"
  cri_forget docker.io/library/alpine:3.19
  expect_eq "digest with the pull secret" "$(cri_pull docker.io/library/alpine:3.19 --user "$CI_CREDS")" "$PRIVATE"
  auth_received '.path == "/service/token" and .method == "POST" and .status == 405 and .form_username == "robot$ci"' "containerd's OAuth POST with the secret"
  auth_received '.path == "/service/token" and .method == "GET" and .auth == "basic:robot$ci" and (.granted | index("dockerhub-private/library/alpine:pull"))' \
    "the imagePullSecret as Basic credentials on the token request"
}

# Managed mode: the pod's Docker Hub secret goes to the mirror, and no further.
case_cri_managed_keeps_the_pull_secret_from_harbor() {
  k3s_mirror "$MIRROR_managed"
  cri_forget docker.io/library/alpine:3.19
  expect_eq "digest in managed mode" "$(cri_pull docker.io/library/alpine:3.19 --user 'hub-user:hub-password')" "$PRIVATE"
  auth_received_none "$CLIENT_CREDENTIAL" "request carrying the pod's credentials"
  auth_received '.path == "/v2/dockerhub-private/library/alpine/manifests/3.19" and .auth == "bearer:robot$mirror"' "the pull as the robot"
}

# The mirror down: containerd tries it, then the upstream (unreachable here); the pull fails and
# containerd's log names the mirror it tried.
case_cri_mirror_down() {
  local dead=127.0.0.1:$(free_port)
  k3s_mirror "$dead"
  cri_forget docker.io/library/alpine:3.19
  local mark; mark=$(wc -l <"$CRI_LOG")
  if cri_pull docker.io/library/alpine:3.19 2>"$CRI_DIR/down.err" >/dev/null; then echo "FAIL: pulled with the mirror down"; return 1; fi
  echo "ok: the pull failed: $(tail -n 1 "$CRI_DIR/down.err" | cut -c1-200)"
  tail -n +"$((mark + 1))" "$CRI_LOG" | grep -q "trying next host.*$dead" ||
    { echo "FAIL: containerd's log does not name the mirror $dead"; tail -n 20 "$CRI_LOG"; return 1; }
  echo "ok: containerd tried the mirror first: $(tail -n +"$((mark + 1))" "$CRI_LOG" | grep "trying next host.*$dead" | head -n 1 | cut -c1-240)"
}

CASE_ENVOY_LOG=$ENVOY_LOG run_case case_cri_pulls_through_the_k3s_certs_d
CASE_ENVOY_LOG=$ENVOY_LOG run_case case_cri_image_already_present
CASE_ENVOY_LOG=$WORK/auth/envoy-private.log run_case case_cri_node_credentials_reach_harbor
CASE_ENVOY_LOG=$WORK/auth/envoy-private.log run_case case_cri_pod_secret_overrides_the_node_credentials
CASE_ENVOY_LOG=$WORK/auth/envoy-private.log run_case case_cri_pull_secret_reaches_harbor_in_pass_through
CASE_ENVOY_LOG=$WORK/auth/envoy-managed.log run_case case_cri_managed_keeps_the_pull_secret_from_harbor
run_case case_cri_mirror_down
