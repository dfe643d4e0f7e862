#!/usr/bin/env python3
"""The fronts benchmark of `./build.sh bench`: every way of putting a Harbor mirror in front of a
registry, on the same requests, interleaved, in one run.

Fronts, each a process of its own on 127.0.0.1 (Envoy with one worker, nginx with one worker):
  a      Envoy, no filter; clients use prefixed names (the limit)
  b      Envoy + a do-nothing proxy-wasm filter, prefixed names (the wasm floor)
  c      Envoy + harbor_mirror.wasm, 4 registries
  c1000  Envoy + harbor_mirror.wasm, 1000 registries (flat in the registry count?)
  m      Envoy + libharbor_mirror.so, the dynamic module on the same core, 4 registries
  m1000  the module, 1000 registries
  d      Envoy route regex_rewrite
  e      Envoy Lua filter (tests/bench/harbor_rewrite.lua)
  f      nginx with the community recipe (tests/bench/nginx-recipe.conf)

For each series (a backend: the stub, the real registry), every front is checked shape by shape,
warmed up, and then loaded by wrk in rounds; in each round every front runs once, in an order
rotated per round. Figures per run: proxy CPU microseconds per request (utime + stime from /proc,
all of the front's processes), requests/s, p50/p99 latency, RSS. The report gives medians over
rounds and the ratio of each to front (a).

Writes results.json, report.md and cpu-per-request.png to --out.
"""
import argparse
import hashlib
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
MIRROR_HOST = "mirror.example.com"

REGISTRIES = {"docker.io": "dockerhub-proxy", "quay.io": "quay-proxy", "ghcr.io": "ghcr-proxy", "registry.k8s.io": "k8s-proxy"}


@dataclass
class Front:
    key: str
    label: str
    prefixed: bool  # the clients of this front use Harbor's prefixed names
    steps: str = ""  # for the floor filter: the host calls it replays
    wasm: str = ""  # for a lever: a build of harbor_mirror.wasm other than --wasm, run as c is
    module: str = ""  # for a lever: a build of libharbor_mirror.so other than --module, run as m is


FRONTS = [
    Front("a", "Envoy, no filter (prefixed names)", True),
    Front("b", "Envoy + do-nothing wasm (prefixed names)", True),
    Front("c", "Envoy + harbor_mirror.wasm", False),
    Front("c1000", "Envoy + harbor_mirror.wasm, 1000 registries", False),
    Front("m", "Envoy + libharbor_mirror.so (dynamic module)", False),
    Front("m1000", "Envoy + libharbor_mirror.so, 1000 registries", False),
    Front("d", "Envoy route regex_rewrite", False),
    Front("e", "Envoy Lua filter", False),
    Front("f", "nginx recipe", False),
]

# The profile series: the floor filter replaying harbor_mirror's host calls, one more each time
# (crates/filter/examples/floor_filter.rs), then harbor_mirror itself, and with the original path
# kept for the access log.
PROFILE_STEPS = ["headers", "log_level", "set_path", "metrics", "status"]
PROFILE_FRONTS = (
    [FRONTS[1]]
    + [Front(f"b+{i + 1}", "floor + " + ",".join(PROFILE_STEPS[: i + 1]), True, ",".join(PROFILE_STEPS[: i + 1])) for i in range(len(PROFILE_STEPS))]
    + [FRONTS[2], Front("c+log", "harbor_mirror.wasm with log_original_path (compare c)", False)]
    + [Front("b+pairs", "floor + all request headers in one call (compare b+1)", True, "pairs")]
    + [Front("b+path", "floor + :path alone in one call (compare b+pairs)", True, "path")]
    + [Front("b0", "do-nothing wasm with only the exports it needs (compare b)", True)]
    + [Front("m0", "do-nothing dynamic module (prefixed names; the module's floor)", True)]
)


# The levers (tests/bench/levers.txt): harbor_mirror.wasm (and libharbor_mirror.so) as built at
# earlier commits, each run as c (m) is, under callgrind only; filled from --lever and
# --module-lever.
LEVER_FRONTS = []


def all_fronts():
    return FRONTS + PROFILE_FRONTS + LEVER_FRONTS


