#!/usr/bin/env bash
# 64 corio tasks each read a 64 KiB slice of one file in the same CPU phase: strace must see
# them reach the kernel in one io_uring_enter (plus at most one more to wait for stragglers).
# Usage: strace_enter.sh path/to/corio_files
set -euo pipefail
prog=$1
command -v strace >/dev/null || { echo "strace_enter: SKIP (no strace)"; exit 0; }
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/afs-strace-XXXXXX")
trap 'rm -rf "$dir"' EXIT
head -c $((64 * 65536)) /dev/urandom > "$dir/data"
# LeakSanitizer cannot run under ptrace (sanitizer builds).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
out=$(ASYNCFS_BACKEND=io_uring strace -f -e trace=io_uring_enter -o "$dir/trace" "$prog" "$dir/data" 64) || {
  # A machine where io_uring is blocked cannot run this; the ladder tests cover that case.
  if grep -q "not available\|Not supported" <<<"$out"; then echo "strace_enter: SKIP (no io_uring)"; exit 0; fi
  echo "$out"; exit 1; }
echo "$out"
enters=$(grep -c 'io_uring_enter(' "$dir/trace" || true)
submits=$(grep -E 'io_uring_enter\([0-9]+, [1-9]' "$dir/trace" | wc -l)
echo "io_uring_enter calls: $enters ($submits with submissions) for 64 reads"
grep 'io_uring_enter(' "$dir/trace" | head -5
[ "$submits" -eq 1 ] && [ "$enters" -le 2 ]
