#!/usr/bin/env python3
"""The scaling part of `./build.sh bench`: what `bench.py`'s single-connection figures do not
show, in one run, front beside front.

  blob         one 256 MiB blob pulled through each front (plain Envoy, the wasm filter, the
               dynamic module) from the real registry: MB/s and Envoy CPU seconds per GiB; a
               filter must leave blobs alone, so both should be within 2% of plain Envoy.
  concurrency  the request mix of bench.py against the stub at 1, 16 and 128 connections, Envoy
               with two workers: p50/p99 latency and CPU per request for plain Envoy, the wasm
               filter, the module, the Lua filter and the nginx recipe.
  managed      managed mode in front of the Harbor model (tests/harbor_auth.py): how many token
               requests reach Harbor for one project when 32 requests arrive at once on a cold
               token cache, and then on a warm one; two workers.

Fronts use bench.py's configurations and helpers. Writes scaling.json and scaling.md to --out.
"""
import argparse
import hashlib
import http.client
import json
import os
import signal
import statistics
import sys
import threading
import time

import yaml

import bench

BLOB_BYTES = 256 * 1024 * 1024
BLOB_REPOSITORY = "dockerhub-proxy/library/big"
CONNECTIONS = (1, 16, 128)
MANAGED_BURST = 32

# The fronts of this part, as bench.py defines them: plain Envoy, the wasm filter, the module,
# Lua and the nginx recipe.
FRONT_A, FRONT_C, FRONT_M, FRONT_E, FRONT_F = (next(front for front in bench.FRONTS if front.key == key) for key in "acmef")


def start_envoy(front, args, work, upstream_port, workers, configuration=None, clusters=()):
    """One Envoy front with `workers` worker threads; `configuration` replaces harbor_mirror's."""
    port, admin = bench.free_port(), bench.free_port()
    configuration = configuration or bench.harbor_config(4)
    filters = []
    if front.key == "c":
        filters = [bench.wasm_filter("harbor_mirror", args.wasm, configuration)]
    elif front.key == "m":
        filters = [bench.module_filter(args.module, configuration)]
    elif front.key == "e":
        filters = [bench.lua_filter()]
    config = bench.envoy_config(port, admin, upstream_port, filters)
    config["static_resources"]["clusters"] += list(clusters)
    path = os.path.join(work, f"scaling-{front.key}-{port}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    log = os.path.join(work, f"scaling-{front.key}-{port}.log")
    command = [args.envoy, "-c", path, "--concurrency", str(workers), "--disable-hot-restart", "--log-level", "warn"]
    running = bench.Running(front, port, bench.start(command, log), admin, log)
    running.wait_ready()
    return running


def start_nginx(args, work, upstream_port):
    port = bench.free_port()
    os.makedirs(os.path.join(work, "recipe-tmp"), exist_ok=True)
    conf = os.path.join(work, f"scaling-recipe-{port}.conf")
    with open(conf, "w") as f:
        f.write(bench.fill("nginx-recipe.conf", {"DIR": work, "PORT": port, "UPSTREAM": f"127.0.0.1:{upstream_port}"}).replace("worker_processes 1;", "worker_processes 2;"))
    log = os.path.join(work, f"scaling-recipe-{port}.log")
    running = bench.Running(FRONT_F, port, bench.start(["nginx", "-c", conf, "-p", work, "-e", log], log), port, log)
    bench.wait_http(port, "the nginx recipe", 30)
    return running


# --- blob ------------------------------------------------------------------------------------


def upload_blob(registry_port):
    """Puts a 256 MiB blob into the registry (one monolithic upload); returns its digest."""
    data = os.urandom(BLOB_BYTES)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    connection = http.client.HTTPConnection("127.0.0.1", registry_port, timeout=120)
    connection.request("POST", f"/v2/{BLOB_REPOSITORY}/blobs/uploads/", headers={"Content-Length": "0"})
    response = connection.getresponse()
    response.read()
    location = response.getheader("Location")
    if response.status != 202 or not location:
        sys.exit(f"scaling: the registry refused the upload: {response.status}")
    location = location.split("127.0.0.1:" + str(registry_port), 1)[-1]
    separator = "&" if "?" in location else "?"
    connection.request("PUT", f"{location}{separator}digest={digest}", body=data, headers={"Content-Type": "application/octet-stream"})
    response = connection.getresponse()
    response.read()
    if response.status != 201:
        sys.exit(f"scaling: the registry did not take the blob: {response.status}")
    return digest


def pull_blob(running, digest):
    """One pull of the blob through a front: (seconds, bytes)."""
    name = BLOB_REPOSITORY if running.front.prefixed else "library/big"
    query = "" if running.front.prefixed else "?ns=docker.io"
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=120)
    started = time.perf_counter()
    connection.request("GET", f"/v2/{name}/blobs/{digest}{query}", headers={"Host": bench.MIRROR_HOST})
    response = connection.getresponse()
    received = 0
    while chunk := response.read(1 << 20):
        received += len(chunk)
    took = time.perf_counter() - started
    if response.status != 200 or received != BLOB_BYTES:
        sys.exit(f"scaling: front {running.front.key} answered {response.status} with {received} bytes for the blob")
    return took, received


