#!/usr/bin/env bash
# Installs what the build needs and is missing. Debian/Ubuntu: apt-get, as root or through
# sudo. Elsewhere: says which packages to install, and fails.
#   scripts/deps.sh [build|test|run|aarch64|armhf|windows|sanitize|bench]...
set -euo pipefail

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(test)

# Debian package -> a file that proves it is installed.
declare -A probe=(
  [build-essential]=/usr/bin/gcc
  [cmake]=/usr/bin/cmake
  [pkg-config]=/usr/bin/pkg-config
  [liburing-dev]=/usr/include/liburing.h
  [libaio-dev]=/usr/include/libaio.h
  [libcriterion-dev]=/usr/include/criterion/criterion.h
  [fio]=/usr/bin/fio
  [gnuplot-nox]=/usr/bin/gnuplot
  [strace]=/usr/bin/strace
  [valgrind]=/usr/include/valgrind/valgrind.h
  [musl-tools]=/usr/bin/musl-gcc
  [acl]=/usr/bin/setfacl
  [attr]=/usr/bin/setfattr
  [libsqlite3-dev]=/usr/include/sqlite3.h
  [gcc-aarch64-linux-gnu]=/usr/bin/aarch64-linux-gnu-gcc
  [libc6-dev-arm64-cross]=/usr/aarch64-linux-gnu/include/stdio.h
  [gcc-arm-linux-gnueabihf]=/usr/bin/arm-linux-gnueabihf-gcc
  [libc6-dev-armhf-cross]=/usr/arm-linux-gnueabihf/include/stdio.h
  [qemu-user]=/usr/bin/qemu-aarch64
  [gcc-mingw-w64-x86-64]=/usr/bin/x86_64-w64-mingw32-gcc
  [wine64]=/usr/lib/wine/wine64
  [clang]=/usr/bin/clang
  [libclang-rt-14-dev]=/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.asan-x86_64.a
  [libuv1-dev]=/usr/include/uv.h
  [nginx-light]=/usr/sbin/nginx
  [wrk]=/usr/bin/wrk
)

pkgs=()
for w in "${want[@]}"; do
  case "$w" in
    build)    pkgs+=(build-essential cmake pkg-config liburing-dev libaio-dev libsqlite3-dev) ;;
    test)     pkgs+=(build-essential cmake pkg-config liburing-dev libaio-dev libsqlite3-dev libcriterion-dev strace acl attr
                     valgrind musl-tools) ;;
    run)      pkgs+=(build-essential cmake pkg-config liburing-dev libaio-dev) ;;
    bench)    pkgs+=(build-essential cmake pkg-config liburing-dev libaio-dev libsqlite3-dev fio gnuplot-nox
                     libuv1-dev nginx-light wrk) ;;
    aarch64)  pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) ;;
    armhf)    pkgs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user) ;;
    windows)  pkgs+=(gcc-mingw-w64-x86-64 wine64) ;;
    sanitize) pkgs+=(clang libclang-rt-14-dev) ;;
    tsan)     pkgs+=(build-essential libtsan2) ;;
    plot)     pkgs+=(gnuplot-nox) ;;
    *) echo "deps.sh: unknown group '$w'" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  f=${probe[$p]:-}
  if [ -n "$f" ] && [ -e "$f" ]; then continue; fi
  if command -v dpkg-query >/dev/null 2>&1 &&
     dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    continue
  fi
  case " ${missing[*]:-} " in *" $p "*) ;; *) missing+=("$p") ;; esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "deps.sh: missing packages: ${missing[*]}" >&2
      echo "deps.sh: run as root, or: apt-get install ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

cat >&2 <<MSG
deps.sh: this is not a Debian-like system; install these (or their equivalents) by hand:
  ${missing[*]}
FreeBSD: pkg install cmake pkgconf criterion      macOS: brew install cmake pkg-config criterion
MSG
exit 1
