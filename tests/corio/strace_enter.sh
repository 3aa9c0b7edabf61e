#!/usr/bin/env bash
# 64 corio tasks each read a 64 KiB slice of one file in the same CPU phase: strace must see
# them reach the kernel in one io_uring_enter (plus at most one more to wait for stragglers).
# Usage: strace_enter.sh path/to/corio_files
# Exit: 0 when the count holds, 1 when it does not or nothing could be counted (no strace, no
# io_uring), 77 (skipped) only where io_uring is blocked on purpose (AFS_EXPECT_NO_URING=1).
set -euo pipefail
prog=$1
if [ "${AFS_EXPECT_NO_URING:-}" = 1 ]; then
  echo "strace_enter: SKIP (io_uring blocked on purpose: AFS_EXPECT_NO_URING=1)"; exit 77
fi
command -v strace >/dev/null || { echo "strace_enter: FAIL: no strace (scripts/deps.sh test installs it)"; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/afs-strace-XXXXXX")
trap 'rm -rf "$dir"' EXIT
head -c $((64 * 65536)) /dev/urandom > "$dir/data"
# LeakSanitizer cannot run under ptrace (sanitizer builds).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
out=$(ASYNCFS_BACKEND=io_uring strace -f -e trace=io_uring_enter -o "$dir/trace" "$prog" "$dir/data" 64) || {
  rc=$?
  # io_uring missing where it is expected is a failure like any other.
  echo "$out"; echo "strace_enter: FAIL (exit $rc; io_uring blocked? set AFS_EXPECT_NO_URING=1 if on purpose)"
  exit 1; }
echo "$out"
enters=$(grep -c 'io_uring_enter(' "$dir/trace" || true)
submits=$(grep -E 'io_uring_enter\([0-9]+, [1-9]' "$dir/trace" | wc -l)
echo "io_uring_enter calls: $enters ($submits with submissions) for 64 reads"
grep 'io_uring_enter(' "$dir/trace" | head -5
[ "$submits" -eq 1 ] && [ "$enters" -le 2 ]