def shapes(digest, prefixed):
    """The request shapes, as clients send them: containerd (ns), docker (plain), token, ping.
    containerd resolves a tag with HEAD; wrk cannot read HEAD answers (it waits for the body
    their Content-Length announces), so the resolve is a GET here."""
    name = "dockerhub-proxy/library/nginx" if prefixed else "library/nginx"
    ns = "" if prefixed else "?ns=docker.io"
    scope = name.replace("/", "%2F")
    return [
        ("containerd resolve (GET for HEAD)", "GET", f"/v2/{name}/manifests/latest{ns}"),
        ("containerd GET manifest by digest", "GET", f"/v2/{name}/manifests/{digest}{ns}"),
        ("docker GET manifest by tag", "GET", f"/v2/{name}/manifests/latest"),
        ("docker token request", "GET", f"/service/token?scope=repository%3A{scope}%3Apull&service=harbor-registry"),
        ("api version check", "GET", "/v2/"),
    ]


# --- processes -------------------------------------------------------------------------------

STARTED = []


# With two or more CPUs the fronts get the last one to themselves and everything else (wrk, the
# backends, this script) the others, so that a front's CPU per request is not bent by sharing its
# core with the load it is measured under.
# Every online CPU, not this process's mask: build.sh runs it on the load's CPUs already.
ALL_CPUS = set(range(os.cpu_count() or 1))
FRONT_CPUS = {max(ALL_CPUS)} if len(ALL_CPUS) > 1 else ALL_CPUS
LOAD_CPUS = ALL_CPUS - FRONT_CPUS or ALL_CPUS


def start(args, log, cpus=None):
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    process = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pin)
    STARTED.append(process)
    return process


def stop(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process in STARTED:
        STARTED.remove(process)


def stop_all(*_):
    for process in reversed(list(STARTED)):
        stop(process)


def wait_http(port, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ready")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"bench: {what} did not come up on port {port}")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_of(process):
    """The process and its children (nginx's workers)."""
    pids = [process.pid]
    try:
        with open(f"/proc/{process.pid}/task/{process.pid}/children") as f:
            pids += [int(pid) for pid in f.read().split()]
    except OSError:
        pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_kb(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/statm") as f:
            total += int(f.read().split()[1]) * PAGE_KB
    return total


# --- front configurations ----------------------------------------------------------------------


def envoy_config(listen_port, admin_port, upstream_port, http_filters=(), routes=None):
    route = {"cluster": "backend", "timeout": "0s"}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "registry",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "registry",
                                        "codec_type": "AUTO",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "registry",
                                                    "domains": ["*"],
                                                    "routes": (routes or []) + [{"match": {"prefix": "/"}, "route": route}],
                                                }
                                            ]
                                        },
                                        "http_filters": list(http_filters)
                                        + [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "5s",
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}],
                    },
                }
            ],
        },
    }


def wasm_filter(name, wasm, configuration):
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "failure_policy": "FAIL_RELOAD",
                "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
            },
        },
    }


def module_filter(module, configuration):
    """The dynamic-module filter loading libharbor_mirror.so with `configuration`."""
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "harbor_mirror", "module": {"local": {"filename": module}}, "metrics_namespace": "harbor_mirror"},
            "filter_name": "harbor_mirror",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
        },
    }


def harbor_config(registries, log_original_path=False):
    """The filter's configuration: the four registries, plus `registries - 4` more."""
    config = {key: {"project": project} for key, project in REGISTRIES.items()}
    for i in range(registries - len(config)):
        config[f"r{i}.example.com"] = {"project": f"proxy-{i}", "hosts": [f"r{i}.mirror.example.com"], "aliases": [f"r{i}"]}
    return json.dumps({"registries": config, "default_registry": "docker.io", "log_original_path": log_original_path})


def regex_routes():
    """What route regex_rewrite can do: pick the project by ns (a query_parameters match) or
    the default, add library/ to single-segment Docker Hub names. It cannot touch the query, so
    token scopes and challenges stay as they are."""
    endpoint = r"((?:manifests|blobs|tags)/.*)"
    routes = []
    for ns, project in list(REGISTRIES.items()) + [(None, REGISTRIES["docker.io"])]:
        query = [{"name": "ns", "string_match": {"exact": ns}}] if ns else []
        shapes = [(rf"^/v2/([^/]+)/{endpoint}$", rf"/v2/{project}/library/\1/\2")] if project == "dockerhub-proxy" else []
        shapes.append((rf"^/v2/(.+?)/{endpoint}$", rf"/v2/{project}/\1/\2"))
        for pattern, substitution in shapes:
            routes.append(
                {
                    "match": {"safe_regex": {"regex": pattern}, "query_parameters": query},
                    "route": {
                        "cluster": "backend",
                        "timeout": "0s",
                        "regex_rewrite": {"pattern": {"regex": pattern}, "substitution": substitution},
                    },
                }
            )
    return routes


