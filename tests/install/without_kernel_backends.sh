#!/usr/bin/env bash
# Builds the library and its tests as on a machine that has Criterion but neither liburing
# nor libaio (-DASYNCFS_URING=OFF -DASYNCFS_LIBAIO=OFF), then runs the contract suite on the
# thread pool and the corio suites in that build: the tests must link without the kernel
# backends' hooks and pass on what AUTO gives there, the ladder must name what was left out.
# Usage: without_kernel_backends.sh SOURCE_DIR C_COMPILER
set -euo pipefail
src=$1 cc=$2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/asyncfs-nokb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "without_kernel_backends: $*" >&2; exit 1; }

cmake -S "$src" -B "$tmp/build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
  -DASYNCFS_TOOLS=OFF -DASYNCFS_URING=OFF -DASYNCFS_LIBAIO=OFF >"$tmp/configure.log" 2>&1 ||
  { cat "$tmp/configure.log" >&2; fail "configure failed"; }
sed -n '/-- asyncfs /,$p' "$tmp/configure.log"
grep -q "tests: on" "$tmp/configure.log" || fail "the tests are not built (Criterion missing?)"
cmake --build "$tmp/build" -j 2 >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; fail "build failed"; }
# Every suite of that build but the ones that build again, the long soaks, the Memcheck runs
# (the outer build has them), the one that takes the machine's AIO events (run alone by
# the outer suite), the contract suites that force a backend (the outer build runs them
# on the same code; contract_auto, which lands on threads here, is this build's own),
# contract_noring (io_uring blocked: without io_uring the same as contract_auto) and the
# scheduler suite on sync (the outer build's, on the same code); one at
# a time, as the outer suite runs: the cached-data tests judge by timing, and a loaded
# machine changes their choices.
(cd "$tmp/build" && env -u ASYNCFS_BACKEND ctest -j 1 --output-on-failure --timeout 600 \
  -E '^(build_with|install_consumer|soak_large_|valgrind_|ladder_aio_max_nr|contract_(threads|sync|posix-aio|noring)$|corio_sched_sync$)') ||
  fail "the suites fail in a build without io_uring and libaio"
echo "without_kernel_backends: built and tested without io_uring and libaio"