def run_blob(args, work, registry_port, digest, fronts):
    print("== blob: 256 MiB through each front", flush=True)
    running = [start_envoy(front, args, work, registry_port, 1) for front in fronts]
    rounds = {r.front.key: [] for r in running}
    try:
        for r in running:
            pull_blob(r, digest)  # warm-up: the registry's page cache, the front's connection
        for round_index in range(args.rounds):
            for r in running[round_index % len(running):] + running[: round_index % len(running)]:
                pids = bench.pids_of(r.process)
                cpu_before = bench.cpu_seconds(pids)
                took, received = pull_blob(r, digest)
                cpu = bench.cpu_seconds(pids) - cpu_before
                gib = received / (1 << 30)
                rounds[r.front.key].append({"mb_per_s": received / took / 1e6, "cpu_s_per_gib": cpu / gib})
                print(f"   round {round_index + 1} {r.front.key}: {received / took / 1e6:7.0f} MB/s, Envoy CPU {cpu / gib:.2f} s/GiB", flush=True)
    finally:
        for r in running:
            bench.stop(r.process)
    return {key: {figure: statistics.median(row[figure] for row in rows) for figure in ("mb_per_s", "cpu_s_per_gib")} for key, rows in rounds.items()}


# --- concurrency -----------------------------------------------------------------------------


def run_concurrency(args, work, stub_port, digest, fronts):
    print(f"== concurrency: {', '.join(map(str, CONNECTIONS))} connections, two workers", flush=True)
    shape_files = bench.write_shapes(work, "scaling", digest)
    running = [start_nginx(args, work, stub_port) if front.key == "f" else start_envoy(front, args, work, stub_port, 2) for front in fronts]
    figures = {r.front.key: {} for r in running}
    try:
        for r in running:
            bench.load(args, r, shape_files[r.front.prefixed], args.warmup, connections=16)
        for connections in CONNECTIONS:
            for round_index in range(args.rounds):
                for r in running[round_index % len(running):] + running[: round_index % len(running)]:
                    result = bench.load(args, r, shape_files[r.front.prefixed], args.seconds, connections=connections)
                    figures[r.front.key].setdefault(connections, []).append(result)
                    print(
                        f"   c={connections:<3} round {round_index + 1} {r.front.key}: {result['cpu_us_per_request']:6.1f} us/req "
                        f"p50 {result['p50_us']} us p99 {result['p99_us']} us",
                        flush=True,
                    )
    finally:
        for r in running:
            bench.stop(r.process)
    return {
        key: {
            str(connections): {figure: statistics.median(row[figure] for row in rows) for figure in ("cpu_us_per_request", "p50_us", "p99_us", "requests_per_s", "rss_kb")}
            for connections, rows in by_connections.items()
        }
        for key, by_connections in figures.items()
    }


# --- managed ---------------------------------------------------------------------------------


def start_harbor_model(work, registry_port):
    port = bench.free_port()
    log = os.path.join(work, "harbor-model.jsonl")
    config = {
        "listen": f"127.0.0.1:{port}",
        "name": "bench",
        "registry": f"http://127.0.0.1:{registry_port}",
        "external_url": f"http://127.0.0.1:{port}",
        "harbor_version": "2.14",
        "log": log,
        "projects": {"dockerhub-proxy": {"public": False, "proxy": "docker-hub"}},
        "robots": {"robot$mirror": {"password": "bench-secret", "access": {"dockerhub-proxy": ["pull"]}}},
    }
    path = os.path.join(work, "harbor-model.json")
    with open(path, "w") as f:
        json.dump(config, f)
    process = bench.start([sys.executable, os.path.join(bench.HERE, "..", "harbor_auth.py"), path], os.path.join(work, "harbor-model.out"))
    bench.wait_http(port, "the Harbor model", 30)
    return process, port, log


def token_requests(log):
    if not os.path.exists(log):
        return 0
    with open(log) as f:
        return sum(1 for line in f if json.loads(line).get("path") == "/service/token")


