#!/usr/bin/env bash
# `make run`: the examples and a short benchmark table on a generated data set (< 1 minute).
set -euo pipefail
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
data=$(mktemp -d "${TMPDIR:-/var/tmp}/asyncfs-run-XXXXXX")
trap 'rm -rf "$data"' EXIT

echo "== asyncfs example (the seed's README example in C)"
"$BUILD/examples/asyncfs_example" "$data/example"
echo
echo "== corio quick start (10 tasks x 4 requests)"
"$BUILD/examples/corio_quickstart"
echo
echo "== generating a 128 MiB data set in $data"
head -c $((128 << 20)) /dev/urandom > "$data/data"
echo "== 16 corio tasks read it in parallel"
"$BUILD/examples/corio_files" "$data/data" 16
echo
echo "== random 4 KiB reads, cached file, 32 in flight (bench/bench_read)"
"$BUILD/bench/bench_read" "$data/data" --ios 200000 --tasks 32
if "$BUILD/bench/bench_read" "$data/data" --direct --ios 1 --tasks 1 --engine pread >/dev/null 2>&1; then
  echo
  echo "== the same with O_DIRECT (device speed)"
  "$BUILD/bench/bench_read" "$data/data" --direct --ios 30000 --tasks 32
fi
