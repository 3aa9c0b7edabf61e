#!/usr/bin/env bash
# The file server built for Windows (examples/file_server.c), run under wine and driven over
# loopback with bash's /dev/tcp: files byte for byte (a small one read and sent, a large one
# by afs_sendfile, i.e. TransmitFile, and the same with --sendfile-min -1), two requests on
# one keep-alive connection, a directory's index.html, 301 for a directory without its "/",
# a byte range, HEAD, 404, a percent-encoded name, and the names that would leave the root on
# Windows, where "\" is a separator and "C:" a drive: each is 400 and no response carries
# the file outside the root. The server serves a counted number of connections
# (--conns) and must then exit with status 0.
#   file_server_win.sh WINE FILE_SERVER_EXE
set -euo pipefail
wine=$1 exe=$2
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/afs-fsw-XXXXXX")
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "file_server_win.sh: $*" >&2; exit 1; }

mkdir -p "$dir/www/sub"
printf 'hello\n' > "$dir/www/a.txt"
printf 'index\n' > "$dir/www/sub/index.html"
printf 'spaced\n' > "$dir/www/with space.txt"
head -c 300000 /dev/urandom > "$dir/www/big.bin"
printf 'SECRET-OUTSIDE-THE-ROOT\n' > "$dir/secret.txt"

# req TEXT: sends TEXT (printf's %b escapes) on a new connection and reads until the server
# closes it; the whole response is in $dir/resp, the status line of the first in $status,
# the head in $dir/head and the body in $dir/body.
req() {
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%b' "$1" >&3
  timeout 20 cat <&3 > "$dir/resp" || fail "no end of response to: $1"
  exec 3<&-
  status=$(head -n 1 "$dir/resp" | tr -d '\r')
  sed -n '1,/^\r$/p' "$dir/resp" > "$dir/head"
  tail -c +$(($(wc -c < "$dir/head") + 1)) "$dir/resp" > "$dir/body"
  if grep -aq SECRET-OUTSIDE "$dir/resp"; then fail "the file outside the root was served: $1"; fi
}
field() { # NAME: the value of field NAME in the last head
  sed -n "s/^$1: \\(.*\\)\\r\$/\\1/Ip" "$dir/head" | head -n 1
}
expect() { # STATUS WHAT
  [ "$status" = "HTTP/1.1 $1" ] || fail "$2: '$status', expected '$1'"
}

run() { # file_server's extra arguments
  rm -f "$dir/out"
  local conns=16
  "$wine" "$exe" --root "$dir/www" --conns "$conns" "$@" > "$dir/out" 2> "$dir/err" &
  pid=$!
  port=
  for _ in $(seq 600); do # wine may take seconds to start
    port=$(sed -n 's/^listening on .*:\([0-9]*\)\r*$/\1/p' "$dir/out" 2>/dev/null)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || fail "file_server $* exited: $(cat "$dir/err")"
    sleep 0.1
  done
  [ -n "$port" ] || fail "file_server $* did not start: $(cat "$dir/err")"

  req 'GET /a.txt HTTP/1.0\r\n\r\n'                                           # 1
  expect "200 OK" "GET /a.txt"
  cmp -s "$dir/body" "$dir/www/a.txt" || fail "GET /a.txt: wrong body"
  [ "$(field Content-Type)" = text/plain ] || fail "GET /a.txt: Content-Type '$(field Content-Type)'"

  req 'GET /big.bin HTTP/1.0\r\n\r\n'                                         # 2
  expect "200 OK" "GET /big.bin"
  cmp -s "$dir/body" "$dir/www/big.bin" || fail "GET /big.bin ($*): wrong body"

  # Two requests on one connection, the second closing it.
  req 'GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' # 3
  expect "200 OK" "keep-alive, first"
  [ "$(grep -ac '^HTTP/1.1 200 OK' "$dir/resp")" = 2 ] || fail "keep-alive: not two responses"
  grep -aq '^hello$' "$dir/resp" && grep -aq '^index$' "$dir/resp" ||
    fail "keep-alive: the bodies of a.txt and sub/index.html are not both there"

  req 'GET /sub HTTP/1.0\r\n\r\n'                                             # 4
  expect "301 Moved Permanently" "GET /sub"
  [ "$(field Location)" = /sub/ ] || fail "GET /sub: Location '$(field Location)'"

  req 'GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=1-3\r\nConnection: close\r\n\r\n' # 5
  expect "206 Partial Content" "range"
  [ "$(cat "$dir/body")" = ell ] || fail "range: body '$(cat "$dir/body")'"

  req 'HEAD /a.txt HTTP/1.0\r\n\r\n'                                          # 6
  expect "200 OK" "HEAD"
  [ "$(field Content-Length)" = 6 ] && [ ! -s "$dir/body" ] || fail "HEAD: length or body"

  req 'GET /missing.txt HTTP/1.0\r\n\r\n'                                     # 7
  expect "404 Not Found" "GET /missing.txt"

  req 'GET /with%20space.txt HTTP/1.0\r\n\r\n'                                # 8
  expect "200 OK" "GET /with%20space.txt"
  cmp -s "$dir/body" "$dir/www/with space.txt" || fail "GET /with%20space.txt: wrong body"

  # Out of the root, each way Windows would read it: 8 connections.
  local t
  for t in '/..%2fsecret.txt' '/%2e%2e/secret.txt' '/sub%5c..%5c..%5csecret.txt' \
           '/sub\\..\\..\\secret.txt' '/sub/..%5csecret.txt' '/c:x' '/C%3a/Windows/win.ini' \
           '/sub/%5c%5c127.0.0.1%5cc$%5cx'; do
    req "GET $t HTTP/1.0\\r\\n\\r\\n"
    expect "400 Bad Request" "GET $t"
  done

  local rc=0
  wait "$pid" || rc=$?
  pid=
  [ "$rc" = 0 ] || fail "file_server $* exited with status $rc after $conns connections: $(cat "$dir/err")"
  echo "file_server.exe${*:+ $*} under wine: ok"
}

run
run --sendfile-min -1
