#!/usr/bin/env bash
# `make run`: the examples, afcp copying a generated data set (with its progress bar on a
# terminal), and a short afbench table against pread. About a minute on a small machine.
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
ex() { # an example that this build has: run it, then a blank line
  if [ -x "$BUILD/examples/$1" ]; then
    local name=$1
    shift
    "$BUILD/examples/$name" "$@"
    echo
  fi
}
echo "== asyncigo's README examples: parallel tasks, waiting, cancellation (about 4 s)"
ex asyncigo_parallel
ex asyncigo_wait
ex asyncigo_cancel
echo "== go-work's job example (connect, write, read, close on a Unix socket)"
ex gowork_job "$data/gowork_job.conn"
if [ -x "$BUILD/examples/asyncigo_iter" ]; then
  echo "== asyncigo's iterator example (line lengths from a line server on a free loopback port)"
  "$BUILD/examples/asyncigo_iter"
  echo
  echo "== asyncigo's chain example (the lines of two line servers, one after the other)"
  "$BUILD/examples/asyncigo_chain"
  echo
fi
echo "== generating a data set in $data: 2,000 files of 16 KiB in 20 directories, one 256 MiB file"
mkdir -p "$data/src"
for d in $(seq 0 19); do
  mkdir -p "$data/src/dir$d"
  for f in $(seq 0 99); do
    head -c 16384 /dev/urandom > "$data/src/dir$d/file$f"
  done
done
head -c $((256 << 20)) /dev/urandom > "$data/src/big.dat"
echo
echo "== afcp -r: copy the tree (progress bar on a terminal)"
time "$BUILD/tools/afcp/afcp" -r "$data/src" "$data/dst"
diff -r "$data/src" "$data/dst" && echo "verified: the copy is identical"
echo
echo "== corio_files: 16 tasks read the 256 MiB file, each its own slice"
ex corio_files "$data/src/big.dat" 16
echo "== afbench: random 4 KiB reads of the 256 MiB file, 32 in flight, 2 s each"
printf "%-10s %12s %10s %12s %12s\n" engine IOPS "p99 us" "CPU us/IO" "syscalls/IO"
for direct in 0 1; do
  [ "$direct" = 1 ] && echo "-- O_DIRECT (the device)" || echo "-- cached"
  for e in pread threads corio queue; do
    "$BUILD/tools/afbench/afbench" --filename="$data/src/big.dat" --engine=$e --rw=randread \
      --bs=4k --iodepth=32 --runtime=2 --direct=$direct --output-format=csv 2>/dev/null |
      awk -F, 'NR==2 { printf "%-10s %12.0f %10.1f %12.2f %12.3f\n", $1, $9, $13, $17, $18 }' ||
      echo "$e: not available here"
  done
done
