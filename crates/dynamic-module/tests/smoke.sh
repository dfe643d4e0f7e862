#!/usr/bin/env bash
# Loads examples/smoke.rs into a real Envoy 1.40 and checks every safe API against it.
#
#   crates/dynamic-module/tests/smoke.sh        (from anywhere; builds the example first)
#
# Starts, on 127.0.0.1 and free ports, two python upstreams (clusters `upstream` and `callout`)
# and Envoy with the dynamic_modules HTTP filter loading the module by file path; records their
# PIDs and kills exactly those on exit. Prints ok/FAIL per check and exits 1 if any failed
# (then it also prints the tail of Envoy's log). ENVOY=/path/to/envoy overrides the binary;
# KEEP=1 keeps the work directory.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CRATE=$(dirname "$HERE")
ROOT=$(cd "$CRATE/../.." && pwd)
VENV=${HARBOR_MIRROR_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/harbor-mirror/venv-envoy-1.40.0}
ENVOY=${ENVOY:-$(echo "$VENV"/lib/python3*/site-packages/envoy/_bin/envoy)}
[ -x "$ENVOY" ] || { echo "no Envoy binary at $ENVOY (set ENVOY=...)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dm-smoke.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

FAILED=0
ok() { echo "ok   $1"; }
fail() { echo "FAIL $1${2:+: $2}"; FAILED=1; }
# wait_for FILE PATTERN: until FILE (flushed by Envoy every 100 ms) has a line matching PATTERN,
# at most 5 s; fails if it never does.
wait_for() {
  local _
  for _ in $(seq 50); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# check NAME CONDITION-COMMAND...: ok if the command succeeds.
check() { local name=$1; shift; if "$@"; then ok "$name"; else fail "$name"; fi; }

echo "== build"
(cd "$ROOT" && cargo build -q -p envoy-dynamic-module --example smoke)
MODULE="${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/libsmoke.so"
[ -f "$MODULE" ] || { echo "no module at $MODULE" >&2; exit 2; }
"$ENVOY" --version | sed -n 's/.*version: /envoy: /p'

echo "== symbols"
nm -D --defined-only "$ENVOY" | awk '{print $3}' | grep '^envoy_dynamic_module_callback_' | sort >"$WORK/exported"
nm -D --undefined-only "$MODULE" | awk '{print $2}' | grep '^envoy_dynamic_module_callback_' | sort >"$WORK/needed"
missing=$(comm -23 "$WORK/needed" "$WORK/exported")
check "the module's $(wc -l <"$WORK/needed") callbacks are all exported by this Envoy" test -z "$missing"
[ -z "$missing" ] || echo "  missing: $missing"
check "the module is linked BIND_NOW (a missing callback fails dlopen, not a request)" \
  bash -c "readelf -d '$MODULE' | grep -q BIND_NOW"

read -r LISTEN ADMIN UP CALLOUT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

# write_config FILE FILTER_CONFIG: the Envoy bootstrap, the filter configured with FILTER_CONFIG.
write_config() {
  cat >"$1" <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ADMIN}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: $LISTEN}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: smoke
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: $WORK/access.log
              log_format:
                text_format_source:
                  inline_string: "path=%REQ(:PATH)% state=%FILTER_STATE(smoke.path:PLAIN)% code=%RESPONSE_CODE% details=%RESPONSE_CODE_DETAILS%\n"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters:
          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config:
                name: harbor_mirror_smoke
                module:
                  local:
                    filename: $MODULE
              filter_name: smoke
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: "$2"
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $UP}}}}]}]
  - name: callout
    type: STATIC
    load_assignment:
      cluster_name: callout
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $CALLOUT}}}}]}]
EOF
}

echo "== validate"
write_config "$WORK/good.yaml" 'callout_cluster=callout\ntimer_ms=300\n'
write_config "$WORK/bad.yaml" 'callout_cluster=callout\nbogus=1\n'
if "$ENVOY" --mode validate -c "$WORK/good.yaml" --disable-hot-restart -l warn >"$WORK/validate-good.log" 2>&1; then
  ok "envoy --mode validate accepts the good configuration"
else
  fail "envoy --mode validate accepts the good configuration" "$(tail -3 "$WORK/validate-good.log")"
