# Installs the pinned libSQL drivers into caches keyed by version; sourced by
# drivers/run.sh, quickstart.sh and e2e/images.sh. Sets NODE_MODULES (drivers/node/
# node_modules), PY_VENV and GO_TESTS (the compiled libsql-client-go suites).
# Cache root: $TENANTDB_DRIVERS_CACHE (default /var/cache/tenantdb-drivers).
# shellcheck shell=bash

DRIVERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DRIVERS_CACHE="${TENANTDB_DRIVERS_CACHE:-/var/cache/tenantdb-drivers}"
# Versions: the npm ones live in drivers/node/package-lock.json, the Go one in drivers/go/go.mod.
PY_LIBSQL_VERSION=0.1.11
GO_LIBSQL_CLIENT_VERSION=v0.0.0-20260528064733-9d5d30a29a60

_drivers_log() { printf '[drivers %s] %s\n' "$(date +%T)" "$*" >&2; }

# @libsql/client and drizzle-orm, exactly as the lockfile says (npm's cache is keyed by
# each package's integrity hash).
install_node() {
  command -v node >/dev/null || { echo "node (20 or later) is needed: apt-get install nodejs" >&2; return 1; }
  local stamp="$DRIVERS_DIR/node/node_modules/.installed-from"
  local lock; lock="$(sha256sum "$DRIVERS_DIR/node/package-lock.json" | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$lock" ]; then
    _drivers_log "npm ci (@libsql/client, drizzle-orm)"
    (cd "$DRIVERS_DIR/node" && npm_config_cache="$DRIVERS_CACHE/npm" npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
    echo "$lock" > "$stamp"
  fi
  NODE_MODULES="$DRIVERS_DIR/node/node_modules"
}

# Python's libsql in a virtual environment of its own, from a wheel kept in the cache.
install_python() {
  local d="$DRIVERS_CACHE/py-libsql-$PY_LIBSQL_VERSION"
  PY_VENV="$d/venv"
  [ -x "$PY_VENV/bin/python" ] && "$PY_VENV/bin/python" -c 'import libsql' 2>/dev/null && return 0
  _drivers_log "pip: libsql $PY_LIBSQL_VERSION"
  ls "$d"/wheels/libsql-"$PY_LIBSQL_VERSION"-*.whl >/dev/null 2>&1 \
    || python3 -m pip download -q -d "$d/wheels" --only-binary=:all: "libsql==$PY_LIBSQL_VERSION"
  rm -rf "$PY_VENV"
  python3 -m venv --without-pip "$PY_VENV"
  python3 -m pip --python "$PY_VENV/bin/python" install -q --no-index --find-links "$d/wheels" "libsql==$PY_LIBSQL_VERSION"
}

# libsql-client-go's own test suites, compiled once per version.
install_go() {
  command -v go >/dev/null || { echo "go is needed to build libsql-client-go's tests" >&2; return 1; }
  GO_TESTS="$DRIVERS_CACHE/go-libsql-client-go-$GO_LIBSQL_CLIENT_VERSION"
  [ -x "$GO_TESTS/http.test" ] && [ -x "$GO_TESTS/ws.test" ] && return 0
  _drivers_log "go: libsql-client-go $GO_LIBSQL_CLIENT_VERSION tests/http and tests/ws"
  mkdir -p "$GO_TESTS"
  (
    cd "$DRIVERS_DIR/go"
    export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
    export GOMODCACHE="${GOMODCACHE:-$DRIVERS_CACHE/go-mod}" GOCACHE="${GOCACHE:-$DRIVERS_CACHE/go-build}"
    go mod download
    go test -c -o "$GO_TESTS/http.test" github.com/tursodatabase/libsql-client-go/tests/http
    go test -c -o "$GO_TESTS/ws.test" github.com/tursodatabase/libsql-client-go/tests/ws
  )
}