def lua_filter():
    with open(os.path.join(HERE, "harbor_rewrite.lua")) as f:
        code = f.read()
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": code},
        },
    }


def fill(template, values):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    return text


def start_stub(work):
    """The fast backend (tests/bench/stub-nginx.conf) with a fixed manifest; returns its port and
    the manifest's digest."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469, "digest": "sha256:" + "c" * 64},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3408729, "digest": "sha256:" + "1" * 64}],
        },
        separators=(",", ":"),
    )
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    port = free_port()
    os.makedirs(os.path.join(work, "stub-tmp"), exist_ok=True)
    conf = os.path.join(work, "stub.conf")
    with open(conf, "w") as f:
        f.write(fill("stub-nginx.conf", {"DIR": work, "PORT": port, "DIGEST": digest, "MANIFEST": manifest, "TOKEN": "bench." + "t" * 600 + ".sig"}))
    start(["nginx", "-c", conf, "-p", work, "-e", os.path.join(work, "stub-error.log")], os.path.join(work, "stub.log"))
    wait_http(port, "stub backend")
    return port, digest


class Running:
    """A started front: its port, processes, and how to tell it is ready."""

    def __init__(self, front, port, process, ready_port, log):
        self.front, self.port, self.process, self.ready_port, self.log = front, port, process, ready_port, log

    def configure_times(self):
        """What harbor_mirror logged at each VM's start: `configured N registries in X ms`."""
        with open(self.log, errors="replace") as f:
            return re.findall(r"configured \d+ registries in [\d.]+ ms", f.read())

    def wait_ready(self, seconds=60):
        wait_http(self.ready_port, f"front {self.front.key}", seconds)


