#!/usr/bin/env python3
"""Harbor 2.x's authentication, in front of a plain CNCF Distribution registry (test fixture).

The end-to-end suite has no Harbor, only `docker-registry`, which serves without any
authentication. This server stands in front of it and answers the way Harbor does, so that real
clients go through the same token dance they would go through against Harbor:

* `GET /v2/` without credentials gets 401 and a Bearer challenge whose realm is this server's
  `/service/token`; a valid token or valid robot Basic credentials get 200; an Authorization
  header it cannot use gets 401 `Basic realm="harbor"`.
* `GET /service/token?scope=repository:<name>:pull,push` issues a JWT-shaped HS256 token (signed
  with a secret drawn at every start) whose `access` holds only what Harbor would grant: `pull`
  on a public project to anyone, anonymous callers included; `pull` on a private project and
  `push` on a non-proxy project to a robot account that has the project; never `push` on a
  proxy-cache project, never `*`, nothing for single-segment names or unknown projects. Scopes
  that grant nothing are left out, not refused. Wrong Basic credentials get 401, and every method
  but GET gets 405 (containerd tries POST first, then falls back to GET).
* `/v2/<name>/(manifests|blobs|tags|referrers)/...` needs `pull` (GET, HEAD) or `push` (anything
  else) on the name's project, the first path segment. Like Harbor, a token authorizes the whole
  project it was granted on (a token for `p/a` opens `p/b`). Anonymous requests are always
  challenged, even on public projects; an Authorization header that does not authorize gets
  `Basic realm="harbor"`; a push to a proxy-cache project gets 403 `DENIED` before anything else.
  What is authorized is forwarded to the registry unchanged (method, path, query, headers but
  Authorization and hop-by-hop ones, the client's Host) and streamed both ways.

Every request is appended to the JSON-lines log (one object a line, written before the response
goes out) which the suite asserts on; passwords and tokens are never logged.

Usage: python3 tests/harbor_auth.py CONFIG.json, a JSON object with `listen` (host:port),
`registry` (the registry's base URL), `external_url` (this server as clients reach it: the token
realm), `log` (the JSON-lines file), `projects` (name -> {"public": bool, "proxy": bool}), `robots`
(name -> {"password": ..., "projects": [...]}), `token_seconds`, and, as a test knob Harbor does
not have, `token_delay` (project -> seconds to wait before answering its token requests). It prints
`harbor_auth listening on <listen>` once the socket is bound and serves until SIGTERM or SIGINT.
"""
import base64
import binascii
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE = "harbor-registry"
ISSUER = "harbor-token-issuer"
COPY_CHUNK = 64 * 1024
DRAIN_LIMIT = 1024 * 1024  # an unused request body up to this size is read, not left behind
FORM_LIMIT = 64 * 1024
REGISTRY_TIMEOUT = 120
HOP_BY_HOP = {"connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding",
              "upgrade"}
REPOSITORY_ROUTES = ("/manifests/", "/blobs/", "/tags/", "/referrers/")


# Tokens ------------------------------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact_json(value):
    return json.dumps(value, separators=(",", ":"))


def sign(secret, signing_input):
    return b64url(hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest())


