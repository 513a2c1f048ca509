#!/usr/bin/env bash
# The chart against a real API server: `helm lint`, then `helm template | kubectl apply
# --dry-run=server` with default values and with every optional part enabled
# (e2e/values-all-optional.yaml). The prometheus-operator CRDs that ServiceMonitor,
# PodMonitor and PrometheusRule need come from its Go module (versions.env), so the
# check runs without network access beyond the module proxy.
#   e2e/chart-check.sh      (KUBECONFIG points at the cluster)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=versions.env
. "$here/versions.env"
log() { printf '[chart-check %s] %s\n' "$(date +%T)" "$*" >&2; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

dir="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
for kind in servicemonitors podmonitors prometheusrules; do
  kubectl apply --server-side -f "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" >/dev/null
done
# `kubectl wait` fails, not waits, while a fresh CRD has no status yet: poll instead.
for kind in servicemonitors podmonitors prometheusrules; do
  for _ in $(seq 120); do
    [ "$(kubectl get "crd/$kind.monitoring.coreos.com" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ] && break
    sleep 0.5
  done
  [ "$(kubectl get "crd/$kind.monitoring.coreos.com" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ] \
    || { log "CRD $kind.monitoring.coreos.com not Established after 60 s"; exit 1; }
done
log "prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs installed"

chart="$root/charts/tenantdb"
kubectl get ns tenantdb-system >/dev/null 2>&1 || kubectl create ns tenantdb-system >/dev/null
helm lint --strict "$chart" -f "$here/values-all-optional.yaml" >/dev/null
for values in "" "$here/values-all-optional.yaml" namespaced; do
  args=(); [ -n "$values" ] && args=(-f "$values")
  [ "$values" = namespaced ] && args=(--set clusterWide=false --set userRoles.create=false)
  out="$(helm template tenantdb "$chart" -n tenantdb-system "${args[@]}" | kubectl apply --server-side --force-conflicts --field-manager=chart-check --dry-run=server -f -)"
  kinds="$(echo "$out" | awk '{print $1}' | cut -d/ -f1 | sort -u | tr '\n' ' ')"
  log "dry-run=server ${values:+with $(basename "$values") }passed: $kinds"
done
# The plain-YAML bundle the README offers instead of Helm.
kubectl apply --server-side --force-conflicts --field-manager=chart-check --dry-run=server -f "$root/manifests/install.yaml" >/dev/null
log "dry-run=server of manifests/install.yaml passed"
