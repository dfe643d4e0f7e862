#!/usr/bin/env python3
"""Fill in an Envoy configuration from envoy/ for one run.

Sets the listener address, the admin port, the `harbor` cluster's upstream (TLS with SNI for
https, plain for http), the filter's .wasm path, optionally its plugin configuration (the
file's text is passed through as it is, so a broken one reaches the filter) and, for a listener
that terminates TLS (envoy/front-proxy.yaml), the certificate and key files. Prints YAML.

With --module PATH the filter is the dynamic module (dist/libharbor_mirror.so) instead: every
harbor_mirror wasm filter of the configuration becomes the dynamic_modules filter loading PATH,
with the same plugin configuration, and the access log reads the module's filter state key.

With --lds FILE the listeners go to FILE, a filesystem LDS resource the bootstrap watches: a new
plugin configuration is applied by rendering again and renaming the new FILE over the old one,
without restarting Envoy (in-flight requests finish on the old filter chain).
"""
import os
import argparse
import sys
import urllib.parse

import yaml

WASM_FILTER = "envoy.filters.http.wasm"
MODULE_FILTER = "envoy.filters.http.dynamic_modules"
# The filter state key of the original path (log_original_path), as each front stores it.
WASM_ORIGINAL_PATH = "wasm.harbor_mirror.original_path"
MODULE_ORIGINAL_PATH = "harbor_mirror.original_path"


def http_filter_lists(config):
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                typed = network_filter["typed_config"]
                if "http_filters" in typed:
                    yield typed


def wasm_plugins(config):
    for manager in http_filter_lists(config):
        for http_filter in manager["http_filters"]:
            if http_filter["name"] == WASM_FILTER:
                yield http_filter["typed_config"]["config"]


def module_filter(path, plugin_configuration):
    """The dynamic_modules HTTP filter loading harbor-mirror's module from PATH."""
    return {
        "name": MODULE_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {
                "name": "harbor_mirror",
                "module": {"local": {"filename": path}},
                "metrics_namespace": "harbor_mirror",
            },
            "filter_name": "harbor_mirror",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_configuration},
        },
    }


def use_module(config, path):
    """Every harbor_mirror filter (wasm or module) becomes the module at PATH."""
    found = False
    for manager in http_filter_lists(config):
        filters = manager["http_filters"]
        for i, http_filter in enumerate(filters):
            if http_filter["name"] == WASM_FILTER:
                value = http_filter["typed_config"]["config"]["configuration"]["value"]
                filters[i] = module_filter(path, value)
                found = True
            elif http_filter["name"] == MODULE_FILTER:
                http_filter["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"] = path
                found = True
        for log in manager.get("access_log", []):
            source = log["typed_config"].get("log_format", {}).get("text_format_source", {})
            if "inline_string" in source:
                source["inline_string"] = source["inline_string"].replace(WASM_ORIGINAL_PATH, MODULE_ORIGINAL_PATH)
    if not found:
        sys.exit("render.py: --module given, but the configuration has no harbor_mirror filter")


def module_configs(config):
    for manager in http_filter_lists(config):
        for http_filter in manager["http_filters"]:
            if http_filter["name"] == MODULE_FILTER:
                yield http_filter["typed_config"]["filter_config"]


def set_certificate(config, cert, key):
    """Points every TLS-terminating listener at CERT and KEY."""
    found = False
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            tls = chain.get("transport_socket", {}).get("typed_config", {})
            if tls.get("@type", "").endswith("DownstreamTlsContext"):
                tls["common_tls_context"]["tls_certificates"] = [
                    {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}
                ]
                found = True
    if not found:
        sys.exit("render.py: --tls-cert/--tls-key given, but no listener terminates TLS")


def set_upstream(config, url):
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        sys.exit(f"render.py: upstream {url!r} is not an http(s)://host[:port] URL")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "harbor"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"] = {"address": parsed.hostname, "port_value": port}
    if parsed.scheme == "https":
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": parsed.hostname,
            },
        }
    else:
        cluster.pop("transport_socket", None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="an Envoy YAML configuration from envoy/")
    parser.add_argument("--listen", help="HOST:PORT of the registry listener")
    parser.add_argument("--admin-port", type=int)
    parser.add_argument("--upstream", help="Harbor (or registry) URL, http(s)://host[:port]")
    parser.add_argument("--wasm", help="path of harbor_mirror.wasm")
    parser.add_argument("--module", help="path of libharbor_mirror.so: the dynamic module instead of the wasm filter")
    parser.add_argument("--plugin-config", help="file holding the filter's JSON configuration")
    parser.add_argument("--tls-cert", help="certificate chain (PEM) of a TLS-terminating listener")
    parser.add_argument("--tls-key", help="its private key (PEM)")
    parser.add_argument("--lds", help="write the listeners to this file and watch it (dynamic LDS)")
    args = parser.parse_args()

    with open(args.config) as f:
        config = yaml.safe_load(f)
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        listener = config["static_resources"]["listeners"][0]
        listener["address"]["socket_address"] = {"address": host, "port_value": int(port)}
    if args.admin_port:
        config["admin"]["address"]["socket_address"]["port_value"] = args.admin_port
    if args.upstream:
        set_upstream(config, args.upstream)
    if bool(args.tls_cert) != bool(args.tls_key):
        sys.exit("render.py: --tls-cert and --tls-key go together")
    if args.tls_cert:
        set_certificate(config, os.path.abspath(args.tls_cert), os.path.abspath(args.tls_key))
    plugin_config = None
    if args.plugin_config:
        with open(args.plugin_config) as f:
            plugin_config = f.read()
    if args.wasm and args.module:
        sys.exit("render.py: --wasm or --module, not both")
    for plugin in wasm_plugins(config):
        if args.wasm:
            plugin["vm_config"]["code"]["local"]["filename"] = args.wasm
        if plugin_config is not None:
            plugin["configuration"]["value"] = plugin_config
    if args.module:
        use_module(config, os.path.abspath(args.module))
    for filter_config in module_configs(config):
        if plugin_config is not None:
            filter_config["value"] = plugin_config
    if args.lds:
        move_listeners_to_lds(config, os.path.abspath(args.lds))
    yaml.safe_dump(config, sys.stdout, sort_keys=False)


def move_listeners_to_lds(config, path):
    listeners = config["static_resources"].pop("listeners")
    resources = [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener} for listener in listeners]
    # Written whole to a temporary name, then renamed: Envoy never reads half a file.
    with open(path + ".tmp", "w") as f:
        yaml.safe_dump({"resources": resources}, f, sort_keys=False)
    os.replace(path + ".tmp", path)
    # Dynamic resources need a node identity, even from a file.
    config.setdefault("node", {"id": "harbor-mirror", "cluster": "harbor-mirror"})
    config["dynamic_resources"] = {
        "lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": path, "watched_directory": {"path": os.path.dirname(path)}},
        }
    }


if __name__ == "__main__":
    main()
