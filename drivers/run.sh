#!/usr/bin/env bash
# Runs the real libSQL drivers against a standalone TenantDB engine it starts itself:
#   - libsql-client-go's own test suites, tests/http and tests/ws (Go module proxy);
#   - @libsql/client 0.18.0 over HTTP and WebSocket, and a Drizzle ORM program (npm);
#   - Python's libsql 0.1.11 (PyPI).
# It installs what it needs into a cache keyed by version ($TENANTDB_DRIVERS_CACHE,
# default /var/cache/tenantdb-drivers), and touches only the engines it started (by PID).
# Prints one `test result:` line per suite, as cargo does, for ./test.sh's count.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=install.sh
. "$here/install.sh"

log() { printf '[drivers %s] %s\n' "$(date +%T)" "$*" >&2; }

install_node
install_python
install_go

log "building the engine"
(cd "$repo" && cargo build -q --locked -p tenantdb-engine)
engine_bin="${CARGO_TARGET_DIR:-$repo/target}/debug/tenantdb-engine"

work="$(mktemp -d)"
# Each engine's pid goes to a file: `start` runs in a command substitution (a subshell),
# whose variables the cleanup would never see.
cleanup() {
  local f p
  for f in "$work"/*.pid; do
    [ -e "$f" ] || continue
    p="$(cat "$f")"
    kill "$p" 2>/dev/null || true
    while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
admin_token="admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# start NAME CONFIG_YAML: an engine on a free loopback port; prints its base URL.
start() {
  local name="$1" port; port="$(free_port)"
  mkdir -p "$work/$name"
  printf '%s\n' "$2" > "$work/$name.yaml"
  "$engine_bin" serve --data-dir "$work/$name" --listen "127.0.0.1:$port" \
    --admin-token "$admin_token" --config "$work/$name.yaml" > "$work/$name.log" 2>&1 &
  echo "$!" > "$work/$name.pid"
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && { echo "http://127.0.0.1:$port"; return; }
    sleep 0.1
  done
  cat "$work/$name.log" >&2
  return 1
}

# The main engine expires idle streams after 3 s (the default is 10 s), so the expiry
# test measures a wait the suite can afford; the limited one allows a burst of 5.
engine="$(start main 'streamIdleTimeoutMillis: 3000')"
limited="$(start limited 'limits: {requestsPerHour: 3600, burst: 5}')"
export TENANTDB_ENGINE="$engine" TENANTDB_LIMITED_ENGINE="$limited" TENANTDB_ADMIN_TOKEN="$admin_token"
log "engines at $engine and $limited"

api() { curl -sf -H "authorization: Bearer $admin_token" -H 'content-type: application/json' "$@"; }
# database NAME: create it, print a token for it alone.
database() {
  api -X POST "$engine/v1/databases" -d "{\"name\": \"$1\", \"source\": {\"empty\": {}}}" >/dev/null
  api -X POST "$engine/v1/tokens" -d "{\"databases\": [\"$1\"]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

failed=0
# report SUITE PASSED FAILED
report() {
  echo "test result: $([ "$3" = 0 ] && echo ok || echo FAILED). $2 passed; $3 failed; 0 ignored; 0 measured; 0 filtered out; ($1)"
  [ "$3" = 0 ] || failed=1
}
# go_suite NAME BINARY ENV...: a Go test binary, verbose, counted from its --- lines.
go_suite() {
  local name="$1" bin="$2"; shift 2
  local out; out="$work/$(echo "$name" | tr -c 'a-z0-9\n' '-').out"
  env "$@" "$bin" -test.v -test.count=1 -test.timeout=5m > "$out" 2>&1 || true
  grep -E '^(--- FAIL|FAIL)' -A3 "$out" >&2 || true
  report "$name" "$(grep -c '^--- PASS' "$out" || true)" "$(grep -c '^--- FAIL' "$out" || true)"
}

log "libsql-client-go tests/http (Hrana 2 over HTTP)"
token="$(database go-http)"
go_suite "libsql-client-go tests/http" "$GO_TESTS/http.test" \
  LIBSQL_TEST_HTTP_DB_URL="$engine/db/go-http/" LIBSQL_TEST_HTTP_AUTH_TOKEN="$token"

log "libsql-client-go tests/ws (Hrana 1 over WebSocket)"
token="$(database go-ws)"
go_suite "libsql-client-go tests/ws" "$GO_TESTS/ws.test" \
  LIBSQL_TEST_WS_DB_URL="${engine/http/ws}/db/go-ws/" LIBSQL_TEST_WS_AUTH_TOKEN="$token"

log "@libsql/client over HTTP and WebSocket"
out="$work/node.out"
(cd "$here/node" && timeout 600 node --test --test-timeout=120000 --test-reporter=spec test/) > "$out" 2>&1 || true
grep -E '^# (http|ws):' "$out" >&2 || true
grep -E '✖|not ok|Error' "$out" >&2 || true
report "@libsql/client 0.18.0" "$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$out")" "$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$out")"

log "Drizzle ORM program (the one the e2e pod runs)"
token="$(database drizzle)"
out="$work/drizzle.out"
if (cd "$here/node" && LIBSQL_URL="$engine/db/drizzle/" LIBSQL_AUTH_TOKEN="$token" node app/main.mjs) > "$out" 2>&1 \
  && grep -qx 'result=ok' "$out" && grep -qx 'total_cents=6449' "$out"; then
  report "drizzle-orm 0.45.4 program" 1 0
else
  cat "$out" >&2
  report "drizzle-orm 0.45.4 program" 0 1
fi

log "Python libsql 0.1.11 (Hrana 3: v3/pipeline and v3/cursor)"
out="$work/python.out"
(cd "$here/python" && "$PY_VENV/bin/python" -m unittest -v test_libsql) > "$out" 2>&1 || true
grep -E '(FAIL|ERROR)' -A12 "$out" >&2 || true
ran="$(sed -n 's/^Ran \([0-9]*\) tests\?.*/\1/p' "$out")"
bad="$(grep -cE ' \.\.\. (FAIL|ERROR)$' "$out" || true)"
report "python libsql 0.1.11" "$((${ran:-0} - bad))" "$bad"

exit "$failed"
