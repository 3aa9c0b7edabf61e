#!/usr/bin/env bash
# Builds the library, its tools and its tests with musl (musl-gcc, as on Alpine) and -Werror,
# then runs that build's suites: the contract, scheduler and network suites (tests/shim) on
# threads and posix-aio (musl's own AIO), the switch tests, afcp's tests. musl has neither
# io_uring's nor libaio's library here, no preadv2 before 1.2.5, no swapcontext, no
# backtrace, and a <fcntl.h> without most FALLOC_FL_* flags. afcp's scripts run on AUTO only
# (the contract suites take each backend). Left out: afcp_fix and afcp_cp,
# which compare afcp's messages with GNU cp's word for word, and musl's strerror() words
# some errors otherwise ("Not supported", "Filename too long"); for CI's time, the suites on
# sync (each op inline: the calls the other backends make) and afbench's smoke run.
# Debian's musl-gcc sees no kernel headers; the ones the C library here was built against
# are linked into a private include directory, as Alpine's linux-headers package provides.
# Usage: with_musl.sh SOURCE_DIR MUSL_GCC
set -euo pipefail
src=$1 cc=$2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/asyncfs-musl.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "with_musl: $*" >&2; exit 1; }

arch=$(gcc -print-multiarch 2>/dev/null || true)
mkdir -p "$tmp/kernel-headers" "$tmp/no-pkgconfig"
for d in /usr/include/linux /usr/include/asm-generic "/usr/include/$arch/asm"; do
  [ -d "$d" ] || fail "no kernel headers at $d (linux-libc-dev)"
  ln -s "$d" "$tmp/kernel-headers/$(basename "$d")"
done

# pkg-config would answer with the C library's packages (liburing, libuv) built for glibc.
PKG_CONFIG_LIBDIR="$tmp/no-pkgconfig" PKG_CONFIG_PATH="" \
cmake -S "$src" -B "$tmp/build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="-isystem $tmp/kernel-headers" -DASYNCFS_WERROR=ON -DASYNCFS_TOOLS=ON \
  -DASYNCFS_SHIM_TESTS=ON -DASYNCFS_URING=OFF -DASYNCFS_LIBAIO=OFF -DASYNCFS_SQLITE=OFF \
  >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log" >&2; fail "configure failed"; }
sed -n '/-- asyncfs /,$p' "$tmp/configure.log"
grep -q "tests: on" "$tmp/configure.log" || fail "the tests are not built"
cmake --build "$tmp/build" -j 2 >"$tmp/build.log" 2>&1 ||
  { grep -E "error|warning" "$tmp/build.log" >&2 || cat "$tmp/build.log" >&2; fail "build failed"; }
(cd "$tmp/build" && env -u ASYNCFS_BACKEND AFCP_TEST_BACKENDS=auto ctest -j 1 --output-on-failure --timeout 600 \
  -E '^(afcp_fix|afcp_cp|afbench_smoke|(contract|corio_sched|corio_net)_sync)$') || fail "the suites fail in the musl build"
cat "$tmp/build/Testing/suite-summary.txt" 2>/dev/null || true
echo "with_musl: built with musl and -Werror, and tested"
