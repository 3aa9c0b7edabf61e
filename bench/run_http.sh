#!/usr/bin/env bash
# The static file benchmark: the corio file server (examples/file_server) against nginx
# (nginx-light, one worker, sendfile on, access log off), both serving the same 4 KiB and
# 1 MiB files from one directory on loopback, measured with wrk (one thread, CONNS
# connections, keep-alive). The server and wrk are pinned to different CPUs when there are
# two. Rows: bench/results/http-<time>-<host>.csv, with the server's CPU time (user +
# system, its kernel I/O workers included) per request. Not part of `make test`.
# Usage: bench/run_http.sh   Environment: BUILD (build), SECS (10), CONNS (64),
#        SERVERS ("corio nginx"), ASYNCFS_BACKEND (the corio server's backend),
#        ROUNDS (1: the server list is run that many times in turn, A B A B, so that a
#        loaded machine's drift falls on every server alike), BASE_BUILD (another build
#        of the tree, e.g. the one before a change: server "base" runs its file_server),
#        SERVER_ARGS (extra arguments of the corio file_server, e.g. --sendfile-min -1),
#        BASE_ARGS (the same for base's)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECS=${SECS:-10}
CONNS=${CONNS:-64}
SERVERS=${SERVERS:-corio nginx}
ROUNDS=${ROUNDS:-1}
BASE_BUILD=${BASE_BUILD:-}
SERVER_ARGS=${SERVER_ARGS:-}
BASE_ARGS=${BASE_ARGS:-}
command -v wrk >/dev/null || { echo "run_http.sh: wrk is not installed (scripts/deps.sh bench)" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || true

srv_cpu="" load_cpu=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  srv_cpu="taskset -c 0" load_cpu="taskset -c 1"
fi
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/afs-http-XXXXXX")
spid=""
trap 'if [ -n "$spid" ]; then kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; fi; rm -rf "$dir"' EXIT
mkdir -p "$dir/www" "$dir/nginx"
head -c 4096 /dev/urandom > "$dir/www/4k.bin"
head -c $((1 << 20)) /dev/urandom > "$dir/www/1m.bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

. bench/results.sh
results_open http "server,backend,file,conns,seconds,requests,rps,mb_per_s,p50_us,p99_us,round,srv_cpu_us_per_req"

cpu_ticks() { # the server's user + system CPU so far, clock ticks (its kernel workers too)
  awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

to_us() { # wrk's "1.23ms" / "456.00us" / "1.20s" -> microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /ms$/) n *= 1000; else if (v ~ /[0-9]s$/) n *= 1000000; printf "%.0f", n }'
}

for round in $(seq "$ROUNDS"); do
for s in $SERVERS; do
  port=$(free_port)
  case $s in
    corio|base)
      b=$BUILD args=$SERVER_ARGS
      [ "$s" = base ] && b=$BASE_BUILD args=$BASE_ARGS
      [ -n "$b" ] && [ -x "$b/examples/file_server" ] || { echo "no $b/examples/file_server" >&2; continue; }
      # shellcheck disable=SC2086
      $srv_cpu "$b/examples/file_server" --root "$dir/www" --port "$port" $args > "$dir/srv.out" &
      spid=$! ;;
    nginx)
      command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx not installed" >&2; continue; }
      cat > "$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path $dir/nginx;
  proxy_temp_path $dir/nginx;
  fastcgi_temp_path $dir/nginx;
  uwsgi_temp_path $dir/nginx;
  scgi_temp_path $dir/nginx;
  server { listen 127.0.0.1:$port; root $dir/www; }
}
CONF
      $srv_cpu /usr/sbin/nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx" &
      spid=$! ;;
  esac
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
  done
  for f in 4k.bin 1m.bin; do
    c0=$(cpu_ticks "$spid")
    res=$($load_cpu wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$port/$f")
    c1=$(cpu_ticks "$spid")
    req=$(awk '/requests in/ { print $1 }' <<<"$res")
    cpu=$(awk -v d=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$req" \
          'BEGIN { printf "%.1f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' <<<"$res")
    tr=$(awk '/^Transfer\/sec/ { print $2 }' <<<"$res")
    mb=$(awk -v v="$tr" 'BEGIN { n = v + 0; if (v ~ /GB$/) n *= 1024; else if (v ~ /KB$/) n /= 1024; printf "%.1f", n }')
    p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$res")")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$res")")
    errs=$(awk '/Non-2xx|Socket errors/' <<<"$res")
    [ -n "$errs" ] && echo "run_http.sh: $s $f: $errs" >&2
    be=$([ "$s" != nginx ] && echo "${ASYNCFS_BACKEND:-auto}" || echo "-")
    results_row "$s,$be,$f,$CONNS,$SECS,$req,$rps,$mb,$p50,$p99,$round,$cpu"
    printf "%-6s %-7s %4s conns: %9s req/s %8s MB/s  p50 %6s us  p99 %6s us  cpu %6s us/req\n" \
      "$s" "$f" "$CONNS" "$rps" "$mb" "$p50" "$p99" "$cpu"
  done
  kill "$spid"; wait "$spid" 2>/dev/null || true; spid=""
done
done
