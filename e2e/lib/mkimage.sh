# Build container images without Docker: a one-layer `docker save`-style archive
# that `ctr images import` and `kind load image-archive` both accept. Sourced.
# shellcheck shell=bash

# image_archive REF ROOTFS OUT ENTRYPOINT_JSON: write OUT from the directory ROOTFS.
# ENTRYPOINT_JSON is a JSON array, e.g. '["/coredns"]'. Output is reproducible.
image_archive() {
  local ref="$1" rootfs="$2" out="$3" entry="$4"
  local work; work="$(mktemp -d)"
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$work/layer.tar" .
  local diff; diff="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
  mkdir -p "$work/$diff"; mv "$work/layer.tar" "$work/$diff/layer.tar"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Entrypoint":%s,"Env":["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tenantdb e2e/lib/mkimage.sh"}]}' \
    "$entry" "$diff" > "$work/config.json"
  local cfg; cfg="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
  mv "$work/config.json" "$work/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg" "$ref" "$diff" > "$work/manifest.json"
  tar -C "$work" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$out" manifest.json "$cfg.json" "$diff"
  rm -rf "$work"
}

# rootfs_add_binary ROOTFS BINARY [DEST]: copy BINARY and every shared library ldd
# lists (at the same paths), so a dynamically linked program runs in ROOTFS.
rootfs_add_binary() {
  local root="$1" bin="$2" dest="${3:-/usr/local/bin/$(basename "$2")}"
  mkdir -p "$root$(dirname "$dest")"; cp -L "$bin" "$root$dest"
  local lib
  for lib in $(ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' || true); do
    [ -f "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
  done
}

# rootfs_base ROOTFS: the few files every image wants (passwd, group, tmp, hosts).
rootfs_base() {
  local root="$1"
  mkdir -p "$root"/{etc,tmp,bin,usr/bin,var/run}; chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
  : > "$root/etc/hosts"; : > "$root/etc/resolv.conf"
}

# dynamic_busybox: path of Debian's dynamically linked busybox, unpacked (not installed)
# into the cache. The static build cannot resolve names: its glibc segfaults loading NSS.
dynamic_busybox() {
  local dir="$CACHE/busybox" deb
  if [ ! -x "$dir/bin/busybox" ]; then
    deb="$(mktemp -d)"
    (cd "$deb" && { apt-get download busybox >/dev/null 2>&1 || { apt-get update -qq && apt-get download busybox >/dev/null; }; })
    mkdir -p "$dir"; dpkg-deb -x "$deb"/busybox_*.deb "$dir"; rm -rf "$deb"
  fi
  echo "$dir/bin/busybox"
}

# rootfs_busybox ROOTFS: a shell and the usual tools from Debian's busybox.
rootfs_busybox() {
  local root="$1" applet
  rootfs_base "$root"
  rootfs_add_binary "$root" "$(dynamic_busybox)" /bin/busybox
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
}
