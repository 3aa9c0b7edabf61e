#!/usr/bin/env bash
# SQLite on the asyncfs VFS against SQLite's unix VFS, and group commit against one fdatasync
# per append and O_DSYNC appends, in one run; rows go to bench/results/sqlite-<time>-<host>.csv.
#  - point lookups: CONNS connections in CONNS corio tasks of one scheduler (asyncfs VFS), and
#    spread over a corio runtime of SCHEDULERS schedulers (default one per CPU), against
#    CONNS threads (unix VFS), cold (caches dropped before each run: needs root,
#    else the rows say "warm") and warm; warm also against the same connections one after
#    the other on one thread (unix VFS);
#  - full-table scans by CONNS connections, warm; inserts in transactions of 1,000 rows;
#  - 128-byte durable appends: TASKS corio tasks through corio_log, vs pwrite + fdatasync
#    per append, vs O_DSYNC pwrite, each for LOG_SECONDS on the same file system.
# Usage: bench/run_sqlite.sh [DIR]   (default /var/tmp/afs-bench-sqlite; a ROWS-row database
#        is made there once)
# PAIRS=N: instead, N rounds of point lookups only, each round cold then warm, every mode in
#   turn (32 threads, one scheduler, the SCHEDULERS runtime, one thread; the order reversed
#   every other round), each round's ratios to the threads (cold) and to the one thread (warm)
#   printed with the load average, then the medians of the rounds' ratios; rows (with each
#   run's seconds on a CPU and runnable waiting for one) to
#   bench/results/sqlite_pairs-<time>-<host>.csv.
#   AUTOGROUP_NICE=N (Linux, root for N < 0): each run in a session of its own whose
#   scheduler autogroup has nice N, the same for every mode. On a machine shared with other
#   work the kernel shares the CPUs between sessions, and a process of 32 runnable threads
#   gets more of them than one of 1 or 2: this takes the other sessions out of the
#   comparison.
# ALTERNATE=R: instead, the lookups alternated inside one process (bench_sqlite alternate,
#   R rounds of A B / B A each): warm, one scheduler against one thread (unix VFS); cold (root),
#   one scheduler and the SCHEDULERS runtime each against 32 threads (unix VFS), and one
#   scheduler against the SCHEDULERS runtime; each line
#   gives the medians of the rounds' ratios of lookups per second and of CPU per lookup; rows
#   to bench/results/sqlite_alt-<time>-<host>.csv. AUTOGROUP_NICE as below.
# Environment: BUILD (build), ROWS (300000), CONNS (32), COLD_LOOKUPS (200 per connection),
#              WARM_LOOKUPS (2000 per connection), INSERTS (20000), TASKS (64), LOG_SECONDS (5),
#              REPEAT (3: each figure is the best of REPEAT runs)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ROWS=${ROWS:-300000}
CONNS=${CONNS:-32}
COLD_LOOKUPS=${COLD_LOOKUPS:-200}
WARM_LOOKUPS=${WARM_LOOKUPS:-2000}
INSERTS=${INSERTS:-20000}
TASKS=${TASKS:-64}
LOG_SECONDS=${LOG_SECONDS:-5}
REPEAT=${REPEAT:-3}
dir=${1:-/var/tmp/afs-bench-sqlite}
sq=$BUILD/bench/bench_sqlite
lg=$BUILD/bench/bench_log
if [ ! -x "$sq" ] || [ ! -x "$lg" ]; then
  echo "run_sqlite.sh: build bench_sqlite and bench_log first (BUILD=$BUILD)" >&2
  exit 2
fi
mkdir -p "$dir"
db=$dir/bench-$ROWS.db
[ -f "$db" ] || "$sq" setup "$db" "$ROWS"

cold=0
if [[ $(id -u) -eq 0 && -w /proc/sys/vm/drop_caches ]]; then cold=1; fi
drop() { sync; if ((cold)); then echo 3 > /proc/sys/vm/drop_caches; fi; }
warmup() { cat "$db" > /dev/null; }

. bench/results.sh
backend=$("$sq" lookups "$db" "$ROWS" corio 1 1 2>&1 >/dev/null |
          sed -n 's/^corio: \([^,]*\),.*/\1/p')
if ((${ALTERNATE:-0} > 0)); then
  results_open sqlite_alt "load1,autogroup_nice,cache,pair,op,mode,conns,ops,seconds,ops_per_s,cpu_s"
  alt() { # cache lookups mode_a mode_b [cold]
    local c=$1 n=$2 a=$3 b=$4 l load
    load=$(cut -d' ' -f1 /proc/loadavg)
    local run=("$sq" alternate "$db" "$ROWS" "$a" "$b" "$CONNS" "$n" "$ALTERNATE" ${5:-})
    if [ -n "${AUTOGROUP_NICE:-}" ]; then
      run=(setsid -w sh -c 'echo "$0" > /proc/self/autogroup && exec "$@"' "$AUTOGROUP_NICE"
           "${run[@]}")
    fi
    "${run[@]}" 2>"$err" | while IFS= read -r l; do results_row "$load,${AUTOGROUP_NICE:-},$c,$a/$b,$l"; done
    echo "load $load: $(grep '^alternate' "$err")" >&2
  }
  err=$(mktemp)
  trap 'rm -f "$err"' EXIT
  warmup
  alt warm "$WARM_LOOKUPS" corio single
  if ((cold)); then
    alt cold "$COLD_LOOKUPS" corio threads cold
    alt cold "$COLD_LOOKUPS" rt threads cold
    alt cold "$COLD_LOOKUPS" corio rt cold
  fi
  exit 0
