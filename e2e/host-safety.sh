#!/usr/bin/env bash
# Proves the harness leaves a host's own containers alone: a long-running task under the
# host's containerd (the one at /run/containerd/containerd.sock, as Docker's is) must
# still run, with the same PID, after the command given (default: ./test.sh).
#   e2e/host-safety.sh [COMMAND...]
# When no containerd serves that socket, one is started the way Docker's is configured
# (default root and state, CRI disabled) and stopped afterwards; an existing one is only
# given the sentinel task, which is removed at the end. Needs root, containerd and ctr.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/mkimage.sh
. "$E2E_DIR/lib/mkimage.sh"

HOST_SOCK=/run/containerd/containerd.sock
NS=tenantdb-host-safety
TASK=sentinel
[ "$(id -u)" = 0 ] || { echo "host-safety needs root" >&2; exit 2; }
[ $# -gt 0 ] || set -- "$REPO_DIR/test.sh"

work="$(mktemp -d)"
started_pid=""
made_root=""
cleanup() {
  ctr -a "$HOST_SOCK" -n "$NS" task kill -s KILL "$TASK" >/dev/null 2>&1 || true
  sleep 1
  ctr -a "$HOST_SOCK" -n "$NS" task delete "$TASK" >/dev/null 2>&1 || true
  ctr -a "$HOST_SOCK" -n "$NS" container delete "$TASK" >/dev/null 2>&1 || true
  if [ -n "$started_pid" ]; then
    kill "$started_pid" 2>/dev/null || true
    wait "$started_pid" 2>/dev/null || true
    # What that containerd made, only when this script made it: the root, and the state
    # beside /run/containerd/s (other containerds' shims put their sockets there).
    [ -z "$made_root" ] || rm -rf /var/lib/containerd
    rm -rf /run/containerd/containerd.sock /run/containerd/containerd.sock.ttrpc \
      /run/containerd/fifo /run/containerd/io.containerd.runtime.v1.linux \
      /run/containerd/io.containerd.runtime.v2.task /run/containerd/runc
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if ctr -a "$HOST_SOCK" version >/dev/null 2>&1; then
  echo "host-safety: using the containerd already serving $HOST_SOCK"
else
  [ -e /var/lib/containerd ] || made_root=1
  # Docker's own containerd.toml: default paths, the CRI plugin off.
  printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' > "$work/config.toml"
  containerd --config "$work/config.toml" > "$work/containerd.log" 2>&1 &
  started_pid=$!
  for _ in $(seq 1 50); do ctr -a "$HOST_SOCK" version >/dev/null 2>&1 && break; sleep 0.2; done
  ctr -a "$HOST_SOCK" version >/dev/null || { cat "$work/containerd.log" >&2; exit 1; }
  echo "host-safety: started a containerd at $HOST_SOCK (pid $started_pid) as a host's would run"
fi

rootfs_busybox "$work/rootfs"
ctr -a "$HOST_SOCK" -n "$NS" run -d --rootfs "$work/rootfs" "$TASK" /bin/sleep 86400 >/dev/null
pid_of_task() { ctr -a "$HOST_SOCK" -n "$NS" task ls 2>/dev/null | awk -v t="$TASK" '$1 == t && $3 == "RUNNING" {print $2}'; }
before="$(pid_of_task)"
[ -n "$before" ] || { echo "host-safety: the sentinel task did not start" >&2; exit 1; }
echo "host-safety: sentinel task running under the host's containerd, pid $before; running: $*"

rc=0
"$@" || rc=$?

after="$(pid_of_task)"
if [ "$after" = "$before" ] && kill -0 "$before" 2>/dev/null && [ -S "$HOST_SOCK" ]; then
  echo "host-safety: ok — the host's containerd and its task (pid $before) still run after: $*"
else
  echo "host-safety: FAILED — the host's task was pid $before, now '${after:-gone}'" >&2
  rc=1
fi
exit "$rc"
