#!/bin/sh
# Build the minimal guest kernel from Debian's linux-source-6.1, cached by the hash of the fragment.
# Usage: build.sh OUTDIR     -> OUTDIR/<hash>/bzImage, and OUTDIR/default -> <hash>
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
src=${LINUX_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
hash=$(cat "$here/minimal.config" "$here/build.sh" "$src" | sha256sum | cut -c1-16)
dest="$out/$hash"
if [ -f "$dest/vmlinux" ]; then
    ln -sfn "$hash" "$out/default"
    echo "guest kernel cached: $dest/bzImage"
    exit 0
fi
mkdir -p "$out"
work=$(mktemp -d "$out/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "unpacking $src"
tar -xJf "$src" -C "$work"
cd "$work"/linux-source-6.1
make -s tinyconfig
./scripts/kconfig/merge_config.sh -m .config "$here/minimal.config" >/dev/null
make -s olddefconfig
# Fail loudly if the kernel silently dropped an option we rely on.
missing=$(grep '^CONFIG_' "$here/minimal.config" | while read -r line; do
    grep -qx "$line" .config || echo "$line"; done)
if [ -n "$missing" ]; then echo "kernel config dropped: $missing" >&2; exit 1; fi
echo "building kernel with $(nproc) jobs (about 10 minutes of CPU)"
make -s -j"$(nproc)" bzImage
# The uncompressed ELF boots through its PVH entry: no in-guest decompressor.
strip -o vmlinux.stripped vmlinux
mkdir -p "$dest.tmp"
cp arch/x86/boot/bzImage "$dest.tmp/bzImage"
cp vmlinux.stripped "$dest.tmp/vmlinux"
cp .config "$dest.tmp/config"
rm -rf "$dest"; mv "$dest.tmp" "$dest"
ln -sfn "$hash" "$out/default"
echo "guest kernel built: $dest/bzImage"
