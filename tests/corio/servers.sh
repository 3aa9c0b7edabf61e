#!/usr/bin/env bash
# The example servers, driven over loopback with bash's /dev/tcp:
#  - echo_server: lines come back in order on several connections at once; a line longer
#    than its 64 KiB limit gets the error line; a client that leaves mid-line is only its
#    own loss (the next client is served); --timeout closes idle connections.
#  - file_server: a file byte for byte, two requests on one keep-alive connection, a Date
#    that is now, 404, 400 for "..", 400 for HTTP/1.1 without one Host, a directory's
#    index.html for "DIR/", "100 Continue" before a body, HEAD, a percent-encoded name, a request body dropped (not taken for the next
#    request), a chunked one refused, disagreeing Content-Lengths refused, a version that
#    is not HTTP/1.x, a header line that is no field and a head of over 100 lines refused,
#    403 for a FIFO (its open
#    must not wait) and a directory without index.html, 301 to "DIR/" for "DIR" (the query
#    kept), one byte range (206, its bytes; 416 past the end; the whole file for several
#    ranges or an If-Range), 400 for a control character in a target, the absolute form
#    of a target, a client that leaves in the middle of a 4 MiB response
#    (the server goes on serving the next), 503 when no descriptor is left; with bodies
#    sent by afs_sendfile and by read+send; --timeout: a silent client, one that stops in
#    the middle of a request and one that stops reading responses are dropped, and the
#    server goes on.
#   servers.sh ECHO_SERVER FILE_SERVER
set -euo pipefail
echo_bin=$1 file_bin=$2
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/afs-servers-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "servers.sh: $*" >&2; exit 1; }

port_of() { # out-file: waits until the server printed its address, prints its port
  for _ in $(seq 100); do
    grep -q listening "$1" 2>/dev/null && break
    sleep 0.05
  done
  sed -n 's/.*:\([0-9]*\)$/\1/p' "$1"
}

# --- echo server -------------------------------------------------------------------------
"$echo_bin" --conns 5 > "$dir/echo.out" 2> "$dir/echo.out.err" &
pids+=($!)
port=$(port_of "$dir/echo.out")
[ -n "$port" ] || fail "echo_server did not start: $(cat "$dir/echo.out.err")"
exec 3<>"/dev/tcp/127.0.0.1/$port" 4<>"/dev/tcp/127.0.0.1/$port"
printf 'one\ntwo\n' >&3
printf 'alpha\n' >&4
printf 'three\n' >&3
for want in one two three; do
  IFS= read -r -t 10 got <&3 || fail "echo: no reply"
  [ "$got" = "$want" ] || fail "echo: got '$got', want '$want'"
done
IFS= read -r -t 10 got <&4 || fail "echo: no reply on the second connection"
[ "$got" = alpha ] || fail "echo: got '$got', want 'alpha'"
exec 3>&- 4>&-
# A line over the limit: the error line, then the server closes that connection.
exec 3<>"/dev/tcp/127.0.0.1/$port"
head -c $((70 * 1024)) /dev/zero | tr '\0' x >&3 || true
IFS= read -r -t 10 got <&3 || fail "echo: no answer to a line over the limit"
case $got in error:*) ;; *) fail "echo: got '${got:0:40}' for a line over the limit" ;; esac
exec 3>&-
# A client that leaves mid-line, then one more that must be served.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'half a li' >&3
exec 3>&-
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'last\n' >&3
IFS= read -r -t 10 got <&3 || fail "echo: not served after a client left"
[ "$got" = last ] || fail "echo: got '$got', want 'last'"
exec 3>&-
wait "${pids[0]}" || fail "echo_server exited with an error"
echo "echo_server: ok"
# --timeout: a client silent past it, raw or by lines, is closed (the end of the stream, not
# read's own time-out); one that speaks is answered.
for mode in "" --raw; do
  rm -f "$dir/echo.out" # port_of must not read the last run's address
  "$echo_bin" $mode --timeout 1 --conns 2 > "$dir/echo.out" 2> "$dir/echo.out.err" &
  pid=$!
  pids+=($pid)
  port=$(port_of "$dir/echo.out")
  [ -n "$port" ] || fail "echo_server did not start: $(cat "$dir/echo.out.err")"
  exec 3<>"/dev/tcp/127.0.0.1/$port" 4<>"/dev/tcp/127.0.0.1/$port"
  printf 'hi\n' >&4
  IFS= read -r -t 10 got <&4 || fail "echo $mode --timeout: no reply"
  [ "$got" = hi ] || fail "echo $mode --timeout: got '$got'"
  st=0; IFS= read -r -t 20 got <&3 || st=$?
  [ "$st" = 1 ] && [ -z "$got" ] || fail "echo $mode --timeout: an idle connection was not closed ($st)"
  st=0; IFS= read -r -t 20 got <&4 || st=$?
  [ "$st" = 1 ] && [ -z "$got" ] || fail "echo $mode --timeout: a connection idle after a reply was not closed ($st)"
  exec 3>&- 4>&-
  wait "$pid" || fail "echo_server $mode --timeout 1 exited with an error"
  echo "echo_server${mode:+ $mode} --timeout 1: ok"
