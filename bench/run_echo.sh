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
# with AFS_CTX_PLAIN_SOCKETS (one-shot accepts and receives, no buffer ring); corio-base
# is BASE_BUILD's corio server (another build of the tree, e.g. the one before a change).
# Also per request: the server's io_uring completions (perf, io_uring:io_uring_complete) and
# the load generator's CPU time (its own count), which counts the kernel's work of delivering the requests
# to the server's sockets (on loopback the sender's context runs it). And the TCP segments
# sent on the machine over the same seconds (/proc/net/snmp OutSegs, both directions of
# loopback: the load's messages, the echoes and the ACKs) per request: on loopback both
# sides' CPU per request follows it (smaller receives make smaller echoes, more segments).
# Rows: bench/results/echo-<time>-<host>.csv. Not part of `make test`.
# Usage: bench/run_echo.sh   Environment: BUILD (build), SECS (5), CONNS (1000),
#        STREAM_CONNS (4), SIZE (512), WINDOW (64), SERVERS ("corio libuv epoll"),
#        MODES ("pingpong stream"), ROUNDS (1: the servers in turn that many times, A B A
#        B, so that a loaded machine's drift falls on each alike), BASE_BUILD,
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
MODES=${MODES:-pingpong stream}
ROUNDS=${ROUNDS:-1}
BASE_BUILD=${BASE_BUILD:-}
load=$BUILD/bench/echo_load
[ -x "$load" ] || { echo "run_echo.sh: no $load (build it, or set BUILD)" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

srv_cpu="" load_cpu=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  srv_cpu="taskset -c 0" load_cpu="taskset -c 1"
fi
have_perf=0 events=raw_syscalls:sys_enter
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
  have_perf=1
  perf stat -e io_uring:io_uring_complete true >/dev/null 2>&1 && events=$events,io_uring:io_uring_complete
fi

. bench/results.sh
results_open echo "server,backend,mode,conns,size,seconds,requests,rps,p50_us,p99_us,syscalls_per_req,cpu_us_per_req,round,cqes_per_req,load_cpu_us_per_req,tcp_segs_per_req"

server_cmd() {
  case $1 in
    corio) echo "$BUILD/examples/echo_server --raw" ;;
    corio-plain) echo "$BUILD/examples/echo_server --raw --plain" ;;
    corio-base) echo "${BASE_BUILD:-/nonexistent}/examples/echo_server --raw" ;;
    libuv) echo "$BUILD/bench/echo_uv" ;;
    epoll) echo "$BUILD/bench/echo_epoll" ;;
  esac
}

tcp_segs() { awk '/^Tcp:/ { if (h) { print $12; exit } h = 1 }' /proc/net/snmp 2>/dev/null || echo 0; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
per_req() { # per_req COUNT REQUESTS [SCALE]: COUNT * SCALE / REQUESTS, "" without a count
  if [ -n "$1" ] && [ "$2" -gt 0 ]; then
    awk -v a="$1" -v b="$2" -v k="${3:-1}" -v f="${4:-%.3f}" 'BEGIN { printf f, a * k / b }'
  fi
}
hz=$(getconf CLK_TCK)

out=$(mktemp)
trap 'rm -f "$out" "$out".*; [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null || true' EXIT
for round in $(seq "$ROUNDS"); do
for s in $SERVERS; do
  cmd=$(server_cmd "$s")
  bin=${cmd%% *}
  [ -x "$bin" ] || { echo "run_echo.sh: $s: no $bin, skipped" >&2; continue; }
  for mode in $MODES; do
    # Emptied here, not by the server's redirection: that runs in the child, and on a busy
    # machine the line below could still read the last server's port.
    : > "$out"
    $srv_cpu $cmd > "$out" &
    spid=$!
    for _ in $(seq 300); do grep -q listening "$out" && break; sleep 0.1; done
    port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$out")
    if [ "$mode" = pingpong ]; then args=(--conns "$CONNS"); else
      args=(--conns "$STREAM_CONNS" --stream --window "$WINDOW"); fi
    $load_cpu "$load" --port "$port" --size "$SIZE" --seconds "$SECS" "${args[@]}" > "$out.res" &
    lpid=$!
    # Counted over the measured seconds only (the load's first second is a warm-up).
    sleep 1
    ppid=""
    if [ $have_perf = 1 ]; then
      perf stat -x, -e "$events" -p "$spid" -- sleep "$SECS" 2> "$out.perf" >/dev/null &
      ppid=$!
    fi
    # The server's CPU ticks (user + sys) over the same seconds.
    s0=$(ticks "$spid") g0=$(tcp_segs)
    sleep "$SECS"
    s1=$(ticks "$spid") g1=$(tcp_segs)
    [ -n "$ppid" ] && { wait "$ppid" || true; }
    wait "$lpid" || true
    res=$(cat "$out.res")
    kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; spid=""
    req=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$res")
    req=${req:-0}
    rps=$(sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<<"$res")
    p50=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' <<<"$res")
    p99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$res")
    sc="" cq=""
    if [ $have_perf = 1 ]; then
      sc=$(awk -F, '/raw_syscalls/ { print $1 }' "$out.perf")
      cq=$(awk -F, '/io_uring_complete/ { print $1 }' "$out.perf")
    fi
    spr=$(per_req "$sc" "$req")
    cqr=$(per_req "$cq" "$req")
    cpr=$(per_req $((s1 - s0)) "$req" "$(awk -v h="$hz" 'BEGIN { print 1e6 / h }')" %.2f)
    gpr=$(per_req $((g1 - g0)) "$req")
    lpr=$(per_req "$(sed -n 's/.*cpu_us=\([0-9]*\).*/\1/p' <<<"$res")" "$req" 1 %.2f)
    n=$([ "$mode" = pingpong ] && echo "$CONNS" || echo "$STREAM_CONNS")
    be=$(case $s in corio*) echo "${ASYNCFS_BACKEND:-auto}" ;; *) echo "-" ;; esac)
    results_row "$s${TAG:-},$be,$mode,$n,$SIZE,$SECS,$req,$rps,$p50,$p99,$spr,$cpr,$round,$cqr,$lpr,$gpr"
    printf "%-12s %-9s %5s conns: %9s req/s  p50 %6s us  p99 %6s us  syscalls/req %s  cqes/req %s  cpu us/req %s (load %s)  segs/req %s\n" \
      "$s${TAG:-}" "$mode" "$n" "$rps" "$p50" "$p99" "${spr:-?}" "${cqr:-?}" "${cpr:-?}" "${lpr:-?}" "${gpr:-?}"
  done
done
done
