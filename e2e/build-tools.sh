#!/usr/bin/env bash
# Builds the e2e cluster's binaries from Go modules, once per version, into a cache.
#   e2e/build-tools.sh            build whatever is missing
#   e2e/build-tools.sh --print    print the bin directory
#   e2e/build-tools.sh versitygw  build only the named tools (kubernetes, etcd, coredns,
#                                 local-path-provisioner, helm, versitygw, kube-router)
# Cache: $TENANTDB_E2E_CACHE (default /var/cache/tenantdb-e2e); Go's own caches
# (GOMODCACHE, GOCACHE) are reused across versions.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
CACHE="${TENANTDB_E2E_CACHE:-/var/cache/tenantdb-e2e}"
BIN="$CACHE/bin"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$BIN" "$CACHE/src"

[ "${1:-}" = "--print" ] && { echo "$BIN"; exit 0; }

log() { printf '[build-tools %s] %s\n' "$(date +%T)" "$*" >&2; }
have() { [ -x "$BIN/$1" ] && [ -f "$BIN/.$1.version" ] && [ "$(cat "$BIN/.$1.version")" = "$2" ]; }
mark() { echo "$2" > "$BIN/.$1.version"; }

# Kubernetes: k8s.io/kubernetes replaces its staging modules with ./staging/...,
# so build through a wrapper module that pins each one to the matching v0.x tag.
build_kubernetes() {
  local v="$K8S_VERSION" bins="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl" missing=""
  for b in $bins; do have "$b" "$v" || missing="$missing $b"; done
  [ -z "$missing" ] && return 0
  log "building Kubernetes $v:$missing"
  local w="$CACHE/src/kubernetes-$v"; mkdir -p "$w"
  local modfile; modfile="$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  local minor="${v#v1.}"; minor="${minor%%.*}"
  local staging="v0.${v#v1.}"
  {
    echo "module tenantdb.io/e2e/kubernetes-build"
    echo "go 1.24.0"
    echo "require k8s.io/kubernetes $v"
    grep -E '=> \./staging/' "$modfile" | awk -v s="$staging" '{print "replace " $1 " => " $1 " " s}'
  } > "$w/go.mod"
  echo 'package tools' > "$w/tools.go"
  local pkgs="" ; for b in $missing; do pkgs="$pkgs k8s.io/kubernetes/cmd/$b"; done
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  ld="$ld -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  # shellcheck disable=SC2086
  (cd "$w" && go build -trimpath -ldflags "$ld" -o "$BIN/" $pkgs)
  for b in $missing; do mark "$b" "$v"; done
}

# etcd: go.etcd.io/etcd/server/v3 holds package main. Its go.mod's relative replaces
# only apply when it is the main module; from a wrapper module its requires (which pin
# every sibling module to this release) are used instead.
build_etcd() {
  build_simple etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
}

# Modules without replace directives build with a plain `go install`-style build.
build_simple() { # name module-path@version package-path version
  local name="$1" mod="$2" pkg="$3" v="$4"
  have "$name" "$v" && return 0
  log "building $name $v"
  local w="$CACHE/src/$name-$v"; mkdir -p "$w"
  printf 'module tenantdb.io/e2e/%s-build\ngo 1.24.0\nrequire %s %s\n' "$name" "$mod" "$v" > "$w/go.mod"
  echo 'package tools' > "$w/tools.go"
  (cd "$w" && go build -trimpath -ldflags "-s -w" -o "$BIN/$name" "$pkg")
  mark "$name" "$v"
}

# Named tools only, when some are named.
want() { [ $# -eq 0 ] || [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
ONLY="$*"

want kubernetes && build_kubernetes
want etcd && build_etcd
want coredns && build_simple coredns github.com/coredns/coredns github.com/coredns/coredns "$COREDNS_VERSION"
want local-path-provisioner && build_simple local-path-provisioner github.com/rancher/local-path-provisioner github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION"
want helm && build_simple helm helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
# The S3-compatible object store the backup tests ship to (posix backend).
want versitygw && build_simple versitygw github.com/versity/versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"
# NetworkPolicy enforcement for the local cluster: kube-router's firewall controller
# (iptables and ipsets), beside the bridge CNI and kube-proxy.
want kube-router && build_simple kube-router github.com/cloudnativelabs/kube-router/v2 github.com/cloudnativelabs/kube-router/v2/cmd/kube-router "$KUBE_ROUTER_VERSION"
log "${ONLY:-all} tools present in $BIN"
