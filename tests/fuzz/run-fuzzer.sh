#!/bin/sh
# Run one libFuzzer harness for SECONDS from a seed corpus (copied, so the tree is never written).
# A crash fails the test; libFuzzer prints the input (and its base64) for the regression test.
set -eu
exe=$1 seeds=$2 secs=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp "$seeds"/* "$work/corpus/"
exec "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus"
