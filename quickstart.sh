#!/usr/bin/env bash
# Quick start: a cluster, TenantDB installed, the sample tenants Ready, and a query
# answered by a database in one of them.
#   ./quickstart.sh
# Which cluster: the one KUBECONFIG points at when it answers (TENANTDB_IMAGE_TAG
# names images already available to it); else kind when Docker runs; else a local
# one-node cluster built from registries (root, no Docker; see e2e/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
t0=$SECONDS
say() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - t0))"; }
PATH="$(e2e/build-tools.sh --print):$PATH"; export PATH

if [ -n "${KUBECONFIG:-}" ] && kubectl version >/dev/null 2>&1; then
  say "using the cluster at $KUBECONFIG"
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && command -v kind >/dev/null 2>&1; then
  say "kind cluster"
  e2e/kind.sh up
  KUBECONFIG="$(e2e/kind.sh kubeconfig)"; export KUBECONFIG
else
  say "local cluster (no Docker here)"
  e2e/cluster.sh up
  KUBECONFIG="$(e2e/cluster.sh kubeconfig)"; export KUBECONFIG
  say "images"
  e2e/images.sh
fi

say "install TenantDB (Helm)"
e2e/install.sh

say "sample tenants, lockdown profiles and databases"
kubectl apply -f manifests/samples/ >/dev/null
for t in bronze silver gold platinum; do
  kubectl -n tenantdb-samples wait "tnt/sample-$t" --for=jsonpath='{.status.phase}'=Ready --timeout=180s >/dev/null
done
kubectl -n tenantdb-samples wait tnt/sample-suspended --for=jsonpath='{.status.phase}'=Suspended --timeout=60s >/dev/null
kubectl -n tenantdb-samples wait pldb --all --for=condition=Ready --timeout=120s >/dev/null

say "relocate ledger from sample-bronze to sample-silver"
kubectl -n tenantdb-samples patch pldb ledger --type merge -p '{"spec":{"tenant":"sample-silver"}}' >/dev/null
kubectl -n tenantdb-samples wait pldb/ledger --for=jsonpath='{.status.tenant}'=sample-silver --timeout=120s >/dev/null
kubectl -n tenantdb-samples wait pldb/ledger --for=condition=Ready --timeout=60s >/dev/null

say "unplug legacy, plug it back as legacy-restored"
kubectl apply -f manifests/samples/unplug-plug/1-unplug.yaml >/dev/null
kubectl -n tenantdb-samples wait pldb/legacy --for=condition=Ready --timeout=60s >/dev/null
kubectl -n tenantdb-samples delete pldb legacy --timeout=60s >/dev/null
kubectl apply -f manifests/samples/unplug-plug/2-plug.yaml >/dev/null
kubectl -n tenantdb-samples wait pldb/legacy-restored --for=condition=Ready --timeout=90s >/dev/null
kubectl get lockdownprofiles
kubectl get tnt,pldb -n tenantdb-samples

say "kubectl tenantdb (the plugin on PATH)"
cargo build --release --locked -q -p tenantdb-kubectl && export PATH="${CARGO_TARGET_DIR:-$PWD/target}/release:$PATH"
kubectl tenantdb status -n tenantdb-samples

say "a query in sample-gold's orders database, through @libsql/client"
# shellcheck source=drivers/install.sh
. drivers/install.sh
install_node
conn="$(mktemp)"
kubectl tenantdb connect sample-gold orders --port-forward -n tenantdb-samples > "$conn" 2>/dev/null &
pf=$!
trap 'kill $pf 2>/dev/null || true; rm -f "$conn"' EXIT
for _ in $(seq 100); do grep -q '^LIBSQL_AUTH_TOKEN=' "$conn" && grep -q '^LIBSQL_URL=' "$conn" && break; sleep 0.2; done
(set -a; . "$conn"; set +a; node drivers/node/app/hello.mjs)
kubectl tenantdb sql sample-gold orders "SELECT msg FROM greetings" -n tenantdb-samples
say "done: export KUBECONFIG=$KUBECONFIG"