def start_front(front, args, work, upstream_port, callgrind=False):
    """Starts a front without waiting for it. With `callgrind`, under valgrind's callgrind,
    which counts the instructions it runs (collection is switched on and off from outside)."""
    port = free_port()
    log = os.path.join(work, f"front-{front.key}.log")
    prefix, cpus = [], FRONT_CPUS
    if callgrind:
        # Instruction counts do not depend on the core; all of them speeds up the start.
        cpus = ALL_CPUS
        out = os.path.join(work, f"callgrind-{front.key}.%p")
        prefix = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={out}"]
    if front.key == "f":
        os.makedirs(os.path.join(work, "recipe-tmp"), exist_ok=True)
        conf = os.path.join(work, f"recipe-{port}.conf")
        with open(conf, "w") as f:
            f.write(fill("nginx-recipe.conf", {"DIR": work, "PORT": port, "UPSTREAM": f"127.0.0.1:{upstream_port}"}))
        # Under valgrind, one process: the master serves.
        single = ["-g", "master_process off;"] if callgrind else []
        command = ["nginx", "-c", conf, "-p", work, "-e", os.path.join(work, "recipe-error.log")] + single
        return Running(front, port, start(prefix + command, log, cpus), port, log)
    admin = free_port()
    filters, routes = [], None
    if front.key == "m0":
        filters = [module_filter(args.floor_module, "")]
    elif front.key == "b0":
        filters = [wasm_filter("floor", args.floor_stripped_wasm, "")]
    elif front.key.startswith("b"):
        filters = [wasm_filter("floor", args.floor_wasm, front.steps)]
    elif front.key == "c":
        filters = [wasm_filter("harbor_mirror", args.wasm, harbor_config(4))]
    elif front.wasm:
        filters = [wasm_filter("harbor_mirror", front.wasm, harbor_config(4))]
    elif front.module:
        filters = [module_filter(front.module, harbor_config(4))]
    elif front.key == "c+log":
        filters = [wasm_filter("harbor_mirror", args.wasm, harbor_config(4, log_original_path=True))]
    elif front.key == "c1000":
        filters = [wasm_filter("harbor_mirror", args.wasm, harbor_config(1000))]
    elif front.key == "m":
        filters = [module_filter(args.module, harbor_config(4))]
    elif front.key == "m1000":
        filters = [module_filter(args.module, harbor_config(1000))]
    elif front.key == "d":
        routes = regex_routes()
    elif front.key == "e":
        filters = [lua_filter()]
    conf = os.path.join(work, f"front-{front.key}-{port}.yaml")
    with open(conf, "w") as f:
        yaml.safe_dump(envoy_config(port, admin, upstream_port, filters, routes), f, sort_keys=False)
    envoy = args.envoy_binary if callgrind else args.envoy
    command = [envoy, "-c", conf, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn", "--component-log-level", "wasm:info,dynamic_modules:info"]
    return Running(front, port, start(prefix + command, log, cpus), admin, log)


# --- checks and load -------------------------------------------------------------------------


def check(running, digest):
    """Sends each shape once; returns {shape: "status[ realm]"}."""
    answers = {}
    for label, method, path in shapes(digest, running.front.prefixed):
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
        connection.request(method, path, headers={"Host": MIRROR_HOST, "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        response = connection.getresponse()
        response.read()
        answer = str(response.status)
        challenge = response.getheader("www-authenticate")
        if challenge:
            answer += " " + challenge.split("realm=", 1)[-1].split(",", 1)[0]
        answers[label] = answer
        connection.close()
    return answers


def load(args, running, shapes_file, seconds, connections=None):
    pids = pids_of(running.process)
    cpu_before = cpu_seconds(pids)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections or args.connections}", "--timeout", "10s", f"-d{seconds}s", "-s", os.path.join(HERE, "requests.lua"), f"http://127.0.0.1:{running.port}", "--", shapes_file, MIRROR_HOST],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu = cpu_seconds(pids) - cpu_before
    summary = json.loads(out.strip().splitlines()[-1])
    requests = summary["requests"]
    if requests == 0:
        sys.exit(f"bench: front {running.front.key} answered no request in {seconds} s")
    return {
        "requests": requests,
        "non_2xx": summary["non_2xx"],
        "socket_errors": summary["socket_errors"],
        "cpu_us_per_request": cpu * 1e6 / requests,
        "requests_per_s": requests / (summary["duration_us"] / 1e6),
        "p50_us": summary["p50_us"],
        "p99_us": summary["p99_us"],
        "rss_kb": rss_kb(pids),
    }


def write_shapes(work, name, digest):
    """The wrk shapes files of a series: {prefixed: path}."""
    files = {}
    for prefixed in (True, False):
        path = os.path.join(work, f"shapes-{name}-{'prefixed' if prefixed else 'client'}.txt")
        with open(path, "w") as f:
            for _, method, request_path in shapes(digest, prefixed):
                f.write(f"{method} {request_path}\n")
        files[prefixed] = path
    return files


def run_series(args, series, work, fronts):
    name, upstream_port, digest = series
    print(f"== series {name}: backend 127.0.0.1:{upstream_port}", flush=True)
    shape_files = write_shapes(work, name, digest)
    running = [start_front(front, args, work, upstream_port) for front in fronts]
    try:
        for r in running:
            r.wait_ready()
        answers = {r.front.key: check(r, digest) for r in running}
        configure = {r.front.key: r.configure_times() for r in running if r.front.key.startswith(("c", "m"))}
        for r in running:
            print(f"   {r.front.key:6} answers: " + ", ".join(f"{a}" for a in answers[r.front.key].values()), flush=True)
            load(args, r, shape_files[r.front.prefixed], args.warmup)
        rounds = []
        for round_index in range(args.rounds):
            order = running[round_index % len(running):] + running[: round_index % len(running)]
            results = {}
            for r in order:
                results[r.front.key] = load(args, r, shape_files[r.front.prefixed], args.seconds)
                figures = results[r.front.key]
                print(
                    f"   round {round_index + 1} {r.front.key:6} {figures['cpu_us_per_request']:7.1f} us/req "
                    f"{figures['requests_per_s']:8.0f} req/s p50 {figures['p50_us']} us p99 {figures['p99_us']} us "
                    f"non-2xx {figures['non_2xx'] / figures['requests']:.0%}",
                    flush=True,
                )
            rounds.append(results)
    finally:
        for r in running:
            stop(r.process)
    return {"name": name, "shapes": [label for label, _, _ in shapes(digest, False)], "answers": answers, "configure": configure, "rounds": rounds}


def run_instructions(args, upstream_port, digest, work):
    """Instructions per request, counted by callgrind: deterministic where CPU time is noisy, so
    that differences of a few percent between fronts are real. Every front (and every profile
    step) starts under valgrind at once; each is then warmed up and loaded on its own, with
    counting switched on for exactly that load."""
    fronts = list({front.key: front for front in all_fronts()}.values())
    if args.callgrind_fronts:
        fronts = [front for front in fronts if front.key in args.callgrind_fronts.split(",")]
    print(f"== instructions per request (callgrind), {len(fronts)} fronts", flush=True)
    shape_files = write_shapes(work, "stub", digest)
    running = [start_front(front, args, work, upstream_port, callgrind=True) for front in fronts]
    counts = {}
    try:
        for r in running:
            r.wait_ready(900)
        # Every lever, and the module, must answer as c does: the same behaviour at another cost.
        answers = {r.front.key: check(r, digest) for r in running if r.front.key in ("c", "m") or r.front.wasm or r.front.module}
        for key, answered in answers.items():
            if answered != answers.get("c", answered):
                sys.exit(f"bench: lever {key} answers {answered}, c answers {answers['c']}")
        for r in running:
            pid = str(r.process.pid)
            load(args, r, shape_files[r.front.prefixed], 15, connections=2)
            # What the front does on its own (timers, stats flushes) in as long as the load
            # takes, to subtract from the load's count.
            subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
            time.sleep(args.seconds * 2)
            idle = dump_total(work, r, "idle")
            figures = load(args, r, shape_files[r.front.prefixed], args.seconds * 2, connections=2)
            loaded = dump_total(work, r, "load")
            per_request = (loaded - idle) / figures["requests"]
            counts[r.front.key] = {"requests": figures["requests"], "instructions": loaded, "idle": idle, "per_request": per_request}
            print(f"   {r.front.key:8} {per_request:10.0f} instructions/request ({figures['requests']} requests, idle {idle})", flush=True)
            stop(r.process)
    finally:
        for r in running:
            stop(r.process)
    return counts


def dump_total(work, running, label):
    """Dumps the counts callgrind collected since the last dump or zeroing, zeroes them, and
    returns their total."""
    pid = running.process.pid
    subprocess.run(["callgrind_control", "-d", label, str(pid)], check=True, capture_output=True)
    dumps = sorted(
        (name for name in os.listdir(work) if name.startswith(f"callgrind-{running.front.key}.{pid}.")),
        key=lambda name: int(name.rsplit(".", 1)[1]),
    )
    with open(os.path.join(work, dumps[-1])) as f:
        return next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))


