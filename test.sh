#!/usr/bin/env bash
# Runs every test TenantDB has, e2e included, and installs what they need.
#   ./test.sh                 format, lint, unit and integration tests, then e2e on a
#                             cluster it chooses and says which: kind when Docker runs
#                             (and kind is installed), else a local cluster this script
#                             brings up (and takes down) with its own containerd, never
#                             touching the host's
# Environment:
#   TENANTDB_E2E_CLUSTER=existing  run e2e against the cluster KUBECONFIG points at
#   TENANTDB_E2E_CLUSTER=kind|local  force one of the two
#   TENANTDB_E2E_KEEP=1            leave the cluster running afterwards
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
t0=$SECONDS
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - t0))"; }
results="$(mktemp)"
# Every cargo test summary goes to $results too, for the closing count.
counted() { "$@" 2>&1 | tee -a "$results"; }

step "rustfmt"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --locked --features tenantdb-e2e/e2e,tenantdb-kubectl/e2e -- -D warnings
step "tools built from Go modules, cached by version (the cluster's, helm, the versitygw object store)"
PATH="$(e2e/build-tools.sh --print):$PATH"; export PATH
e2e/build-tools.sh
step "unit and integration tests"
counted cargo test --workspace --locked
step "the libSQL drivers (Go, Node, Python) against a standalone engine"
counted drivers/run.sh
step "chart: helm lint and the rendered install bundle"
helm lint --strict charts/tenantdb
helm lint --strict charts/tenantdb -f e2e/values-e2e.yaml --set metrics.serviceMonitor.enabled=true
scripts/render-manifests.sh --check

docker_runs() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && command -v kind >/dev/null 2>&1; }
if [ -z "${TENANTDB_E2E_CLUSTER:-}" ]; then
  if docker_runs; then TENANTDB_E2E_CLUSTER=kind; else TENANTDB_E2E_CLUSTER=local; fi
fi
case "$TENANTDB_E2E_CLUSTER" in
  existing)
    [ -n "${KUBECONFIG:-}" ] || { echo "TENANTDB_E2E_CLUSTER=existing needs KUBECONFIG" >&2; exit 2; }
    step "e2e on the existing cluster at $KUBECONFIG (chosen: TENANTDB_E2E_CLUSTER=existing)";;
  kind)
    step "e2e on a kind cluster (Docker runs here; TENANTDB_E2E_CLUSTER=local to use the local one)"
    e2e/kind.sh up
    KUBECONFIG="$(e2e/kind.sh kubeconfig)"; export KUBECONFIG
    [ "${TENANTDB_E2E_KEEP:-0}" = 1 ] || trap 'e2e/kind.sh down' EXIT;;
  local)
    step "e2e on a local cluster this script starts (its own containerd, kubelet and state; no Docker here)"
    e2e/cluster.sh up
    KUBECONFIG="$(e2e/cluster.sh kubeconfig)"; export KUBECONFIG
    [ "${TENANTDB_E2E_KEEP:-0}" = 1 ] || trap 'e2e/cluster.sh down' EXIT
    step "project images"
    e2e/images.sh;;
  *) echo "TENANTDB_E2E_CLUSTER is existing, kind or local, not $TENANTDB_E2E_CLUSTER" >&2; exit 2;;
esac

step "install TenantDB with Helm"
e2e/install.sh

step "the chart against the API server (dry-run=server, default and every optional part)"
e2e/chart-check.sh

step "e2e tests against $KUBECONFIG"
counted cargo test -p tenantdb-e2e -p tenantdb-kubectl --features tenantdb-e2e/e2e,tenantdb-kubectl/e2e --locked -- --test-threads 4
step "the README's quick start, on the same cluster"
./quickstart.sh
if [ "$TENANTDB_E2E_CLUSTER" != existing ]; then
  # The README's uninstall, on the throwaway cluster only: the operator goes, tenants stay.
  step "the README's uninstall: Tenants keep running, their children stay"
  helm uninstall tenantdb -n tenantdb-system >/dev/null
  kubectl -n tenantdb-samples get statefulset/sample-gold-engine pldb/orders secret/sample-gold-engine-credentials >/dev/null
  kubectl -n tenantdb-samples wait pod/sample-gold-engine-0 --for=condition=Ready --timeout=30s >/dev/null
  # With no cluster-wide operator left, a namespaced one (clusterWide: false).
  step "a namespaced install: one namespace served, nothing read elsewhere"
  e2e/namespaced.sh
fi
step "all tests passed"
if [ "$TENANTDB_E2E_CLUSTER" != existing ] && [ "${TENANTDB_E2E_KEEP:-0}" != 1 ]; then
  trap - EXIT
  "e2e/$([ "$TENANTDB_E2E_CLUSTER" = kind ] && echo kind || echo cluster).sh" down
fi
awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' "$results"
rm -f "$results"
