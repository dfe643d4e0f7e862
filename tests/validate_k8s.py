#!/usr/bin/env python3
"""Validate custom resources against their CRDs the way the Kubernetes API server does.

    validate_k8s.py [--crds DIR] [--check-config CMD] FILE...
    validate_k8s.py [--crds DIR] --check-config CMD --self-test

For each YAML document in FILE (several may be separated by ---), the CRD is chosen by
apiVersion and kind (a served version of a CRD in DIR; by default ../shared/crds from the
project root, else /work/shared/crds), and the document goes through what the API server does on
create with `kubectl apply --validate=strict`:

  - metadata is checked as ObjectMeta (name, namespace, labels, annotations);
  - null values of non-nullable fields are dropped, unknown fields are pruned (and reported:
    strict field validation makes them errors), defaults are filled in;
  - the openAPIV3Schema is checked with jsonschema (type, enum, required, pattern with RE2,
    lengths, bounds, items, the date-time format), x-kubernetes-list-type map and set lists
    for duplicates;
  - every x-kubernetes-validations CEL rule is evaluated with cel-python at each node it sits
    on, for every value in the document there (array items, map values), with `self` bound
    to that value. As the API server does, no rule runs when the object has a type error.
    Transition rules (those using oldSelf) are skipped with a note: on create there is no old
    object. A rule calling a function this validator does not implement fails.

With --check-config, the filter configuration each resource carries (Istio spec.pluginConfig,
Envoy Gateway spec.wasm[*].config, Higress spec.pluginConfig, or the document Higress makes of
spec.defaultConfig and spec.matchRules: {"_rules_": [{"_match_domain_": [...], <config>}], <default>})
is written as JSON to a temporary file and checked with CMD FILE
(for example "target/debug/harbor-mirror check"); a non-zero exit fails with its stderr.

Prints `ok: FILE (Kind NAME)` for a valid document, else one `FAIL: FILE: PATH: message` line
per error, and exits 1 if anything failed.

--self-test validates every file in tests/k8s-invalid/ and checks that each one fails with the
message substrings given by its `# expect: ...` comment lines, and that every CEL rule in the
CRDs compiles and calls only functions implemented here.
"""
import argparse
import copy
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import celpy
import celpy.celtypes as ct
import celpy.evaluation
import jsonschema
import re2
import yaml

HERE = Path(__file__).resolve().parent
# ../shared/crds from the project root; a clone elsewhere on this machine uses /work/shared/crds.
BESIDE_ROOT_CRDS = HERE.parent.parent / "shared" / "crds"
DEFAULT_CRDS = BESIDE_ROOT_CRDS if BESIDE_ROOT_CRDS.is_dir() else Path("/work/shared/crds")
INVALID_DIR = HERE / "k8s-invalid"
BLOCKED_RULES = ("some validation rules were not checked because the object was invalid; "
                 "correct the existing errors to complete validation")


@dataclass
class Error:
    """One validation error: a field path and what is wrong there."""
    path: str
    message: str


@dataclass
class CRDVersion:
    """One served version of a CRD: what a resource's apiVersion and kind select."""
    group: str
    version: str
    kind: str
    namespaced: bool
    schema: dict


# ---------------------------------------------------------------- YAML and paths

class KubeYAMLLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: timestamps stay strings, a repeated key is an error."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for key in keys:
            if keys.count(key) > 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


KubeYAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents(path):
    """The non-empty YAML documents of a file."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=KubeYAMLLoader) if d is not None]


def fmt_path(parts):
    """A field path as the API server writes it: spec.wasm[0].code, matchLabels[app.kubernetes.io/name]."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p):
            out += f".{p}" if out else p
        else:
            out += f"[{p}]"
    return out or "<root>"


def type_name(value):
    """The OpenAPI type name of a JSON value, as the API server quotes it."""
    for t, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                    (list, "array"), (dict, "object")):
        if isinstance(value, t):
            return name
    return "null"


# ---------------------------------------------------------------- CRDs

