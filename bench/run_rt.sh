#!/usr/bin/env bash
# bench_rt (cross-scheduler round trips against a condition-variable hand-off, pipelined
# messages, cached reads on 1 and 2 schedulers) on every backend given, in one run; the rows
# go to bench/results/rt-<time>-<host>.csv.
# Usage: bench/run_rt.sh [FILE]   (default: bench_rt makes a 64 MiB file and removes it)
# Environment: BUILD (build), BACKENDS ("io_uring threads"), TRIPS (20000), IOS (400000),
#              TASKS (64), ROUNDS (5: round trips and the condition variable alternated)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BACKENDS=${BACKENDS:-io_uring threads}
bin=$BUILD/bench/bench_rt
[ -x "$bin" ] || { echo "run_rt.sh: no $bin (build it, or set BUILD)" >&2; exit 2; }
flags=(--csv --trips "${TRIPS:-20000}" --ios "${IOS:-400000}" --tasks "${TASKS:-64}"
       --rounds "${ROUNDS:-5}")
[ $# -ge 1 ] && flags+=(--file "$1")

. bench/results.sh
results_open rt "backend,test,schedulers,tasks,value,unit,cpu_us_per_op"
for b in $BACKENDS; do
  echo "run_rt.sh: $b" >&2
  ASYNCFS_BACKEND=$b "$bin" "${flags[@]}" | tail -n +2 | while IFS= read -r line; do
    results_row "$b,$line"
    echo "$b,$line"
  done
done