fi
if "$ENVOY" --mode validate -c "$WORK/bad.yaml" --disable-hot-restart -l info >"$WORK/validate-bad.log" 2>&1; then
  fail "envoy --mode validate refuses a bad configuration" "it exited 0"
else
  ok "envoy --mode validate refuses a bad configuration (exit $?)"
fi
refusal=$(grep -o 'filter configuration "smoke" refused: .*' "$WORK/validate-bad.log" | head -1 || true)
check "... with the module's error line: ${refusal:-none}" test -n "$refusal"
envoy_says=$(grep -o 'Failed to initialize dynamic module[^"]*' "$WORK/validate-bad.log" | head -1 || true)
echo "  Envoy's own line: ${envoy_says:-none}"

# The ABI version rule: the same module reporting another version string still loads.
python3 - "$MODULE" "$WORK/libsmoke-v0.1.0.so" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
assert data.count(b"v0.2.0\x00") == 1, "expected one ABI version string in the module"
open(sys.argv[2], "wb").write(data.replace(b"v0.2.0\x00", b"v0.1.0\x00"))
PY
sed "s|filename: $MODULE|filename: $WORK/libsmoke-v0.1.0.so|" "$WORK/good.yaml" >"$WORK/old-abi.yaml"
if "$ENVOY" --mode validate -c "$WORK/old-abi.yaml" --disable-hot-restart -l info >"$WORK/validate-old-abi.log" 2>&1 &&
  grep -q 'Dynamic module ABI version v0.1.0 is deprecated' "$WORK/validate-old-abi.log"; then
  ok "a module reporting ABI v0.1.0 still loads, with a warning: $(grep -o 'Dynamic module ABI version v0.1.0 is deprecated' "$WORK/validate-old-abi.log" | head -1)"
else
  fail "a module reporting ABI v0.1.0 still loads, with a warning" "$(grep -i 'dynamic module' "$WORK/validate-old-abi.log" | tail -2)"
fi

echo "== start"
python3 "$HERE/smoke_upstream.py" upstream "$UP" "$WORK/upstream.log" & PIDS+=($!)
python3 "$HERE/smoke_upstream.py" callout "$CALLOUT" "$WORK/upstream.log" & PIDS+=($!)
# Both listen before Envoy sends them anything (a slow machine let the first request find no one).
for port in "$UP" "$CALLOUT"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
"$ENVOY" -c "$WORK/good.yaml" --disable-hot-restart --concurrency 2 -l info \
  --component-log-level dynamic_modules:debug --file-flush-interval-msec 100 --log-path "$WORK/envoy.log" 2>"$WORK/envoy.stderr" & PIDS+=($!)
ENVOY_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$ADMIN/ready" >/dev/null 2>&1 && break
  kill -0 "$ENVOY_PID" 2>/dev/null || break
  sleep 0.1
done
if ! curl -fsS "http://127.0.0.1:$ADMIN/ready" >/dev/null 2>&1; then
  fail "envoy starts"; tail -30 "$WORK/envoy.log" 2>/dev/null; exit 1
fi
ok "envoy starts with the module (envoy pid $ENVOY_PID)"
BASE="http://127.0.0.1:$LISTEN"

echo "== checks"
wait_for "$WORK/envoy.log" 'Dynamic module ABI version' || true
abi_line=$(grep -o 'Dynamic module ABI version .*' "$WORK/envoy.log" | head -1 || true)
check "module loaded; Envoy: ${abi_line:-no ABI line}" grep -q 'Dynamic module ABI version v0.2.0 matched' "$WORK/envoy.log"
check "Module::init ran (its log line)" grep -q 'smoke module loaded' "$WORK/envoy.log"
check "log_v2 reports the module's source location" grep -q 'examples/smoke.rs:[0-9]*\] smoke module loaded' "$WORK/envoy.log"

# rewrite, request header read, all values of a header, response header replaced
curl -sS -D "$WORK/rewrite.h" -o "$WORK/rewrite.b" -H 'x-smoke-in: hello' -H 'x-multi: a' -H 'x-multi: b' \
  -H 'x-multi: c' -H 'x-smoke-drop: please' "$BASE/rewrite/foo?x=1" || true
