#!/usr/bin/env bash
# Flakiness check of the local cluster: N cycles of up → e2e cluster tests → down,
# each followed by a crash cycle when --crash is given (kill -9 of every cluster
# process, then up again on the leftovers). Prints per-cycle times and a summary.
#   e2e/cycles.sh [N] [--crash]
set -uo pipefail
LOG_TAG=cycles
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
N="${1:-5}"; CRASH="${2:-}"
pass=0; fail=0
cd "$REPO_DIR" || exit 1
cargo test -p tenantdb-e2e --features e2e --test cluster --no-run >/dev/null 2>&1

crash_everything() {
  kill_own_containers
  pkill -9 -f "^$BIN/" ; pkill -9 -f "containerd --config $STATE/"
  sleep 1
}

for i in $(seq "$N"); do
  t0=$SECONDS
  if ! "$E2E_DIR/cluster.sh" up >"/tmp/cycle-$i-up.log" 2>&1; then echo "cycle $i: up FAILED (see /tmp/cycle-$i-up.log)"; fail=$((fail+1)); continue; fi
  if [ "$CRASH" = --crash ]; then
    crash_everything
    t0=$SECONDS
    if ! "$E2E_DIR/cluster.sh" up >"/tmp/cycle-$i-up.log" 2>&1; then echo "cycle $i: up after crash FAILED"; fail=$((fail+1)); continue; fi
  fi
  up=$((SECONDS - t0)); t1=$SECONDS
  if KUBECONFIG="$KCFG" cargo test -q -p tenantdb-e2e --features e2e --test cluster >"/tmp/cycle-$i-test.log" 2>&1; then ok=pass; pass=$((pass+1)); else ok=FAIL; fail=$((fail+1)); fi
  tests=$((SECONDS - t1)); t2=$SECONDS
  "$E2E_DIR/cluster.sh" down >/dev/null 2>&1
  echo "cycle $i: $ok (up ${up}s${CRASH:+ after crash}, tests ${tests}s, down $((SECONDS - t2))s)"
done
echo "cycles: $pass passed, $fail failed"
[ "$fail" = 0 ]
