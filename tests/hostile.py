#!/usr/bin/env python3
"""Hostile requests through a running harbor-mirror Envoy, over HTTP/1.1 and HTTP/2.

Each request is written byte for byte (a raw socket for HTTP/1.1, h2 frames with validation
off for HTTP/2), so that what reaches Envoy is exactly the attack, not what a client library
would make of it. Each row says the status and OCI error code the mirror must answer with, and
whether the request may reach the registry at all; the registry's JSON log, matched by the
User-Agent each request carries, tells what did. Afterwards a plain pull must still work, and
Envoy's wasm stats must show no VM failure or reload.

Usage: hostile.py --mirror HOST:PORT --admin-port PORT --registry-log FILE --project P...
Exit 0 when every row holds.
"""
import argparse
import json
import socket
import sys
import time
import urllib.request

import h2.config
import h2.connection
import h2.events

GOOD = "/v2/library/alpine/manifests/3.19"
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
LONG_NAME = "/v2/library/" + "a" * 300 + "/manifests/1"
LONG_TAG = "/v2/library/alpine/manifests/" + "t" * 129
LONG_QUERY = GOOD + "?n=" + "x" * 9000
HUGE_NS = GOOD + "?ns=" + "d" * 6000
REPEATED_NS = GOOD + "?" + "&".join(["ns=docker.io"] * 200)

# (name, path, status, OCI code (None: Envoy's own answer, no OCI body), may reach the registry)
# The same rows run over HTTP/1.1 (request line) and HTTP/2 (:path).
PATH_ROWS = [
    ("a plain pull", GOOD, 200, None, True),
    ("traversal into Harbor's API", "/v2/../api/v2.0/users", 400, "NAME_INVALID", False),
    ("traversal from the API into another project", "/api/../v2/secret/app/manifests/1", 400, "NAME_INVALID", False),
    ("traversal after an alias", "/quay.io/v2/../../v2/secret/app/manifests/1", 400, "NAME_INVALID", False),
    ("dot-dot reference", "/v2/library/alpine/manifests/..", 400, "NAME_INVALID", False),
    ("encoded dot-dot", "/v2/%2e%2e/api/v2.0/users", 400, "NAME_INVALID", False),
    ("upper-case encoded dot-dot", "/v2/%2E%2E/%2E%2E/v2/secret/app/manifests/1", 400, "NAME_INVALID", False),
    ("encoded slash in the name", "/v2/library%2falpine/manifests/3.19", 400, "NAME_INVALID", False),
    ("encoded slash in the reference", "/v2/library/alpine/manifests/..%2F..%2Fsecret", 400, "NAME_INVALID", False),
    ("encoded backslash", "/v2/library%5calpine/manifests/3.19", 400, "NAME_INVALID", False),
    ("encoded v2 past the filter", "/%76%32/secret/app/manifests/1", 400, "NAME_INVALID", False),
    ("double slash before v2", "//v2/secret/app/manifests/1", 400, "NAME_INVALID", False),
    ("double slash in the name", "/v2/library//alpine/manifests/3.19", 400, "NAME_INVALID", False),
    ("encoded NUL", "/v2/library/alpine%00/manifests/3.19", 400, "NAME_INVALID", False),
    ("encoded CRLF header injection", "/v2/library/alpine/manifests/1%0d%0aX-Injected:%201", 400, "NAME_INVALID", False),
    ("upper-case name", "/v2/Library/Alpine/manifests/3.19", 400, "NAME_INVALID", False),
    ("overlong name", LONG_NAME, 400, "NAME_INVALID", False),
    ("overlong tag", LONG_TAG, 400, "TAG_INVALID", False),
    ("bad digest", "/v2/library/alpine/blobs/sha256:not+hex!", 400, "NAME_INVALID", False),
    ("digest without algorithm", "/v2/library/alpine/blobs/:abc", 400, "DIGEST_INVALID", False),
    ("unknown endpoint", "/v2/library/alpine/tags/everything", 400, "UNSUPPORTED", False),
    ("overlong query", LONG_QUERY, 414, "NAME_INVALID", False),
    ("huge ns", HUGE_NS, 404, "NAME_UNKNOWN", False),
    ("conflicting ns", GOOD + "?ns=docker.io&ns=quay.io", 400, "UNSUPPORTED", False),
    ("repeated ns", REPEATED_NS, 200, None, True),
    ("ns of a registry not served", GOOD + "?ns=evil.example", 404, "NAME_UNKNOWN", False),
    ("encoded CR LF in ns", GOOD + "?ns=docker.io%0d%0aX-Injected:%201", 404, "NAME_UNKNOWN", False),
    ("a push", "/v2/library/alpine/blobs/uploads/", 405, "UNSUPPORTED", False),
]