seen=$(grep '^upstream GET /rewritten/foo?x=1' "$WORK/upstream.log" || true)
check ":path rewritten: upstream saw /rewritten/foo?x=1" test -n "$seen"
check "request header read and forwarded (x-smoke-seen=hello)" grep -q 'x-smoke-seen=hello' <<<"$seen"
check "all values of x-multi read (a|b|c)" grep -q 'x-smoke-multi=a|b|c' <<<"$seen"
check "every header in one walk: a pseudo-header first, x-multi a|b|c in order" grep -q 'x-smoke-walked=first=:[a-z]* multi=a|b|c many=0' <<<"$seen"
many=(); for i in $(seq 40); do many+=(-H "x-many-$i: $i"); done
curl -sS -o /dev/null "${many[@]}" "$BASE/rewrite/many" || true
check "... and a map larger than the walk's stack buffer (40 x-many headers)" \
  grep -q '^upstream GET /rewritten/many .*x-smoke-walked=first=:[a-z]* multi= many=40' "$WORK/upstream.log"
check "request header removed (x-smoke-drop)" bash -c "! grep -q 'x-smoke-drop' <<<'$seen'"
check "request header added twice (x-smoke-added one, two)" grep -q 'x-smoke-added=one x-smoke-added=two' <<<"$seen"
check "response header replaced (x-smoke-response: replaced)" grep -qi '^x-smoke-response: replaced' "$WORK/rewrite.h"
check "... and only once" test "$(grep -ci '^x-smoke-response:' "$WORK/rewrite.h")" = 1
check "request headers readable in the response phase (x-smoke-req-path)" \
  grep -qi '^x-smoke-req-path: /rewritten/foo?x=1' "$WORK/rewrite.h"

# local reply
code=$(curl -sS -D "$WORK/local.h" -o "$WORK/local.b" -w '%{http_code}' "$BASE/local" || true)
check "local reply status 418 (got $code)" test "$code" = 418
check "local reply header x-smoke-local: yes" grep -qi '^x-smoke-local: yes' "$WORK/local.h"
check "local reply body" grep -qx 'local body' "$WORK/local.b"
check "local reply keeps the module's content-type, once" \
  test "$(grep -i '^content-type:' "$WORK/local.h" | tr -d '\r')" = "content-type: application/json"
check "local reply never reached the upstream" bash -c "! grep -q ' /local' '$WORK/upstream.log'"
if grep -qi '^x-smoke-response:' "$WORK/local.h"; then
  echo "  note: on_response_headers ran for the filter's own local reply"
else
  echo "  note: Envoy does not run the filter's on_response_headers for its own local reply"
fi

# callout to the second cluster
code=$(curl -sS -D "$WORK/callout.h" -o "$WORK/callout.b" -w '%{http_code}' "$BASE/callout" || true)
check "filter callout answered: $code $(cat "$WORK/callout.b")" grep -qx 'callout said: callout-answer' "$WORK/callout.b"
check "... status of the callout response (x-callout-status: 200)" grep -qi '^x-callout-status: 200' "$WORK/callout.h"
check "... the callout cluster saw GET /answer" grep -q '^callout GET /answer' "$WORK/upstream.log"

# filter scheduler driven by the timer thread
code=$(curl -sS -o "$WORK/resume.b" -w '%{http_code}' --max-time 5 "$BASE/resume" || true)
check "stopped request resumed by its scheduler from the timer thread ($code)" \
  grep -q '^upstream GET /resume x-smoke-resumed=yes' "$WORK/upstream.log"

code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --data 'held-body' "$BASE/resume" || true)
check "a POST's body held with its headers, sent after the resume ($code)" \
  grep -q '^upstream POST /resume x-smoke-resumed=yes.* body=held-body' "$WORK/upstream.log"
