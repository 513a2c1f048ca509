#!/usr/bin/env bash
# Installs (or upgrades) TenantDB with Helm on the cluster KUBECONFIG points at, with
# the e2e values (scaled-down tiers), and waits for the operator to be available.
#   e2e/install.sh [extra helm args…]
set -euo pipefail
LOG_TAG=install
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
command -v helm >/dev/null || "$E2E_DIR/build-tools.sh"
TAG="${TENANTDB_IMAGE_TAG:-dev}"
# The operator's namespace admits only pods meeting the "restricted" Pod Security Standard,
# as the README tells users to label it: the operator's own pods must pass.
kubectl create namespace tenantdb-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace tenantdb-system --overwrite pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted >/dev/null
# CRDs change with the code: apply them on every install (helm only installs crds/ once).
kubectl apply --server-side --force-conflicts -f "$REPO_DIR/charts/tenantdb/crds/" >/dev/null
helm upgrade --install tenantdb "$REPO_DIR/charts/tenantdb" --namespace tenantdb-system --create-namespace \
  -f "$E2E_DIR/values-e2e.yaml" --set image.tag="$TAG" --set engineImage.tag="$TAG" \
  --wait --timeout 120s "$@" >/dev/null
# A new image with the same tag needs a restart to be picked up.
kubectl -n tenantdb-system rollout restart deploy/tenantdb-operator >/dev/null
kubectl -n tenantdb-system rollout status deploy/tenantdb-operator --timeout=120s >/dev/null
log "TenantDB installed in tenantdb-system (images :$TAG)"
