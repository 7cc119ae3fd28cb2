#!/usr/bin/env bash
# Configure, build and install into a scratch prefix, then build and run a small program against the
# installed tree, found only through pkg-config, as an embedder would; the systemd units installed
# with the tools must start them and pass tests/check-units.sh.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
here=$src/tests/install
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

meson setup "$dest/build" "$src" --prefix "$dest/prefix" --wrap-mode=nodownload -Dtests=false >/dev/null
meson install -C "$dest/build" --quiet >/dev/null
pc=$(find "$dest/prefix" -name natproxy.pc -print -quit)
[ -n "$pc" ] || { echo "natproxy.pc was not installed" >&2; exit 1; }
for f in include/natproxy.h include/natproxy/server.h share/man/man1/np-server.1 \
         share/man/man1/np-client.1 bin/np-server bin/np-client systemd/system/np-server.service \
         systemd/system/np-client.service systemd/system/np-client@.service sysusers.d/natproxy.conf; do
  [ -e "$(find "$dest/prefix" -path "*/$f" -print -quit)" ] || { echo "missing from the install: $f" >&2; exit 1; }
done
# The installed units name the installed tools, and pass systemd-analyze as they are.
units=$(dirname "$(find "$dest/prefix" -path '*/systemd/system/np-server.service' -print -quit)")
grep -qx "ExecStart=$dest/prefix/bin/np-server -c /etc/natproxy/server.ini" "$units/np-server.service" || {
  echo "np-server.service does not start the installed np-server" >&2; exit 1; }
r=0
out=$("$src/tests/check-units.sh" "$units"/np-*.service 2>&1) || r=$?
[ $r -eq 0 ] || [ $r -eq 77 ] || { echo "$out" >&2; exit 1; }
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --libs natproxy)
libdir=$(pkg-config --variable=libdir natproxy)
cc -Wall -Werror -o "$dest/embed" "$here/embed.c" $flags
LD_LIBRARY_PATH="$libdir" "$dest/embed"
# The SONAME is versioned. objdump's output is read whole first: under pipefail, `grep -q` leaving
# at the first match kills objdump with SIGPIPE once the headers pass one 4 KiB pipe write (they did
# when the library gained ngtcp2 and GnuTLS), and the pipeline then fails on a good library.
headers=$(objdump -p "$libdir/libnatproxy.so")
grep -q 'SONAME *libnatproxy.so.0' <<<"$headers" || {
  echo "libnatproxy.so has no versioned SONAME" >&2; exit 1; }
echo "install check: ok"
