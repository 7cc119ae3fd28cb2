#!/usr/bin/env bash
# The systemd units (systemd/, docs/systemd.md) pass `systemd-analyze verify` without a word about
# them, and `systemd-analyze security` rates their exposure at most 2.5 ("OK"; 0 is best, 10 worst).
#   check-units.sh [--exec-dir FROM TO] UNIT...
# verify insists that ExecStart's program exists: --exec-dir rewrites the configured bindir FROM to
# TO (the build's tools/) in copies of the units, for the suite; tests/install checks installed
# units as they are. Skipped (77) without systemd-analyze.
set -euo pipefail
from= to=
if [ "${1:-}" = --exec-dir ]; then
  from=$2 to=$3
  shift 3
fi
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found: skipped"; exit 77; }
[ $# -gt 0 ] || { echo "usage: $0 [--exec-dir FROM TO] UNIT..." >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
copies=()
for u in "$@"; do
  [ -f "$u" ] || { echo "no unit $u" >&2; exit 1; }
  c=$tmp/$(basename "$u")
  if [ -n "$from" ]; then
    sed "s|^\(Exec[A-Za-z]*=\)$from/|\1$to/|" "$u" >"$c"
  else
    cp "$u" "$c"
  fi
  grep -q '^ExecStart=/' "$c" || { echo "$u: no absolute ExecStart=" >&2; exit 1; }
  copies+=("$c")
done

fail=0
# --man=no: the man pages of Documentation= need not be installed where this runs. verify's exit
# status misses warnings (an unknown key, a bad system call group are only printed), so any line
# that names one of our units or files fails the check; lines about the system's own units are
# shown, not counted.
out=$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "${copies[@]}" 2>&1) || {
  echo "systemd-analyze verify failed:"; fail=1; }
names=$(for c in "${copies[@]}"; do b=$(basename "$c" .service); printf '%s\n' "${b%@}"; done)
while IFS= read -r line; do
  [ -n "$line" ] || continue
  if grep -qF -e "$tmp" <<<"$line" || grep -qF -f <(printf '%s\n' $names) <<<"$line"; then
    echo "verify: $line"
    fail=1
  else
    echo "verify (not ours, ignored): $line"
  fi
done <<<"$out"

if grep -q -- --offline <<<"$(systemd-analyze security --help 2>/dev/null)"; then
  for c in "${copies[@]}"; do # a template is rated as its instance np-client@i
    rate=$(systemd-analyze security --offline=yes --no-pager "$c" 2>&1 | grep 'Overall exposure' || true)
    echo "$(basename "$c"): ${rate#→ }"
    systemd-analyze security --offline=yes --threshold=25 "$c" >/dev/null 2>&1 || {
      echo "$(basename "$c"): exposure above 2.5"; fail=1; }
  done
fi
[ $fail -eq 0 ] && echo "units: ok (${#copies[@]} checked)"
exit $fail
