#!/usr/bin/env python3
"""Write a small, reproducible, single-layer image as an OCI layout (no network, no engine).

The layer holds one file, /etc/harbor-mirror-image, whose text is the label, so that every label
gives an image of its own digest. Same label, same bytes: tar and gzip carry no timestamps.
`--layer-bytes N` adds /etc/harbor-mirror-filler, N bytes drawn from the label (they do not
compress: the layer is about that large); `--index` tags an image index that lists the image,
as multi-platform images are (copy it with `skopeo copy --all`).
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


def filler(label, size):
    """`size` bytes that look random and depend only on the label."""
    out, counter = bytearray(), 0
    while len(out) < size:
        out += hashlib.sha256(b"%s/%d" % (label.encode(), counter)).digest()
        counter += 1
    return bytes(out[:size])


def layer_tar(label, layer_bytes=0):
    content = (label + "\n").encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("etc")
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(directory)
        member = tarfile.TarInfo("etc/harbor-mirror-image")
        member.size, member.mode, member.mtime = len(content), 0o644, 0
        tar.addfile(member, io.BytesIO(content))
        if layer_bytes:
            data = filler(label, layer_bytes)
            member = tarfile.TarInfo("etc/harbor-mirror-filler")
            member.size, member.mode, member.mtime = len(data), 0o644, 0
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", help="directory of the OCI layout to create")
    parser.add_argument("tag")
    parser.add_argument("label")
    parser.add_argument("--layer-bytes", type=int, default=0, help="add this many incompressible bytes to the layer")
    parser.add_argument("--index", action="store_true", help="tag an image index that lists the image")
    args = parser.parse_args()

    os.makedirs(os.path.join(args.layout, "blobs", "sha256"), exist_ok=True)
    tar = layer_tar(args.label, args.layer_bytes)
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
    tagged = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": len(manifest)}
    if args.index:
        image_index = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [dict(tagged, platform={"architecture": ARCH, "os": "linux"})],
        }, sort_keys=True).encode()
        tagged = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": write_blob(args.layout, image_index),
                  "size": len(image_index)}
    index = {
        "schemaVersion": 2,
        "manifests": [dict(tagged, annotations={"org.opencontainers.image.ref.name": args.tag})],
    }
    with open(os.path.join(args.layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(args.layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
