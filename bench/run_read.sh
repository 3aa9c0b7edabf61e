#!/usr/bin/env bash
# bench_read (random reads: pread, corio, corio-batch, the op API) on every backend given,
# on one file, in one run; the rows go to bench/results/read-<time>-<host>.csv with the
# system calls per I/O twice: as the library counts them (afs_stats) and as counted at the
# system-call table (the thread pool's preads included).
# Usage: bench/run_read.sh [FILE]   (default: a SIZE_MB file in /var/tmp, made once)
# Environment: BUILD (build), BACKENDS ("io_uring libaio threads"), IOS (50000), TASKS (32),
#              BS (4096), DIRECT (0; 1 = O_DIRECT), SIZE_MB (256)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BACKENDS=${BACKENDS:-io_uring libaio threads}
IOS=${IOS:-50000}
TASKS=${TASKS:-32}
BS=${BS:-4096}
DIRECT=${DIRECT:-0}
SIZE_MB=${SIZE_MB:-256}
file=${1:-/var/tmp/afs-bench-read.dat}
bin=$BUILD/bench/bench_read
[ -x "$bin" ] || { echo "run_read.sh: no $bin (build it, or set BUILD)" >&2; exit 2; }
[ -f "$file" ] || head -c $((SIZE_MB << 20)) /dev/urandom > "$file"

. bench/results.sh
results_open read "backend,file_mb,engine,bs,tasks,direct,ios,iops,ratio,cpu_us_per_io,syscalls_per_io,counted_syscalls_per_io"
mb=$(( $(stat -c %s "$file") >> 20 ))
flags=(--ios "$IOS" --tasks "$TASKS" --bs "$BS" --json)
[ "$DIRECT" = 1 ] && flags+=(--direct)
for b in $BACKENDS; do
  echo "run_read.sh: $b" >&2
  ASYNCFS_BACKEND=$b "$bin" "$file" "${flags[@]}" | while IFS= read -r j; do
    # One JSON object per line, flat: "key":value pairs in a fixed order.
    row=$(awk -v j="$j" 'BEGIN {
      n = split("engine bs tasks direct iops ratio cpu_us_per_io syscalls_per_io counted_syscalls_per_io", k, " ")
      for (i = 1; i <= n; i++) {
        v = j; sub(".*\"" k[i] "\":", "", v); sub("[,}].*", "", v); gsub("\"", "", v)
        printf "%s%s", (i > 1 ? "," : ""), v
        if (k[i] == "direct") printf ",'"$IOS"'"
      }
    }')
    results_row "$b,$mb,$row"
    echo "  $row" >&2
  done
done