done

# --- file server -------------------------------------------------------------------------
mkdir -p "$dir/www"
head -c 10000 /dev/urandom > "$dir/www/small.bin"
head -c $((4 << 20)) /dev/urandom > "$dir/www/big.bin"
echo spaced > "$dir/www/a b.txt"
mkfifo "$dir/www/fifo"
mkdir -p "$dir/www/sub" "$dir/www/noindex"
echo index > "$dir/www/sub/index.html"
: > "$dir/www/empty.txt"
file_checks() { # file_server's arguments
  rm -f "$dir/file.out" # port_of must not read the last run's address
  "$file_bin" --root "$dir/www" --conns 20 "$@" > "$dir/file.out" 2> "$dir/file.out.err" &
  local pid=$!
  pids+=($pid)
  port=$(port_of "$dir/file.out")
  [ -n "$port" ] || fail "file_server did not start: $(cat "$dir/file.out.err")"

  # Reads one response from fd 3: the status line into $status, its Date, Location,
  # Content-Range, Content-Type and Allow into $date, $location, $range, $ctype and $allow,
  # the body into $1.
  response() {
    local body=$1 line len=0
    IFS= read -r -t 10 status <&3 || fail "file: no response"
    status=${status%$'\r'}
    date= location= range= ctype= allow=
    while IFS= read -r -t 10 line <&3; do
      line=${line%$'\r'}
      [ -z "$line" ] && break
      case ${line,,} in
        content-length:*) len=${line#*: } ;;
        date:*) date=${line#*: } ;;
        location:*) location=${line#*: } ;;
        content-range:*) range=${line#*: } ;;
        content-type:*) ctype=${line#*: } ;;
        allow:*) allow=${line#*: } ;;
      esac
    done
    if [ "$len" -gt 0 ]; then head -c "$len" <&3 > "$body"; else : > "$body"; fi
  }

  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got1"
  [ "$status" = "HTTP/1.1 200 OK" ] || fail "file: status '$status'"
  cmp -s "$dir/got1" "$dir/www/small.bin" || fail "file: small.bin differs"
  # Date: now, in the one form RFC 9110 lets a server send (5.6.7)
  [[ $date =~ ^(Mon|Tue|Wed|Thu|Fri|Sat|Sun),\ [0-9]{2}\ [A-Z][a-z]{2}\ [0-9]{4}\ [0-9]{2}:[0-9]{2}:[0-9]{2}\ GMT$ ]] ||
    fail "file: Date '$date'"
  local skew=$(( $(date -u +%s) - $(date -u -d "$date" +%s) ))
  [ "${skew#-}" -le 5 ] || fail "file: Date '$date' is not now ($(date -u))"
  # The same connection again (keep-alive), then the error cases.
  printf 'GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got2"
  cmp -s "$dir/got2" "$dir/www/big.bin" || fail "file: big.bin differs"
  printf 'GET /missing HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got3"
  [ "$status" = "HTTP/1.1 404 Not Found" ] || fail "file: status '$status' for a missing file"
  [ -n "$date" ] || fail "file: no Date in a 404"
  printf 'HEAD /small.bin HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  IFS= read -r -t 10 status <&3
  [ "${status%$'\r'}" = "HTTP/1.1 200 OK" ] || fail "file: HEAD status '$status'"
  while IFS= read -r -t 10 line <&3 && [ -n "${line%$'\r'}" ]; do :; done
  printf 'GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 400 Bad Request" ] || fail "file: status '$status' for '..'"
  exec 3>&- # a refused request ends its connection
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /%%2e%%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 400 Bad Request" ] || fail "file: status '$status' for '%2e%2e'"
  exec 3>&-
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /a%%20b.txt HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && [ "$(cat "$dir/got4")" = spaced ] ||
    fail "file: status '$status' for a percent-encoded name"
  # A body is dropped: the request inside it is not answered; the next one is.
  local smuggled=$'GET /missing HTTP/1.1\r\n\r\n'
  printf 'GET /a%%20b.txt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s' ${#smuggled} "$smuggled" >&3
  printf 'GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] || fail "file: status '$status' for a request with a body"
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && cmp -s "$dir/got4" "$dir/www/small.bin" ||
    fail "file: a request body was taken for a request (status '$status')"
  # "Expect: 100-continue": "100 Continue" comes before the body is sent, then the response.
  printf 'GET /a%%20b.txt HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n' >&3
  IFS= read -r -t 10 line <&3 || fail "file: no 100 Continue"
  [ "${line%$'\r'}" = "HTTP/1.1 100 Continue" ] || fail "file: '$line' for Expect: 100-continue"
  IFS= read -r -t 10 line <&3
  [ "${line%$'\r'}" = "" ] || fail "file: '$line' after 100 Continue"
  printf 'hello' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && [ "$(cat "$dir/got4")" = spaced ] ||
    fail "file: status '$status' after 100 Continue"
  printf 'POST /small.bin HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 501 Not Implemented" ] || fail "file: status '$status' for a chunked body"
  exec 3>&-
  # Only regular files are served: a FIFO (whose open must not wait for a writer) and a
  # directory are 403 on a connection that goes on; disagreeing Content-Lengths are 400.
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /fifo HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 403 Forbidden" ] || fail "file: status '$status' for a FIFO"
  printf 'GET /sub HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 301 Moved Permanently" ] && [ "$location" = /sub/ ] ||
    fail "file: status '$status', Location '$location' for a directory without its /"
  printf 'GET /s%%75b?a=%%20b HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 301 Moved Permanently" ] && [ "$location" = '/s%75b/?a=%20b' ] ||
    fail "file: status '$status', Location '$location' for a directory with a query"
  printf 'GET /noindex/ HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 403 Forbidden" ] || fail "file: status '$status' for a directory without index"
  printf 'GET /missing/ HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 404 Not Found" ] || fail "file: status '$status' for a missing directory"
  # The absolute form (RFC 9112 3.2.2): its path.
  printf 'GET http://x/sub/ HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && [ "$(cat "$dir/got4")" = index ] ||
    fail "file: status '$status' for an absolute-form target"
  # One byte range: 206 and its bytes (a large one goes by sendfile where the others do).
  printf 'GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-200999\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 206 Partial Content" ] && [ "$range" = "bytes 1000-200999/4194304" ] ||
    fail "file: status '$status', Content-Range '$range' for bytes=1000-200999"
  [ "$(wc -c < "$dir/got4")" -eq 200000 ] && cmp -s -i 1000:0 -n 200000 "$dir/www/big.bin" "$dir/got4" ||
    fail "file: the bytes of bytes=1000-200999 differ"
  printf 'GET /small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-10\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 206 Partial Content" ] && [ "$range" = "bytes 9990-9999/10000" ] &&
    [ "$(wc -c < "$dir/got4")" -eq 10 ] && cmp -s -i 9990:0 "$dir/www/small.bin" "$dir/got4" ||
    fail "file: status '$status', Content-Range '$range' for bytes=-10"
  printf 'GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=4194304-\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 416 Range Not Satisfiable" ] && [ "$range" = "bytes */4194304" ] ||
    fail "file: status '$status', Content-Range '$range' for a range past the end"
  printf 'GET /small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,5-6\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && cmp -s "$dir/got4" "$dir/www/small.bin" ||
    fail "file: status '$status' for two ranges"
  printf 'GET /small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nIf-Range: "x"\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && cmp -s "$dir/got4" "$dir/www/small.bin" ||
    fail "file: status '$status' for a range with If-Range"
  printf 'GET /sub/ HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && [ "$(cat "$dir/got4")" = index ] ||
    fail "file: status '$status' for a directory's index"
  [ "$ctype" = text/html ] || fail "file: Content-Type '$ctype' for index.html"
  # Slashes merged in a redirect: "//sub/" would name the host "sub" to a browser.
  printf 'GET //sub HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 301 Moved Permanently" ] && [ "$location" = /sub/ ] ||
    fail "file: status '$status', Location '$location' for //sub"
  printf 'DELETE /small.bin HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 405 Method Not Allowed" ] && [ "$allow" = "GET, HEAD" ] ||
    fail "file: status '$status', Allow '$allow' for DELETE"
  # HTTP/1.2 is served as 1.1 (RFC 9110, 2.5); a suffix range of an empty file: all of it.
  printf 'GET /empty.txt HTTP/1.2\r\nHost: x\r\nRange: bytes=-1\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && [ ! -s "$dir/got4" ] && [ "$ctype" = text/plain ] ||
    fail "file: status '$status', Content-Type '$ctype' for bytes=-1 of an empty file over HTTP/1.2"
  # Exactly 100 header lines are taken.
  { printf 'GET /small.bin HTTP/1.1\r\nHost: x\r\n'; printf 'X-A: %d\r\n' $(seq 1 99); printf '\r\n'; } >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] || fail "file: status '$status' for 100 header lines"
  printf 'GET /small.bin HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 400 Bad Request" ] ||
    fail "file: status '$status' for Content-Length 0 then 5"
  exec 3>&-
  # A control character in a target: 400 (it could end a Location's line).
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /sub\rX HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 400 Bad Request" ] || fail "file: status '$status' for a CR in a target"
  exec 3>&-
  # A head of more than 100 header lines is refused (431) at the 101st, not read on to its
  # end (which a client may never send).
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  # (one write, and SIGPIPE ignored: the server may close before it has read all of it)
  (trap '' PIPE; printf 'GET /small.bin HTTP/1.1\r\n%s' "$(printf 'X-A: %d\r\n' $(seq 1 150))" >&3) || true
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 431 Request Header Fields Too Large" ] ||
    fail "file: status '$status' for 150 header lines and no end"
  exec 3>&-
  # The 101st header line: 431.
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  (trap '' PIPE; { printf 'GET /small.bin HTTP/1.1\r\nHost: x\r\n'; printf 'X-A: %d\r\n' $(seq 1 100); printf '\r\n'; } >&3) || true
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 431 Request Header Fields Too Large" ] ||
    fail "file: status '$status' for 101 header lines"
  exec 3>&-
  # A request refused on a connection of its own: refused REQUEST STATUS LABEL (printf's
  # format; answered before the rest is read: SIGPIPE ignored for the write).
  refused() {
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    (trap '' PIPE; printf "$1" >&3) || true
    response "$dir/got4"
    [ "$status" = "HTTP/1.1 $2" ] || fail "file: status '$status' for $3"
    exec 3>&-
  }
  # HTTP/2 is 505; a method that is no token, a Host with a path's characters and a NUL in
  # a field are 400.
  refused 'GET /small.bin HTTP/2.0\r\nHost: x\r\n\r\n' "505 HTTP Version Not Supported" HTTP/2.0
  refused 'G(T /small.bin HTTP/1.1\r\nHost: x\r\n\r\n' "400 Bad Request" "method 'G(T'"
  refused 'GET /small.bin HTTP/1.1\r\nHost: ../x\r\n\r\n' "400 Bad Request" "Host ../x"
  refused 'GET /small.bin HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n' "400 Bad Request" "a NUL in a field"
  # Not HTTP/1.x, and a header line that is no field: 400.
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /small.bin FOO/9\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 400 Bad Request" ] || fail "file: status '$status' for version FOO/9"
  exec 3>&-
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /small.bin HTTP/1.1\r\nConnection : close\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 400 Bad Request" ] || fail "file: status '$status' for 'Connection : close'"
  exec 3>&-
  # Empty lines before a request line are ignored; "close" among Connection's options ends
  # the connection after the response; a method too long to know is 501, a target too long
  # 414.
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '\r\n\r\nGET /small.bin HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 200 OK" ] && cmp -s "$dir/got4" "$dir/www/small.bin" ||
    fail "file: status '$status' after empty lines"
  timeout 10 cat <&3 > /dev/null || fail "file: 'keep-alive, close' kept the connection"
  exec 3>&-
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'LONGMETHOD / HTTP/1.1\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 501 Not Implemented" ] || fail "file: status '$status' for a long method"
  exec 3>&-
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /%s HTTP/1.1\r\nHost: x\r\n\r\n' "$(head -c 2000 /dev/zero | tr '\0' a)" >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 414 URI Too Long" ] || fail "file: status '$status' for a long target"
  exec 3>&-
  # HTTP/1.1 needs exactly one Host (RFC 9112, 3.2): 400 without one, 400 with two.
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /small.bin HTTP/1.1\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 400 Bad Request" ] || fail "file: status '$status' for HTTP/1.1 without Host"
  exec 3>&-
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /small.bin HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n' >&3
  response "$dir/got4"
  [ "$status" = "HTTP/1.1 400 Bad Request" ] || fail "file: status '$status' for two Hosts"
  exec 3>&-
  # A client that asks for 4 MiB and leaves at once: the server must go on.
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  head -c 1000 <&3 > /dev/null
  exec 3>&-
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /small.bin HTTP/1.0\r\n\r\n' >&3
  response "$dir/got5"
  cmp -s "$dir/got5" "$dir/www/small.bin" || fail "file: not served after a client left"
  exec 3>&-
  wait "$pid" || fail "file_server $* exited with an error: $(cat "$dir/file.out.err")"
  echo "file_server${*:+ $*}: ok"
}

