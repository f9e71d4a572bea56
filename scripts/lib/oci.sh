# shellcheck shell=bash
# OCI images without a Docker engine (umoci), sourced by scripts/images and scripts/cluster.

# image_archive WORK FILE REF SETUP UMOCI-CONFIG-ARGS...: writes FILE, an OCI archive of one layer on
# an empty base, its files put in place by the function SETUP (given the root directory), configured
# by the `umoci config` arguments, named REF (what `ctr images import`, `skopeo copy oci-archive:`
# and `docker load` read). WORK is a scratch directory, removed afterwards.
image_archive() {
  local work=$1 file=$2 ref=$3 setup=$4 tag
  shift 4
  tag=${ref##*:}
  rm -rf "$work" && mkdir -p "$work"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
  "$setup" "$work/bundle/rootfs"
  umoci repack --image "$work/oci:$tag" "$work/bundle"
  umoci config --image "$work/oci:$tag" "$@"
  umoci gc --layout "$work/oci"
  python3 - "$work/oci/index.json" "$ref" <<'PY'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for manifest in index["manifests"]:
    manifest.setdefault("annotations", {})["io.containerd.image.name"] = ref
json.dump(index, open(path, "w"))
PY
  tar -C "$work/oci" -cf "$file.tmp" . && mv -f "$file.tmp" "$file"
  rm -rf "$work"
}
