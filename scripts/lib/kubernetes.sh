# shellcheck shell=bash
# Building Kubernetes components from the Go module proxy (sourced by scripts/envtest and
# scripts/cluster). k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/apiserver,
# ...) at the fake version v0.0.0 and replaces them with ./staging/src/...; replace directives of a
# dependency are ignored, so a main module of our own pins each of them to the published tag of the
# same release (v1.X.Y -> v0.X.Y).
#
# Needs: K8S_VERSION, VERSION_DIR, log, die.

# Go settings for the throwaway modules. GOCACHE/GOMODCACHE stay at Go's defaults so compiled
# packages and downloads survive between runs (and are shared by every component built from one
# release); GOWORK=off so a go.work somewhere above the cache dir cannot interfere; -mod=mod lets
# `go build` fill go.sum; -buildvcs=false because the cache dir is not a repo.
go_env() {
  GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 "$@"
}

# Path of k8s.io/kubernetes' own go.mod in the module cache (downloads the module zip, which the
# build needs anyway).
kubernetes_gomod() {
  local json
  json=$(cd "$VERSION_DIR" && go_env go mod download -json "k8s.io/kubernetes@$K8S_VERSION") \
    || die "cannot download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json" | head -n1
}

# kubernetes_module DIR NAME PACKAGE...: a fresh module in DIR requiring k8s.io/kubernetes at
# K8S_VERSION with every staging module pinned, resolved for PACKAGE....
kubernetes_module() {
  local src=$1 name=$2 gomod staging_version mods m
  shift 2
  mkdir -p "$src"
  gomod=$(kubernetes_gomod)
  [[ -f $gomod ]] || die "could not locate go.mod of k8s.io/kubernetes@$K8S_VERSION"
  staging_version="v0.${K8S_VERSION#v1.}"
  mods=$(awk '
    $1 == "replace" { $1 = ""; $0 = substr($0, 2) }
    $2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod")
  [[ -n $mods ]] || die "found no staging modules in $gomod"
  # Regenerated from scratch each time: cheap, and never stale.
  rm -f "$src/go.mod" "$src/go.sum"
  (
    cd "$src"
    go_env go mod init "herald.local/$name" >/dev/null 2>&1
    local args=()
    for m in $mods; do args+=("-replace=$m=$m@$staging_version"); done
    go_env go mod edit "${args[@]}"
    log "$name: resolving dependencies ($(wc -w <<<"$mods") staging modules pinned to $staging_version)"
    local pkg gets=()
    for pkg in "$@"; do gets+=("$pkg@$K8S_VERSION"); done
    go_env go get "${gets[@]}"
  )
}

# The version stamp kubernetes' hack/lib/version.sh puts in, so /version and `kubectl version`
# report the real release instead of v0.0.0-master (client-go reads it). The proxy does not tell us
# the git commit, so gitCommit keeps its placeholder.
kubernetes_ldflags() {
  local minor="${K8S_VERSION#v1.}" date ldflags="-s -w" pkg
  minor="${minor%%.*}"
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  printf '%s' "$ldflags"
}