def load_crds(directory):
    """Every served CRD version in directory, by (apiVersion, kind)."""
    crds = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        for doc in load_documents(path):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for v in spec["versions"]:
                if v.get("served"):
                    crd = CRDVersion(spec["group"], v["name"], spec["names"]["kind"],
                                     spec["scope"] == "Namespaced", v["schema"]["openAPIV3Schema"])
                    crds[(f"{crd.group}/{crd.version}", crd.kind)] = crd
    return crds


def with_object_root(schema):
    """The schema as the API server applies it: apiVersion, kind and metadata always exist at
    the root; metadata is ObjectMeta, checked by check_metadata, whatever the CRD says."""
    root = copy.deepcopy(schema)
    props = root.setdefault("properties", {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return root


def children(schema, value):
    """(key, child schema, child value) for each child value the schema describes; unknown
    fields of an object are not among them (prune removes them first)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            if key in props:
                yield key, props[key], child
            elif isinstance(extra, dict):
                yield key, extra, child
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                yield key, {"x-kubernetes-preserve-unknown-fields": True}, child
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, child in enumerate(value):
            yield i, schema["items"], child


def walk(schema, value, path=()):
    """Every (schema, value, path) in the document, parents first. A parent's changes to its
    value (defaults) are seen when its children are visited."""
    yield schema, value, path
    for key, child_schema, _ in list(children(schema, value)):
        yield from walk(child_schema, value[key], path + (key,))


# ---------------------------------------------------------------- metadata

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
OBJECT_META_FIELDS = {
    "name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences",
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink",
}


def qualified_name_error(key):
    """Why key is not a qualified name (an optional DNS subdomain and '/', then a name), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if len(name) > 63 or not QUALIFIED_NAME.fullmatch(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', at most 63, "
                "and must start and end with an alphanumeric character")
    return None


def check_metadata(meta, namespaced):
    """ObjectMeta validation of a custom resource on create."""
    if not isinstance(meta, dict):
        return [Error("metadata", "Required value: metadata is required")]
    errors = [Error(f"metadata.{k}", f'unknown field "metadata.{k}"')
              for k in meta if k not in OBJECT_META_FIELDS]
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        errors.append(Error("metadata.name", "Required value: name or generateName is required"))
    elif name and (len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(str(name))):
        errors.append(Error("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 '
                            "subdomain must consist of lower case alphanumeric characters, '-' or "
                            "'.', and must start and end with an alphanumeric character"))
    namespace = meta.get("namespace")
    if namespace is not None and not namespaced:
        errors.append(Error("metadata.namespace", "Forbidden: not allowed on this type"))
    elif namespace is not None and (len(namespace) > 63 or not DNS_LABEL.fullmatch(str(namespace))):
        errors.append(Error("metadata.namespace",
                            f'Invalid value: "{namespace}": a lowercase RFC 1123 label must consist '
                            "of lower case alphanumeric characters or '-'"))
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            path = f"metadata.{field}[{key}]"
            problem = qualified_name_error(key)
            if problem:
                errors.append(Error(path, f'Invalid value: "{key}": {problem}'))
            if not isinstance(value, str):
                errors.append(Error(path, f"Invalid value: must be a string, not {type_name(value)}"))
            elif field == "labels" and value and (len(value) > 63 or not QUALIFIED_NAME.fullmatch(value)):
                errors.append(Error(path, f'Invalid value: "{value}": a valid label must be an empty '
                                    "string or consist of at most 63 alphanumeric characters, '-', "
                                    "'_' or '.', and must start and end with an alphanumeric character"))
    return errors


# ---------------------------------------------------------------- pruning and defaulting

def drop_non_nullable_nulls(schema, doc):
    """The API server drops `field: null` when the field is not nullable (a default then applies)."""
    for node_schema, value, _ in walk(schema, doc):
        if isinstance(value, dict):
            props = node_schema.get("properties", {})
            for key in [k for k, v in value.items()
                        if v is None and k in props and not props[k].get("nullable")]:
                del value[key]


def prune_unknown(schema, doc):
    """Remove the fields no schema describes (as the API server prunes them) and report each:
    with strict field validation an unknown field is an error."""
    errors = []
    for node_schema, value, path in walk(schema, doc):
        if not isinstance(value, dict) or node_schema.get("x-kubernetes-preserve-unknown-fields"):
            continue
        if node_schema.get("additionalProperties") not in (None, False):
            continue
        for key in [k for k in value if k not in node_schema.get("properties", {})]:
            del value[key]
            field = fmt_path(path + (key,))
            errors.append(Error(field, f'unknown field "{field}"'))
    return errors


def apply_defaults(schema, doc):
    """Fill in the schema's defaults for fields absent from objects that are present."""
    for node_schema, value, _ in walk(schema, doc):
        if isinstance(value, dict):
            for key, prop in node_schema.get("properties", {}).items():
                if key not in value and "default" in prop:
                    value[key] = copy.deepcopy(prop["default"])


# ---------------------------------------------------------------- OpenAPI schema

def to_json_schema(schema):
    """The Kubernetes OpenAPI v3 schema as draft-4 JSON Schema: `nullable` becomes a null type."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


def re2_pattern(validator, pattern, instance, schema):
    """`pattern` as the API server matches it: Go's RE2 syntax, unanchored."""
    if validator.is_type(instance, "string") and not re2.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("date-time")(lambda s: not isinstance(s, str) or bool(RFC3339.fullmatch(s)))
KubeValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": re2_pattern})


def k8s_message(error):
    """A jsonschema error in the API server's words where they differ."""
    value = error.instance
    shown = json.dumps(value) if isinstance(value, (str, int, float, bool)) else type_name(value)
    if error.validator == "enum":
        return f"Unsupported value: {shown}: supported values: " + ", ".join(
            json.dumps(v) for v in error.validator_value)
    if error.validator == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"Invalid value: {shown}: must be of type {' or '.join(t for t in types if t != 'null')}"
    if error.validator == "pattern":
        return f"Invalid value: {shown}: should match '{error.validator_value}'"
    if error.validator in ("maxLength", "maxItems", "maxProperties"):
        return f"Too long: may not be more than {error.validator_value}"
    return f"Invalid value: {shown}: {error.message}"


def schema_errors(schema, doc):
    """jsonschema errors, and whether any is a type error (which stops the CEL rules)."""
    validator = KubeValidator(to_json_schema(schema), format_checker=FORMATS)
    errors, blocking = [], False
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        blocking |= e.validator == "type"
        missing = re.fullmatch(r"'(.*)' is a required property", e.message) if e.validator == "required" else None
        if missing:
            errors.append(Error(fmt_path(list(e.absolute_path) + [missing.group(1)]), "Required value"))
        else:
            errors.append(Error(fmt_path(list(e.absolute_path)), k8s_message(e)))
    return errors, blocking


def list_type_errors(schema, doc):
    """Duplicates in x-kubernetes-list-type map (by the key fields) and set lists."""
    errors = []
    for node_schema, value, path in walk(schema, doc):
        list_type = node_schema.get("x-kubernetes-list-type")
        if not isinstance(value, list) or list_type not in ("map", "set"):
            continue
        seen = []
        for i, item in enumerate(value):
            key = item
            if list_type == "map" and isinstance(item, dict):
                key = {k: item.get(k) for k in node_schema.get("x-kubernetes-list-map-keys", [])}
            if key in seen:
                errors.append(Error(fmt_path(path + (i,)), f"Duplicate value: {json.dumps(key)}"))
            seen.append(key)
    return errors


# ---------------------------------------------------------------- CEL

def go_parse_request_uri(raw):
    """Go's net/url.ParseRequestURI, which Kubernetes' isURL() and url() use: the URL's scheme
    (lower case, "" for an absolute path), or ValueError for what Go rejects."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise ValueError("invalid control character in URL")
    if raw == "":
        raise ValueError("empty url")
    if raw == "*":
        return ""
    if raw.startswith(":"):
        raise ValueError("missing protocol scheme")
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", raw)
    scheme, rest = (m.group(1).lower(), raw[m.end():]) if m else ("", raw)
    rest = rest[:-1] if rest.endswith("?") and rest.count("?") == 1 else rest.split("?", 1)[0]
    if not rest.startswith("/"):
        if scheme:
            return scheme  # opaque, as in mailto:x
        raise ValueError("invalid URI for request")
    path = rest
    if scheme and rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        path = slash + tail
        go_check_authority(authority)
    go_check_escapes(path)
    return scheme


def go_check_authority(authority):
    """Go's parseAuthority and parseHost: userinfo characters, port digits, host characters."""
    userinfo, at, host = authority.rpartition("@")
    if at and not re.fullmatch(r"[A-Za-z0-9\-._:~!$&'()*+,;=%@]*", userinfo):
        raise ValueError("net/url: invalid userinfo")
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise ValueError("missing ']' in host")
        port = host[end + 1:]
    else:
        port = host[host.rfind(":"):] if ":" in host else ""
    if port and not re.fullmatch(r":[0-9]*", port):
        raise ValueError(f"invalid port {port!r} after host")
    bad = re.search(r"[^A-Za-z0-9\-._~!$&'()*+,;=:\[\]<>\"%\x80-\U0010ffff]", host)
    if bad:
        raise ValueError(f"invalid character {bad.group()!r} in host name")
    go_check_escapes(host, host=True)


def go_check_escapes(text, host=False):
    """Go's unescape: every % is followed by two hex digits (in a host, only %25 or a byte >= 0x80)."""
    for m in re.finditer("%", text):
        code = text[m.start() + 1:m.start() + 3]
        if not re.fullmatch(r"[0-9A-Fa-f]{2}", code):
            raise ValueError(f"invalid URL escape {text[m.start():m.start() + 3]!r}")
        if host and int(code[0], 16) < 8 and code != "25":
            raise ValueError(f"invalid URL escape {'%' + code!r}")


class GoURL:
    """The value of Kubernetes' url(): only its scheme is read by the rules here."""

    def __init__(self, scheme):
        self.scheme = scheme


def cel_url(value):
    """url(string): Kubernetes' URL type, or an error for a string Go does not parse."""
    try:
        return GoURL(go_parse_request_uri(str(value)))
    except ValueError as e:
        raise celpy.evaluation.CELEvalError(
            f"URL parse error during conversion from string: {e}") from None


def cel_is_url(value):
    """isURL(string): whether Go's ParseRequestURI accepts it."""
    try:
        go_parse_request_uri(str(value))
        return ct.BoolType(True)
    except ValueError:
        return ct.BoolType(False)


# Kubernetes CEL library functions that cel-python lacks: implemented here, by name.
K8S_FUNCTIONS = {
    "isURL": cel_is_url,
    "url": cel_url,
    "getScheme": lambda u: ct.StringType(u.scheme),
    "upperAscii": lambda s: ct.StringType(re.sub("[a-z]", lambda m: m.group().upper(), str(s))),
}
MACROS = {"has", "all", "exists", "exists_one", "map", "filter"}
SUPPORTED_FUNCTIONS = set(celpy.evaluation.base_functions) | MACROS | set(K8S_FUNCTIONS)

CEL_ENV = celpy.Environment()
CEL_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
                "function", "if", "import", "let", "loop", "package", "namespace", "return",
                "var", "void", "while"}


@dataclass
class CompiledRule:
    """A CEL rule, parsed once: its program, or why it cannot run."""
    program: object = None
    problem: str = ""
    transition: bool = False


_compiled = {}


def compile_rule(rule):
    """Parse a rule and see which functions it calls and whether it reads oldSelf."""
    if rule not in _compiled:
        try:
            ast = CEL_ENV.compile(rule)
        except celpy.CELParseError as e:
            _compiled[rule] = CompiledRule(problem=f"rule does not compile: {e}")
            return _compiled[rule]
        called, names = set(), set()
        for node in ast.iter_subtrees():
            if node.data == "ident_arg":
                called.add(str(node.children[0]))
            elif node.data == "member_dot_arg":
                called.add(str(node.children[1]))
            elif node.data == "ident":
                names.add(str(node.children[0]))
        missing = sorted(called - SUPPORTED_FUNCTIONS)
        problem = f"rule calls CEL functions not implemented here: {', '.join(missing)}" if missing else ""
        program = CEL_ENV.program(ast, functions=K8S_FUNCTIONS)
        _compiled[rule] = CompiledRule(program, problem, "oldSelf" in names)
    return _compiled[rule]


def escape_property(name):
    """A property name as Kubernetes shows it to CEL (reserved words and . - / escaped), or
    None when it cannot be shown."""
    if name in CEL_RESERVED:
        return f"__{name}__"
    if not re.fullmatch(r"[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*", name):
        return None
    for raw, escaped in (("__", "__underscores__"), (".", "__dot__"), ("-", "__dash__"), ("/", "__slash__")):
        name = name.replace(raw, escaped)
    return name


def to_cel(schema, value):
    """A JSON value as a CEL value typed by its schema (object fields escaped, number as double)."""
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is not None:
            fields = ((escape_property(k), props.get(k, {}), v) for k, v in value.items())
            return ct.MapType({ct.StringType(k): to_cel(s, v) for k, s, v in fields if k is not None})
        item = schema.get("additionalProperties")
        item = item if isinstance(item, dict) else {}
        return ct.MapType({ct.StringType(k): to_cel(item, v) for k, v in value.items()})
    if isinstance(value, list):
        return ct.ListType([to_cel(schema.get("items") or {}, v) for v in value])
    if isinstance(value, bool):
        return ct.BoolType(value)
    if isinstance(value, int):
        return ct.DoubleType(value) if schema.get("type") == "number" else ct.IntType(value)
    if isinstance(value, float):
        return ct.DoubleType(value)
    if isinstance(value, str):
        return ct.StringType(value)
    return None


def evaluate_rule(rule, value):
    """None if the rule holds for value, else why not."""
    compiled = compile_rule(rule["rule"])
    if compiled.problem:
        return compiled.problem
    try:
        result = compiled.program.evaluate({"self": value})
    except Exception as e:  # cel-python raises CELEvalError and, for some type mix-ups, others
        result = e
    if isinstance(result, Exception):
        detail = str(result.args[0] if result.args else result).split(" (in activation")[0]
        return f"rule evaluation error: {detail}"
    if not isinstance(result, ct.BoolType):
        return f"rule did not evaluate to a bool: {result!r}"
    return None if result else rule.get("message") or f"failed rule: {rule['rule']}"


UNSUPPORTED_RULE_FIELDS = ("messageExpression", "fieldPath", "optionalOldSelf")


def cel_errors(schema, doc, notes):
    """Every x-kubernetes-validations rule, at every value of the document it applies to."""
    errors = []
    for node_schema, value, path in walk(schema, doc):
        for rule in node_schema.get("x-kubernetes-validations", []):
            where = fmt_path(path)
            if compile_rule(rule["rule"]).transition:
                notes.append(f"{where}: transition rule (oldSelf) skipped, only checked on update: {rule['rule']}")
                continue
            unsupported = [f for f in UNSUPPORTED_RULE_FIELDS if f in rule]
            problem = (f"rule uses {', '.join(unsupported)}, not implemented here" if unsupported
                       else evaluate_rule(rule, to_cel(node_schema, value)))
            if problem:
                errors.append(Error(where, f'Invalid value: "{type_name(value)}": {problem}'))
    return errors


def all_rules(schema):
    """Every CEL rule anywhere in a schema."""
    if isinstance(schema, dict):
        yield from (r["rule"] for r in schema.get("x-kubernetes-validations", []))
        for value in schema.values():
            yield from all_rules(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from all_rules(value)


# ---------------------------------------------------------------- filter configuration

def plugin_configs(doc):
    """(path, configuration) for each filter configuration the resource hands the filter."""
    spec = doc.get("spec") or {}
    kind = (doc.get("apiVersion", "").split("/")[0], doc.get("kind"))
    if kind == ("extensions.istio.io", "WasmPlugin"):
        return [("spec.pluginConfig", spec.get("pluginConfig"))]
    if kind == ("gateway.envoyproxy.io", "EnvoyExtensionPolicy"):
        return [(f"spec.wasm[{i}].config", w.get("config")) for i, w in enumerate(spec.get("wasm", []))]
    if kind == ("extensions.higress.io", "WasmPlugin"):
        if "pluginConfig" in spec:  # Higress then passes it as it is and ignores the rest
            return [("spec.pluginConfig", spec["pluginConfig"])]
        return [("spec (as Higress hands it to the plugin)", higress_envelope(spec))]
    return []


def higress_envelope(spec):
    """The one document Higress's controller makes of defaultConfig and matchRules: each rule's
    config with its match keys, under _rules_, and the default configuration (unless disabled)
    around them. None when there is nothing."""
    rules = []
    for rule in spec.get("matchRules", []):
        if rule.get("configDisable"):
            continue
        entry = {f"_match_{key}_": rule[key] for key in ("domain", "service") if rule.get(key)}
        if rule.get("ingress"):
            entry["_match_route_"] = rule["ingress"]
        entry.update(rule.get("config") or {})
        rules.append(entry)
    envelope = {} if spec.get("defaultConfigDisable") else dict(spec.get("defaultConfig") or {})
    if rules:
        envelope["_rules_"] = rules
    return envelope or None


def check_config_errors(command, doc):
    """Run `command FILE` on each filter configuration in doc; its stderr on failure."""
    errors = []
    for path, config in plugin_configs(doc):
        if config is None:
            errors.append(Error(path, "Required value: the filter needs a configuration"))
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(config, f)
        try:
            run = subprocess.run(shlex.split(command) + [f.name], capture_output=True, text=True)
        except OSError as e:
            errors.append(Error(path, f"cannot run {command!r}: {e}"))
            continue
        finally:
            os.unlink(f.name)
        if run.returncode != 0:
            detail = "; ".join(line for line in run.stderr.splitlines() if line.strip())
            errors.append(Error(path, detail or f"{command!r} exited {run.returncode}"))
    return errors


# ---------------------------------------------------------------- one document

STATS_PREFIX = "wasmcustom.harbor_mirror"


def stats_patch_errors(doc):
    """A Deployment patch (envoy/istio/harbor-core-stats-annotation.yaml): its pod template's
    proxy.istio.io/config annotation must be a ProxyConfig (YAML) whose proxyStatsMatcher
    includes the filter's metrics."""
    path = "spec.template.metadata.annotations[proxy.istio.io/config]"
    annotations = (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    text = annotations.get("proxy.istio.io/config")
    if not isinstance(text, str):
        return [Error(path, "Required value: the Istio proxy configuration annotation, as a string")]
    try:
        proxy_config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [Error(path, f"Invalid value: not YAML: {' '.join(str(e).split())}")]
    matcher = (proxy_config or {}).get("proxyStatsMatcher") if isinstance(proxy_config, dict) else None
    prefixes = (matcher or {}).get("inclusionPrefixes") if isinstance(matcher, dict) else None
    if not isinstance(prefixes, list) or STATS_PREFIX not in prefixes:
        return [Error(path, f"Invalid value: proxyStatsMatcher.inclusionPrefixes must list {STATS_PREFIX!r}")]
    return []


def validate_document(doc, crds, check_config, notes):
    """All errors in one resource, and its label (Kind NAME)."""
    if not isinstance(doc, dict):
        return [Error("<root>", f"Invalid value: a resource is an object, not {type_name(doc)}")], "?"
    key = (doc.get("apiVersion"), doc.get("kind"))
    label = f"{doc.get('kind')} {(doc.get('metadata') or {}).get('name')}"
    if key == ("apps/v1", "Deployment"):
        notes.append("a Deployment patch: only its Istio proxy configuration annotation is checked")
        return stats_patch_errors(doc), label
    crd = crds.get(key)
    if crd is None:
        known = ", ".join(f"{v} {k}" for v, k in sorted(crds))
        return [Error("apiVersion", f"no served CRD version for apiVersion {key[0]!r} kind "
                      f"{key[1]!r} (served: {known})")], label
    doc = copy.deepcopy(doc)
    schema = with_object_root(crd.schema)
    errors = check_metadata(doc.get("metadata"), crd.namespaced)
    drop_non_nullable_nulls(schema, doc)
    errors += prune_unknown(schema, doc)
    apply_defaults(schema, doc)
    structural, blocking = schema_errors(schema, doc)
    errors += structural + list_type_errors(schema, doc)
    if blocking:
        errors.append(Error("<root>", BLOCKED_RULES))
    else:
        errors += cel_errors(schema, doc, notes)
    if check_config:
        errors += check_config_errors(check_config, doc)
    return errors, label


def validate_file(path, crds, check_config):
    """Output lines for every document in a file, and whether all were valid."""
    try:
        docs = load_documents(path)
    except (OSError, yaml.YAMLError) as e:
        return [f"FAIL: {path}: <file>: {' '.join(str(e).split())}"], False
    if not docs:
        return [f"FAIL: {path}: <file>: no YAML document"], False
    lines, valid = [], True
    for i, doc in enumerate(docs):
        name = path if len(docs) == 1 else f"{path}#{i + 1}"
        notes = []
        errors, label = validate_document(doc, crds, check_config, notes)
        lines += [f"note: {name}: {n}" for n in notes]
        lines += [f"FAIL: {name}: {e.path}: {e.message}" for e in errors] or [f"ok: {name} ({label})"]
        valid &= not errors
    return lines, valid


# ---------------------------------------------------------------- self-test

def expectations(path):
    """The `# expect: SUBSTRING` lines at the top of a file."""
    found = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s*expect:\s*(.+?)\s*$", line)
        if m:
            found.append(m.group(1))
    return found


def self_test(crds, check_config):
    """Each invalid resource fails with its expected messages; every CEL rule can run."""
    ok = True
    rules = [r for crd in crds.values() for r in all_rules(crd.schema)]
    problems = [(r, compile_rule(r).problem) for r in rules if compile_rule(r).problem]
    for rule, problem in problems:
        print(f"FAIL: CEL rule {rule!r}: {problem}")
    if not problems:
        print(f"ok: {len(rules)} CEL rules in {len(crds)} CRD versions compile and call only implemented functions")
    ok &= not problems
    for path in sorted(INVALID_DIR.glob("*.yaml")):
        expected = expectations(path)
        path = os.path.relpath(path)
        lines, valid = validate_file(path, crds, check_config)
        failures = [line for line in lines if line.startswith("FAIL:")]
        missing = [e for e in expected if not any(e in line for line in failures)]
        if not expected:
            print(f"FAIL: {path}: no '# expect:' line")
        elif valid or missing:
            print(f"FAIL: {path}: expected {missing or expected}, got:")
            print("\n".join(f"    {line}" for line in lines))
        else:
            print(f"ok: {path} rejected: {'; '.join(expected)}")
        ok &= bool(expected) and not valid and not missing
    return ok


def main():
    parser = argparse.ArgumentParser(description="Validate custom resources against their CRDs as the API server does.")
    parser.add_argument("files", nargs="*", metavar="FILE")
    parser.add_argument("--crds", default=str(DEFAULT_CRDS), help="directory of CRD YAML files")
    parser.add_argument("--check-config", metavar="CMD",
                        help='check each filter configuration with "CMD FILE" (FILE: JSON)')
    parser.add_argument("--self-test", action="store_true",
                        help=f"check that every file in {INVALID_DIR} is rejected as expected")
    args = parser.parse_args()
    crds = load_crds(args.crds)
    if not crds:
        parser.error(f"no CRD in {args.crds}")
    if args.self_test:
        if not args.check_config:
            parser.error("--self-test needs --check-config (one invalid resource has a bad filter configuration)")
        return 0 if self_test(crds, args.check_config) else 1
    if not args.files:
        parser.error("no FILE")
    valid = True
    for path in args.files:
        lines, file_valid = validate_file(path, crds, args.check_config)
        print("\n".join(lines))
        valid &= file_valid
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