fi
if ((${PAIRS:-0} > 0)); then
  results_open sqlite_pairs "round,load1,autogroup_nice,op,mode,cache,backend,conns,ops,seconds,ops_per_s,cpu_s,oncpu_s,cpuwait_s"
  cache=cold; ((cold)) || cache=warm
  declare -A v
  ratios=$(mktemp)
  err=$(mktemp)
  trap 'rm -f "$ratios" "$err"' EXIT
  for r in $(seq "$PAIRS"); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    modes="threads corio rt single"
    ((r % 2)) || modes="single rt corio threads"
    for c in "$cache" warm; do
      for m in $modes; do
        if [ "$c" = warm ]; then warmup; n=$WARM_LOOKUPS; else drop; n=$COLD_LOOKUPS; fi
        if [ -n "${AUTOGROUP_NICE:-}" ]; then
          l=$(setsid -w sh -c 'echo "$0" > /proc/self/autogroup && exec "$@"' \
                "$AUTOGROUP_NICE" "$sq" lookups "$db" "$ROWS" "$m" "$CONNS" "$n" 2>"$err")
        else
          l=$("$sq" lookups "$db" "$ROWS" "$m" "$CONNS" "$n" 2>"$err")
        fi
        # The threads' time on a CPU and runnable waiting for one (the rt mode's schedulers
        # other than the first are not counted: they have ended by then).
        sc=$(sed -n 's/^sched: \([0-9.]*\) s on a CPU, \([0-9.]*\) s runnable.*/\1,\2/p' "$err")
        results_row "$r,$load,${AUTOGROUP_NICE:-},$(echo "$l" | cut -d, -f1-2),$c,$backend,$(echo "$l" | cut -d, -f3-),${sc:-,}"
        v[$c$m]=$(echo "$l" | cut -d, -f6)
      done
    done
    awk -v r="$r" -v l="$load" -v c="$cache" -v ct="${v[${cache}threads]}" \
        -v cc="${v[${cache}corio]}" -v cr="${v[${cache}rt]}" -v ws="${v[warmsingle]}" \
        -v wt="${v[warmthreads]}" -v wc="${v[warmcorio]}" -v wr="${v[warmrt]}" 'BEGIN {
      printf "round %d load %s  %s: threads %d/s, 1 sched %.2fx, rt %.2fx", r, l, c, ct, cc/ct, cr/ct
      printf "  warm: single %d/s, threads %.2fx, 1 sched %.2fx, rt %.2fx\n", ws, wt/ws, wc/ws, wr/ws
    }' >&2
    echo "${v[${cache}corio]} ${v[${cache}threads]} ${v[${cache}rt]} ${v[warmcorio]} ${v[warmsingle]} ${v[warmrt]}" >> "$ratios"
  done
  # Medians of the rounds' ratios: one round in a noisy stretch moves them least.
  awk -v c="$cache" 'function med(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    { n++; a1[n] = $1/$2; a2[n] = $3/$2; a3[n] = $4/$5; a4[n] = $6/$5 }
    END { printf "median of %d rounds: %s: 1 sched %.2fx, rt %.2fx of the threads;", n, c, med(a1, n), med(a2, n)
          printf " warm: 1 sched %.2fx, rt %.2fx of one thread\n", med(a3, n), med(a4, n) }' "$ratios" >&2
  exit 0
fi
results_open sqlite "op,mode,cache,backend,conns,ops,seconds,ops_per_s,cpu_s"

best() { # prints the line with the highest ops_per_s among REPEAT runs of "$@" (after $pre)
  local bestl="" bestv=0 l v
  for _ in $(seq "$REPEAT"); do
    $pre
    l=$("$@" 2>/dev/null)
    v=$(echo "$l" | cut -d, -f6)
    if [ "${v%.*}" -gt "${bestv%.*}" ]; then bestv=$v; bestl=$l; fi
  done
  echo "$bestl"
}
row() { # cache line (op,mode,conns,ops,seconds,ops_per_s[,cpu_s])
  local cache=$1 IFS=,; set -- $2
  local cpu=${7:-}
  results_row "$1,$2,$cache,$backend,$3,$4,$5,$6,$cpu"
  printf '%-8s %-8s %-5s conns %-3s %8s ops %8.3f s %9s ops/s %6s s CPU\n' \
    "$1" "$2" "$cache" "$3" "$4" "$5" "$6" "${cpu:--}" >&2
}


cache=cold; ((cold)) || cache=warm
pre=drop
for m in corio rt threads; do
  row "$cache" "$(best "$sq" lookups "$db" "$ROWS" "$m" "$CONNS" "$COLD_LOOKUPS")"
done
pre=warmup
for m in single threads corio rt; do
  row warm "$(best "$sq" lookups "$db" "$ROWS" "$m" "$CONNS" "$WARM_LOOKUPS")"
done
# The same with the default sync_threshold (4 KiB page reads run inline, not batched).
inline=$(best "$sq" lookups "$db" "$ROWS" corio "$CONNS" "$WARM_LOOKUPS" 4096)
row warm "${inline/,corio,/,corio-inline,}"
for m in single threads corio; do
  row warm "$(best "$sq" scan "$db" "$ROWS" "$m" 4)"
done
pre=:
for v in unix asyncfs; do
  row warm "$(best "$sq" insert "$db" "$INSERTS" "$v")"
done
# Durable appends: one run of each (they last LOG_SECONDS each).
"$lg" "$dir" "$LOG_SECONDS" "$TASKS" 2>/dev/null | while IFS= read -r l; do row disk "$l"; done
