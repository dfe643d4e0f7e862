#!/usr/bin/env bash
# The OCI image of the filter (envoy/wasm_image.py, `./build.sh image`), checked the way Istio,
# Envoy Gateway and Higress read it. All three pull with go-containerregistry and take the
# "compat" variant of the Wasm image specification:
#   Istio         istio/istio             pkg/wasm/imagefetcher.go  ImageFetcher.PrepareFetch,
#                 extractOCIStandardImage, extractDockerImage, extractWasmPluginBinary;
#                 pkg/wasm/cache.go isValidWasmBinary
#   Envoy Gateway envoyproxy/gateway      internal/wasm/imagefetcher.go, the same functions
#                 (a copy of Istio's); internal/wasm/cache.go isValidWasmBinary
#   Higress       higress-group/istio     pkg/wasm/imagefetcher.go (Higress's fork of Istio, the
#                 pilot-agent in its gateway pod), the same functions
# What they require, and what this suite checks against a local CNCF Distribution registry after
# a skopeo push, is listed in check_pulled_image below. Also: the layout is reproducible, skopeo
# copies the image back unchanged, and a Docker v2s2 conversion (skopeo --format v2s2, for a
# registry that refuses OCI manifests) is accepted too.
#
# Usage: tests/image.sh WASM   (WASM: the module to package, e.g. dist/harbor_mirror.wasm)
set -euo pipefail
WASM=$(realpath "${1:?usage: tests/image.sh WASM}")
[ -f "$WASM" ] || { echo "$WASM is missing: run ./build.sh build" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/harbor-mirror-image.XXXXXX")
trap 'stop_started; rm -rf "$WORK"' EXIT
TAG=test
REPO=harbor-mirror/plugin
PORT=$(free_port)
REGISTRY=127.0.0.1:$PORT

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
# What go-containerregistry's remote.Get asks for (pkg/v1/remote/image.go, index.go): an index
# in the answer would be resolved by platform (linux/amd64 by default), so it must not be one.
ACCEPT=$DOCKER_MANIFEST,$OCI_MANIFEST
ACCEPT+=,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.index.v1+json

build_layout() { # build_layout DIR: the image layout of WASM; prints the manifest digest
  python3 "$ROOT/envoy/wasm_image.py" "$1" "$WASM" --tag "$TAG" --created 2026-01-01T00:00:00Z
}

push() { # push TAG [SKOPEO ARGS...]: copies the layout's image to the registry as TAG
  local tag=$1; shift
  skopeo copy -q --dest-tls-verify=false "$@" "oci:$WORK/layout:$TAG" "docker://$REGISTRY/$REPO:$tag"
}

# pull_raw TAG DIR: what a fetcher downloads, with curl: DIR/manifest (and its response headers
# in DIR/headers), then each blob it names, as DIR/<hex digest>.
pull_raw() {
  local tag=$1 dir=$2 digest
  mkdir -p "$dir"
  curl -sfS -H "Accept: $ACCEPT" -D "$dir/headers" -o "$dir/manifest" "http://$REGISTRY/v2/$REPO/manifests/$tag"
  for digest in $(jq -r '.config.digest, .layers[].digest' "$dir/manifest"); do
    curl -sfS -o "$dir/${digest#sha256:}" "http://$REGISTRY/v2/$REPO/blobs/$digest"
  done
}

# check_pulled_image DIR VARIANT(oci|docker): DIR from pull_raw, read as the fetchers read it.
check_pulled_image() {
  python3 - "$1" "$2" "$WASM" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile

pulled, variant, wasm_path = sys.argv[1:]
# The layer type each branch of PrepareFetch takes: extractOCIStandardImage wants types.OCILayer,
# extractDockerImage (taken when the manifest's mediaType is types.DockerManifestSchema2)
# wants types.DockerLayer. The config is never read by the fetchers; a copy tool or registry
# expects the image config type that goes with the manifest type.
EXPECTED = {
    "oci": ("application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip"),
    "docker": ("application/vnd.docker.distribution.manifest.v2+json",
               "application/vnd.docker.container.image.v1+json",
               "application/vnd.docker.image.rootfs.diff.tar.gzip"),
}
manifest_type, config_type, layer_type = EXPECTED[variant]
failures = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)
    return ok


def blob(descriptor):
    """The blob, verified as go-containerregistry's verify.ReadCloser does: size, then digest."""
    with open(os.path.join(pulled, descriptor["digest"].removeprefix("sha256:")), "rb") as f:
        data = f.read()
    kind = descriptor["mediaType"]
    check(len(data) == descriptor["size"], f"{kind} blob has the size its descriptor says")
    check("sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"], f"{kind} blob has its digest")
    return data


headers = {}
with open(os.path.join(pulled, "headers")) as f:
    for line in f:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
with open(os.path.join(pulled, "manifest"), "rb") as f:
    raw = f.read()
manifest = json.loads(raw)

# remote.Get + Descriptor.Image(): the Content-Type is an image manifest, not an index (an index
# is resolved by platform) nor schema 1 (refused).
check(headers.get("content-type") == manifest_type, f"the registry serves it as {manifest_type}")
# PrepareFetch's actualDigest (the WasmPlugin / EnvoyExtensionPolicy sha256) is the sha256 of the
# manifest's bytes; the registry's Docker-Content-Digest must agree.
check(headers.get("docker-content-digest") == "sha256:" + hashlib.sha256(raw).hexdigest(),
      "Docker-Content-Digest is the manifest's sha256")
