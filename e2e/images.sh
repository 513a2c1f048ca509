#!/usr/bin/env bash
# Builds TenantDB's images without Docker and puts them where the cluster finds them.
#   e2e/images.sh            build release binaries, write image archives, import them
#                            into the local cluster's containerd when it runs
#   e2e/images.sh --archives only write the archives (e2e/kind.sh loads them into kind)
# Archives: $TENANTDB_E2E_CACHE/project-images/*.tar (docker-save format).
# Users with Docker build the same images from engine/Dockerfile and operator/Dockerfile.
set -euo pipefail
LOG_TAG=images
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/mkimage.sh
. "$E2E_DIR/lib/mkimage.sh"

TAG="${TENANTDB_IMAGE_TAG:-dev}"
OUT="$CACHE/project-images"
mkdir -p "$OUT"

log "building release binaries"
(cd "$REPO_DIR" && cargo build --release --locked -p tenantdb-engine -p tenantdb-operator 2>&1 | tail -3) >&2
TARGET="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release"

make_image() { # name binary [more binaries]
  local name="$1" bin="$2" root extra; root="$(mktemp -d)"
  rootfs_base "$root"
  mkdir -p "$root/data"
  rootfs_add_binary "$root" "$TARGET/$bin" "/usr/local/bin/$bin"
  for extra in "${@:3}"; do rootfs_add_binary "$root" "$TARGET/$extra" "/usr/local/bin/$extra"; done
  # CA roots (the engine's backups go to S3-compatible stores over HTTPS).
  mkdir -p "$root/etc/ssl/certs"; cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  image_archive "localhost/$name:$TAG" "$root" "$OUT/$name.tar" "[\"/usr/local/bin/$bin\"]"
  rm -rf "$root"
  log "image localhost/$name:$TAG -> $OUT/$name.tar"
}
make_image tenantdb-engine tenantdb-engine
# The operator's image also holds the member agent run beside replicated engines.
make_image tenantdb-operator tenantdb-operator tenantdb-member

# An application image for the e2e tests: the host's Node.js with the pinned
# @libsql/client and Drizzle ORM (drivers/node) and the program drivers/node/app/main.mjs,
# configured from a PluggableDatabase's connection Secret.
# shellcheck source=../drivers/install.sh
. "$REPO_DIR/drivers/install.sh"
install_node
node_root="$(mktemp -d)"
rootfs_base "$node_root"
rootfs_add_binary "$node_root" "$(command -v node)" /usr/local/bin/node
mkdir -p "$node_root/app"
cp -a "$NODE_MODULES" "$node_root/app/node_modules"
cp -a "$REPO_DIR/drivers/node/app/." "$node_root/app/"
cp "$REPO_DIR/drivers/node/package.json" "$node_root/app/"
image_archive "localhost/tenantdb-node-client:$TAG" "$node_root" "$OUT/tenantdb-node-client.tar" '["/usr/local/bin/node","/app/main.mjs"]'
rm -rf "$node_root"
log "image localhost/tenantdb-node-client:$TAG -> $OUT/tenantdb-node-client.tar"

# The S3-compatible object store the backup e2e test ships to: versitygw (built from its
# Go module by e2e/build-tools.sh, static); the test gives it a volume with a bucket.
gw_root="$(mktemp -d)"
rootfs_base "$gw_root"
"$E2E_DIR/build-tools.sh" versitygw >/dev/null
rootfs_add_binary "$gw_root" "$("$E2E_DIR/build-tools.sh" --print)/versitygw" /usr/local/bin/versitygw
image_archive "localhost/tenantdb-versitygw:$TAG" "$gw_root" "$OUT/tenantdb-versitygw.tar" '["/usr/local/bin/versitygw"]'
rm -rf "$gw_root"
log "image localhost/tenantdb-versitygw:$TAG -> $OUT/tenantdb-versitygw.tar"

if [ "${1:-}" != "--archives" ] && [ -S "$CONTAINERD_SOCK" ]; then
  for f in "$OUT"/*.tar; do ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$f" >/dev/null; done
  log "imported into containerd at $CONTAINERD_SOCK"
fi