def burst(running, path, count):
    """`count` requests at once; returns their statuses."""
    statuses = [None] * count

    def one(i):
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
        connection.request("GET", path, headers={"Host": bench.MIRROR_HOST, "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        response = connection.getresponse()
        response.read()
        statuses[i] = response.status

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def run_managed(args, work, registry_port, fronts):
    print(f"== managed: {MANAGED_BURST} requests at once, cold and warm token cache, two workers", flush=True)
    model, model_port, log = start_harbor_model(work, registry_port)
    harbor = {
        "name": "harbor",
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": "harbor", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": model_port}}}}]}]},
    }
    configuration = json.dumps(
        {
            "registries": {"docker.io": {"project": "dockerhub-proxy"}},
            "default_registry": "docker.io",
            "auth": {"robot": {"username": "robot$mirror", "password": "bench-secret"}, "cluster": "harbor", "authority": f"127.0.0.1:{model_port}"},
        }
    )
    results = {}
    try:
        for front in fronts:
            running = start_envoy(front, args, work, model_port, 2, configuration, clusters=[harbor])
            try:
                figures = {}
                for phase in ("cold", "warm"):
                    before = token_requests(log)
                    started = time.perf_counter()
                    statuses = burst(running, "/v2/library/nginx/manifests/latest", MANAGED_BURST)
                    took = time.perf_counter() - started
                    time.sleep(0.5)  # the log is written before each answer; settle the last lines
                    if any(status != 200 for status in statuses):
                        sys.exit(f"scaling: managed front {front.key} answered {sorted(set(statuses))} ({phase})")
                    figures[phase] = {"token_requests": token_requests(log) - before, "burst_ms": took * 1000}
                    print(f"   {front.key} {phase}: {figures[phase]['token_requests']} token requests reached Harbor, burst answered in {took * 1000:.0f} ms", flush=True)
                results[front.key] = figures
            finally:
                bench.stop(running.process)
    finally:
        bench.stop(model)
    return results


# --- report ----------------------------------------------------------------------------------


def report(results, labels):
    lines = []
    blob = results.get("blob")
    if blob:
        base = blob.get("a")
        lines += ["### A 256 MiB blob through each front (medians)\n", "| front | MB/s | x a | Envoy CPU s/GiB | x a |", "|---|---:|---:|---:|---:|"]
        for key, figures in blob.items():
            ratio = lambda figure: f"{figures[figure] / base[figure]:.3f}" if base and base[figure] else ""
            lines.append(f"| {key}: {labels[key]} | {figures['mb_per_s']:.0f} | {ratio('mb_per_s')} | {figures['cpu_s_per_gib']:.2f} | {ratio('cpu_s_per_gib')} |")
        lines.append("")
    concurrency = results.get("concurrency")
    if concurrency:
        lines += ["### Concurrency (two Envoy workers, stub backend, medians)\n"]
        header = "| front | " + " | ".join(f"c={c} CPU us/req | c={c} p50 us | c={c} p99 us" for c in CONNECTIONS) + f" | RSS MiB at c={CONNECTIONS[-1]} |"
        lines += [header, "|---|" + "---:|" * (3 * len(CONNECTIONS) + 1)]
        for key, by_connections in concurrency.items():
            cells = []
            for connections in CONNECTIONS:
                figures = by_connections[str(connections)]
                cells += [f"{figures['cpu_us_per_request']:.1f}", f"{figures['p50_us']:.0f}", f"{figures['p99_us']:.0f}"]
            cells.append(f"{by_connections[str(CONNECTIONS[-1])]['rss_kb'] / 1024:.1f}")
            lines.append(f"| {key}: {labels[key]} | " + " | ".join(cells) + " |")
        lines.append("")
    managed = results.get("managed")
    if managed:
        lines += [f"### Managed mode: {MANAGED_BURST} requests at once for one project (two workers)\n", "| front | token requests, cold | burst ms, cold | token requests, warm | burst ms, warm |", "|---|---:|---:|---:|---:|"]
        for key, figures in managed.items():
            lines.append(f"| {key}: {labels[key]} | {figures['cold']['token_requests']} | {figures['cold']['burst_ms']:.0f} | {figures['warm']['token_requests']} | {figures['warm']['burst_ms']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envoy", required=True)
    parser.add_argument("--wasm", required=True)
    parser.add_argument("--module", help="libharbor_mirror.so: adds the module front")
    parser.add_argument("--registry", required=True, help="PORT of a real registry (CNCF Distribution) on 127.0.0.1")
    parser.add_argument("--parts", default="blob,concurrency,managed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    args.connections = 16
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(args.out, exist_ok=True)
    wasm_fronts = [FRONT_C] + ([FRONT_M] if args.module else [])
    labels = {front.key: front.label for front in (FRONT_A, FRONT_C, FRONT_M, FRONT_E, FRONT_F)}
    parts = args.parts.split(",")
    results = {}
    registry_port = int(args.registry)
    try:
        if "blob" in parts:
            digest = upload_blob(registry_port)
            results["blob"] = run_blob(args, args.work, registry_port, digest, [FRONT_A] + wasm_fronts)
        if "concurrency" in parts:
            stub_port, stub_digest = bench.start_stub(args.work)
            results["concurrency"] = run_concurrency(args, args.work, stub_port, stub_digest, [FRONT_A] + wasm_fronts + [FRONT_E, FRONT_F])
        if "managed" in parts:
            results["managed"] = run_managed(args, args.work, registry_port, wasm_fronts)
    finally:
        bench.stop_all()
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = report(results, labels)
    with open(os.path.join(args.out, "scaling.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