check(manifest.get("schemaVersion") == 2 and "manifests" not in manifest, "an image manifest, schema version 2")
# `manifest.MediaType == types.DockerManifestSchema2` picks the branch: the Docker one for the
# Docker form, extractOCIStandardImage for the OCI form.
check(manifest.get("mediaType") == manifest_type, f"manifest mediaType is {manifest_type}")
check(manifest["config"]["mediaType"] == config_type, f"config mediaType is {config_type}")
config = json.loads(blob(manifest["config"]))
layers = manifest.get("layers", [])
# The fetchers take layers[len(layers)-1]; the compat variant has exactly one.
if not check(len(layers) == 1, f"exactly one layer (got {len(layers)})"):
    sys.exit(1)
layer = layers[0]
check(layer["mediaType"] == layer_type, f"layer mediaType is {layer_type}")
check(not layer.get("urls"), "the layer has no foreign URLs")
compressed = blob(layer)

# extractWasmPluginBinary: gzip.NewReader, then the first tar entry whose filepath.Base is
# plugin.wasm. Stricter here: that is the tar's only entry, a regular file at the top level.
tar_bytes = gzip.decompress(compressed)
diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
check(config.get("rootfs") == {"type": "layers", "diff_ids": [diff_id]},
      "the config's rootfs.diff_ids is the un-gzipped layer's sha256")
platform = f"{config.get('os')}/{config.get('architecture')}"
check(bool(config.get("os")) and bool(config.get("architecture")), f"the config names a platform ({platform})")
with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
    members = tar.getmembers()
    names = [m.name for m in members]
    check(names == ["plugin.wasm"], f"the layer holds exactly plugin.wasm (got {names})")
    found = next((m for m in members if os.path.basename(m.name) == "plugin.wasm"), None)
    if not check(found is not None and found.isreg(), "plugin.wasm is a regular file"):
        sys.exit(1)
    check((found.uid, found.gid, found.mtime) == (0, 0, 0), "plugin.wasm is owned by 0:0 with mtime 0")
    module = tar.extractfile(found).read()
# LocalFileCache.getOrFetch: isValidWasmBinary (at least 8 bytes, starting with \0asm).
check(len(module) >= 8 and module[:4] == b"\0asm", "the extracted module passes isValidWasmBinary")
with open(wasm_path, "rb") as f:
    expected = f.read()
check(hashlib.sha256(module).digest() == hashlib.sha256(expected).digest(),
      f"plugin.wasm is byte for byte the module ({hashlib.sha256(module).hexdigest()[:12]}…)")
sys.exit(1 if failures else 0)
PY
}

# --- cases ------------------------------------------------------------------------------------

case_layout_is_reproducible() {
  local first second
  first=$(build_layout "$WORK/again")
  second=$(build_layout "$WORK/layout")
  [ "$first" = "$second" ] || { echo "FAIL: manifest digests differ: $first, $second"; return 1; }
  diff -r "$WORK/again" "$WORK/layout" || { echo "FAIL: the two layouts differ"; return 1; }
  echo "ok: two builds are byte-identical, manifest $second"
  echo "$second" >"$WORK/digest"
}

case_push_keeps_the_oci_manifest() {
  push "$TAG" --digestfile "$WORK/pushed.digest"
  [ "$(cat "$WORK/pushed.digest")" = "$(cat "$WORK/digest")" ] ||
    { echo "FAIL: skopeo pushed $(cat "$WORK/pushed.digest"), the layout has $(cat "$WORK/digest")"; return 1; }
  echo "ok: pushed unconverted as $(cat "$WORK/digest")"
}

case_oci_image_is_what_the_fetchers_take() {
  pull_raw "$TAG" "$WORK/pulled-oci"
  check_pulled_image "$WORK/pulled-oci" oci
}

case_skopeo_copies_it_back_unchanged() {
  skopeo copy -q --src-tls-verify=false "docker://$REGISTRY/$REPO:$TAG" "oci:$WORK/copied:$TAG"
  local ours theirs
  ours=$(jq -r '.layers[0].digest' "$WORK/pulled-oci/manifest")
  theirs=$(skopeo inspect --raw "oci:$WORK/copied:$TAG" | jq -r '.layers[0].digest')
  [ "$ours" = "$theirs" ] || { echo "FAIL: layer $theirs after the round trip, $ours before"; return 1; }
  echo "ok: layer $ours after a copy back to an OCI layout"
}

case_docker_v2s2_conversion_is_taken_too() {
  push "$TAG-v2s2" --format v2s2
  pull_raw "$TAG-v2s2" "$WORK/pulled-docker"
  check_pulled_image "$WORK/pulled-docker" docker
}

# --- runner -----------------------------------------------------------------------------------

start_registry "$WORK/registry" "$PORT"
PASSED=0 FAILED=0 FAILED_CASES=()
# run_case FUNCTION: runs one case in a subshell with set -e (which an `if` or `||` around it
# would switch off, hence the set +e around it instead).
run_case() {
  local rc
  echo "--- $1"
  set +e
  (set -e; "$1") >"$WORK/case.log" 2>&1
  rc=$?
  set -e
  sed 's/^/  /' "$WORK/case.log"
  if [ $rc -eq 0 ]; then
    PASSED=$((PASSED + 1)); echo "PASS $1"
  else
    FAILED=$((FAILED + 1)); FAILED_CASES+=("$1"); echo "FAIL $1 (exit $rc)"
  fi
}

run_case case_layout_is_reproducible
run_case case_push_keeps_the_oci_manifest
run_case case_oci_image_is_what_the_fetchers_take
run_case case_skopeo_copies_it_back_unchanged
run_case case_docker_v2s2_conversion_is_taken_too

echo
[ "$FAILED" -eq 0 ] || echo "failed: ${FAILED_CASES[*]}"
echo "image: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
