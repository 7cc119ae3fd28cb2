#!/usr/bin/env bash
# Fail when the shared library exports anything but np_ functions and data.
set -euo pipefail
bad=$(nm -D --defined-only "$1" | awk '$2 ~ /^[TDRBW]$/ {print $3}' | grep -v '^np_' || true)
if [ -n "$bad" ]; then
  echo "symbols outside the np_ namespace exported from $1:"
  echo "$bad"
  exit 1
fi
echo "$(nm -D --defined-only "$1" | grep -c ' np_') np_ symbols, nothing else"
