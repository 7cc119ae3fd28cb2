#!/usr/bin/env bash
# The Debian packages (debian/; README.md, "Debian package"): build them with dpkg-buildpackage from a
# copy of the tree (it writes the .debs into the parent of the source, which must not be the checkout's),
# check them with lintian (an error fails, warnings are shown), install them with dpkg, run the
# installed tools, build and run an embedder against libnatproxy-dev through pkg-config (shared and
# static), and purge them again. Needs dpkg-dev, debhelper and lintian (scripts/deps --test), and root
# from the install on (without it, the build and lintian are checked and the rest is skipped).
# It owns these three packages on the machine it runs on: copies installed by hand are replaced and
# purged. DEB_BUILD_OPTIONS defaults to parallel=2.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
pkgs=(natproxy-tools libnatproxy-dev libnatproxy0)
installed=0
had_user=0
getent passwd natproxy >/dev/null && had_user=1

# Leave the machine as it was: the packages purged, and the natproxy user the package's postinst
# created (systemd-sysusers) removed again, so a later step or run starts from the same state.
uninstall() {
  [ $installed -eq 1 ] || return 0
  dpkg --purge "${pkgs[@]}" >/dev/null
  installed=0
  if [ $had_user -eq 0 ]; then
    userdel natproxy 2>/dev/null || true
    groupdel natproxy 2>/dev/null || true
  fi
}
trap 'uninstall || true; rm -rf "$work"' EXIT
fail() { echo "check-deb: $*" >&2; exit 1; }

# The tracked files and new ones not ignored, as they are in the checkout (a clean clone in CI);
# build directories and other ignored litter stay behind.
# Without git (a bare Debian has none), everything but .git and the build directories.
mkdir "$work/src"
if command -v git >/dev/null && git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
    tar -cf - --null -T -) | tar -xf - -C "$work/src"
else
  (cd "$src" && tar -cf - --exclude-vcs --exclude='./build' --exclude='./build-*' \
    --exclude='./bench/out' .) | tar -xf - -C "$work/src"
fi

# The package's version is the project's: debian/changelog follows meson.build.
version=$(cd "$work/src" && meson introspect --projectinfo meson.build |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')
debversion=$(dpkg-parsechangelog -l "$work/src/debian/changelog" -S Version)
[ "$version" = "$debversion" ] || fail "debian/changelog says $debversion, meson.build $version: add a changelog entry"

export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=2}"
start=$SECONDS
(cd "$work/src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
  tail -n 60 "$work/build.log" >&2
  fail "dpkg-buildpackage failed"
}
echo "dpkg-buildpackage -us -uc -b: $((SECONDS - start)) s (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS)"
# Symbols added since debian/libnatproxy0.symbols was last refreshed pass (additions keep the ABI),
# but are worth seeing; removed ones have already failed the build (dpkg-gensymbols).
new=$(grep '^+ np_' "$work/build.log" || true)
[ -z "$new" ] || printf 'exported but not yet in debian/libnatproxy0.symbols (add at a release):\n%s\n' "$new"

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
deb() { echo "$work/${1}_${version}_$arch.deb"; }
changes=$work/libnatproxy_${version}_$arch.changes
for p in "${pkgs[@]}"; do [ -f "$(deb "$p")" ] || fail "no $(basename "$(deb "$p")")"; done

r=0
# TMPDIR: lintian leaves files of its own in it.
TMPDIR=$work lintian --fail-on error "$changes" >"$work/lintian.log" 2>&1 || r=$?
grep -v '^running with root privileges' "$work/lintian.log" || true
[ $r -eq 0 ] || fail "lintian: errors (exit $r)"
echo "lintian: no errors"

# The library uses the system's inih (libinih1), not the subprojects/ fallback compiled in.
grep -q 'libinih1' <<<"$(dpkg-deb -f "$(deb libnatproxy0)" Depends)" ||
  fail "libnatproxy0 does not depend on libinih1"
grep -q ' \./usr/share/man/man1/np-server\.1\.gz$' <<<"$(dpkg-deb -c "$(deb natproxy-tools)")" ||
  fail "natproxy-tools has no np-server(1)"

