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
RUN_DIR=/run/tenantdb-e2e                                # removed by `down`: containerd state, socket
# The kubelet's root and containerd's socket are this harness's own: a host that runs its
# own containerd (Docker, kind) or kubelet keeps /run/containerd and /var/lib/kubelet.
KUBELET_DIR="$STATE/kubelet"
CONTAINERD_SOCK="$RUN_DIR/containerd.sock"
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/12
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CNI_BRIDGE=tdbe2e0
NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"
export PATH="$BIN:$PATH"

# Every process descended from PID $1 (children first in the list's end), from /proc.
descendants() {
  local parent="$1" kids k
  kids="$(awk -v p="$parent" '$4 == p {print $1}' /proc/[0-9]*/stat 2>/dev/null || true)"
  for k in $kids; do echo "$k"; descendants "$k"; done
}

# Shims of this harness's containerd (their command line names its socket) and
# every container process under them. Never anyone else's.
own_shims() { pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true; }
kill_own_containers() {
  local s p sockets="" netns="" ids=""
  for s in $(own_shims); do
    # containerd 1.6 puts every shim's socket under /run/containerd/s whatever its state
    # directory: note ours (by owning PID) to remove them, and only them. Likewise the
    # network namespaces our pods live in, and the sandbox id libcni files its cache by.
    sockets="$sockets $(ss -xlpn 2>/dev/null | awk -v p="pid=$s," 'index($0, p) {print $5}' | grep '^/' || true)"
    ids="$ids $(tr '\0' '\n' < "/proc/$s/cmdline" 2>/dev/null | awk 'prev == "-id" {print} {prev = $0}' || true)"
    for p in $(descendants "$s"); do netns="$netns $(ip netns identify "$p" 2>/dev/null || true)"; done
    descendants "$s" | xargs -r kill -9 2>/dev/null || true
    kill -9 "$s" 2>/dev/null || true
  done
  for s in $sockets; do rm -f "$s"; done
  for s in $(printf '%s\n' $netns | sort -u); do ip netns delete "$s" 2>/dev/null || true; done
  for s in $ids; do rm -f /var/lib/cni/results/*-"$s"-*; done
  # Left empty by us alone (a host containerd keeps files there): nothing else lived here.
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
}

# A kubelet, kube-proxy or kube-router this harness did not start (the host's own cluster).
foreign_node_agents() {
  pgrep -a -f '(^|/)(kubelet|kube-proxy|kube-router)( |$)' 2>/dev/null | grep -v " $BIN/" || true
}

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
