#!/usr/bin/env bash
# Renders the plain install bundle manifests/install.yaml from the Helm chart
# (default values, CRDs included). `--check` fails when the committed file differs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH="$(e2e/build-tools.sh --print):$PATH"
command -v helm >/dev/null || e2e/build-tools.sh
out="$(mktemp)"
{
  echo "# TenantDB install bundle, rendered from charts/tenantdb with default values by"
  echo "# scripts/render-manifests.sh; do not edit. kubectl apply --server-side -f manifests/install.yaml"
  echo "---"
  echo "apiVersion: v1"
  echo "kind: Namespace"
  echo "metadata:"
  echo "  name: tenantdb-system"
  echo "  labels:"
  echo "    pod-security.kubernetes.io/enforce: restricted"
  echo "    pod-security.kubernetes.io/warn: restricted"
  helm template tenantdb charts/tenantdb --namespace tenantdb-system --include-crds
} > "$out"
if [ "${1:-}" = --check ]; then
  if ! diff -q "$out" manifests/install.yaml >/dev/null 2>&1; then
    echo "manifests/install.yaml is stale: run scripts/render-manifests.sh" >&2; rm -f "$out"; exit 1
  fi
  rm -f "$out"; echo "manifests/install.yaml matches the chart"
else
  mv "$out" manifests/install.yaml; echo "wrote manifests/install.yaml"
fi