if [ "$(id -u)" -ne 0 ]; then
  echo "debian packages: built and lintian-clean; not root, so not installed and run (skipped)"
  exit 0
fi
installed=1
dpkg -i "$(deb libnatproxy0)" "$(deb libnatproxy-dev)" "$(deb natproxy-tools)" >/dev/null

# Run what the packages installed, not a copy under /usr/local (scripts/demo installs there, and
# /usr/local comes first in PATH, ld.so's and pkg-config's search).
libdir=/usr/lib/$ma
export LD_LIBRARY_PATH=$libdir PKG_CONFIG_LIBDIR=$libdir/pkgconfig:/usr/lib/pkgconfig:/usr/share/pkgconfig
unset PKG_CONFIG_PATH
for t in np-server np-client; do
  out=$(/usr/bin/$t --version)
  grep -qF "$version" <<<"$out" || fail "$t --version: $out"
  echo "$out"
  grep -qx "/usr/share/man/man1/$t.1.gz" <<<"$(dpkg -L natproxy-tools)" || fail "no $t(1) installed"
done
if command -v man >/dev/null && [ -f /usr/share/man/man1/np-server.1.gz ]; then
  grep -qx /usr/share/man/man1/np-server.1.gz <<<"$(man -M /usr/share/man -w np-server)" || fail "man -w np-server"
fi

# The units: installed where systemd looks, starting the packaged tools, not enabled (they need a
# configuration first); the natproxy user they run as exists (postinst ran systemd-sysusers).
for u in np-server.service np-client.service np-client@.service; do
  [ -f "/lib/systemd/system/$u" ] || fail "$u not installed"
  [ ! -e "/etc/systemd/system/multi-user.target.wants/$u" ] || fail "$u was enabled on install"
done
if command -v systemctl >/dev/null; then
  st=$(systemctl is-enabled np-server.service np-client.service 2>/dev/null || true)
  ! grep -q '^enabled' <<<"$st" || fail "a unit was enabled on install: $st"
fi
grep -qx 'ExecStart=/usr/bin/np-server -c /etc/natproxy/server.ini' /lib/systemd/system/np-server.service ||
  fail "np-server.service does not start /usr/bin/np-server"
getent passwd natproxy >/dev/null || fail "the natproxy user was not created"
r=0
out=$("$src/tests/check-units.sh" /lib/systemd/system/np-server.service /lib/systemd/system/np-client.service \
  /lib/systemd/system/np-client@.service 2>&1) || r=$?
[ $r -eq 0 ] || [ $r -eq 77 ] || { echo "$out" >&2; fail "the installed units fail tests/check-units.sh"; }
tail -n 1 <<<"$out"

# libnatproxy-dev: pkg-config, and tests/install's embedder (a server and a client on one loop),
# linked with the shared library and with the static one.
[ "$(pkg-config --modversion natproxy)" = "$version" ] || fail "pkg-config --modversion natproxy"
[ "$(pkg-config --variable=libdir natproxy)" = "$libdir" ] || fail "natproxy.pc is not the packaged one"
cc -Wall -Werror -o "$work/embed" "$src/tests/install/embed.c" $(pkg-config --cflags --libs natproxy)
"$work/embed"
# The archive, its own Libs.private, and the libraries of the packages it requires, shared (a fully
# static link would need the static archives of their dependencies too, gnutls's and more).
reqs=$(pkg-config --print-requires --print-requires-private natproxy | cut -d' ' -f1)
cc -Wall -Werror -o "$work/embed-static" "$src/tests/install/embed.c" $(pkg-config --cflags natproxy) \
  "$libdir/libnatproxy.a" $(sed -n 's/^Libs.private: //p' "$libdir/pkgconfig/natproxy.pc") $(pkg-config --libs $reqs)
"$work/embed-static"
if grep -q 'NEEDED *libnatproxy' <<<"$(objdump -p "$work/embed-static")"; then fail "embed-static loads libnatproxy.so"; fi

uninstall
for p in "${pkgs[@]}"; do
  if grep -q ' installed$' <<<"$(dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null)"; then fail "$p still installed"; fi
done
echo "debian packages: ok"
