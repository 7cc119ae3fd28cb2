#!/usr/bin/env bash
# Install a build into a scratch prefix and build and run a small program against it, found only
# through pkg-config, as an embedder would.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

DESTDIR="$dest" meson install -C "$build" --quiet
pc=$(find "$dest" -name natproxy.pc -print -quit)
[ -n "$pc" ] || { echo "natproxy.pc was not installed" >&2; exit 1; }
for f in include/natproxy.h include/natproxy/server.h share/man/man1/np-server.1 \
         share/man/man1/np-client.1 bin/np-server bin/np-client; do
  [ -e "$(find "$dest" -path "*/$f" -print -quit)" ] || { echo "missing from the install: $f" >&2; exit 1; }
done
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --define-prefix --cflags --libs natproxy)
libdir=$(pkg-config --define-prefix --variable=libdir natproxy)
cc -Wall -Werror -o "$dest/embed" "$here/embed.c" $flags
LD_LIBRARY_PATH="$libdir" "$dest/embed"
# The SONAME is versioned.
objdump -p "$libdir/libnatproxy.so" | grep -q 'SONAME *libnatproxy.so.0' || {
  echo "libnatproxy.so has no versioned SONAME" >&2; exit 1; }
echo "install check: ok"
