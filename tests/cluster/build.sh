#!/usr/bin/env bash
# Builds the test control plane's binaries from their Go modules at pinned versions:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm.
#
# Why from Go modules: the test machines reach the Go module proxy but not dl.k8s.io or a
# container registry. See docs/contributing-cluster.md.
#
# The binaries go to a cache OUTSIDE the repository, in a directory keyed by every version,
# so a version bump builds a new directory and never mixes binaries:
#   ${KUBEROLLOUT_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kuberollout}/k8s-<v>-etcd-<v>-kwok-<v>-helm-<v>/bin
# A build runs in a temporary directory next to it and is renamed into place at the end, so an
# interrupted build never leaves a half-filled cache. When every binary is there, nothing runs.
#
# Usage:
#   tests/cluster/build.sh                  build what is missing; the last stdout line is the bin dir
#   tests/cluster/build.sh --print-bin-dir  print the bin dir and exit (builds nothing, needs no Go)
#   tests/cluster/build.sh --force          rebuild everything
# Environment:
#   KUBEROLLOUT_K8S_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kuberollout)
#   GO                     the go command (default: go on PATH, else /usr/local/go/bin/go)
#   GOFLAGS                passed through; "-p=2" is added unless it already sets -p
#                          (2 parallel compiles: peak ~2 GB per process, measured 1.9 GB)
# All progress goes to stderr; stdout carries only the bin dir.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GOMOD_DIR="$HERE/go"

# kwok and helm are plain `go install pkg@version` (their go.mod files have no replace
# directives); the sum database pins their content. The other versions are read from the
# wrapper modules' go.mod files, which are the single source of truth for them.
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.22.0"

# mod_version FILE MODULE: the version a wrapper go.mod pins MODULE to (replace wins).
mod_version() {
    awk -v m="$2" '
        $1 == m && $2 == "=>" && $3 == m { rep = $4 }
        $1 == "replace" && $2 == m && $3 == "=>" && $4 == m { rep = $5 }
        $1 == m && $2 ~ /^v[0-9]/ && req == "" { req = $2 }
        $1 == "require" && $2 == m { req = $3 }
        END { if (rep != "") print rep; else print req }
    ' "$1"
}

K8S_VERSION="$(mod_version "$GOMOD_DIR/go.mod" k8s.io/kubernetes)"
KUBECTL_MODVERSION="$(mod_version "$GOMOD_DIR/kubectl/go.mod" k8s.io/kubectl)"
ETCD_VERSION="$(mod_version "$GOMOD_DIR/etcd/go.mod" go.etcd.io/etcd/server/v3)"
for v in K8S_VERSION KUBECTL_MODVERSION ETCD_VERSION; do
    [[ -n "${!v}" ]] || { echo "build.sh: cannot read $v from $GOMOD_DIR" >&2; exit 2; }
done
# kubectl v0.X.Y ships with Kubernetes v1.X.Y; keep them in lockstep.
if [[ "v1.${KUBECTL_MODVERSION#v0.}" != "$K8S_VERSION" ]]; then
    echo "build.sh: kubectl module $KUBECTL_MODVERSION does not match kubernetes $K8S_VERSION" >&2
    exit 2
fi

CACHE_ROOT="${KUBEROLLOUT_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kuberollout}"
KEY="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}-helm-${HELM_VERSION}"
DEST="$CACHE_ROOT/$KEY"
BIN_DIR="$DEST/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)

force=0
case "${1:-}" in
    --print-bin-dir) echo "$BIN_DIR"; exit 0 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "build.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

log() { echo "build.sh: $*" >&2; }

missing() {
    local b out=()
    for b in "${BINARIES[@]}"; do
        [[ $force == 1 || ! -x "$BIN_DIR/$b" ]] && out+=("$b")
    done
    echo "${out[@]:-}"
}

start=$(date +%s)
todo="$(missing)"
if [[ -z "$todo" ]]; then
    log "all binaries present in $BIN_DIR (nothing to do, $(( $(date +%s) - start ))s)"
    echo "$BIN_DIR"
    exit 0
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || { log "no Go toolchain found (set GO=/path/to/go)"; exit 3; }

mkdir -p "$CACHE_ROOT"
# One build at a time per cache root: the test script and the pytest fixture may both call us.
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then
    log "another build holds $CACHE_ROOT/.build.lock; waiting for it"
    flock 9
    todo="$(missing)"
    if [[ -z "$todo" ]]; then echo "$BIN_DIR"; exit 0; fi
fi

# Holding the lock, any other temporary build directory is a leftover of a killed build.
rm -rf "$CACHE_ROOT"/.build.??????
TMP="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# A signal (timeout, kill) stops the go command too, and the EXIT trap removes its output.
CHILD=""
trap '[[ -n "$CHILD" ]] && kill "$CHILD" 2>/dev/null; exit 130' INT TERM

# run CMD...: run a go command as a waited-for child, so the traps above can reach it.
run() {
    "$@" &
    CHILD=$!
    wait "$CHILD"
    CHILD=""
}
mkdir -p "$TMP/bin"

export CGO_ENABLED=0
if [[ " ${GOFLAGS:-} " != *" -p="* ]]; then
    export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=2"