def floor_sentence(a, b, c, unit):
    """The filter's cost over the do-nothing filter, in one line, also as a share of that
    filter's own cost over plain Envoy."""
    floor, filter_cost = b - a, c - b
    share = f" = {filter_cost / floor:.0%} of the floor" if floor > 0 else ""
    return f"wasm floor (b - a): {unit.format(floor)}; harbor_mirror on top of it (c - b): {unit.format(filter_cost)}{share}"


def instructions_report(counts):
    labels = {front.key: front.label for front in all_fronts()}
    base = counts.get("a", {}).get("per_request")
    floor = counts.get("b", {}).get("per_request")
    lines = ["### Instructions per request (callgrind, stub backend)\n", "| front | instructions/req | x a | over the floor (b) |", "|---|---:|---:|---:|"]
    for key, figures in counts.items():
        value = figures["per_request"]
        ratio = f"{value / base:.3f}" if base else ""
        over = f"{value - floor:+,.0f}" if floor else ""
        lines.append(f"| {key}: {labels[key]} | {value:,.0f} | {ratio} | {over} |")
    if base and floor and "c" in counts:
        lines.append("\n" + floor_sentence(base, floor, counts["c"]["per_request"], "{:,.0f} instructions/req") + " (issue 19's target: at most +30,000)")
    return "\n".join(lines) + "\n"


# --- report ----------------------------------------------------------------------------------

