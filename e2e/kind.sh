#!/usr/bin/env bash
# For users with Docker: a kind cluster with the same images the local cluster uses.
#   e2e/kind.sh up     create the cluster "tenantdb" and load the images
#   e2e/kind.sh down   delete it
# Then `export KUBECONFIG=$(e2e/kind.sh kubeconfig)` and run the e2e tests as usual.
set -euo pipefail
LOG_TAG=kind
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/mkimage.sh
. "$E2E_DIR/lib/mkimage.sh"

NAME="${TENANTDB_KIND_NAME:-tenantdb}"
KIND_KCFG="${TENANTDB_KIND_KUBECONFIG:-$HOME/.kube/tenantdb-kind.yaml}"
command -v kind >/dev/null || die "kind is not installed (https://kind.sigs.k8s.io); it needs Docker"

case "${1:-}" in
  up)
    # kindnet enforces NetworkPolicies from kind v0.24 on; the network e2e tests need it.
    v="$(kind version | grep -oE 'v0\.[0-9]+' | head -1)"
    if [ -n "$v" ] && [ "${v#v0.}" -lt 24 ]; then die "kind $v does not enforce NetworkPolicies (kindnet does from v0.24): upgrade kind"; fi
    kind get clusters 2>/dev/null | grep -qx "$NAME" || kind create cluster --name "$NAME" --kubeconfig "$KIND_KCFG" --wait 120s
    # The busybox test image, built the same way as for the local cluster.
    root="$(mktemp -d)"; rootfs_busybox "$root"
    image_archive localhost/busybox:e2e "$root" "$root.tar" '["/bin/sh"]'
    kind load image-archive --name "$NAME" "$root.tar"; rm -rf "$root" "$root.tar"
    "$E2E_DIR/images.sh" --archives
    for f in "$CACHE"/project-images/*.tar; do kind load image-archive --name "$NAME" "$f"; done
    log "kind cluster $NAME ready; export KUBECONFIG=$KIND_KCFG" ;;
  down) kind delete cluster --name "$NAME" ;;
  kubeconfig) echo "$KIND_KCFG" ;;
  *) echo "usage: $0 up|down|kubeconfig" >&2; exit 2 ;;
esac
