#!/usr/bin/env bash
# Builds the library from SOURCE_DIR as on a machine without liburing, libaio and Criterion
# (pkg-config disabled, libaio's directories ignored), with plain `cmake`: the configure
# summary must say what is left out and why, Criterion's absence must take one line, the
# library must build and install, and AUTO must name the missing backends in its reason.
# Usage: without_optional.sh SOURCE_DIR C_COMPILER [LIBAIO_DIR...]
#   LIBAIO_DIR: where this machine's libaio.h and libaio.so are (hidden from the build).
set -euo pipefail
src=$1 cc=$2
shift 2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/asyncfs-noopt.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "without_optional: $*" >&2; exit 1; }

# /usr/lib/... and /lib/... are one directory on merged-/usr systems: hide both spellings.
ignore=""
for d in "$@"; do
  ignore="$ignore;$d;${d#/usr};/usr${d#/usr}"
done
cmake -S "$src" -B "$tmp/build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
  -DASYNCFS_TOOLS=OFF -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON \
  -DCMAKE_IGNORE_PATH="${ignore#;}" >"$tmp/configure.log" 2>&1 ||
  { cat "$tmp/configure.log" >&2; fail "configure failed"; }
sed -n '/-- asyncfs /,$p' "$tmp/configure.log"
grep -q "backends left out: io_uring (pkg-config not found" "$tmp/configure.log" ||
  fail "the summary does not say io_uring is left out"
grep -q "libaio (libaio.h or libaio not found)" "$tmp/configure.log" ||
  fail "the summary does not say libaio is left out"
[ "$(grep -ci criterion "$tmp/configure.log")" = 1 ] ||
  fail "Criterion's absence should take exactly one line"
grep -q "tests: off (pkg-config not found, which finds Criterion" "$tmp/configure.log" ||
  fail "the summary does not say the tests are off"

cmake --build "$tmp/build" -j 2 >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; fail "build failed"; }
cmake --install "$tmp/build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src/tests/install/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_C_COMPILER="$cc" >"$tmp/consumer.log" 2>&1 ||
  { cat "$tmp/consumer.log" >&2; fail "consumer: configure failed"; }
cmake --build "$tmp/consumer" >>"$tmp/consumer.log" 2>&1 ||
  { cat "$tmp/consumer.log" >&2; fail "consumer: build failed"; }
version=$(cat "$tmp/consumer/package_version.txt")
mkdir "$tmp/work"
for t in consumer_shared consumer_static; do
  for why in "io_uring: not built (liburing missing at build time)" \
             "libaio: not built (libaio missing at build time)"; do
    env -u ASYNCFS_BACKEND "$tmp/consumer/$t" "$tmp/work" "$version" "$why" | tee "$tmp/out" ||
      fail "$t: AUTO's reason lacks '$why'"
    # Linux: glibc's POSIX AIO is threads underneath; AUTO goes to the thread pool instead.
    if [ "$(uname -s)" = Linux ]; then
      grep -q "backend threads" "$tmp/out" || fail "$t: AUTO did not land on threads"
    fi
  done
done
echo "without_optional: built without liburing, libaio and Criterion; AUTO says why"