FIGURES = [
    ("cpu_us_per_request", "CPU us/req", "{:.1f}"),
    ("requests_per_s", "req/s", "{:.0f}"),
    ("p50_us", "p50 us", "{:.0f}"),
    ("p99_us", "p99 us", "{:.0f}"),
    ("rss_kb", "RSS MiB", "{:.1f}"),
]


def medians(series):
    out = {}
    for key in series["rounds"][0]:
        out[key] = {figure: statistics.median(r[key][figure] for r in series["rounds"]) for figure, _, _ in FIGURES}
        out[key]["rss_kb"] /= 1024
        out[key]["non_2xx_share"] = statistics.median(r[key]["non_2xx"] / r[key]["requests"] for r in series["rounds"])
    return out


def report(results):
    lines = []
    labels = {front.key: front.label for front in all_fronts()}
    for series in results["series"]:
        med = medians(series)
        base = med.get("a")
        lines.append(f"### Series: {series['name']}\n")
        header = "| front | " + " | ".join(f"{title} (x a)" for _, title, _ in FIGURES) + " | non-2xx |"
        lines += [header, "|---|" + "---:|" * (len(FIGURES) + 1)]
        for key, figures in med.items():
            cells = []
            for figure, _, fmt in FIGURES:
                value = figures[figure]
                ratio = f" ({value / base[figure]:.2f})" if base and base[figure] else ""
                cells.append(fmt.format(value) + ratio)
            lines.append(f"| {key}: {labels[key]} | " + " | ".join(cells) + f" | {figures['non_2xx_share']:.0%} |")
        if base and "b" in med and "c" in med:
            cpu = {key: figures["cpu_us_per_request"] for key, figures in med.items()}
            lines += ["", floor_sentence(cpu["a"], cpu["b"], cpu["c"], "{:.1f} us/req")]
        if series["name"] == "profile":
            keys = list(med)
            lines.append("\n| front | us/req over the floor (b) | over the front before |\n|---|---:|---:|")
            for before, after in zip(keys, keys[1:]):
                cost = med[after]["cpu_us_per_request"]
                lines.append(f"| {after}: {labels[after]} | {cost - med['b']['cpu_us_per_request']:+.1f} | {cost - med[before]['cpu_us_per_request']:+.1f} |")
        for key, times in series.get("configure", {}).items():
            lines.append(f"\n{key}: harbor_mirror's configure, per VM: " + ("; ".join(times) or "not logged"))
        lines.append("\nWhat each front answered, shape by shape (status, and the realm of a 401):\n")
        lines.append("| front | " + " | ".join(series["shapes"]) + " |")
        lines.append("|---|" + "---|" * len(series["shapes"]))
        for key, answers in series["answers"].items():
            lines.append(f"| {key} | " + " | ".join(answers.values()) + " |")
        lines.append("")
    return "\n".join(lines)