code=$(curl -sS -D "$WORK/slow.h" -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/slow-response" || true)
check "response held in on_response_headers, resumed by continue_encoding ($code)" \
  grep -qi '^x-smoke-resumed-response: yes' "$WORK/slow.h"

# the configuration's timer, its counter and gauge, and its own callout
sleep 1.2
timer=$(curl -sS "$BASE/timer" || true)
ticks=$(sed -n 's/^timer fired \([0-9]*\);.*/\1/p' <<<"$timer")
check "config timer fired on the main thread ($timer)" test "${ticks:-0}" -ge 3
check "config callout answered (Success Some(200) config-answer)" grep -q 'Success Some(200) config-answer' <<<"$timer"
check "the callout cluster saw GET /config-answer" grep -q '^callout GET /config-answer' "$WORK/upstream.log"
# Envoy logs thread ids; its main thread's id is the process id.
check "on_scheduled ran on the main thread (thread id = envoy pid)" \
  wait_for "$WORK/envoy.log" "\]\[$ENVOY_PID\]\[info\]\[dynamic_modules\].*smoke timer fired"

# counters and gauges in /stats
curl -sS "http://127.0.0.1:$ADMIN/stats" >"$WORK/stats" || true
requests=$(sed -n 's/^dynamicmodulescustom\.smoke_requests: //p' "$WORK/stats")
check "counter dynamicmodulescustom.smoke_requests in /stats (${requests:-absent}, >= 6)" test "${requests:-0}" -ge 6
in_flight=$(sed -n 's/^dynamicmodulescustom\.smoke_in_flight: //p' "$WORK/stats")
check "filter gauge up and down: smoke_in_flight back to ${in_flight:-absent} (0)" test "${in_flight:-x}" = 0
worker=$(sed -n 's/^dynamicmodulescustom\.smoke_last_worker: //p' "$WORK/stats")
check "filter set_gauge: smoke_last_worker ${worker:-absent} (1 or 2)" grep -qx '[12]' <<<"${worker:-}"
fired=$(sed -n 's/^dynamicmodulescustom\.smoke_timer_fired: //p' "$WORK/stats")
check "config-level counter dynamicmodulescustom.smoke_timer_fired (${fired:-absent})" test "${fired:-0}" -ge 1
tick=$(sed -n 's/^dynamicmodulescustom\.smoke_last_tick: //p' "$WORK/stats")
check "config-level gauge dynamicmodulescustom.smoke_last_tick (${tick:-absent})" test "${tick:-0}" -ge 1
prom=$(curl -sS "http://127.0.0.1:$ADMIN/stats/prometheus" 2>/dev/null | grep -m1 '^envoy_dynamicmodulescustom_smoke_requests' || true)
echo "  prometheus: ${prom:-absent}"

# filter state in the access log
twice=$(curl -sS "$BASE/state-twice" || true)
wait_for "$WORK/access.log" '^path=/state-twice ' || true
line=$(grep -m1 '^path=/rewritten/foo' "$WORK/access.log" || true)
check "filter state in the access log: ${line:-none}" grep -q 'state=/rewrite/foo?x=1 ' <<<"$line"
line=$(grep -m1 'details=smoke_local_reply' "$WORK/access.log" || true)
check "local reply details in the access log (whitespace made _): ${line:-none}" test -n "$line"
line=$(grep -m1 '^path=/state-twice ' "$WORK/access.log" || true)
check "filter state set twice: the second value wins ($twice; ${line:-no log line})" \
  grep -q 'state=second ' <<<"$line"
check "filter state reads back (filter_state)" grep -q 'reads back second' <<<"$twice"

check "no panic, no re-entrant hook" bash -c "! grep -E 'panicked|re-entrant' '$WORK/envoy.log'"

echo "== stop"
kill -TERM "$ENVOY_PID"
wait "$ENVOY_PID" 2>/dev/null || true
# At exit Envoy has closed --log-path: its last lines go to stderr.
if grep -q 'smoke config dropped' "$WORK/envoy.log" "$WORK/envoy.stderr"; then
  echo "  note: Envoy destroyed the filter configuration at shutdown (timer thread joined)"
else
  echo "  note: Envoy exited without destroying the filter configuration"
fi

if [ "$FAILED" != 0 ]; then
  echo "== envoy log (tail)"; tail -40 "$WORK/envoy.log"
  echo "== upstream log"; cat "$WORK/upstream.log"
  echo "== access log"; cat "$WORK/access.log"
  echo "SMOKE FAILED"; exit 1
fi
echo "SMOKE OK"
