#!/usr/bin/env bash
# Random cached 4 KiB reads with every read batched (bench_read --engine corio-batch) at each
# number of tasks, 1 to 4,096, in one run: the scheduler's cost per I/O against the number of
# tasks alive. Each round runs the whole curve with the tasks' own buffers, then with one
# buffer shared by all tasks (which takes the destination buffers' cache misses out of the
# figure). With IDLE set to a count, each round also runs the curve with one shared buffer
# beside IDLE more tasks that stay alive, blocked, until the readers are done (buffers
# "idle<N>" in the rows; bench_read needs --idle, so a BASE binary too): tasks alive that do
# not run should cost nothing. With BASE set to another build's bench_read (say, of the
# commit before a change), the two binaries alternate, curve by curve, in the same run.
# Unless QUEUE=0, each round also runs the curve without a scheduler (bench_read --engine
# queue: the same reads queued on the context straight from its callbacks, "queue" in the
# rows): the baseline that tells what the tasks cost from what the reads and the buffers cost.
# The rows go to bench/results/depth-<time>-<host>.csv; the summary on stderr gives, per
# binary and buffer mode, the best IOPS over the rounds at each count and the ratio of the
# best at 4,096 tasks to the best at any count, the medians over the rounds of the CPU per
# I/O and of its user part, and the same best and ratio for the steady IOPS (bench_read's
# window with every task alive: starting the tasks left out; the op API has no such window).
# Usage: bench/run_depth.sh [FILE]   (default: a SIZE_MB file in /var/tmp, made once)
# Environment: BUILD (build), BASE (none), TASKS (1,4,16,64,256,1024,4096), ROUNDS (3),
#              IOS (400000), SIZE_MB (64), BACKEND (io_uring), IDLE (none),
#              QD (bench_read's default; the contexts' queue depth, --qd), QUEUE (1)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TASKS=${TASKS:-1,4,16,64,256,1024,4096}
ROUNDS=${ROUNDS:-3}
IOS=${IOS:-400000}
SIZE_MB=${SIZE_MB:-64}
BACKEND=${BACKEND:-io_uring}
file=${1:-/var/tmp/afs-bench-depth-${SIZE_MB}m.dat}
bin=$BUILD/bench/bench_read
[ -x "$bin" ] || { echo "run_depth.sh: no $bin (build it, or set BUILD)" >&2; exit 2; }
[ -z "${BASE:-}" ] || [ -x "$BASE" ] || { echo "run_depth.sh: BASE=$BASE is not executable" >&2; exit 2; }
[ -f "$file" ] || head -c $((SIZE_MB << 20)) /dev/urandom > "$file"
cat "$file" > /dev/null # cached

. bench/results.sh
results_open depth "binary,round,buffers,tasks,iops,cpu_us_per_io,syscalls_per_io,usr_us_per_io,steady_iops"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
bins=("new=$bin=corio-batch")
[ -n "${BASE:-}" ] && bins=("base=$BASE=corio-batch" "${bins[@]}")
[ "${QUEUE:-1}" = 0 ] || bins+=("queue=$bin=queue")
for r in $(seq 1 "$ROUNDS"); do
  for mode in own shared ${IDLE:+idle$IDLE}; do
    for nb in "${bins[@]}"; do
      IFS== read -r name exe engine <<< "$nb"
      [ "$engine" = queue ] && [ "$mode" = "idle${IDLE:-}" ] && continue # no tasks to idle beside
      flags=(--engine "$engine" --tasks "$TASKS" --ios "$IOS" --json)
      [ -n "${QD:-}" ] && flags+=(--qd "$QD")
      [ "$mode" = shared ] && flags+=(--shared-buf)
      [ "$mode" = "idle${IDLE:-}" ] && flags+=(--shared-buf --idle "$IDLE")
      ASYNCFS_BACKEND=$BACKEND "$exe" "$file" "${flags[@]}" | grep "\"$engine\"" |
        while IFS= read -r j; do
          row=$(awk -v j="$j" 'BEGIN {
            n = split("tasks iops cpu_us_per_io syscalls_per_io usr_us_per_io steady_iops", k, " ")
            for (i = 1; i <= n; i++) {
              v = j; sub(".*\"" k[i] "\":", "", v); sub("[,}].*", "", v)
              printf "%s%s", (i > 1 ? "," : ""), v
            }
          }')
          results_row "$name,$r,$mode,$row"
          echo "$name,$r,$mode,$row" >> "$tmp"
        done
    done
  done
done
# Best IOPS per (binary, buffers, tasks) over the rounds, and the CPU per I/O of that round;
# then the medians over the rounds of the CPU and of its user part per I/O (what a change of
# the library's side moves; the kernel's part is most of the CPU and swings with the load).
sort -t, -k1,1 -k3,3 -k4,4n "$tmp" | awk -F, '
  { key = $1 "," $3 "," $4; if (!(key in best) || $5 > best[key]) { best[key] = $5; cpu[key] = $6 }
    if (!(($1 "," $3) in top) || $5 > top[$1 "," $3]) top[$1 "," $3] = $5
    if (!(key in sbest) || $9 > sbest[key]) sbest[key] = $9
    if (!(($1 "," $3) in stop) || $9 > stop[$1 "," $3]) stop[$1 "," $3] = $9
    n[key]++; c[key, n[key]] = $6; u[key, n[key]] = $8
    order[key] = NR; keys[NR] = key }
  function med(a, k, m,   i, j, t, v) {
    for (i = 1; i <= m; i++) v[i] = a[k, i]
    for (i = 2; i <= m; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
  }
  END {
    printf "%-5s %-7s %6s %10s %10s %8s %9s %9s %10s %8s\n", "bin", "buffers", "tasks", "best IOPS", "CPU us/IO", "vs best", "med CPU", "med user", "steady", "vs best" > "/dev/stderr"
    for (i = 1; i <= NR; i++) { k = keys[i]; if (order[k] != i) continue
      split(k, f, ",")
      printf "%-5s %-7s %6d %10.0f %10.2f %7.2fx %9.2f %9.2f", f[1], f[2], f[3], best[k], cpu[k], best[k] / top[f[1] "," f[2]], med(c, k, n[k]), med(u, k, n[k]) > "/dev/stderr"
      if (stop[f[1] "," f[2]] > 0) printf " %10.0f %7.2fx\n", sbest[k], sbest[k] / stop[f[1] "," f[2]] > "/dev/stderr"
      else printf " %10s %8s\n", "-", "-" > "/dev/stderr" }
  }'
