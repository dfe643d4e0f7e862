#!/usr/bin/env python3
"""Harbor 2.x as the mirror meets it, in front of a plain CNCF Distribution registry (test fixture).

The end-to-end suite has no Harbor, only `docker-registry`, which serves without any
authentication. This server stands in front of it and answers the way Harbor's source does
(goharbor/harbor, paths under src/), so that real clients go through the same exchanges they
would with Harbor, and the filter is tested against what Harbor really says:

* Before any auth, as the global middlewares do: a query Go cannot parse (`;`, a bad escape) is
  400 `BAD_REQUEST` (`server/middleware/url`); repeated slashes are merged (`mergeslash`); a
  repository path whose name has one segment is 400 `BAD_REQUEST` "bad request: invalid
  repository name: <name>", an invalid manifest reference 404 `NOT_FOUND` (`artifactinfo`).
* Who is calling (`server/middleware/security`): a Bearer token, on /v2 paths only; a robot's
  Basic credentials; anything else, wrong Basic credentials included, is anonymous, and a wrong
  Basic login first costs the failed-login delay (`core/auth`, 1.5 s).
* `/service/token` (`core/service/token`): GET only (405 otherwise); `service` must be
  `harbor-registry` (else 400, plain text "Unable to handle service: X"); repeated and
  space-separated `scope`s; anonymous without scope is 401. The token lists every scope asked
  for, each with every action the caller's role allows on its project whatever was asked, and
  empty actions for unknown projects, single-segment names and other resource types. The answer
  is `{"token", "access_token": "", "expires_in", "issued_at"}`. Tokens are JWTs whose claims
  hold `iss`, `sub` (left out for an anonymous caller), `aud`, `exp`, `nbf`, `iat`, `jti` and
  `access` (Harbor signs RS256; this fixture signs HS256 with a secret drawn at every start), or,
  with `"token_format": "opaque"` (a token service whose tokens the mirror cannot read), random
  strings this server remembers.
* Every /v2 request (`server/middleware/v2auth`): `/v2/` needs an authenticated caller;
  `/v2/_catalog` a system admin (there is none here: always `Basic realm="harbor"`); a
  repository GET or HEAD without Authorization is challenged at once; otherwise an unknown
  project is 401 with an empty `Www-Authenticate`, and an action the caller may not do is
  challenged: `Bearer realm=...,service="harbor-registry",scope="repository:<name>:<pull | pull,push
  | delete>"` without Authorization, `Basic realm="harbor"` with one. The realm is the external
  URL's scheme with the request's Host (`harbor_version` "2.14", the default), or the external
  URL itself ("2.11", as 2.11 to 2.13 do). The 401 body is `{"errors":[{"code":"UNAUTHORIZED",
  "message":"<cause>: <cause>"}]}` (Harbor's error wrapping writes the cause twice), typed
  `application/json; charset=utf-8`, with `Docker-Distribution-Api-Version`.
* Proxy-cache projects (`server/middleware/repoproxy`): for a Docker Hub project (`"proxy":
  "docker-hub"`), `<project>/<single>` is 301 to `/v2/<project>/library/<single>/...` on GET and
  HEAD manifests, GET blobs and GET tags/list only, the query dropped; a PUT manifest or POST
  blob upload to any proxy project by a caller allowed to push is 403 `DENIED` "denied: can not
  push artifact to a proxy project: <project>".
* Tag lists are Harbor's own (`server/registry/util`): sorted, paged by `n` and `last`, with
  `Link: </v2/<name>/tags/list?last=<tag>&n=<n>>; rel="next"`; the name is Harbor's.
* The project API (`server/v2.0/handler/project.go`, `lib/q`): `GET /api/v2.0/projects` lists
  what the caller may see (anonymous and wrong credentials: public projects; a robot: public ones
  and its own), filtered by `q` (`key=value`, `key=[min~max]`, `key=~fuzzy`; unknown keys are
  ignored) and `name`, sorted by name unless `sort` says otherwise, paged by `page` and
  `page_size` (10 by default, 422 past 100), with `X-Total-Count` and `Link` (its query
  unescaped, as Harbor writes it). `GET /api/v2.0/projects/{name}/summary` needs read on the
  project (anonymous: 401, a robot without it: 403, unknown: 404) and gives a proxy-cache
  project's `registry` (`type`, `url`). `/api` takes Basic credentials, never tokens.
* The proxy cache and its upstream (`server/middleware/repoproxy/proxy.go`,
  `controller/proxy/{controller,manifestcache,local}.go`, `pkg/registry/client.go`), for a proxy
  project given an `upstream_registry` (a second registry standing for the upstream, holding its
  repositories without the project prefix; the registry above is Harbor's storage). A manifest
  GET or HEAD: by digest and stored, from storage; otherwise the upstream is asked with a HEAD
  first (Harbor's own Accept list, never the client's), and a failed HEAD fails the request: 429
  `TOO_MANY_REQUEST` (or from storage, when stored), 404 `NOT_FOUND` "resource not found: repo R,
  tag T not found", anything else 500 `UNKNOWN` "internal server error", even when stored. Then a
  manifest list or index Harbor cached by digest (its redis cache, filled right after the list's
  first GET) is served from that cache; a stored manifest whose digest the HEAD confirms, from
  storage; else a HEAD asks the upstream again and answers with its descriptor, and a GET fetches
  the manifest from the upstream and relays it with an empty `Docker-Content-Digest` when asked
  by tag; a failure of that second call falls back to storage (404 but for 429 and not found).
  What a GET fetched is stored in the background: a list after its manifests are stored, a
  manifest after its blobs are (checked every `store_poll_seconds`, Harbor's 20, `store_polls`
  times, 10 for a manifest and 20 for a list; then the missing blobs are fetched and stored, then
  the manifest by digest and by tag). A blob GET: stored, from storage; else streamed from the
  upstream while a second download runs in the background to store it (a store already under way
  for the same blob skips its push, not its download); a blob HEAD only ever asks storage. Every
  call to the upstream is one line of the `upstream_log` (`method`, `kind`, `repository`,
  `reference`, `purpose`: check, head, pull or store, `status`: null when the connection failed).
* Test controls Harbor does not have, under `/_model/`: `POST /_model/projects` adds a project
  (`{"name", "public", "proxy", "upstream", "project_id"}`), `DELETE /_model/projects/<name>`
  removes one, `POST /_model/api` with `{"status": 503}` makes the project API answer that
  (`{"status": null}` heals it), `POST /_model/upstream` with `{"status": 503}` (or 429) makes the
  upstream answer that, `{"down": true}` refuses its connections, `{"delay": 0.5}` makes each of
  its calls take that much longer (`{"status": null, "down": false, "delay": 0}` heals it).
  Everything else authorized is forwarded to the registry unchanged (method, path, query,
  headers but Authorization and hop-by-hop ones, the client's Host) and streamed both ways.

Every request is appended to the JSON-lines log (one object a line, written before the response
goes out) which the suite asserts on: who called (`auth`), whether a `Cookie` or
`Proxy-Authorization` arrived, the scopes asked and what was granted, and for a token POST the
form's `username` (`form_username`). Passwords and tokens are never logged.

Usage: python3 tests/harbor_auth.py CONFIG.json, a JSON object with `listen` (host:port), `name`
(the log's `harbor` field, for several of these writing one log),
`registry` (the registry's base URL), `external_url` (Harbor's configured external URL),
`harbor_version` ("2.14" or "2.11": the realm rule), `log` (the JSON-lines file), `projects`
(name -> {"public": bool, "proxy": registry type such as "docker-hub" or "quay", absent for a
normal project}), `robots` (name -> {"password": ..., "access": {project: [actions]}}),
`token_format` ("jwt" or "opaque"), `token_seconds`, `failed_login_delay` (seconds, default 1.5),
each project may also have `upstream` (its proxy cache's registry URL; a default by type),
`project_id` and `upstream_registry` (see the proxy cache above), with `upstream_log` (default:
the log's path with `.upstream`), `upstream_delay`, `store_poll_seconds` and `store_polls`,
and, as a test knob Harbor does not have, `token_delay` (project -> seconds to wait before
answering its token requests). It prints `harbor_auth listening on <listen>` once the socket is
bound and serves until SIGTERM or SIGINT.
"""
import base64
import binascii
import hashlib
import hmac
import html
import http.client
import json
import os
import re
import secrets
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
ROBOT_PREFIX = "robot$"
COPY_CHUNK = 64 * 1024
DRAIN_LIMIT = 1024 * 1024  # an unused request body up to this size is read, not left behind
FORM_LIMIT = 64 * 1024
REGISTRY_TIMEOUT = 120
HOP_BY_HOP = {"connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding",
              "upgrade"}