# Raw HTTP/1.1 requests the request-line rows cannot express: (name, head, status, code, may reach).
# Envoy's HTTP/1 codec refuses some before any filter runs, with its own plain-text 4xx.
def raw_rows(authority):
    host = f"Host: {authority}\r\n".encode()
    ua = b"User-Agent: %s\r\n"
    return [
        ("absolute-form URI", b"GET http://" + authority.encode() + GOOD.encode() + b" HTTP/1.1\r\n" + host + ua, 200, None, True),
        ("absolute-form URI with traversal", b"GET http://" + authority.encode() + b"/v2/../api/v2.0/users HTTP/1.1\r\n" + host + ua, 400, "NAME_INVALID", False),
        # Envoy's codec: a request line cut by CR LF is HTTP/0.9 to it (426, Upgrade Required).
        ("raw CR LF in the path", b"GET /v2/library/alpine\r\nX-Injected: 1/manifests/3.19 HTTP/1.1\r\n" + host + ua, 426, None, False),
        ("raw NUL in the path", b"GET /v2/library/al\x00pine/manifests/3.19 HTTP/1.1\r\n" + host + ua, 400, None, False),
        ("invalid UTF-8 in the path", b"GET /v2/library/\xff\xfe/manifests/3.19 HTTP/1.1\r\n" + host + ua, 400, None, False),
        ("NUL in a header", b"GET " + GOOD.encode() + b" HTTP/1.1\r\n" + host + ua + b"X-A: a\x00b\r\n", 400, None, False),
        ("headers over 60 KiB", b"GET " + GOOD.encode() + b" HTTP/1.1\r\n" + host + ua + b"X-Big: " + b"a" * 70000 + b"\r\n", 431, None, False),
        # The filter: what Envoy's codec lets through.
        ("raw backslash traversal", b"GET /v2/library\\..\\..\\api/manifests/1 HTTP/1.1\r\n" + host + ua, 400, "NAME_INVALID", False),
    ]


def h1_request(mirror, request_head, user_agent, timeout=10):
    """Sends one raw HTTP/1.1 request (head without the final CRLF); returns (status, body)."""
    host, port = mirror.rsplit(":", 1)
    head = request_head.replace(b"User-Agent: %s\r\n", b"User-Agent: " + user_agent.encode() + b"\r\n")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + b"Accept: " + ACCEPT.encode() + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status_line = head_bytes.split(b"\r\n", 1)[0]
    if not status_line.startswith(b"HTTP/1.1 "):
        return None, data[:200]
    return int(status_line.split()[1]), body


def h2_request(mirror, path, user_agent, method=b"GET", timeout=10):
    """One HTTP/2 request with prior knowledge; :path is sent as given. Returns (status, body);
    status None when Envoy reset the stream or closed the connection instead."""
    host, port = mirror.rsplit(":", 1)
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                       normalize_outbound_headers=False, validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(b":method", method), (b":scheme", b"http"), (b":authority", mirror.encode()),
                                   (b":path", path), (b"user-agent", user_agent.encode()), (b"accept", ACCEPT.encode())],
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body = None, b""
        while True:
            data = sock.recv(65536)
            if not data:
                return status, body
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return status, body
            sock.sendall(conn.data_to_send())


