#!/usr/bin/env python3
"""Package the filter's .wasm as an OCI image layout that Istio, Envoy Gateway and Higress pull.

Writes LAYOUT_DIR as an OCI image layout (oci-layout, index.json naming the image TAG, blobs/)
holding one image manifest, for `skopeo copy oci:LAYOUT_DIR:TAG docker://REGISTRY/REPO:TAG`.
Prints the manifest digest: the sha256 a WasmPlugin (Istio, Higress) or an EnvoyExtensionPolicy
image (Envoy Gateway) pins.

The image is the Wasm image specification's "compat" variant, the one shape every fetcher takes:
an OCI image manifest whose single layer (application/vnd.oci.image.layer.v1.tar+gzip) is a
gzip'd tar holding one regular file, plugin.wasm. Istio (pkg/wasm/imagefetcher.go,
extractOCIStandardImage), Envoy Gateway (internal/wasm/imagefetcher.go, a copy of it) and Higress
(its fork of Istio's pilot-agent) check the last layer's media type, un-gzip it and read the
first tar entry named plugin.wasm; the image config is never read. The config is still a valid
OCI image config (os wasip1, architecture wasm: the module's target, wasm32-wasip1, in the GOOS
and GOARCH values the image spec asks for) so that registries and copy tools treat it as an image.

The same .wasm and arguments give the same bytes: the tar entry has fixed owner, mode and mtime
(0), the gzip header has no name and mtime 0, and JSON is written with sorted keys. The layer
depends on the .wasm alone, so an unchanged module keeps its layer digest across versions.
"""
import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_FILE_NAME = "plugin.wasm"  # the name the fetchers look for (wasmPluginFileName)
WASM_MAGIC = b"\0asm"  # what the fetchers check the extracted module begins with
LAYOUT_ENTRIES = {"oci-layout", "index.json", "blobs"}
TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # the distribution spec's tag
TITLE = "harbor-mirror"


def canonical_json(value):
    """Serializes VALUE the same way every time: sorted keys, no insignificant whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type, data):
    """An OCI content descriptor of DATA."""
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}


def layer_tar(wasm):
    """An uncompressed tar with one entry, plugin.wasm: mode 0644, owned by root, mtime 0."""
    member = tarfile.TarInfo(WASM_FILE_NAME)
    member.size, member.mode, member.mtime = len(wasm), 0o644, 0
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(wasm))
    return out.getvalue()


def gzip_bytes(data):
    """DATA gzip'd with a fixed header: no file name, mtime 0 (Python writes OS 'unknown')."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as f:
        f.write(data)
    return out.getvalue()


def image_config(tar, created):
    """The OCI image config: platform, the layer's diff ID and, if given, the creation time."""
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]},
    }
    if created:
        config["created"] = created
    return config


def image_manifest(config, layer, tag, created):
    """The image manifest, annotated with the title, the version (TAG) and the creation time."""
    annotations = {
        "org.opencontainers.image.title": TITLE,
        "org.opencontainers.image.version": tag,
    }
    if created:
        annotations["org.opencontainers.image.created"] = created
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, config),
        "layers": [descriptor(LAYER_MEDIA_TYPE, layer)],
        "annotations": annotations,
    }


def layout_index(manifest, tag):
    """index.json: the one manifest, named TAG for `skopeo copy oci:LAYOUT:TAG`."""
    entry = descriptor(MANIFEST_MEDIA_TYPE, manifest)
    entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [entry]}


def clear_layout(path):
    """Makes PATH an empty directory, removing a previous layout; refuses to remove anything else."""
    os.makedirs(path, exist_ok=True)
    foreign = set(os.listdir(path)) - LAYOUT_ENTRIES
    if foreign:
        sys.exit(f"{path} holds more than an OCI layout ({', '.join(sorted(foreign))}); not touching it")
    for entry in LAYOUT_ENTRIES & set(os.listdir(path)):
        target = os.path.join(path, entry)
        if os.path.isdir(target):
            shutil.rmtree(target)
        else:
            os.remove(target)


def write_layout(path, blobs, index):
    """Writes BLOBS (content-addressed) and INDEX as an OCI image layout in PATH."""
    clear_layout(path)
    blob_dir = os.path.join(path, "blobs", "sha256")
    os.makedirs(blob_dir)
    for data in blobs:
        with open(os.path.join(blob_dir, hashlib.sha256(data).hexdigest()), "wb") as f:
            f.write(data)
    with open(os.path.join(path, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
    with open(os.path.join(path, "index.json"), "wb") as f:
        f.write(canonical_json(index))


def build_image(wasm, tag, created):
    """Returns (blobs, index, manifest digest) of the image of WASM."""
    tar = layer_tar(wasm)
    layer = gzip_bytes(tar)
    config = canonical_json(image_config(tar, created))
    manifest = canonical_json(image_manifest(config, layer, tag, created))
    return [config, layer, manifest], layout_index(manifest, tag), sha256_digest(manifest)


def tag_argument(value):
    if not TAG_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid image tag")
    return value


def rfc3339_argument(value):
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in value:
        raise argparse.ArgumentTypeError(f"{value!r} is not an RFC 3339 date-time with a time zone")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", metavar="LAYOUT_DIR", help="the OCI image layout to (re)write")
    parser.add_argument("wasm", metavar="WASM_FILE", help="the proxy-wasm module")
    parser.add_argument("--tag", required=True, type=tag_argument, help="the image tag, e.g. the crate's version")
    parser.add_argument("--created", type=rfc3339_argument,
                        help="creation time for the config and annotations (RFC 3339); omitted if not given")
    args = parser.parse_args()

    with open(args.wasm, "rb") as f:
        wasm = f.read()
    if not wasm.startswith(WASM_MAGIC):
        sys.exit(f"{args.wasm} is not a WebAssembly module (no \\0asm magic)")
    blobs, index, digest = build_image(wasm, args.tag, args.created)
    write_layout(args.layout, blobs, index)
    print(digest)


if __name__ == "__main__":
    main()
