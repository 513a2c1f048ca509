#!/usr/bin/env bash
# A real one-node Kubernetes cluster without Docker, built from registries.
#   e2e/cluster.sh up          build (cached) and start the cluster; idempotent
#   e2e/cluster.sh down        stop everything and leave the machine clean (cache kept)
#   e2e/cluster.sh status      what runs, and the node as the API server sees it
#   e2e/cluster.sh kubeconfig  print the path of the admin kubeconfig
# See e2e/README.md for what it builds, where it caches, and the traps it avoids.
set -euo pipefail
LOG_TAG=cluster
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/pki.sh
. "$E2E_DIR/lib/pki.sh"
# shellcheck source=lib/mkimage.sh
. "$E2E_DIR/lib/mkimage.sh"

DAEMONS_UP="containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router"
CNI_CONF="$STATE/cni/net.d/10-tenantdb-e2e.conflist"   # our own conf dir: the host's /etc/cni stays as it is
CNI_NET=tenantdb-e2e
VOLUMES="$STATE/volumes"

[ "$(id -u)" = 0 ] || die "the cluster needs root (containerd, kubelet, iptables)"

ensure_packages() {
  local missing=""
  command -v containerd >/dev/null || missing="$missing containerd"
  command -v runc >/dev/null || missing="$missing runc"
  [ -x /usr/lib/cni/bridge ] || missing="$missing containernetworking-plugins"
  command -v iptables >/dev/null || missing="$missing iptables"
  command -v conntrack >/dev/null || missing="$missing conntrack"
  command -v ipset >/dev/null || missing="$missing ipset"
  command -v openssl >/dev/null || missing="$missing openssl"
  command -v busybox >/dev/null || missing="$missing busybox-static"
  command -v ip >/dev/null || missing="$missing iproute2"
  command -v gcc >/dev/null || missing="$missing gcc libc6-dev"
  [ -z "$missing" ] && return 0
  log "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

# --- teardown ------------------------------------------------------------------

# Containers of this harness's containerd (found through its own shims), then the pod
# cgroups its kubelet made, when no other kubelet shares the machine's `kubepods`.
kill_pod_processes() {
  kill_own_containers
  [ -n "$(foreign_node_agents)" ] && return 0
  local f
  for f in $(find /sys/fs/cgroup -path '*kubepods*' -name cgroup.procs 2>/dev/null || true); do
    cat "$f" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  # Remove the now empty pod cgroups, deepest first.
  find /sys/fs/cgroup -depth -type d -path '*kubepods*' -exec rmdir {} \; 2>/dev/null || true
}

stop_daemons() {
  local d
  for d in kube-router kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
    if [ -f "$PIDS/$d.pid" ]; then kill "$(cat "$PIDS/$d.pid")" 2>/dev/null || true; fi
  done
  sleep 1
  # Whatever survived, or lost its PID file: match on the paths this script starts from.
  pkill -9 -f "^$BIN/" 2>/dev/null || true
  pkill -9 -f "containerd --config $STATE/" 2>/dev/null || true
  for d in kube-router kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
    if [ -f "$PIDS/$d.pid" ]; then kill -9 "$(cat "$PIDS/$d.pid")" 2>/dev/null || true; fi
  done
}

unmount_under() {
  local m
  for m in $(awk '{print $2}' /proc/mounts | grep -E "^($1)" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

clean_network() {
  ip link delete "$CNI_BRIDGE" 2>/dev/null || true
  rm -rf "/var/lib/cni/networks/$CNI_NET" "$CNI_CONF"
  rm -f /var/lib/cni/results/"$CNI_NET"-*
  # Rules the bridge plugin wrote for our network (commented `name: \"tenantdb-e2e\"` in
  # iptables-save's quoting), and the chains they jump to; KUBE- chains only when no other
  # kubelet or kube-proxy runs here. (Whole dumps in variables: `iptables-save | grep -q`
  # dies of SIGPIPE under pipefail.)
  local t rules chains own_kube=1 tag="name: \\\"$CNI_NET\\\""
  [ -n "$(foreign_node_agents)" ] && own_kube=0
  for t in nat filter mangle; do
    rules="$(iptables-save -t "$t" 2>/dev/null || true)"
    chains="$(printf '%s\n' "$rules" | grep -F -- "$tag" | grep -oE -- '-j CNI-[0-9a-f]+' | awk '{print $2}' | sort -u | paste -sd'|' - || true)"
    case "$rules" in *"$tag"*|*KUBE-*) ;; *) continue ;; esac
    printf '%s\n' "$rules" | TAG="$tag" CHAINS="${chains:-^$}" KUBE="$own_kube" awk '
      index($0, ENVIRON["TAG"]) { next }
      ENVIRON["CHAINS"] != "^$" && $0 ~ ("(^:| )(" ENVIRON["CHAINS"] ")( |$)") { next }
      ENVIRON["KUBE"] == 1 && /KUBE-/ { next }
      { print }' | iptables-restore 2>/dev/null || log "warning: iptables rules of the $t table not cleaned"
  done
  # kube-router's ipsets (its chains went with the KUBE- ones above), once no rule uses
  # them: only after this harness ran it, never beside a host's own kube-router.
  if [ "$own_kube" = 1 ] && [ -f "$PIDS/kube-router.pid" ]; then
    for t in $(ipset list -n 2>/dev/null | grep -E '^KUBE-(SRC|DST)-' || true); do
      ipset destroy "$t" 2>/dev/null || log "warning: ipset $t not destroyed"
    done
  fi
  conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true
  conntrack -D -d "$POD_CIDR" >/dev/null 2>&1 || true
}

down() {
  log "stopping the cluster"
  kill_pod_processes
  stop_daemons
  kill_pod_processes
  unmount_under "$KUBELET_DIR|$STATE|$RUN_DIR"
  clean_network
  rm -rf "$STATE" "$RUN_DIR"
  log "down: no cluster process, mount, link or state left (cache kept in $CACHE)"
}

# --- images ----------------------------------------------------------------------

# Cluster images (pause, busybox, CoreDNS, local-path-provisioner) as archives in the cache.
build_cluster_images() {
  local dir="$CACHE/images" key="$K8S_VERSION-$COREDNS_VERSION-$LOCAL_PATH_VERSION"
  mkdir -p "$dir"
  [ -f "$dir/.key" ] && [ "$(cat "$dir/.key")" = "$key" ] && return 0
  log "building cluster images"
  local root; root="$(mktemp -d)"
  mkdir -p "$root/pause"
  gcc -static -O2 -o "$root/pause/pause" "$E2E_DIR/images/pause.c"
  image_archive localhost/pause:e2e "$root/pause" "$dir/pause.tar" '["/pause"]'
  rootfs_busybox "$root/busybox"
  image_archive localhost/busybox:e2e "$root/busybox" "$dir/busybox.tar" '["/bin/sh"]'
  rootfs_base "$root/coredns"; cp "$BIN/coredns" "$root/coredns/coredns"
  image_archive localhost/coredns:e2e "$root/coredns" "$dir/coredns.tar" '["/coredns"]'
  rootfs_busybox "$root/lpp"; cp "$BIN/local-path-provisioner" "$root/lpp/local-path-provisioner"
  image_archive localhost/local-path-provisioner:e2e "$root/lpp" "$dir/local-path-provisioner.tar" '["/local-path-provisioner"]'
  rm -rf "$root"
  echo "$key" > "$dir/.key"
}

import_images() {
  local f
  for f in "$@"; do
    ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$f" >/dev/null
  done
}

# --- bring-up ----------------------------------------------------------------------

host_setup() {
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "warning: br_netfilter sysctl not available"
  sysctl -qw net.ipv4.conf.all.route_localnet=1
  # The pod bridge is made here, before the CNI plugin would, so that the service
  # range can be routed onto it: a ClusterIP packet no kube-proxy rule rewrites then
  # dies on this machine's bridge instead of leaving through the default route.
  ip link add "$CNI_BRIDGE" type bridge
  ip link set "$CNI_BRIDGE" up
  ip route add "$SERVICE_CIDR" dev "$CNI_BRIDGE"
  mkdir -p "$(dirname "$CNI_CONF")" "$VOLUMES"
  cat > "$CNI_CONF" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_containerd() {
  mkdir -p "$STATE/containerd" "$RUN_DIR"
  cat > "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:e2e"
  # Root here lacks CAP_SYS_RESOURCE: containerd must not ask runc for a lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state beside ours, not under the host's /run/containerd/runc.
        Root = "$RUN_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$(dirname "$CNI_CONF")"
EOF
  start_daemon containerd containerd --config "$STATE/containerd/config.toml"
  wait_for "containerd" 30 ctr -a "$CONTAINERD_SOCK" version
}

start_control_plane() {
  local ip; ip="$(node_ip)"
  start_daemon etcd "$BIN/etcd" --name e2e --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster e2e=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
  start_daemon kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 --advertise-address="$ip" --bind-address="$ip" --secure-port=6443 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --enable-aggregator-routing=true --profiling=false --v=1
  wait_for "the API server" 90 kc get --raw /readyz
  start_daemon kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --use-service-account-credentials=true --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --leader-elect=false --bind-address=127.0.0.1 --allocate-node-cidrs=false --profiling=false --v=1
  start_daemon kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --profiling=false --v=1
}

start_node() {
  local ip; ip="$(node_ip)"
  cat > "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
cgroupDriver: cgroupfs
# This machine mounts cgroup v1 (hybrid); 1.35+ would refuse it without this.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
# Root lacks CAP_SYS_RESOURCE here: the kubelet cannot lower its own oom_score_adj.
oomScoreAdj: 0
clusterDNS: ["$DNS_SERVICE_IP"]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# Images are imported by hand and cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "200Mi", nodefs.available: "1Gi", imagefs.available: "1Gi"}
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusReportFrequency: 10s
EOF
  start_daemon kubelet "$BIN/kubelet" --config="$STATE/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --hostname-override="$NODE_NAME" --node-ip="$ip" \
    --root-dir="$KUBELET_DIR" --v=1
  start_daemon kube-proxy "$BIN/kube-proxy" --kubeconfig="$STATE/kube-proxy.kubeconfig" \
    --hostname-override="$NODE_NAME" --cluster-cidr="$POD_CIDR" --proxy-mode=iptables \
    --conntrack-max-per-core=0 --metrics-bind-address=127.0.0.1:10249 --v=1

}

# NetworkPolicies enforced, as a real cluster's CNI would: kube-router's firewall alone
# (no routing, no service proxy), beside the bridge plugin and kube-proxy. It finds its
# node by name, so it starts once the node is registered.
start_policy_enforcer() {
  start_daemon kube-router "$BIN/kube-router" --kubeconfig="$KCFG" \
    --hostname-override="$NODE_NAME" --run-firewall=true --run-router=false \
    --run-service-proxy=false --service-cluster-ip-range="$SERVICE_CIDR" \
    --health-port=0 --metrics-port=0 --v=1
}

policy_enforced() {
  daemon_running kube-router && iptables -S KUBE-ROUTER-FORWARD >/dev/null 2>&1
}

node_ready() {
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

dns_answers() {
  busybox nslookup kubernetes.default.svc.cluster.local "$DNS_SERVICE_IP" 2>/dev/null | grep -q "$API_SERVICE_IP"
}

install_addons() {
  kc apply -f "$E2E_DIR/addons/coredns.yaml" >/dev/null
  sed "s|@VOLUMES@|$VOLUMES|g" "$E2E_DIR/addons/local-path.yaml" | kc apply -f - >/dev/null
}

up() {
  local t0=$SECONDS
  local others; others="$(foreign_node_agents)"
  [ -z "$others" ] || die "another kubelet or kube-proxy runs on this machine; this harness would fight it over ports and iptables (use TENANTDB_E2E_CLUSTER=existing with its KUBECONFIG instead):
$others"
  down >/dev/null 2>&1 || true
  ensure_packages
  "$E2E_DIR/build-tools.sh"
  build_cluster_images
  log "starting the cluster (node $NODE_NAME, $(node_ip))"
  mkdir -p "$STATE" "$LOGS" "$PIDS"
  host_setup
  make_pki
  start_containerd
  import_images "$CACHE"/images/*.tar
  # Images of the project itself, when e2e/images.sh has built them.
  if ls "$CACHE"/project-images/*.tar >/dev/null 2>&1; then import_images "$CACHE"/project-images/*.tar; fi
  start_control_plane
  start_node
  wait_for "node $NODE_NAME Ready" 120 node_ready || { tail -30 "$LOGS/kubelet.log" >&2; exit 1; }
  start_policy_enforcer
  wait_for "kube-router enforcing NetworkPolicies" 60 policy_enforced || { tail -30 "$LOGS/kube-router.log" >&2; exit 1; }
  install_addons
  wait_for "serviceaccount/default" 60 kc get serviceaccount default -n default
  wait_for "CoreDNS answering" 120 dns_answers || { kc -n kube-system get pods -o wide >&2; exit 1; }
  wait_for "local-path-provisioner" 120 kc -n local-path-storage rollout status deploy/local-path-provisioner --timeout=5s
  log "cluster up in $((SECONDS - t0))s; export KUBECONFIG=$KCFG"
}

status() {
  local d rc=0
  for d in $DAEMONS_UP; do
    if daemon_running "$d"; then echo "$d: running (pid $(cat "$PIDS/$d.pid"))"; else echo "$d: not running"; rc=1; fi
  done
  if [ -f "$KCFG" ]; then kc get nodes -o wide 2>&1 || rc=1; fi
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kubeconfig) echo "$KCFG" ;;
  *) echo "usage: $0 up|down|status|kubeconfig" >&2; exit 2 ;;
esac