def oci_code(body):
    try:
        return json.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def wasm_stats(admin_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats?filter=^wasm", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {name: int(value) for name, _, value in (line.partition(": ") for line in lines) if value.isdigit()}


def registry_uris_by_agent(log_path):
    seen = {}
    with open(log_path) as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            agent = entry.get("http.request.useragent", "")
            if agent.startswith("hostile-"):
                seen.setdefault(agent, []).append(entry.get("http.request.uri", ""))
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", required=True)
    parser.add_argument("--admin-port", required=True, type=int)
    parser.add_argument("--registry-log", required=True)
    parser.add_argument("--project", action="append", required=True, help="a configured project")
    args = parser.parse_args()

    before = wasm_stats(args.admin_port)
    run_id = f"{int(time.time() * 1000) % 10**8}"
    results = []  # (label, agent, ok, detail, may_reach)

    def record(label, agent, got, status, code, may_reach):
        got_status, body = got
        got_code = oci_code(body)
        ok = got_status == status and (code is None or got_code == code)
        if ok and status >= 400 and code is None:
            # Envoy's own refusal: any body, but it must be a refusal.
            ok = got_status == status
        detail = f"{got_status} {got_code or ''}".strip()
        if status >= 400 and got_code is not None:
            detail += f": {json.loads(body)['errors'][0]['message'][:100]}"
        results.append((label, agent, ok, f"expected {status} {code or ''}, got {detail}", may_reach))

    n = 0
    for name, path, status, code, may_reach in PATH_ROWS:
        for proto in ("HTTP/1.1", "HTTP/2"):
            n += 1
            agent = f"hostile-{run_id}-{n}"
            label = f"{proto} {name}"
            try:
                if proto == "HTTP/1.1":
                    head = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + args.mirror.encode() + b"\r\nUser-Agent: %s\r\n"
                    if name == "a push":
                        head = head.replace(b"GET ", b"POST ", 1) + b"Content-Length: 0\r\n"
                    got = h1_request(args.mirror, head, agent)
                else:
                    got = h2_request(args.mirror, path.encode(), agent, method=b"POST" if name == "a push" else b"GET")
            except OSError as e:
                got = (None, str(e).encode())
            record(label, agent, got, status, code, may_reach)
    for name, head, status, code, may_reach in raw_rows(args.mirror):
        n += 1
        agent = f"hostile-{run_id}-{n}"
        try:
            got = h1_request(args.mirror, head, agent)
        except OSError as e:
            got = (None, str(e).encode())
        record(f"HTTP/1.1 {name}", agent, got, status, code, may_reach)
    # HTTP/2 :path values the HTTP/1.1 request line cannot carry.
    for name, path, status in [("raw CR LF in :path", b"/v2/library/alpine\r\nx: 1/manifests/3.19", None),
                               ("raw NUL in :path", b"/v2/library/al\x00pine/manifests/3.19", None),
                               ("space in :path", b"/v2/library/al pine/manifests/3.19", None),
                               ("invalid UTF-8 in :path", b"/v2/library/\xff\xfe/manifests/3.19", None),
                               (":path without a leading slash", b"v2/library/alpine/manifests/3.19", None)]:
        n += 1
        agent = f"hostile-{run_id}-{n}"
        try:
            got_status, body = h2_request(args.mirror, path, agent)
        except OSError as e:
            got_status, body = None, str(e).encode()
        # Envoy's HTTP/2 codec resets such a stream or answers 400; the filter never sees it,
        # or refuses it. Either way it must not be a success.
        ok = got_status is None or 400 <= got_status < 500
        results.append((f"HTTP/2 {name}", agent, ok, f"expected a reset or 4xx, got {got_status} {oci_code(body) or ''}", False))

    time.sleep(1)  # the registry writes its log asynchronously
    reached = registry_uris_by_agent(args.registry_log)
    failed = 0
    for label, agent, ok, detail, may_reach in results:
        uris = reached.get(agent, [])
        outside = [u for u in uris if not any(u.startswith(f"/v2/{p}/") for p in args.project)]
        if uris and not may_reach:
            ok, detail = False, f"{detail}; but the registry received {uris}"
        elif outside:
            ok, detail = False, f"{detail}; the registry received {outside}, outside {args.project}"
        print(f"{'ok' if ok else 'FAIL'}: {label}: {detail}" + (f" -> {uris[0]}" if uris else ""))
        failed += not ok

    # Envoy still serves, and no VM failed.
    status, _ = h1_request(args.mirror, b"GET " + GOOD.encode() + b" HTTP/1.1\r\nHost: " + args.mirror.encode() + b"\r\nUser-Agent: %s\r\n", "after")
    print(f"{'ok' if status == 200 else 'FAIL'}: a pull after the hostile requests answers {status}")
    failed += status != 200
    after = wasm_stats(args.admin_port)
    changed = [f"{name} went from {before.get(name, 0)} to {value}" for name, value in sorted(after.items())
               if ("reload" in name or "fail" in name) and value != before.get(name, 0)]
    shown = ", ".join(f"{k}={v}" for k, v in sorted(after.items()) if "reload" in k or "active" in k)
    print(f"FAIL: a wasm VM failed: {'; '.join(changed)}" if changed else f"ok: no wasm VM failed: {shown}")
    failed += len(changed)
    print(f"hostile: {len(results)} rows, {failed} failures")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