# The bodies from 64 KiB with afs_sendfile (splices on io_uring), all read and sent, and all
# with sendfile(2) on the threads backend's readiness engine.
file_checks
file_checks --sendfile-min -1
ASYNCFS_BACKEND=threads file_checks --sendfile-min 0

# No descriptor left for the file (a limit set on the running server, once the connection
# is in, at its lowest free descriptor): 503, not 404.
if [ -d /proc/self/fd ] && command -v prlimit > /dev/null; then
  rm -f "$dir/file.out"
  "$file_bin" --root "$dir/www" --conns 1 > "$dir/file.out" 2> "$dir/file.out.err" &
  pid=$!
  pids+=($pid)
  port=$(port_of "$dir/file.out")
  [ -n "$port" ] || fail "file_server did not start: $(cat "$dir/file.out.err")"
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  for _ in $(seq 100); do # until the server holds the connection (a second socket)
    socks=$(for f in /proc/$pid/fd/*; do readlink "$f"; done | grep -c '^socket:' || true)
    [ "$socks" -ge 2 ] && break
    sleep 0.05
  done
  free=0
  while [ -e "/proc/$pid/fd/$free" ]; do free=$((free + 1)); done
  prlimit --pid "$pid" --nofile="$free:" || fail "prlimit failed"
  printf 'GET /small.bin HTTP/1.0\r\n\r\n' >&3
  IFS= read -r -t 10 status <&3 || fail "file: no response"
  [ "${status%$'\r'}" = "HTTP/1.1 503 Service Unavailable" ] ||
    fail "file: status '$status' with no descriptor left (limit $free)"
  exec 3>&-
  wait "$pid" || true
  echo "file_server with no descriptor left: ok"
fi

# --timeout: a client that sends nothing, one that stops inside its request line and one
# that asks for 64 MiB of responses without reading them are each closed after about a
# second; a client after them is served.
for args in "" "--sendfile-min -1"; do
  rm -f "$dir/file.out"
  "$file_bin" --root "$dir/www" --conns 4 --timeout 1 $args > "$dir/file.out" 2> "$dir/file.out.err" &
  pid=$!
  pids+=($pid)
  port=$(port_of "$dir/file.out")
  [ -n "$port" ] || fail "file_server did not start: $(cat "$dir/file.out.err")"
  exec 3<>"/dev/tcp/127.0.0.1/$port" 4<>"/dev/tcp/127.0.0.1/$port" 5<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /sma' >&4
  for _ in $(seq 16); do printf 'GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n'; done >&5
  start=$SECONDS
  # The server closes: read gets the end of the stream (status 1, nothing read), not -t's
  # time-out (status above 128).
  st=0; IFS= read -r -t 20 got <&3 || st=$?
  [ "$st" = 1 ] && [ -z "$got" ] || fail "file --timeout $args: an idle connection was not closed ($st, '$got')"
  st=0; IFS= read -r -t 20 got <&4 || st=$?
  [ "$st" = 1 ] && [ -z "$got" ] || fail "file --timeout $args: a half request was not closed ($st)"
  sleep 2
  # Closed with requests it had not read yet, the connection may end in a reset: not an
  # error here, only how much came.
  bytes=$({ timeout 20 cat <&5 2>/dev/null || true; } | wc -c)
  [ "$bytes" -lt $((64 << 20)) ] || fail "file --timeout $args: a client that does not read got all $bytes bytes"
  [ $((SECONDS - start)) -lt 20 ] || fail "file --timeout $args: took $((SECONDS - start)) s"
  exec 3>&- 4>&- 5>&-
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /small.bin HTTP/1.0\r\n\r\n' >&3
  IFS= read -r -t 10 status <&3 || fail "file --timeout $args: not served after the timeouts"
  [ "${status%$'\r'}" = "HTTP/1.1 200 OK" ] || fail "file --timeout $args: status '$status'"
  exec 3>&-
  wait "$pid" || fail "file_server --timeout 1 $args exited with an error: $(cat "$dir/file.out.err")"
  echo "file_server --timeout 1${args:+ $args}: ok"
done
