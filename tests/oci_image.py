#!/usr/bin/env python3
"""Write a small, reproducible, single-layer image as an OCI layout (no network, no engine).

The layer holds one file, /etc/harbor-mirror-image, whose text is the label, so that every label
gives an image of its own digest. Same label, same bytes: tar and gzip carry no timestamps.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import tarfile

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def layer_tar(label):
    content = (label + "\n").encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("etc")
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(directory)
        member = tarfile.TarInfo("etc/harbor-mirror-image")
        member.size, member.mode, member.mtime = len(content), 0o644, 0
        tar.addfile(member, io.BytesIO(content))
    return out.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", help="directory of the OCI layout to create")
    parser.add_argument("tag")
    parser.add_argument("label")
    args = parser.parse_args()

    os.makedirs(os.path.join(args.layout, "blobs", "sha256"), exist_ok=True)
    tar = layer_tar(args.label)
    compressed = gzip.compress(tar, mtime=0)
    layer = write_blob(args.layout, compressed)
    config = json.dumps({
        "architecture": ARCH,
        "os": "linux",
        "config": {"Labels": {"org.opencontainers.image.title": args.label}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created_by": "tests/oci_image.py"}],
    }, sort_keys=True).encode()
    config_digest = write_blob(args.layout, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": len(compressed)}],
    }, sort_keys=True).encode()
    manifest_digest = write_blob(args.layout, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": args.tag},
        }],
    }
    with open(os.path.join(args.layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(args.layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