def make_token(secret, subject, access, issued_at, seconds):
    header = b64url(compact_json({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": issued_at + seconds,
              "iat": issued_at, "access": access}
    signing_input = header + "." + b64url(compact_json(claims).encode())
    return signing_input + "." + sign(secret, signing_input)


def verify_token(secret, token):
    """The token's claims if its signature checks and it has not expired, else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    signing_input = parts[0] + "." + parts[1]
    if not hmac.compare_digest(sign(secret, signing_input), parts[2]):
        return None
    try:
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
        return None
    return claims if claims["exp"] > time.time() else None


# Harbor's rules ----------------------------------------------------------------------------------

def project_of(name):
    """The project of a repository name: its first segment; None for a single-segment name."""
    project, slash, _ = name.partition("/")
    return project if slash and project else None


def repository_name(path):
    """The repository of /v2/<name>/(manifests|blobs|tags|referrers)/..., or None."""
    rest = path[len("/v2/"):]
    end = max(rest.rfind(route) for route in REPOSITORY_ROUTES)
    return rest[:end] if end > 0 else None


def parse_scope(scope):
    """(type, name, actions) of `type:name:actions`, the name keeping any ':'; None if malformed."""
    kind, _, rest = scope.partition(":")
    name, colon, actions = rest.rpartition(":")
    if not colon:
        return None
    return kind, name, [action for action in actions.split(",") if action]


def requested_scopes(pairs):
    """Every `scope` value of the parameters, each split on spaces."""
    return [scope for key, value in pairs if key == "scope" for scope in value.split()]


class Caller:
    """Who sent a request, from its Authorization header."""

    def __init__(self, auth, robot=None, access=None):
        self.auth = auth      # the log's "auth" field
        self.robot = robot    # the robot account, for valid Basic credentials
        self.access = access  # the token's access list, for a valid Bearer token

    @property
    def authenticated(self):
        return self.robot is not None or self.access is not None


class Fixture:
    """The configuration, the token secret and the log, shared by every request."""

    def __init__(self, config):
        self.listen = config["listen"]
        self.registry = urllib.parse.urlsplit(config["registry"])
        self.realm = config["external_url"].rstrip("/") + "/service/token"
        self.projects = config.get("projects", {})
        self.robots = config.get("robots", {})
        self.token_seconds = int(config.get("token_seconds", 1800))
        # Test knob, not Harbor: seconds to wait before answering token requests for a project.
        self.token_delay = config.get("token_delay", {})
        self.secret = os.urandom(32)
        self.log = JsonLog(config["log"])

    def identify(self, header):
        if header is None:
            return Caller("none")
        scheme, _, credentials = header.strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "basic":
            return self.basic_caller(credentials)
        if scheme == "bearer":
            claims = verify_token(self.secret, credentials)
            if claims is None:
                return Caller("bearer-invalid")
            access = claims.get("access")
            return Caller("bearer:" + str(claims.get("sub", "")),
                          access=access if isinstance(access, list) else [])
        return Caller("other")

    def basic_caller(self, credentials):
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (ValueError, binascii.Error):
            return Caller("basic-invalid")
        user, colon, password = decoded.partition(":")
        robot = self.robots.get(user)
        if not colon or robot is None or not hmac.compare_digest(
                password.encode(), str(robot.get("password", "")).encode()):
            return Caller("basic-invalid")
        return Caller("basic:" + user, robot=user)

    def is_proxy(self, project):
        return bool(self.projects.get(project, {}).get("proxy"))

    def allowed_actions(self, robot, project):
        """What Harbor lets a robot (None: anonymous) do on a project."""
        settings = self.projects.get(project) if project else None
        if settings is None:
            return set()
        member = robot is not None and project in self.robots[robot].get("projects", [])
        allowed = set()
        if settings.get("public") or member:
            allowed.add("pull")
        if member and not settings.get("proxy"):
            allowed.add("push")
        return allowed

    def grant(self, robot, scopes):
        """The token's access list: the requested actions Harbor grants, scope by scope."""
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None or parsed[0] != "repository":
                continue
            _, name, actions = parsed
            allowed = self.allowed_actions(robot, project_of(name))
            granted = list(dict.fromkeys(action for action in actions if action in allowed))
            if granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        return access

    def may(self, caller, project, action):
        """Whether the caller may do action on a repository of project."""
        if caller.access is not None:
            return any(isinstance(entry, dict) and entry.get("type") == "repository"
                       and project_of(str(entry.get("name", ""))) == project
                       and action in entry.get("actions", []) for entry in caller.access)
        if caller.robot is not None:
            return action in self.allowed_actions(caller.robot, project)
        return False

    def registry_connection(self):
        https = self.registry.scheme == "https"
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        return kind(self.registry.hostname, self.registry.port, timeout=REGISTRY_TIMEOUT)


class JsonLog:
    """Appends one JSON object a line, flushed at once; safe across threads."""

    def __init__(self, path):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")

    def write(self, record):
        line = json.dumps(record) + "\n"
        with self.lock:
            self.file.write(line)
            self.file.flush()


# Errors ------------------------------------------------------------------------------------------

def error_body(code, message, **extra):
    return {"errors": [dict({"code": code, "message": message}, **extra)]}


UNAUTHORIZED = error_body("UNAUTHORIZED", "unauthorized: authentication required", detail=None)
BASIC_CHALLENGE = 'Basic realm="harbor"'


# HTTP framing helpers ----------------------------------------------------------------------------

def connection_tokens(headers):
    """Header names a Connection header declares hop-by-hop."""
    tokens = set()
    for value in headers.get_all("Connection") or []:
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def is_hop_by_hop(name, declared):
    name = name.lower()
    return name in HOP_BY_HOP or name.startswith("proxy-") or name in declared


def read_exactly(rfile, length):
    """Yields the next length bytes of rfile in pieces."""
    while length > 0:
        piece = rfile.read(min(COPY_CHUNK, length))
        if not piece:
            raise ConnectionError("request body ended early")
        length -= len(piece)
        yield piece


def read_chunked(rfile):
    """Yields the data of a chunked body, then consumes its trailer."""
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise ConnectionError("bad chunk size line")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ConnectionError("bad chunk size line") from None
        if size == 0:
            break
        yield from read_exactly(rfile, size)
        if rfile.readline(3).strip():
            raise ConnectionError("chunk not followed by CRLF")
    while rfile.readline(65537).strip():
        pass  # trailer fields are dropped


# The handler -------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "harbor_auth"
    timeout = 300  # idle keep-alive connections are dropped after this

    def handle_any(self):
        fixture = self.server.fixture
        self.body_consumed = False
        path, _, query = self.path.partition("?")
        caller = fixture.identify(self.headers.get("Authorization"))
        record = {"method": self.command, "path": path, "query": query, "auth": caller.auth,
                  "status": None, "scopes": [], "granted": []}
        try:
            if path == "/service/token":
                self.token(record, caller, query)
            elif path in ("/v2", "/v2/"):
                self.ping(record, caller)
            elif path.startswith("/v2/"):
                self.repository(record, caller, path)
            else:
                self.reply(record, 404, error_body("NOT_FOUND", "not found"))
        except OSError:  # the client went away, or sent a body that cannot be read
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any

    def log_request(self, code="-", size="-"):
        pass  # the JSON log has every request; stderr keeps only errors

    # Routes

    def token(self, record, caller, query):
        fixture = self.server.fixture
        if self.command != "GET":
            if self.command == "POST":
                record["scopes"] = self.form_scopes()
            self.reply(record, 405, error_body("UNSUPPORTED", "method not allowed"))
            return
        record["scopes"] = requested_scopes(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if caller.auth == "basic-invalid":
            self.reply(record, 401, error_body("UNAUTHORIZED", "authentication failed"))
            return
        delays = [fixture.token_delay.get(project_of(parsed[1]), 0)
                  for parsed in map(parse_scope, record["scopes"]) if parsed]
        if delays and max(delays) > 0:
            time.sleep(max(delays))
        access = fixture.grant(caller.robot, record["scopes"])
        record["granted"] = [entry["name"] + ":" + ",".join(entry["actions"]) for entry in access]
        now = int(time.time())
        token = make_token(fixture.secret, caller.robot or "", access, now, fixture.token_seconds)
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self.reply(record, 200, {"token": token, "access_token": token,
                                 "expires_in": fixture.token_seconds, "issued_at": issued_at})

    def ping(self, record, caller):
        if caller.auth == "none":
            self.reply(record, 401, UNAUTHORIZED, self.bearer_challenge())
        elif caller.authenticated:
            self.reply(record, 200, {}, api_version=True)
        else:
            self.reply(record, 401, UNAUTHORIZED, BASIC_CHALLENGE)

    def repository(self, record, caller, path):
        fixture = self.server.fixture
        name = repository_name(path)
        if name is None:
            self.reply(record, 404, error_body("NOT_FOUND", "not found"))
            return
        project = project_of(name)
        action = "pull" if self.command in ("GET", "HEAD") else "push"
        if action == "push" and fixture.is_proxy(project):
            message = "can not push artifact to a proxy project: " + project
            self.reply(record, 403, error_body("DENIED", message), api_version=True)
        elif fixture.may(caller, project, action):
            self.forward(record)
        elif caller.auth == "none":
            scope = "repository:%s:%s" % (name, "pull" if action == "pull" else "pull,push")
            self.reply(record, 401, UNAUTHORIZED, self.bearer_challenge(scope))
        else:
            self.reply(record, 401, UNAUTHORIZED, BASIC_CHALLENGE)

    def bearer_challenge(self, scope=None):
        challenge = 'Bearer realm="%s",service="%s"' % (self.server.fixture.realm, SERVICE)
        return challenge + (',scope="%s"' % scope if scope else "")

    # Local replies

    def reply(self, record, status, body, challenge=None, api_version=None):
        """Sends a JSON reply of our own, after logging it."""
        self.discard_body()
        record["status"] = status
        self.server.fixture.log.write(record)
        data = compact_json(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if challenge:
            self.send_header("WWW-Authenticate", challenge)
        if api_version or (api_version is None and record["path"].startswith("/v2")):
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def body_framing(self):
        """("chunked", None), ("length", n) or (None, 0) for the request body."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return "chunked", None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            raise ConnectionError("bad Content-Length")
        return ("length", length) if length else (None, 0)

    def request_body(self):
        """The request body as an iterator of pieces, or None if there is none."""
        framing, length = self.body_framing()
        self.body_consumed = True
        if framing == "chunked":
            return read_chunked(self.rfile)
        if framing == "length":
            return read_exactly(self.rfile, length)
        return None

    def discard_body(self):
        """Reads away a small unused request body, or ends the connection after the reply."""
        if self.body_consumed:
            return
        try:
            framing, length = self.body_framing()
        except ConnectionError:
            framing, length = "bad", None
        self.body_consumed = True
        if framing == "length" and length <= DRAIN_LIMIT:
            for _ in read_exactly(self.rfile, length):
                pass
        elif framing is not None:
            self.close_connection = True

    def form_scopes(self):
        """The scopes of a small form-encoded POST body (containerd's OAuth request)."""
        framing, length = self.body_framing()
        if framing != "length" or length > FORM_LIMIT:
            return []
        self.body_consumed = True
        form = b"".join(read_exactly(self.rfile, length)).decode("utf-8", "replace")
        return requested_scopes(urllib.parse.parse_qsl(form, keep_blank_values=True))

    # Forwarding

    def forwarded_headers(self, chunked):
        declared = connection_tokens(self.headers)
        skip = {"authorization", "expect"} | ({"content-length"} if chunked else set())
        headers = [(name, value) for name, value in self.headers.items()
                   if not is_hop_by_hop(name, declared) and name.lower() not in skip]
        if "Host" not in self.headers:
            headers.append(("Host", self.server.fixture.registry.netloc))
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        return headers

    def forward(self, record):
        """Sends the request on to the registry and its response back, streaming both."""
        chunked = self.body_framing()[0] == "chunked"
        body = self.request_body()
        connection = self.server.fixture.registry_connection()
        try:
            try:
                self.send_upstream(connection, self.forwarded_headers(chunked), body, chunked)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                if body is not None:
                    self.close_connection = True  # the request body may be half read
                message = "registry unreachable: %s" % error
                self.reply(record, 502, error_body("BAD_GATEWAY", message))
                return
            record["status"] = response.status
            self.server.fixture.log.write(record)
            self.relay(response)
        finally:
            connection.close()

    def send_upstream(self, connection, headers, body, chunked):
        connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        for piece in body or ():
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            connection.send(b"0\r\n\r\n")

    def relay(self, response):
        self.send_response_only(response.status, response.reason)
        declared = connection_tokens(response.msg)
        for name, value in response.getheaders():
            if not is_hop_by_hop(name, declared):
                self.send_header(name, value)
        if self.command == "HEAD" or response.status in (204, 304) or response.status < 200:
            self.end_headers()
            return
        if response.length is not None:
            self.end_headers()
            self.copy_body(response, chunked=False)
        elif self.request_version != "HTTP/1.0":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.copy_body(response, chunked=True)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Connection", "close")
            self.end_headers()
            self.copy_body(response, chunked=False)

    def copy_body(self, response, chunked):
        while True:
            try:
                piece = response.read(COPY_CHUNK)
            except (OSError, http.client.HTTPException):
                raise ConnectionError("registry response ended early") from None
            if not piece:
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)


# The server --------------------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fixture):
        self.fixture = fixture
        host, _, port = fixture.listen.rpartition(":")
        if host.startswith("["):
            self.address_family = socket.AF_INET6
            host = host.strip("[]")
        super().__init__((host, int(port)), Handler)

    def server_bind(self):
        # HTTPServer.server_bind would resolve the host's FQDN, which can stall on a test machine.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class Stop(Exception):
    pass


def stop(signum, frame):
    raise Stop()


def main(argv):
    if len(argv) != 2:
        print("usage: %s CONFIG.json" % argv[0], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        fixture = Fixture(json.load(f))
    server = Server(fixture)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        print("harbor_auth listening on " + fixture.listen, flush=True)
        server.serve_forever()
    except Stop:
        pass
    finally:
        server.server_close()  # handler threads are daemons: exiting does not wait for them
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
