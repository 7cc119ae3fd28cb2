#!/bin/sh
# Run one libFuzzer harness for SECONDS from a seed corpus (copied, so the tree is never written).
# A crash fails the test; libFuzzer prints the input (and its base64) for the regression test, and
# the input itself is kept in ARTIFACTS (crash-*, leak-*, timeout-*, oom-*: default
# ./fuzz-artifacts/NAME under the directory meson runs tests in, the build directory) after the
# temporary working directory is gone.
set -eu
exe=$1 seeds=$2 secs=$3
keep=${4:-fuzz-artifacts/$(basename "$exe")}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" "$work/artifacts"
cp "$seeds"/* "$work/corpus/"
status=0
"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" || status=$?
if [ -n "$(ls -A "$work/artifacts")" ]; then
  mkdir -p "$keep"
  cp "$work/artifacts"/* "$keep/"
  echo "run-fuzzer: kept the failing inputs in $(cd "$keep" && pwd):" >&2
  ls -l "$keep" >&2
fi
exit "$status"
