#!/usr/bin/env bash
# Runs an example and compares what it prints, byte for byte, with the expected text.
#   example_output.sh PROGRAM EXPECTED_FILE
# Or checks how the file examples in DIR (asyncfs_example, corio_files, gowork_job) meet bad
# input: a non-zero exit and a message, no crash, and a file they did not make left alone.
#   example_output.sh --errors DIR
set -euo pipefail

if [ "${1:-}" = "--errors" ]; then
  ex=${2:?usage: example_output.sh --errors DIR}
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/example-errors.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  fails=0
  fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
  expect() { # status-test words command... : runs command, checks its status and stderr
    local want=$1 words=$2 rc=0; shift 2
    timeout 60 "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
    if ! [ "$rc" $want ] || ! grep -q -- "$words" "$tmp/err" "$tmp/out"; then
      fail "$(basename "$1") ${*:2}: exit $rc (want $want), output: $(cat "$tmp/out" "$tmp/err")"
    else
      echo "ok   $(basename "$1") ${*:2}: exit $rc: $(head -1 "$tmp/err")"
    fi
  }
  head -c 100000 /dev/urandom >"$tmp/data"
  printf 'keep me\n' >"$tmp/mine"

  # corio_files: the task count is a number from 1 up, the file one that can be read at
  # offsets, and the line printed must reach standard output.
  expect "-eq 2" "tasks" "$ex/corio_files" "$tmp/data" abc
  expect "-eq 2" "tasks" "$ex/corio_files" "$tmp/data" 0
  expect "-eq 2" "tasks" "$ex/corio_files" "$tmp/data" 99999999999
  expect "-eq 1" "No such file" "$ex/corio_files" "$tmp/missing"
  mkfifo "$tmp/fifo"
  expect "-eq 1" "not a regular file" "$ex/corio_files" "$tmp/fifo"
  expect "-eq 1" "standard output" sh -c '"$0" "$1" >/dev/full' "$ex/corio_files" "$tmp/data"
  expect "-eq 0" "" "$ex/corio_files" "$tmp/data" 7
  # Its checksum is the file's, whatever the task count, and the sum the text gives.
  sums=$(for n in 1 7 16; do "$ex/corio_files" "$tmp/data" $n | sed -n 's/.*checksum \([0-9a-f]*\).*/\1/p'; done | sort -u)
  # (100,000 bytes: the sum stays below 2^53, exact in awk's doubles)
  want=$(printf '%016x' "$(od -An -v -tu1 "$tmp/data" |
    awk '{ for (i = 1; i <= NF; i++) { k++; s += k * $i } } END { printf "%.0f", s }')")
  if [ "$sums" != "$want" ]; then
    fail "corio_files: checksums '$(echo $sums)' for 1, 7 and 16 tasks, want $want"
  else
    echo "ok   corio_files: checksum $want for 1, 7 and 16 tasks"
  fi

  # asyncfs_example and gowork_job write a file of their own and remove it: a path that
  # already exists is refused, and kept as it was.
  expect "-ne 0" "File exists" "$ex/asyncfs_example" "$tmp/mine"
  expect "-ne 0" "File exists" "$ex/gowork_job" "$tmp/mine"
  expect "-ne 0" "File exists" "$ex/asyncfs_example" "$tmp/fifo"
  [ "$(cat "$tmp/mine" 2>/dev/null)" = "keep me" ] || fail "an existing file was changed or removed"
  [ -p "$tmp/fifo" ] || fail "an existing FIFO was removed"
  # A failed job is a failed run.
  expect "-ne 0" "No such file" "$ex/gowork_job" "$tmp/missing/conn"
  expect "-eq 0" "done" "$ex/gowork_job" "$tmp/conn"
  expect "-eq 0" "has been read" "$ex/asyncfs_example" "$tmp/new"
  [ ! -e "$tmp/conn" ] && [ ! -e "$tmp/new" ] || fail "an example left its file behind"

  [ $fails -eq 0 ] || { echo "$fails failure(s)" >&2; exit 1; }
  echo "example errors: all ok"
  exit 0
fi

prog=$1 expected=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$prog" > "$out"
if ! cmp -s "$out" "$expected"; then
  echo "$(basename "$prog"): the output differs from $(basename "$expected"):" >&2
  diff "$expected" "$out" >&2 || true
  exit 1
fi
echo "$(basename "$prog"): output identical to $(basename "$expected") ($(wc -c < "$out") bytes)"