# The actions a token can carry (core/service/token's actionScopeMap, but scanner-pull).
ACTIONS = ("pull", "push", "delete")
# v2auth's action for each method; any other method is an "un-recognized request".
METHOD_ACTIONS = {"GET": "pull", "HEAD": "pull", "POST": "push", "PATCH": "push", "PUT": "push",
                  "DELETE": "delete"}
# v2auth's challenge scope for each action.
CHALLENGE_ACTIONS = {"pull": "pull", "push": "pull,push", "delete": "delete"}
# The URL Harbor's registry endpoints of these types have by default.
DEFAULT_UPSTREAMS = {"docker-hub": "https://hub.docker.com", "quay": "https://quay.io", "github-ghcr": "https://ghcr.io"}
API_PREFIX = "/api/v2.0/projects"
# What Harbor's registry client accepts (pkg/registry/client.go `accepts`), for every upstream
# manifest call whatever the client asked for.
MANIFEST_ACCEPTS = ("application/vnd.docker.distribution.manifest.v1+prettyjws",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.oci.image.manifest.v1+json")
LIST_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")


# Harbor's URL patterns (lib/patterns.go, with distribution's name and digest grammars) ---------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
_NAME = "(?P<repository>" + _DOMAIN + _COMPONENT + "(?:/" + _COMPONENT + ")*)"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST_RE = re.compile(_DIGEST + r"\Z")
URL_PATTERNS = {
    "manifest": re.compile(r"^/v2/" + _NAME + r"/manifests/(?P<reference>.*)$"),
    "tag_list": re.compile(r"^/v2/" + _NAME + r"/tags/list"),
    "blob_upload": re.compile(r"^/v2/" + _NAME + r"/blobs/uploads[/a-zA-Z0-9\-_.=]*$"),
    "blob": re.compile(r"^/v2/" + _NAME + r"/blobs/(?P<digest>" + _DIGEST + r")$"),
    "referrers": re.compile(r"^/v2/" + _NAME + r"/referrers/(?P<reference>.*)$"),
}
CATALOG = re.compile(r"^/v2/_catalog(/.*)?$")


class ArtifactInfo:
    """What artifactinfo reads off a /v2 path: the route kind, repository and project."""

    def __init__(self, kind, repository, reference=None):
        self.kind = kind
        self.repository = repository
        self.project = repository.split("/", 1)[0]
        self.reference = reference


class HarborError(Exception):
    """An error Harbor answers with lib/http.SendError: status, code, message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def artifact_info(path):
    """artifactinfo's reading of a path: None when it is no artifact route."""
    for kind, pattern in URL_PATTERNS.items():
        match = pattern.match(path)
        if not match:
            continue
        repository = match.group("repository")
        if "/" not in repository:
            raise HarborError(400, "BAD_REQUEST", "bad request: invalid repository name: " + repository)
        reference = match.groupdict().get("reference")
        if reference is not None and not (_DIGEST_RE.match(reference) or _TAG.match(reference)):
            raise HarborError(404, "NOT_FOUND", "invalid reference format")
        return ArtifactInfo(kind, repository, reference or match.groupdict().get("digest"))
    return None


def check_query(raw_query):
    """Go's url.ParseQuery, as the url middleware runs it: its error, or None."""
    for pair in raw_query.split("&"):
        if ";" in pair:
            return "invalid semicolon separator in query"
        for part in pair.split("=", 1):
            bad = re.search(r"%(?![0-9a-fA-F]{2})(.{0,2})", part)
            if bad:
                return "invalid URL escape %s" % json.dumps("%" + bad.group(1))
    return None


def parse_q(q):
    """lib/q's keywords: `k=v,k=[a~b],k=~fuzzy`, the value unescaped first."""
    keywords = {}
    if not q:
        return keywords
    for param in urllib.parse.unquote(q).split(","):
        key, eq, value = param.partition("=")
        if not eq or not key or not value:
            raise HarborError(400, "BAD_REQUEST", 'the query string must contain "=" and the key/value cannot be empty')
        keywords[key] = value
    return keywords


def matches(actual, pattern):
    """Whether a field value matches a lib/q pattern."""
    if pattern.startswith("[") and pattern.endswith("]") and "~" in pattern:
        low, _, high = pattern[1:-1].partition("~")
        try:
            value = float(actual)
        except (TypeError, ValueError):
            return False
        return (not low or value >= float(low)) and (not high or value <= float(high))
    if pattern.startswith("~"):
        return pattern[1:] in str(actual)
    if isinstance(actual, bool):
        return pattern.lower() == str(actual).lower()
    return str(actual) == pattern


# Tokens ------------------------------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact_json(value):
    return json.dumps(value, separators=(",", ":"))


def sign(secret, signing_input):
    return b64url(hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest())


def parse_scopes(pairs):
    """Every `scope` value of the parameters, each split on spaces (token.parseScopes)."""
    return [scope for key, value in pairs if key == "scope" for scope in value.split(" ")]


def resource_actions(scope):
    """GetResourceActions for one scope: {"type", "name", "actions"}; None for an empty one."""
    if scope == "":
        return None
    items = scope.split(":")
    if len(items) == 1:
        return {"type": items[0], "name": "", "actions": []}
    if len(items) == 2:
        return {"type": items[0], "name": items[1], "actions": []}
    actions = items[-1].split(",") if items[-1] else []
    return {"type": items[0], "name": ":".join(items[1:-1]), "actions": actions}


class Caller:
    """Who sent a request (a security context), from its Authorization header."""

    def __init__(self, auth, robot=None, subject=None, access=None):
        self.auth = auth        # the log's "auth" field
        self.robot = robot      # the robot account, for its valid Basic credentials
        self.subject = subject  # a Bearer token's `sub`
        self.access = access    # a Bearer token's access map: project -> actions

    @property
    def authenticated(self):
        return self.robot is not None or bool(self.subject)

    @property
    def username(self):
        return self.robot or self.subject or ""


class Fixture:
    """The configuration, the token secret and the log, shared by every request."""

    def __init__(self, config):
        self.listen = config["listen"]
        self.name = config.get("name", "harbor")
        self.registry = urllib.parse.urlsplit(config["registry"])
        self.external_url = config["external_url"].rstrip("/")
        self.version = str(config.get("harbor_version", "2.14"))
        if self.version not in ("2.14", "2.11"):
            raise SystemExit("harbor_version: 2.14 or 2.11, not %r" % self.version)
        self.projects = config.get("projects", {})
        self.robots = config.get("robots", {})
        self.projects_lock = threading.Lock()
        self.next_project_id = 2  # 1 is Harbor's own `library`
        for name in sorted(self.projects):
            self.number(name, self.projects[name])
        self.api_failure = None  # test knob: the status the project API answers with
        self.token_format = config.get("token_format", "jwt")
        if self.token_format not in ("jwt", "opaque"):
            raise SystemExit("token_format: jwt or opaque, not %r" % self.token_format)
        self.token_seconds = int(config.get("token_seconds", 1800))
        self.failed_login_delay = float(config.get("failed_login_delay", 1.5))
        # Test knob, not Harbor: seconds to wait before answering token requests for a project.
        self.token_delay = config.get("token_delay", {})
        self.secret = os.urandom(32)
        self.kid = b64url(os.urandom(12))
        self.opaque = {}  # opaque token -> claims
        self.opaque_lock = threading.Lock()
        self.log = JsonLog(config["log"])
        self.proxy = ProxyCache(self, config)

    def number(self, name, settings):
        """Gives a project its project_id and, for a proxy cache, its registry."""
        if "project_id" not in settings:
            settings["project_id"] = self.next_project_id
            self.next_project_id += 1
        self.next_project_id = max(self.next_project_id, settings["project_id"] + 1)
        proxy = settings.get("proxy")
        if proxy:
            settings.setdefault("upstream", DEFAULT_UPSTREAMS.get(proxy, "https://" + name + ".example.invalid"))
        return settings

    # Who is calling (server/middleware/security)

    def identify(self, header, path):
        if header is None:
            return Caller("none")
        scheme, _, credentials = header.strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer":
            if not path.startswith("/v2"):
                return Caller("bearer-ignored")  # the v2 token generator reads /v2 paths only
            claims = self.verify_token(credentials)
            if claims is None:
                return Caller("bearer-invalid")
            access = {}
            for entry in claims.get("access") or []:
                if isinstance(entry, dict) and entry.get("type") == "repository":
                    project = str(entry.get("name", "")).split("/")[0]
                    access.setdefault(project, set()).update(entry.get("actions") or [])
            subject = str(claims.get("sub", ""))
            return Caller("bearer:" + subject, subject=subject, access=access)
        if scheme == "basic":
            return self.basic_caller(credentials)
        return Caller("other")

    def basic_caller(self, credentials):
        try:
            user, colon, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            return Caller("basic-malformed")
        robot = self.robots.get(user) if user.startswith(ROBOT_PREFIX) else None
        if colon and robot is not None and hmac.compare_digest(password.encode(), str(robot.get("password", "")).encode()):
            return Caller("basic:" + user, robot=user)
        # Not a robot's: core/auth's login fails, and a failed login costs its delay. The log
        # keeps the username tried (`basic-invalid:<user>`), to show whose credentials arrived.
        time.sleep(self.failed_login_delay)
        return Caller("basic-invalid:" + user)

    # Harbor's permission model

    def allowed_actions(self, caller, project):
        """What the caller's role lets it do on a project (none on an unknown one)."""
        settings = self.projects.get(project)
        if settings is None:
            return set()
        if caller.access is not None:
            return set(caller.access.get(project, ())) & set(ACTIONS)
        allowed = {"pull"} if settings.get("public") else set()
        if caller.robot is not None:
            allowed.update(self.robots[caller.robot].get("access", {}).get(project, ()))
        return allowed & set(ACTIONS)

    def is_proxy(self, project):
        return bool(self.projects.get(project, {}).get("proxy"))

    def is_docker_hub(self, project):
        return self.projects.get(project, {}).get("proxy") == "docker-hub"

    # Tokens

    def filtered_access(self, caller, scopes):
        """filterAccess: every scope asked for, with what Harbor grants on it."""
        access = []
        for scope in scopes:
            entry = resource_actions(scope)
            if entry is None:
                continue
            if entry["type"] == "repository" and "/" in entry["name"]:
                project = entry["name"].split("/", 1)[0]
                entry["actions"] = sorted(self.allowed_actions(caller, project))
            else:
                # Unknown types, single-segment names, and registry:catalog for a non-admin.
                entry["actions"] = []
            access.append(entry)
        return access

    def make_token(self, caller, access):
        now = int(time.time())
        claims = {"iss": ISSUER}
        if caller.username:
            claims["sub"] = caller.username
        claims.update({"aud": SERVICE, "exp": now + self.token_seconds, "nbf": now, "iat": now,
                       "jti": secrets.token_hex(8), "access": access})
        if self.token_format == "opaque":
            token = secrets.token_hex(24)
            with self.opaque_lock:
                self.opaque[token] = claims
            return token, now
        header = b64url(compact_json({"alg": "HS256", "kid": self.kid, "typ": "JWT"}).encode())
        signing_input = header + "." + b64url(compact_json(claims).encode())
        return signing_input + "." + sign(self.secret, signing_input), now

    def verify_token(self, token):
        """The token's claims if it is one this server issued and it has not expired, else None."""
        if self.token_format == "opaque":
            with self.opaque_lock:
                claims = self.opaque.get(token)
        else:
            parts = token.split(".")
            if len(parts) != 3:
                return None
            signing_input = parts[0] + "." + parts[1]
            if not hmac.compare_digest(sign(self.secret, signing_input), parts[2]):
                return None
            try:
                claims = json.loads(b64url_decode(parts[1]))
            except (ValueError, binascii.Error):
                return None
        if not isinstance(claims, dict) or claims.get("aud") != SERVICE or not isinstance(claims.get("exp"), int):
            return None
        return claims if claims["exp"] > time.time() else None

    # Challenges

    def realm(self, host):
        """tokenSvcURL: 2.14+ the external URL's scheme with the request's Host; before, the URL."""
        if self.version == "2.14" and host:
            scheme = self.external_url.split("://", 1)[0]
            return scheme + "://" + host + "/service/token"
        return self.external_url + "/service/token"

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

def error_body(code, message):
    return {"errors": [{"code": code, "message": message}]}


def unauthorized(cause):
    """v2auth's 401: UnauthorizedError(err).WithMessage(err.Error()) prints the cause twice."""
    return HarborError(401, "UNAUTHORIZED", cause + ": " + cause)


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
        self.body_consumed = False
        raw_path, _, query = self.path.partition("?")
        # Go's router sees the decoded path, slashes merged.
        path = re.sub(r"/+", "/", urllib.parse.unquote(raw_path))
        record = {"harbor": self.server.fixture.name, "method": self.command, "path": raw_path, "query": query, "auth": None,
                  "cookie": "Cookie" in self.headers,
                  "proxy_authorization": "Proxy-Authorization" in self.headers,
                  "status": None, "scopes": [], "granted": []}
        try:
            try:
                self.serve(record, path, query)
            except HarborError as error:
                self.send_error_json(record, error)
        except OSError:  # the client went away, or sent a body that cannot be read
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any

    def log_request(self, code="-", size="-"):
        pass  # the JSON log has every request; stderr keeps only errors

    def serve(self, record, path, query):
        fixture = self.server.fixture
        problem = check_query(query) if query else None
        if problem:
            raise HarborError(400, "BAD_REQUEST", problem)
        info = artifact_info(path) if path.startswith("/v2/") else None
        caller = fixture.identify(self.headers.get("Authorization"), path)
        record["auth"] = caller.auth
        if path == "/service/token":
            self.token(record, caller, query)
        elif path == "/v2" or path.startswith("/v2/"):
            self.v2auth(caller, path, info)
            self.registry_route(record, caller, path, query, info)
        elif path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            self.project_api(record, caller, path, query)
        elif path.startswith("/_model/"):
            self.control(record, path)
        else:
            raise HarborError(404, "NOT_FOUND", "not found")

    # /api/v2.0/projects

    def project_api(self, record, caller, path, query):
        fixture = self.server.fixture
        if fixture.api_failure:
            raise HarborError(fixture.api_failure, "UNKNOWN", "the project API fails (test control)")
        if caller.access is not None:
            caller = Caller("bearer-ignored")  # /api takes Basic credentials, not tokens
        if self.command != "GET":
            raise HarborError(405, "METHOD_NOT_ALLOWED", "method not allowed")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        rest = path[len(API_PREFIX):].strip("/")
        if not rest:
            self.list_projects(record, caller, params, query)
        elif rest.endswith("/summary") and rest.count("/") == 1:
            self.project_summary(record, caller, rest.split("/")[0])
        else:
            raise HarborError(404, "NOT_FOUND", "not found")

    def visible(self, caller, name, settings):
        """Whether the caller sees a project in the list (handler/project.go ListProjects)."""
        if settings.get("public"):
            return True
        return caller.robot is not None and name in self.server.fixture.robots[caller.robot].get("access", {})

    def list_projects(self, record, caller, params, query):
        fixture = self.server.fixture
        try:
            page = int(params.get("page", "1"))
            page_size = int(params.get("page_size", "10"))
        except ValueError:
            raise HarborError(422, "UNPROCESSABLE_ENTITY", "page and page_size must be integers")
        if page_size > 100:
            raise HarborError(422, "UNPROCESSABLE_ENTITY", "page_size in query should be less than or equal to 100")
        if page < 1 or page_size < 0:
            raise HarborError(422, "UNPROCESSABLE_ENTITY", "page and page_size must be positive")
        keywords = parse_q(params.get("q", ""))
        with fixture.projects_lock:
            projects = [(name, dict(settings)) for name, settings in fixture.projects.items()]
        rows = []
        for name, settings in projects:
            if not self.visible(caller, name, settings):
                continue
            row = {"project_id": settings["project_id"], "name": name, "registry_id": settings.get("registry_id", 0),
                   "public": bool(settings.get("public")), "owner_name": "admin",
                   "metadata": {"public": "true" if settings.get("public") else "false"}}
            if settings.get("proxy"):
                row["registry_id"] = settings.setdefault("registry_id", settings["project_id"] + 100)
            if "name" in params and params["name"] not in name:
                continue
            if all(matches(row.get(key), value) for key, value in keywords.items() if key in ("name", "project_id", "registry_id", "public")):
                rows.append(row)
        key, _, _ = params.get("sort", "name").partition(",")
        reverse = key.startswith("-")
        key = key.lstrip("-") or "name"
        rows.sort(key=lambda row: (row.get(key) is None, row.get(key, 0)), reverse=reverse)
        total = len(rows)
        page_rows = rows[(page - 1) * page_size: page * page_size] if page_size else rows
        links = []
        if page_size:
            unescaped = lambda q: urllib.parse.unquote(urllib.parse.urlencode(q))
            def at(number):
                q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
                q["page"], q["page_size"] = str(number), str(page_size)
                return "<%s?%s>" % (API_PREFIX, unescaped(sorted(q.items())))
            if page > 1 and (page - 1) * page_size < total:
                links.append(at(page - 1) + '; rel="prev"')
            if page_size * page < total:
                links.append(at(page + 1) + '; rel="next"')
        headers = [("X-Total-Count", str(total))] + ([("Link", ", ".join(links))] if links else [])
        self.reply_json(record, 200, page_rows, headers=headers)

    def project_summary(self, record, caller, name):
        fixture = self.server.fixture
        with fixture.projects_lock:
            settings = dict(fixture.projects.get(name) or {}) if name in fixture.projects else None
        if settings is None:
            raise HarborError(404, "NOT_FOUND", "project %s not found" % name)
        if not self.visible(caller, name, settings):
            if caller.robot is None:
                raise HarborError(401, "UNAUTHORIZED", "unauthorized")
            raise HarborError(403, "FORBIDDEN", "forbidden")
        summary = {"repo_count": 0}
        if settings.get("proxy"):
            summary["registry"] = {"id": settings.get("registry_id", settings["project_id"] + 100), "name": name + "-upstream",
                                   "type": settings["proxy"], "url": settings["upstream"], "status": "healthy"}
        self.reply_json(record, 200, summary)

    # /_model/: the test's controls (Harbor has none of this)

    def control(self, record, path):
        fixture = self.server.fixture
        body = b"".join(self.request_body() or ())
        if path == "/_model/projects" and self.command == "POST":
            settings = json.loads(body)
            name = settings.pop("name")
            with fixture.projects_lock:
                fixture.projects[name] = fixture.number(name, settings)
        elif path.startswith("/_model/projects/") and self.command == "DELETE":
            with fixture.projects_lock:
                fixture.projects.pop(path[len("/_model/projects/"):], None)
        elif path == "/_model/api" and self.command == "POST":
            fixture.api_failure = json.loads(body).get("status")
        elif path == "/_model/upstream" and self.command == "POST":
            fixture.proxy.control(json.loads(body))
        else:
            raise HarborError(404, "NOT_FOUND", "no such control")
        self.reply_json(record, 200, {})

    # /service/token

    def token(self, record, caller, query):
        fixture = self.server.fixture
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if self.command != "GET":
            if self.command == "POST":
                form = self.small_form()
                record["scopes"] = parse_scopes(form)
                # containerd's OAuth POST carries the credentials in the body: the username
                # shows whose they were (the password is never logged).
                record["form_username"] = dict(form).get("username")
            self.reply_text(record, 405, "Method Not Allowed")
            return
        service = dict(pairs).get("service", "")
        if service != SERVICE:
            self.reply_text(record, 400, html.escape("Unable to handle service: " + service))
            return
        record["scopes"] = parse_scopes(pairs)
        if not caller.authenticated and not record["scopes"]:
            self.reply_text(record, 401, "")  # docker login with wrong credentials
            return
        delays = [fixture.token_delay.get(entry["name"].split("/")[0], 0)
                  for entry in filter(None, map(resource_actions, record["scopes"]))]
        if delays and max(delays) > 0:
            time.sleep(max(delays))
        access = fixture.filtered_access(caller, record["scopes"])
        record["granted"] = [entry["name"] + ":" + ",".join(entry["actions"]) for entry in access]
        token, now = fixture.make_token(caller, access)
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self.reply_json(record, 200, {"token": token, "access_token": "",
                                      "expires_in": fixture.token_seconds, "issued_at": issued_at})

    # /v2: v2auth, then the route

    def v2auth(self, caller, path, info):
        """reqChecker.check: raises the 401 with its challenge, or returns."""
        has_auth = self.headers.get("Authorization") is not None
        if path in ("/v2", "/v2/"):
            if not caller.authenticated:
                raise self.challenged(unauthorized("unauthorized"), None)
            return
        if CATALOG.match(path):
            raise self.challenged(unauthorized("unauthorized to list catalog"), None, basic=True)
        action = METHOD_ACTIONS.get(self.command)
        if info is None or action is None:
            raise self.challenged(unauthorized("un-recognized request: %s %s" % (self.command, path)), "")
        if not has_auth and self.command in ("GET", "HEAD"):
            raise self.challenged(unauthorized("authorize header needed to send HEAD to repository"),
                                  "repository:%s:pull" % info.repository)
        fixture = self.server.fixture
        if info.project not in fixture.projects:
            not_found = "project %s not found" % info.project
            raise self.challenged(unauthorized(not_found), "")
        if action not in fixture.allowed_actions(caller, info.project):
            cause = "unauthorized to access repository: %s, action: %s" % (info.repository, action)
            raise self.challenged(unauthorized(cause), "repository:%s:%s" % (info.repository, CHALLENGE_ACTIONS[action]))

    def challenged(self, error, scope, basic=False):
        """The 401 with getChallenge's header; `scope` "" means an empty header (no challenge)."""
        if scope == "":
            error.challenge = ""
        elif basic or self.headers.get("Authorization") is not None:
            error.challenge = BASIC_CHALLENGE
        else:
            fixture = self.server.fixture
            challenge = 'Bearer realm="%s",service="%s"' % (fixture.realm(self.headers.get("Host", "")), SERVICE)
            error.challenge = challenge + (',scope="%s"' % scope if scope else "")
        error.api_version = True
        return error

    def registry_route(self, record, caller, path, query, info):
        fixture = self.server.fixture
        if info is None:
            self.forward(record)  # /v2/
            return
        project, rest = info.project, info.repository.split("/", 1)[1]
        single = "/" not in rest
        redirectable = {"manifest": ("GET", "HEAD"), "blob": ("GET",), "tag_list": ("GET",)}
        if single and fixture.is_docker_hub(project) and self.command in redirectable.get(info.kind, ()):
            tail = {"manifest": "/manifests/" + str(info.reference), "blob": "/blobs/" + str(info.reference),
                    "tag_list": "/tags/list"}[info.kind]
            self.redirect(record, "/v2/%s/library/%s%s" % (project, rest, tail))
            return
        uploads = info.kind == "blob_upload" and self.command == "POST"
        if (uploads or (info.kind == "manifest" and self.command == "PUT")) and fixture.is_proxy(project):
            raise HarborError(403, "DENIED", "denied: can not push artifact to a proxy project: " + project)
        if info.kind == "tag_list" and self.command == "GET":
            self.tag_list(record, info, query)
            return
        if fixture.proxy.upstream_of(project) and info.kind == "manifest" and self.command in ("GET", "HEAD"):
            self.proxy_manifest(record, info)
            return
        if fixture.proxy.upstream_of(project) and info.kind == "blob" and self.command == "GET":
            self.proxy_blob(record, info)
            return
        self.forward(record)

    # The proxy cache (server/middleware/repoproxy, controller/proxy)

    def proxy_manifest(self, record, info):
        """handleManifest, from UseLocalManifest on."""
        proxy = self.server.fixture.proxy
        repository, reference = info.repository, info.reference
        by_digest = bool(_DIGEST_RE.match(reference))
        tag = "" if by_digest else reference
        stored = proxy.stored_manifest_digest(repository, reference)
        if stored and by_digest:
            self.forward(record)
            return
        try:
            described = proxy.upstream_manifest_head(repository, reference, "check")
        except RateLimited as error:
            if stored:
                self.forward(record)
                return
            raise HarborError(429, "TOO_MANY_REQUEST", error.message) from None
        except UpstreamFailed:
            raise HarborError(500, "UNKNOWN", "internal server error") from None
        if described is None:
            raise HarborError(404, "NOT_FOUND", "resource not found: repo %s, tag %s not found" % (repository, tag))
        digest, media_type, size = described
        cached = proxy.cached_list(repository, digest)
        if cached is not None:
            payload, content_type = cached
            self.reply(record, 200, payload, content_type, [("Docker-Content-Digest", digest), ("Etag", digest)])
            return
        if stored == digest:
            self.forward(record)
            return
        try:
            if self.command == "HEAD":
                described = proxy.upstream_manifest_head(repository, reference, "head")
                if described is None:
                    raise HarborError(404, "NOT_FOUND", "resource not found: the tag %s:%s is not found" % (repository, tag))
                digest, media_type, size = described
                proxy.ensure_tag_later(repository, tag, digest)
                self.reply_head(record, [("Content-Type", media_type), ("Content-Length", str(size)),
                                         ("Docker-Content-Digest", digest), ("Etag", digest)])
                return
            payload, content_type, digest = proxy.upstream_manifest_get(repository, reference)
        except RateLimited as error:
            raise HarborError(429, "TOO_MANY_REQUEST", error.message) from None
        except UpstreamNotFound as error:
            raise HarborError(404, "NOT_FOUND", error.message) from None
        except UpstreamFailed:
            self.forward(record)  # "Proxy to remote failed, fallback to local repo"
            return
        proxy.store_later(repository, tag, by_digest, stored, payload, content_type, digest)
        # setHeaders with art.Digest: empty when the manifest was asked for by tag.
        relayed_digest = reference if by_digest else ""
        self.reply(record, 200, payload, content_type, [("Docker-Content-Digest", relayed_digest), ("Etag", relayed_digest)])

    def proxy_blob(self, record, info):
        """handleBlob: from storage when stored, else streamed from the upstream and stored."""
        proxy = self.server.fixture.proxy
        repository, digest = info.repository, info.reference
        if proxy.stored_blob(repository, digest):
            self.forward(record)
            return
        try:
            connection, response = proxy.upstream_blob(repository, digest, "pull")
        except RateLimited as error:
            raise HarborError(429, "TOO_MANY_REQUEST", error.message) from None
        except UpstreamNotFound as error:
            raise HarborError(404, "NOT_FOUND", error.message) from None
        except UpstreamFailed:
            raise HarborError(500, "UNKNOWN", "internal server error") from None
        try:
            proxy.store_blob_later(repository, digest)
            size = response.getheader("Content-Length", "0")
            self.discard_body()
            record["status"] = 200
            self.server.fixture.log.write(record)
            self.send_response(200)
            for name, value in (("Content-Length", size), ("Docker-Content-Digest", digest), ("Etag", digest),
                                ("Content-Type", "application/octet-stream")):
                self.send_header(name, value)
            self.end_headers()
            self.copy_body(response, chunked=False)
        finally:
            connection.close()

    def reply_head(self, record, headers):
        """An answer with headers only, as proxyManifestHead writes it."""
        self.discard_body()
        record["status"] = 200
        self.server.fixture.log.write(record)
        self.send_response(200)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def tag_list(self, record, info, query):
        """Harbor's own tag list: sorted, paged by n and last, the next page in a Link header."""
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        n = params.get("n", "")
        try:
            n = int(n) if n != "" else None
            if n is not None and n < 0:
                raise ValueError
        except ValueError:
            raise HarborError(400, "BAD_REQUEST", "the N must be a positive int type")
        last = params.get("last", "")
        tags = sorted(set(self.registry_tags(info.repository)))
        if last:
            tags = [tag for tag in tags if tag > last]
        link = None
        if n is not None and len(tags) > n:
            tags = tags[:n]
            link = '</v2/%s/tags/list?%s>; rel="next"' % (info.repository, urllib.parse.urlencode({"last": tags[-1], "n": n}))
        if n == 0:
            tags = []
        headers = [("Link", link)] if link else []
        self.reply_json(record, 200, {"name": info.repository, "tags": tags}, headers=headers)

    def registry_tags(self, repository):
        connection = self.server.fixture.registry_connection()
        try:
            connection.request("GET", "/v2/%s/tags/list" % repository)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise HarborError(500, "UNKNOWN", "internal server error") from error
        finally:
            connection.close()
        if response.status != 200:
            return []
        return json.loads(body).get("tags") or []

    # Replies

    def send_error_json(self, record, error):
        """lib/http.SendError."""
        headers = []
        challenge = getattr(error, "challenge", None)
        if challenge is not None:
            headers.append(("Www-Authenticate", challenge))
        if getattr(error, "api_version", False):
            headers.append(("Docker-Distribution-Api-Version", "registry/2.0"))
        self.reply_json(record, error.status, error_body(error.code, error.message), headers=headers, newline=True)

    def reply_json(self, record, status, body, headers=(), newline=False):
        data = compact_json(body).encode() + (b"\n" if newline else b"")
        self.reply(record, status, data, "application/json; charset=utf-8", headers)

    def reply_text(self, record, status, text):
        self.reply(record, status, text.encode(), "text/plain; charset=utf-8", ())

    def redirect(self, record, location):
        """Go's http.Redirect with 301 and a path."""
        body = ('<a href="%s">Moved Permanently</a>.\n\n' % html.escape(location)).encode()
        self.reply(record, 301, body, "text/html; charset=utf-8", [("Location", location)])

    def reply(self, record, status, data, content_type, headers):
        """Sends a reply of our own, after logging it."""
        self.discard_body()
        record["status"] = status
        self.server.fixture.log.write(record)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
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

    def small_form(self):
        """The fields of a small form-encoded POST body (containerd's OAuth request), as pairs."""
        framing, length = self.body_framing()
        if framing != "length" or length > FORM_LIMIT:
            return []
        self.body_consumed = True
        form = b"".join(read_exactly(self.rfile, length)).decode("utf-8", "replace")
        return urllib.parse.parse_qsl(form, keep_blank_values=True)

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
                self.reply_json(record, 502, error_body("BAD_GATEWAY", message))
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


# The proxy cache's upstream and storage -----------------------------------------------------------

class UpstreamFailed(Exception):
    """A call to the upstream that failed: no connection, or a status Harbor passes on as an error."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class UpstreamNotFound(UpstreamFailed):
    """The upstream answered 404 (pkg/registry's NotFoundCode)."""


class RateLimited(UpstreamFailed):
    """The upstream answered 429 (pkg/registry's RateLimitCode)."""


class ProxyCache:
    """Harbor's proxy cache: its upstream (another registry, reached with Harbor's own calls), its
    storage (the registry behind this server), the manifest-list cache, and the background stores."""

    def __init__(self, fixture, config):
        self.fixture = fixture
        self.log = JsonLog(config.get("upstream_log", config["log"] + ".upstream"))
        self.delay = float(config.get("upstream_delay", 0))
        self.status = None  # test control: the status every upstream call gets
        self.down = False  # test control: the upstream refuses connections
        self.poll_seconds = float(config.get("store_poll_seconds", 20))
        self.polls = int(config.get("store_polls", 10))
        self.lists = {}  # (repository, digest) -> (payload, content type): Harbor's redis cache
        self.pushing = set()  # the inflight checker of local.go: (repository, reference)
        self.lock = threading.Lock()

    def upstream_of(self, project):
        settings = self.fixture.projects.get(project) or {}
        return settings.get("upstream_registry") if settings.get("proxy") else None

    def control(self, settings):
        if "status" in settings:
            self.status = settings["status"]
        if "down" in settings:
            self.down = bool(settings["down"])
        if "delay" in settings:
            self.delay = float(settings["delay"] or 0)

    # Calls to the upstream

    def call(self, repository, method, kind, reference, purpose, accept=()):
        """One call to the upstream, logged: the open connection and its response, or an error."""
        project, remote = repository.split("/", 1)
        record = {"harbor": self.fixture.name, "method": method, "kind": kind, "repository": remote,
                  "reference": reference, "purpose": purpose, "status": None}
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            self.log.write(record)
            raise UpstreamFailed("dial tcp: connect: connection refused")
        if self.status is not None:
            record["status"] = self.status
            self.log.write(record)
            raise self.failure(self.status, b'{"errors":[{"code":"UNKNOWN"}]}')
        url = urllib.parse.urlsplit(self.upstream_of(project))
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=REGISTRY_TIMEOUT)
        try:
            connection.putrequest(method, "/v2/%s/%ss/%s" % (remote, kind, reference), skip_accept_encoding=True)
            for media_type in accept:
                connection.putheader("Accept", media_type)
            connection.endheaders()
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            self.log.write(record)
            raise UpstreamFailed(str(error)) from None
        record["status"] = response.status
        self.log.write(record)
        if not 200 <= response.status <= 299:
            body = response.read()
            connection.close()
            raise self.failure(response.status, body)
        return connection, response

    @staticmethod
    def failure(status, body):
        message = "http status code: %d, body: %s" % (status, body.decode("utf-8", "replace"))
        if status == 404:
            return UpstreamNotFound(message)
        if status == 429:
            return RateLimited(message)
        return UpstreamFailed(message)

    def upstream_manifest_head(self, repository, reference, purpose):
        """client.ManifestExist: (digest, media type, size), or None when the upstream has none."""
        try:
            connection, response = self.call(repository, "HEAD", "manifest", reference, purpose, MANIFEST_ACCEPTS)
        except UpstreamNotFound:
            return None
        connection.close()
        return (response.getheader("Docker-Content-Digest", ""), response.getheader("Content-Type", ""),
                int(response.getheader("Content-Length", "0") or 0))

    def upstream_manifest_get(self, repository, reference):
        """client.PullManifest: (payload, content type, digest)."""
        connection, response = self.call(repository, "GET", "manifest", reference, "pull", MANIFEST_ACCEPTS)
        try:
            payload = response.read()
        finally:
            connection.close()
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        return payload, response.getheader("Content-Type", ""), digest

    def upstream_blob(self, repository, digest, purpose):
        return self.call(repository, "GET", "blob", digest, purpose)

    # Storage

    def storage(self, method, path, headers=(), body=None):
        """One request to the storage registry: (status, headers, body)."""
        connection = self.fixture.registry_connection()
        try:
            connection.request(method, path, body=body, headers=dict(headers))
            response = connection.getresponse()
            return response.status, response, response.read()
        finally:
            connection.close()

    def stored_manifest_digest(self, repository, reference):
        """local.GetManifest: the digest stored under the reference, or None."""
        status, response, _ = self.storage("HEAD", "/v2/%s/manifests/%s" % (repository, reference),
                                           [("Accept", ", ".join(MANIFEST_ACCEPTS))])
        return response.getheader("Docker-Content-Digest") if status == 200 else None

    def stored_blob(self, repository, digest):
        status, _, _ = self.storage("HEAD", "/v2/%s/blobs/%s" % (repository, digest))
        return status == 200

    def cached_list(self, repository, digest):
        with self.lock:
            return self.lists.get((repository, digest))

    def push_blob(self, repository, digest, data):
        status, response, _ = self.storage("POST", "/v2/%s/blobs/uploads/" % repository)
        location = response.getheader("Location", "")
        if status != 202 or not location:
            return False
        target = urllib.parse.urlsplit(location)
        path = target.path + "?" + (target.query + "&" if target.query else "") + urllib.parse.urlencode({"digest": digest})
        status, _, _ = self.storage("PUT", path, [("Content-Type", "application/octet-stream"),
                                                  ("Content-Length", str(len(data)))], data)
        return status == 201

    def push_manifest(self, repository, reference, content_type, payload):
        status, _, _ = self.storage("PUT", "/v2/%s/manifests/%s" % (repository, reference),
                                    [("Content-Type", content_type), ("Content-Length", str(len(payload)))], payload)
        return status == 201

    def inflight(self, repository, reference):
        """local.go's inflightChecker.addRequest: False when a push of the same thing is under way."""
        with self.lock:
            if (repository, reference) in self.pushing:
                return False
            self.pushing.add((repository, reference))
            return True

    def done(self, repository, reference):
        with self.lock:
            self.pushing.discard((repository, reference))

    # The background work of Harbor's goroutines

    def background(self, work, *args):
        threading.Thread(target=self.quietly, args=(work,) + args, daemon=True).start()

    @staticmethod
    def quietly(work, *args):
        try:
            work(*args)
        except (OSError, http.client.HTTPException, UpstreamFailed, ValueError, KeyError):
            pass  # Harbor logs the error; the pull it served is unaffected

    def store_blob_later(self, repository, digest):
        self.background(self.put_blob_to_local, repository, digest)

    def put_blob_to_local(self, repository, digest):
        """controller.putBlobToLocal: a second download; its push skips if one is under way."""
        connection, response = self.upstream_blob(repository, digest, "store")
        try:
            if not self.inflight(repository, digest):
                return
            try:
                self.push_blob(repository, digest, response.read())
            finally:
                self.done(repository, digest)
        finally:
            connection.close()

    def store_later(self, repository, tag, by_digest, stored, payload, content_type, digest):
        """ProxyManifest's goroutine: push when asked by digest, when nothing is stored, or when the
        stored digest differs."""
        if by_digest or stored is None or stored != digest:
            self.background(self.cache_content, repository, tag, payload, content_type, digest)

    def cache_content(self, repository, tag, payload, content_type, digest):
        manifest = json.loads(payload)
        if content_type in LIST_TYPES:
            with self.lock:
                self.lists[(repository, digest)] = (payload, content_type)
            children = [entry["digest"] for entry in manifest.get("manifests", [])]
            for _ in range(self.polls * 2):  # maxManifestListWait, twice maxManifestWait
                time.sleep(self.poll_seconds)
                if all(self.stored_manifest_digest(repository, child) for child in children):
                    break
            if not all(self.stored_manifest_digest(repository, child) for child in children):
                return  # (Harbor would push the list trimmed to the stored manifests)
            if self.inflight(repository, digest):
                try:
                    self.push_manifest(repository, digest, content_type, payload)
                finally:
                    self.done(repository, digest)
            return
        blobs = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest.get("layers", [])]
        missing = blobs
        for _ in range(self.polls):
            time.sleep(self.poll_seconds)
            missing = [blob for blob in blobs if not self.stored_blob(repository, blob)]
            if not missing:
                break
        for blob in missing:
            connection, response = self.upstream_blob(repository, blob, "store")
            try:
                self.push_blob(repository, blob, response.read())
            finally:
                connection.close()
        for reference in [digest] + ([tag] if tag else []):
            if self.inflight(repository, reference):
                try:
                    self.push_manifest(repository, reference, content_type, payload)
                finally:
                    self.done(repository, reference)

    def ensure_tag_later(self, repository, tag, digest):
        """proxyManifestHead's goroutine: once the digest is stored, the tag points at it."""
        if tag:
            self.background(self.ensure_tag, repository, tag, digest)

    def ensure_tag(self, repository, tag, digest):
        for _ in range(self.polls * 2):
            time.sleep(self.poll_seconds)
            status, response, payload = self.storage("GET", "/v2/%s/manifests/%s" % (repository, digest),
                                                     [("Accept", ", ".join(MANIFEST_ACCEPTS))])
            if status == 200:
                self.push_manifest(repository, tag, response.getheader("Content-Type", ""), payload)
                return


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
