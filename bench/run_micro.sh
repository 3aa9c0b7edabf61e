#!/usr/bin/env bash
# The scheduler's micro-benchmarks in one run: bench_yield (corio_yield round trip against
# swapcontext), bench_switch (the raw context switch against swapcontext) and bench_spawn
# (spawn + finish of short tasks, memory per idle task). Each is run ROUNDS times in turn;
# every round is a row of bench/results/micro-<time>-<host>.csv.
# Usage: bench/run_micro.sh   Environment: BUILD (build), ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-3}
for b in bench_yield bench_switch bench_spawn; do
  [ -x "$BUILD/bench/$b" ] || { echo "run_micro.sh: no $BUILD/bench/$b (build it, or set BUILD)" >&2; exit 2; }
done

# The value of "key" in a flat JSON line.
jget() { awk -v j="$1" -v k="$2" 'BEGIN { sub(".*\"" k "\":", "", j); sub("[,}].*", "", j); gsub("\"", "", j); print j }'; }

. bench/results.sh
results_open micro "round,bench,corio_ns,baseline,baseline_ns,ratio,bytes_per_idle_task"
for ((r = 1; r <= ROUNDS; r++)); do
  j=$("$BUILD/bench/bench_yield" | grep '^{')
  results_row "$r,corio_yield round trip,$(jget "$j" corio_ns),swapcontext,$(jget "$j" swapcontext_ns),$(jget "$j" ratio),"
  j=$("$BUILD/bench/bench_switch" | grep '^{')
  results_row "$r,context switch round trip,$(jget "$j" corio_ns),swapcontext,$(jget "$j" swapcontext_ns),$(jget "$j" ratio),"
  j=$("$BUILD/bench/bench_spawn" | grep '^{')
  results_row "$r,spawn + finish,$(jget "$j" spawn_ns),,,,$(jget "$j" bytes_per_idle_task)"
  echo "run_micro.sh: round $r done" >&2
done