def front_color(key):
    """Grey for the baselines, blue for the wasm filter, green for the module, orange for the
    alternatives."""
    if key == "a" or key.startswith("b"):
        return "#999999"
    if key.startswith("c") or key.startswith("L"):
        return "#2b7bba"
    if key.startswith("m"):
        return "#3a9a4a"
    return "#e08a2c"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series_list = results["series"]
    counts = results.get("instructions", {})
    panels = len(series_list) + (1 if counts else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    if counts:
        ax = axes[0][-1]
        keys = list(counts)
        values = [counts[key]["per_request"] / 1000 for key in keys]
        colors = [front_color(key) for key in keys]
        ax.bar(keys, values, color=colors)
        for i, value in enumerate(values):
            ax.annotate(f"{value:.0f}", (i, value), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_title("instructions per request (callgrind), backend: stub")
        ax.set_ylabel("thousands of instructions (deterministic)")
        ax.set_ylim(0, max(values) * 1.15)
        ax.tick_params(axis="x", labelrotation=45)
    for ax, series in zip(axes[0], series_list):
        keys = list(series["rounds"][0])
        med = medians(series)
        values = [med[key]["cpu_us_per_request"] for key in keys]
        colors = [front_color(key) for key in keys]
        ax.bar(keys, values, color=colors)
        for i, key in enumerate(keys):
            ax.scatter([i] * len(series["rounds"]), [r[key]["cpu_us_per_request"] for r in series["rounds"]], color="black", s=8, zorder=3)
            ax.annotate(f"{values[i]:.0f}", (i, values[i]), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_title(f"proxy CPU per request, backend: {series['name']}")
        ax.set_ylabel("microseconds (median of rounds; dots: rounds)")
        ax.set_ylim(0, max(values) * 1.15)
    fig.text(0.01, 0.01, "a: no filter  b: do-nothing wasm  c: harbor_mirror.wasm  m: the module  c1000/m1000: 1000 registries  d: regex_rewrite  e: Lua  f: nginx recipe", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)


def write_report(results, out):
    # A series without rounds (a callgrind-only run: --rounds 0) has no figures to report.
    results = dict(results, series=[series for series in results["series"] if series["rounds"]])
    text = report(results)
    if "instructions" in results:
        text += "\n" + instructions_report(results["instructions"])
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    plot(results, os.path.join(out, "cpu-per-request.png"))
    print(f"wrote {out}/results.json, report.md, cpu-per-request.png")


def main():
    if sys.argv[1:2] == ["--replot"]:
        # bench.py --replot DIR: report.md and the plot again from DIR/results.json.
        with open(os.path.join(sys.argv[2], "results.json")) as f:
            write_report(json.load(f), sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="bench.py --replot DIR: the report and plot again from DIR/results.json")
    parser.add_argument("--envoy", required=True)
    parser.add_argument("--wasm", required=True)
    parser.add_argument("--module", required=True, help="libharbor_mirror.so, the dynamic module")
    parser.add_argument("--floor-module", required=True, help="crates/dynamic-module/examples/floor.rs, built")
    parser.add_argument("--floor-wasm", required=True, help="crates/filter/examples/floor_filter.rs, built")
    parser.add_argument("--floor-stripped-wasm", required=True, help="the same, with only the exports a do-nothing filter needs")
    parser.add_argument("--profile", action="store_true", help="also run the profile series on the stub")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per request under callgrind")
    parser.add_argument("--callgrind-fronts", help="only these fronts under callgrind (default: all, and the profile's)")
    parser.add_argument("--envoy-binary", help="the envoy executable itself (valgrind cannot follow the venv's wrapper)")
    parser.add_argument("--lever", action="append", default=[], help="KEY=WASM=LABEL: an earlier build of harbor_mirror.wasm, run as c under callgrind (repeatable)")
    parser.add_argument("--module-lever", action="append", default=[], help="KEY=SO=LABEL: an earlier build of libharbor_mirror.so, run as m under callgrind (repeatable)")
    parser.add_argument("--registry", help="PORT=DIGEST: a real registry on 127.0.0.1 holding dockerhub-proxy/library/nginx:latest")
    parser.add_argument("--fronts", default=",".join(front.key for front in FRONTS))
    parser.add_argument("--rounds", type=int, default=3, help="0: no load series (with --callgrind, only the instruction counts)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    args.fronts = args.fronts.split(",")
    for lever in args.lever:
        key, wasm, label = lever.split("=", 2)
        LEVER_FRONTS.append(Front(key, label, False, wasm=wasm))
    for lever in args.module_lever:
        key, module, label = lever.split("=", 2)
        LEVER_FRONTS.append(Front(key, label, False, module=module))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.sched_setaffinity(0, LOAD_CPUS)
    print(f"fronts on CPU {sorted(FRONT_CPUS)}, wrk and backends on CPU {sorted(LOAD_CPUS)}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    results = {"settings": {k: getattr(args, k) for k in ("rounds", "seconds", "warmup", "connections")}, "series": []}
    try:
        stub_port, stub_digest = start_stub(args.work)
        fronts = [front for front in FRONTS if front.key in args.fronts]
        if fronts and args.rounds > 0:
            results["series"].append(run_series(args, ("stub", stub_port, stub_digest), args.work, fronts))
        if args.registry:
            port, digest = args.registry.split("=", 1)
            results["series"].append(run_series(args, ("registry", int(port), digest), args.work, fronts))
        if args.profile:
            results["series"].append(run_series(args, ("profile", stub_port, stub_digest), args.work, PROFILE_FRONTS))
        if args.callgrind:
            results["instructions"] = run_instructions(args, stub_port, stub_digest, args.work)
    finally:
        stop_all()
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_report(results, args.out)


if __name__ == "__main__":
    main()
