# Shared settings and helpers for the e2e cluster scripts. Sourced, never run.
# shellcheck shell=bash
E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$E2E_DIR/.." && pwd)"
# shellcheck source=../versions.env
. "$E2E_DIR/versions.env"

CACHE="${TENANTDB_E2E_CACHE:-/var/cache/tenantdb-e2e}"   # survives `down`: built binaries, image tars
STATE="${TENANTDB_E2E_STATE:-/var/lib/tenantdb-e2e}"     # removed by `down`: certs, etcd, logs, pids
BIN="$CACHE/bin"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
KCFG="$STATE/kubeconfig"
KUBELET_DIR=/var/lib/kubelet
CONTAINERD_SOCK=/run/containerd/containerd.sock
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/12
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CNI_BRIDGE=cni0
NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"
export PATH="$BIN:$PATH"

log() { printf '[%s %s] %s\n' "${LOG_TAG:-e2e}" "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

node_ip() {
  if [ -n "${TENANTDB_E2E_NODE_IP:-}" ]; then echo "$TENANTDB_E2E_NODE_IP"; return; fi
  local dev; dev="$(ip -4 route show default | awk '{print $5; exit}')"
  ip -4 -o addr show dev "${dev:-eth0}" | awk '{split($4,a,"/"); print a[1]; exit}'
}

# start NAME CMD...: run a daemon detached, log to $LOGS/NAME.log, record its PID.
start_daemon() {
  local name="$1"; shift
  mkdir -p "$LOGS" "$PIDS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}

daemon_running() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# wait_for DESCRIPTION SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 1
  done
}

kc() { kubectl --kubeconfig "$KCFG" "$@"; }
