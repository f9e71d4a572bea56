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

# user_root ROOT NAME UID HOME LIBRARY...: what a glibc binary run as a user needs on an empty base:
# each library (the real file under the name the binary asks for: the loader resolves no symlinks
# here), /etc/passwd and /etc/group naming root and NAME (UID, group UID), HOME, and a world-writable
# /tmp. Used by scripts/images and by the stand-in distroless base of scripts/dockerfile-check.
user_root() {
  local root=$1 name=$2 uid=$3 home=$4 lib
  shift 4
  for lib in "$@"; do install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"; done
  mkdir -p "$root/etc" "$root/tmp" "$root$home"
  printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:%s:/sbin/nologin\n' \
    "$name" "$uid" "$uid" "$name" "$home" >"$root/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$name" "$uid" >"$root/etc/group"
  chmod 1777 "$root/tmp"
}