fi
log "building [$todo] for $KEY with $("$GO" version | cut -d' ' -f3), GOFLAGS='$GOFLAGS'"

# version_ldflags VERSION DATE: what kubernetes' hack/lib/version.sh sets, so /version and
# `kubectl version` report the real release instead of v0.0.0-master.
version_ldflags() {
    local v="$1" date="$2" major minor pkg out=""
    major="${v#v}"; major="${major%%.*}"
    minor="${v#v*.}"; minor="${minor%%.*}"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        out+=" -X '$pkg.gitVersion=$v' -X '$pkg.gitMajor=$major' -X '$pkg.gitMinor=$minor'"
        # The module zip carries no commit hash; an empty gitCommit is what go-built
        # binaries report anyway. The build date is the tag's date, so builds are reproducible.
        out+=" -X '$pkg.gitCommit=' -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=$date'"
    done
    echo "$out"
}

# module_time DIR MODULE: the publication time of the module version DIR's go.mod selects.
module_time() {
    (cd "$1" && "$GO" list -m -f '{{if .Replace}}{{.Replace.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{else}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$2")
}

want() { [[ " $todo " == *" $1 "* ]]; }

build_kube() {
    local pkgs=() b
    for b in kube-apiserver kube-controller-manager kube-scheduler; do
        want "$b" && pkgs+=("k8s.io/kubernetes/cmd/$b")
    done
    [[ ${#pkgs[@]} -gt 0 ]] || return 0
    local t0=$(date +%s) date
    date="$(module_time "$GOMOD_DIR" k8s.io/kubernetes)"
    log "  ${pkgs[*]##*/} ($K8S_VERSION)"
    run "$GO" -C "$GOMOD_DIR" build -trimpath -buildvcs=false \
        -ldflags "-s -w $(version_ldflags "$K8S_VERSION" "$date")" -o "$TMP/bin/" "${pkgs[@]}"
    log "  ... done in $(( $(date +%s) - t0 ))s"
}

build_kubectl() {
    want kubectl || return 0
    local t0=$(date +%s) date
    date="$(module_time "$GOMOD_DIR/kubectl" k8s.io/kubectl)"
    log "  kubectl ($K8S_VERSION)"
    run "$GO" -C "$GOMOD_DIR/kubectl" build -trimpath -buildvcs=false \
        -ldflags "-s -w $(version_ldflags "$K8S_VERSION" "$date")" -o "$TMP/bin/kubectl" .
    log "  ... done in $(( $(date +%s) - t0 ))s"
}

build_etcd() {
    want etcd || return 0
    local t0=$(date +%s)
    log "  etcd ($ETCD_VERSION)"
    # etcd's version.Version constant is compiled in, nothing to stamp.
    run "$GO" -C "$GOMOD_DIR/etcd" build -trimpath -buildvcs=false -ldflags "-s -w" \
        -o "$TMP/bin/etcd" .
    log "  ... done in $(( $(date +%s) - t0 ))s"
}

build_kwok() {
    want kwok || return 0
    local t0=$(date +%s)
    log "  kwok ($KWOK_VERSION)"
    run env GOBIN="$TMP/bin" "$GO" install -trimpath \
        -ldflags "-s -w -X 'sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION' -X 'sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION'" \
        "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    log "  ... done in $(( $(date +%s) - t0 ))s"
}

build_helm() {
    want helm || return 0
    local t0=$(date +%s) gomod cg major minor
    log "  helm ($HELM_VERSION)"
    # Like helm's Makefile: the default Capabilities.KubeVersion follows the client-go it is
    # built with (v0.X.Y -> 1.X).
    gomod="$("$GO" mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    cg="$(awk '$1 == "k8s.io/client-go" { print $2 }' "$gomod")"
    major=1; minor="${cg#v0.}"; minor="${minor%%.*}"
    run env GOBIN="$TMP/bin" "$GO" install -trimpath \
        -ldflags "-s -w -X 'helm.sh/helm/v3/internal/version.version=$HELM_VERSION' -X 'helm.sh/helm/v3/internal/version.gitTreeState=clean' -X 'helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major' -X 'helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor' -X 'helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major' -X 'helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor'" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    log "  ... done in $(( $(date +%s) - t0 ))s"
}

# Small ones first, so a failure in the big kube build is reported after the rest is usable.
build_etcd
build_kwok
build_helm
build_kubectl
build_kube

cat > "$TMP/VERSIONS" <<EOF
kubernetes=$K8S_VERSION
etcd=$ETCD_VERSION
kwok=$KWOK_VERSION
helm=$HELM_VERSION
go=$("$GO" env GOVERSION)
EOF

if [[ ! -d "$DEST" ]]; then
    # The common case: one rename publishes the complete directory.
    mv "$TMP" "$DEST"
    trap - EXIT
    chmod 755 "$DEST"
else
    # Some binaries were missing from an existing directory (or --force): each rename is
    # atomic, and a binary is only ever present complete.
    mkdir -p "$BIN_DIR"
    for b in "$TMP"/bin/*; do mv -f "$b" "$BIN_DIR/"; done
    mv -f "$TMP/VERSIONS" "$DEST/VERSIONS"
fi

log "built [$todo] in $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
