#!/usr/bin/env bash
# A namespaced install (chart value clusterWide: false), on a cluster where no other
# TenantDB operator runs: the operator serves the Tenants of its own namespace, reaches
# nothing namespaced elsewhere (its Role says so, and a Tenant in another namespace stays
# untouched), and everything is removed afterwards.
#   e2e/namespaced.sh      (KUBECONFIG points at the cluster; images as e2e/install.sh)
set -euo pipefail
LOG_TAG=namespaced
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
TAG="${TENANTDB_IMAGE_TAG:-dev}"
ns=tenantdb-team other=tenantdb-elsewhere
sa="system:serviceaccount:$ns:tenantdb-operator"
fail() { log "FAILED: $*"; exit 1; }
cleanup() {
  kubectl delete tnt --all -n "$ns" --wait=false >/dev/null 2>&1 || true
  kubectl delete tnt --all -n "$other" --wait=false >/dev/null 2>&1 || true
  helm uninstall tenantdb-team -n "$ns" --wait >/dev/null 2>&1 || true
  kubectl delete ns "$ns" "$other" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
for n in "$ns" "$other"; do
  kubectl create namespace "$n" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$n" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
done
kubectl apply --server-side --force-conflicts -f "$REPO_DIR/charts/tenantdb/crds/" >/dev/null
helm install tenantdb-team "$REPO_DIR/charts/tenantdb" -n "$ns" -f "$E2E_DIR/values-e2e.yaml" \
  --set clusterWide=false --set userRoles.create=false \
  --set image.tag="$TAG" --set engineImage.tag="$TAG" --wait --timeout 120s >/dev/null
log "installed in $ns with clusterWide=false"

can() { kubectl auth can-i "$@" --as "$sa" 2>/dev/null || true; }
[ "$(can list secrets -n "$ns")" = yes ] || fail "the operator cannot list Secrets in its own namespace"
[ "$(can list secrets -n "$other")" = no ] || fail "the operator may list Secrets in $other"
[ "$(can list secrets --all-namespaces)" = no ] || fail "the operator may list Secrets cluster-wide"
[ "$(can list statefulsets -n "$other")" = no ] || fail "the operator may list StatefulSets in $other"
[ "$(can list lockdownprofiles)" = yes ] || fail "the operator cannot read LockdownProfiles"
log "RBAC: Secrets and StatefulSets in $ns only; LockdownProfiles readable"

for n in "$ns" "$other"; do
  kubectl apply -n "$n" -f - >/dev/null <<YAML
apiVersion: tenantdb.io/v1alpha1
kind: Tenant
metadata: {name: local}
spec: {tier: bronze}
YAML
done
kubectl apply -n "$ns" -f - >/dev/null <<YAML
apiVersion: tenantdb.io/v1alpha1
kind: PluggableDatabase
metadata: {name: books}
spec: {tenant: local}
YAML
kubectl wait -n "$ns" tnt/local --for=jsonpath='{.status.phase}'=Ready --timeout=180s >/dev/null \
  || fail "the Tenant in $ns did not become Ready"
kubectl wait -n "$ns" pldb/books --for=jsonpath='{.status.phase}'=Open --timeout=90s >/dev/null \
  || fail "the database in $ns did not open"
log "a Tenant and a database in $ns: Ready and Open"
[ -z "$(kubectl get -n "$other" tnt/local -o jsonpath='{.status.phase}')" ] \
  || fail "the namespaced operator wrote the status of a Tenant in $other"
if kubectl get -n "$other" statefulset/local-engine >/dev/null 2>&1; then
  fail "the namespaced operator made an engine in $other"
fi
log "the Tenant in $other is untouched"
