#!/usr/bin/env python3
"""The upstreams of tests/smoke.sh: an HTTP server on 127.0.0.1 that records what it was asked.

usage: smoke_upstream.py NAME PORT LOG

Every request appends one line to LOG: `NAME METHOD PATH` followed by the x-smoke-* and x-multi
headers it received (`name=value`, in order) and `body=BODY` if it had one (GET or POST). It answers 200 with `x-smoke-response: original`
and a body naming itself and the path: `/answer` gets `callout-answer`, `/config-answer` gets
`config-answer`.
"""
import http.server
import sys

NAME, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        seen = [f"{k.lower()}={v}" for k, v in self.headers.items()
                if k.lower().startswith("x-smoke-") or k.lower() == "x-multi"]
        length = int(self.headers.get("content-length") or 0)
        if length:
            seen.append(f"body={self.rfile.read(length).decode(errors='replace')}")
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(" ".join([NAME, self.command, self.path] + seen) + "\n")
        if self.path == "/answer":
            body = b"callout-answer"
        elif self.path == "/config-answer":
            body = b"config-answer"
        else:
            body = f"{NAME} saw {self.path}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("x-smoke-response", "original")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
