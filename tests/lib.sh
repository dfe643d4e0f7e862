# Shell helpers for build.sh up and the end-to-end suite: free ports, background processes that
# are remembered and stopped (only those), waiting, and the local registry with seeded images.
# Sourced, not run.

STARTED_PIDS=()
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

remember_pid() { STARTED_PIDS+=("$1"); }

# start_bg LOG CMD...: runs CMD in the background, output to LOG, and remembers its PID.
start_bg() {
  local log=$1; shift
  "$@" >>"$log" 2>&1 &
  remember_pid $!
  LAST_PID=$!
}

# stop_pid PID: TERM, then KILL after 10 s; PID is forgotten, so that stop_started cannot signal
# a process that later reuses the number.
stop_pid() {
  local pid=$1 i kept=()
  for i in "${STARTED_PIDS[@]}"; do [ "$i" = "$pid" ] || kept+=("$i"); done
  STARTED_PIDS=("${kept[@]}")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Stops every process this shell started, newest first.
stop_started() {
  while [ ${#STARTED_PIDS[@]} -gt 0 ]; do stop_pid "${STARTED_PIDS[-1]}"; done
}

# Returns when any started process exits (build.sh up).
wait_any_started() { wait -n "${STARTED_PIDS[@]}" 2>/dev/null || true; }

# The filter hands its counters to Envoy on its timer (500 ms): a look at /stats right after the
# requests it counts first waits past one tick.
past_the_filters_tick() { sleep 1; }

# wait_for SECONDS WHAT CMD...: polls CMD until it succeeds.
wait_for() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "timed out after ${seconds}s waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

# start_registry DIR PORT: CNCF Distribution on 127.0.0.1:PORT, storage and JSON log in DIR.
start_registry() {
  local dir=$1 port=$2
  mkdir -p "$dir/storage"
  cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
  start_bg "$dir/registry.log" docker-registry serve "$dir/config.yml"
  wait_for 30 "registry on port $port" curl -sf "http://127.0.0.1:$port/v2/"
}

# seed_image WORK REGISTRY REPO:TAG LABEL FORMAT(oci|v2s2): pushes a generated image the way
# Harbor stores it (under its project path) and prints its manifest digest.
seed_image() {
  local work=$1 registry=$2 ref=$3 label=$4 format=$5
  local layout; layout=$(mktemp -d "$work/layout.XXXXXX")
  python3 "$TESTS_DIR/oci_image.py" "$layout" seed "$label"
  local format_args=(); [ "$format" = v2s2 ] && format_args=(--format v2s2)
  skopeo copy -q --dest-tls-verify=false "${format_args[@]}" --digestfile "$layout.digest" \
    "oci:$layout:seed" "docker://$registry/$ref" >&2
  cat "$layout.digest"
}

# start_envoy CONFIG LOG ADMIN_PORT [ENVOY ARGS...]: starts Envoy and waits until it is ready.
start_envoy() {
  local config=$1 log=$2 admin_port=$3; shift 3
  start_bg "$log" "$ENVOY" -c "$config" --disable-hot-restart "$@"
  ENVOY_PID=$LAST_PID
  wait_for 60 "envoy (log: $log)" curl -sf "http://127.0.0.1:$admin_port/ready"
}

# client_config RECIPE MIRROR_URL...: a client's configuration for these mirrors (tried in
# order), as `harbor-mirror clients --only RECIPE` prints it: the README's recipes, which build.sh
# up prints and the e2e suite runs. HARBOR_MIRROR_CLI is the built command-line tool.
client_config() {
  local recipe=$1; shift
  "${HARBOR_MIRROR_CLI:?the harbor-mirror CLI}" clients --only "$recipe" "${@/#/--mirror=}"
}

# make_test_cert DIR: a self-signed certificate for 127.0.0.1 and localhost, valid two days:
# DIR/tls.crt (also the CA clients trust) and DIR/tls.key.
make_test_cert() {
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=harbor-mirror-test \
    -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' -keyout "$1/tls.key" -out "$1/tls.crt" 2>/dev/null
}
