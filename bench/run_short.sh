#!/usr/bin/env bash
# Short commands, the copies people type most: afcp against cp on one 4 KiB file and on a
# tree of 10 files of 4 KiB (cached), whole process timed from outside (start-up, the
# schedulers' threads and rings, exit), and the same where io_uring is blocked by a seccomp
# filter (as in a container under Docker's default profile: AUTO then takes libaio), run
# through tests/helpers/noring from a build with tests. PAIRS alternated runs per case (afcp
# first in odd pairs, cp first in even ones); each line gives the medians and the median of
# the pair ratios (afcp / cp: under 1, afcp is faster). BASE=path/to/another/afcp adds it to
# every pair (a build before a change), its ratio against the afcp under test.
#
# Usage: BUILD=<build dir with tools> [NORING=<noring>] [BASE=<afcp>] [PAIRS=21] bench/run_short.sh
# Every run is kept as bench/results/short-<time>-<host>.csv (bench/results.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/results.sh"
BUILD=${BUILD:?BUILD=<build dir>}
AFCP=$BUILD/tools/afcp/afcp
NORING=${NORING:-$BUILD/tests/noring}
BASE=${BASE:-}
PAIRS=${PAIRS:-21}
[[ -x $AFCP ]] || { echo "no afcp in $BUILD" >&2; exit 2; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/afs_short.XXXXXX")
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/tree"
for i in $(seq 10); do head -c 4096 /dev/urandom > "$dir/tree/f$i"; done
cat "$dir"/tree/* > /dev/null

# Runs "$@" once with the destination removed first; prints the wall time in microseconds
# (bash's own clock: no process of its own around the command).
timed() { # dst cmd...
  local dst=$1 t0 t1
  shift
  rm -rf "$dst"
  t0=${EPOCHREALTIME/[.,]/}
  "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  t1=${EPOCHREALTIME/[.,]/}
  echo $((t1 - t0))
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

results_open short "case,afcp_us,cp_us,afcp_over_cp,base_us,afcp_over_base,pairs"
printf '%-34s %10s %10s %12s %10s %14s\n' case "afcp us" "cp us" "afcp/cp" "base us" "afcp/base"
run_case() { # label wrapper(s)... -- copy args
  local label=$1
  shift
  local wrap=()
  while [[ $1 != -- ]]; do wrap+=("$1"); shift; done
  shift
  local a=() c=() b=() ra=() rb=()
  for ((p = 1; p <= PAIRS; p++)); do
    local ta tc tb=0
    if ((p % 2)); then
      ta=$(timed "$dir/a" "${wrap[@]}" "$AFCP" "$@" "$dir/a")
      tc=$(timed "$dir/c" "${wrap[@]}" cp "$@" "$dir/c")
    else
      tc=$(timed "$dir/c" "${wrap[@]}" cp "$@" "$dir/c")
      ta=$(timed "$dir/a" "${wrap[@]}" "$AFCP" "$@" "$dir/a")
    fi
    [[ -n $BASE ]] && tb=$(timed "$dir/b" "${wrap[@]}" "$BASE" "$@" "$dir/b")
    a+=("$ta") c+=("$tc") b+=("$tb")
    ra+=("$(awk -v x="$ta" -v y="$tc" 'BEGIN { printf "%.4f", x / y }')")
    [[ -n $BASE ]] && rb+=("$(awk -v x="$ta" -v y="$tb" 'BEGIN { printf "%.4f", x / y }')")
  done
  cmp -s "$dir/a/f1" "$dir/tree/f1" 2>/dev/null || cmp -s "$dir/a" "$dir/tree/f1" ||
    { echo "afcp's copy differs" >&2; exit 1; }
  local ma mc mb rab rbb
  ma=$(printf '%s\n' "${a[@]}" | median)
  mc=$(printf '%s\n' "${c[@]}" | median)
  rab=$(printf '%s\n' "${ra[@]}" | median)
  mb=- rbb=-
  if [[ -n $BASE ]]; then
    mb=$(printf '%s\n' "${b[@]}" | median)
    rbb=$(printf '%s\n' "${rb[@]}" | median)
  fi
  printf '%-34s %10s %10s %12s %10s %14s\n' "$label" "$ma" "$mc" "$rab" "$mb" "$rbb"
  results_row "$label,$ma,$mc,$rab,$mb,$rbb,$PAIRS"
}

run_case "one 4 KiB file" -- "$dir/tree/f1"
run_case "10 files of 4 KiB, -r" -- -r "$dir/tree"
if [[ -x $NORING ]]; then
  run_case "one 4 KiB file, no io_uring" "$NORING" -- "$dir/tree/f1"
  run_case "10 files of 4 KiB, -r, no io_uring" "$NORING" -- -r "$dir/tree"
else
  echo "(no $NORING: the cases without io_uring need a build with tests)"
fi
