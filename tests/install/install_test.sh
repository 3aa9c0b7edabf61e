#!/usr/bin/env bash
# Installs a built tree into a temporary prefix and uses it from outside, as a user would:
# the CMake package (asyncfs::asyncfs and asyncfs::asyncfs_static) and pkg-config (--libs and
# --static). Checks that afs_version(), the header's macros, the CMake package version and the
# pkg-config version agree, and that the shared library's soname follows the version.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR VERSION SOVERSION LIBDIR C_COMPILER [FLAGS]
#   FLAGS: compiler and linker flags the library was built with (sanitizers).
set -euo pipefail
build=$1 src=$2 version=$3 soversion=$4 libdir=$5 cc=$6 flags=${7:-}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/asyncfs-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix work=$tmp/work
mkdir -p "$work"
fail() { echo "install_test: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >/dev/null
lib=$prefix/$libdir
[ -f "$prefix/include/asyncfs.h" ] && [ -f "$prefix/include/asyncfs_version.h" ] ||
  fail "headers not installed"

# The soname follows the version (ELF systems).
if [ "$(uname -s)" = Linux ]; then
  [ -f "$lib/libasyncfs.so.$version" ] || fail "no $lib/libasyncfs.so.$version"
  soname=$(readelf -d "$lib/libasyncfs.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ "$soname" = "libasyncfs.so.$soversion" ] ||
    fail "soname is '$soname', expected libasyncfs.so.$soversion"
fi
needs_shared() { readelf -d "$1" | grep -q "(NEEDED).*\[libasyncfs\.so"; }

# The CMake package: both targets, found with CMAKE_PREFIX_PATH only.
cmake -S "$src/tests/install/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
  >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log" >&2; fail "consumer: configure failed"; }
cmake --build "$tmp/consumer" >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; fail "consumer: build failed"; }
pkg_version=$(cat "$tmp/consumer/package_version.txt")
[ "$pkg_version" = "$version" ] || fail "find_package reports $pkg_version, expected $version"
"$tmp/consumer/consumer_shared" "$work" "$pkg_version" || fail "consumer_shared failed"
"$tmp/consumer/consumer_static" "$work" "$pkg_version" || fail "consumer_static failed"
if [ "$(uname -s)" = Linux ]; then
  needs_shared "$tmp/consumer/consumer_shared" || fail "consumer_shared does not load libasyncfs.so"
  ! needs_shared "$tmp/consumer/consumer_static" || fail "consumer_static loads libasyncfs.so"
fi

# pkg-config: the shared library, then the static archive with --static's libraries.
export PKG_CONFIG_PATH=$lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
pc_version=$(pkg-config --modversion asyncfs)
[ "$pc_version" = "$version" ] || fail "pkg-config reports $pc_version, expected $version"
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/pc_shared" "$src/tests/install/consumer/consumer.c" \
  $(pkg-config --cflags --libs asyncfs) || fail "pkg-config --libs: link failed"
LD_LIBRARY_PATH=$lib "$tmp/pc_shared" "$work" "$pc_version" || fail "pc_shared failed"
libs=$(pkg-config --static --libs asyncfs)
# Both libasyncfs.a and libasyncfs.so are in libdir: name the archive.
libs=${libs//-lasyncfs/$lib/libasyncfs.a}
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/pc_static" "$src/tests/install/consumer/consumer.c" \
  $(pkg-config --cflags asyncfs) $libs || fail "pkg-config --static --libs: link failed"
"$tmp/pc_static" "$work" "$pc_version" || fail "pc_static failed"
if [ "$(uname -s)" = Linux ]; then
  ! needs_shared "$tmp/pc_static" || fail "pc_static loads libasyncfs.so"
fi
# Fully static, with the SQLite VFS pulled in: --static's libraries are all the link needs
# (libsqlite3.a wants libm). Where no static C library or archive of a dependency is there
# (sanitizers, musl), the link is not attempted.
static_vfs=skipped
if [ "$(uname -s)" = Linux ] && [ -f "$prefix/include/asyncfs_sqlite.h" ] && [ -z "$flags" ] &&
  echo 'int main(void) { return 0; }' | "$cc" -static -x c - -o "$tmp/static_probe" 2>/dev/null; then
  cat > "$tmp/vfs_static.c" <<'EOF'
#include <asyncfs_sqlite.h>
#include <sqlite3.h>
int main(void)
{
    sqlite3 *db;
    if (afs_sqlite_vfs_register(NULL, 0) != 0 ||
        sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE, "asyncfs") != SQLITE_OK)
        return 1;
    return sqlite3_close(db) != SQLITE_OK;
}
EOF
  # shellcheck disable=SC2046,SC2086
  if "$cc" -static -o "$tmp/vfs_static" "$tmp/vfs_static.c" $(pkg-config --cflags asyncfs) $libs \
    2> "$tmp/vfs_static.err"; then
    "$tmp/vfs_static" || fail "a static program with the SQLite VFS failed"
    static_vfs=linked
  elif grep -q "cannot find -l" "$tmp/vfs_static.err"; then
    static_vfs="skipped (no archive of a dependency: $(grep -o 'cannot find -l[^ ]*' "$tmp/vfs_static.err" | head -1))"
  else
    cat "$tmp/vfs_static.err" >&2
    fail "pkg-config --static --libs: a fully static link with the SQLite VFS failed"
  fi
fi
echo "install_test: CMake package (shared, static) and pkg-config (shared, static): $version;" \
  "fully static with the SQLite VFS: $static_vfs"
