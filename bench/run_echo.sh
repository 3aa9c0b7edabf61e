#!/usr/bin/env bash
# The echo benchmark: the corio echo server (examples/echo_server --raw), a libuv echo server
# (bench/echo_uv.c) and a plain epoll loop (bench/echo_epoll.c), one server thread each, all
# driven by the same load generator (bench/echo_load.c) on loopback: 512-byte messages,
# CONNS connections ping-pong and STREAM_CONNS connections streaming (WINDOW messages in
# flight each). The server and the load generator are pinned to different CPUs when there are
# two. System calls per request: the server's, counted by perf (raw_syscalls:sys_enter) in
# the same run, divided by the requests the load generator counted in it. CPU per request:
# the server's user+sys time over the same seconds (/proc/PID/stat), divided likewise; on a
# loaded machine it moves less than the rates do. The corio-plain server is the corio one
# with AFS_CTX_PLAIN_SOCKETS (one-shot accepts and receives, no buffer ring).
# Rows: bench/results/echo-<time>-<host>.csv. Not part of `make test`.
# Usage: bench/run_echo.sh   Environment: BUILD (build), SECS (5), CONNS (1000),
#        STREAM_CONNS (4), SIZE (512), WINDOW (64), SERVERS ("corio libuv epoll"),
#        ASYNCFS_BACKEND (the corio server's backend; default AUTO), TAG (appended to the
#        server's name in the rows: which build was measured)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECS=${SECS:-5}
CONNS=${CONNS:-1000}
STREAM_CONNS=${STREAM_CONNS:-4}
SIZE=${SIZE:-512}
WINDOW=${WINDOW:-64}
SERVERS=${SERVERS:-corio libuv epoll}
load=$BUILD/bench/echo_load
[ -x "$load" ] || { echo "run_echo.sh: no $load (build it, or set BUILD)" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

srv_cpu="" load_cpu=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  srv_cpu="taskset -c 0" load_cpu="taskset -c 1"
fi
have_perf=0
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
  have_perf=1
fi

. bench/results.sh
results_open echo "server,backend,mode,conns,size,seconds,requests,rps,p50_us,p99_us,syscalls_per_req,cpu_us_per_req"

server_cmd() {
  case $1 in
    corio) echo "$BUILD/examples/echo_server --raw" ;;
    corio-plain) echo "$BUILD/examples/echo_server --raw --plain" ;;
    libuv) echo "$BUILD/bench/echo_uv" ;;
    epoll) echo "$BUILD/bench/echo_epoll" ;;
  esac
}

out=$(mktemp)
trap 'rm -f "$out" "$out.perf" "$out.cpu"; [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null || true' EXIT
for s in $SERVERS; do
  cmd=$(server_cmd "$s")
  bin=${cmd%% *}
  [ -x "$bin" ] || { echo "run_echo.sh: $s: no $bin, skipped" >&2; continue; }
  for mode in pingpong stream; do
    $srv_cpu $cmd > "$out" &
    spid=$!
    for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
    port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$out")
    if [ "$mode" = pingpong ]; then args=(--conns "$CONNS"); else
      args=(--conns "$STREAM_CONNS" --stream --window "$WINDOW"); fi
    if [ $have_perf = 1 ]; then
      # Counted over the measured seconds only (the load's first second is a warm-up).
      (sleep 1; perf stat -x, -e raw_syscalls:sys_enter -p "$spid" -- sleep "$SECS" \
         2> "$out.perf" >/dev/null) &
      ppid=$!
    fi
    # The server's CPU ticks (user + sys) over the same seconds.
    (ticks() { awk '{ print $14 + $15 }' "/proc/$spid/stat" 2>/dev/null || echo 0; }
     sleep 1; a=$(ticks); sleep "$SECS"; echo $(( $(ticks) - a )) > "$out.cpu") &
    cpid=$!
    res=$($load_cpu "$load" --port "$port" --size "$SIZE" --seconds "$SECS" "${args[@]}")
    sc=""
    if [ $have_perf = 1 ]; then
      wait "$ppid" || true
      sc=$(awk -F, '/raw_syscalls/ { print $1 }' "$out.perf")
    fi
    wait "$cpid" || true
    kill "$spid"; wait "$spid" 2>/dev/null || true; spid=""
    req=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$res")
    rps=$(sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<<"$res")
    p50=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' <<<"$res")
    p99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$res")
    spr=""
    [ -n "$sc" ] && [ "$req" -gt 0 ] && spr=$(awk -v a="$sc" -v b="$req" 'BEGIN { printf "%.3f", a / b }')
    cpr=""
    tk=$(cat "$out.cpu" 2>/dev/null || echo "")
    [ -n "$tk" ] && [ "$req" -gt 0 ] &&
      cpr=$(awk -v t="$tk" -v h="$(getconf CLK_TCK)" -v b="$req" 'BEGIN { printf "%.2f", t / h * 1e6 / b }')
    n=$([ "$mode" = pingpong ] && echo "$CONNS" || echo "$STREAM_CONNS")
    be=$(case $s in corio*) echo "${ASYNCFS_BACKEND:-auto}" ;; *) echo "-" ;; esac)
    results_row "$s${TAG:-},$be,$mode,$n,$SIZE,$SECS,$req,$rps,$p50,$p99,$spr,$cpr"
    printf "%-12s %-9s %5s conns: %9s req/s  p50 %6s us  p99 %6s us  syscalls/req %s  cpu us/req %s\n" \
      "$s${TAG:-}" "$mode" "$n" "$rps" "$p50" "$p99" "${spr:-?}" "${cpr:-?}"
  done
done
