# Cross-compiling for 64-bit Arm Linux with the Debian/Ubuntu cross toolchain:
#   apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
#   cmake -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake
#   cmake --build build-aarch64 && ctest --test-dir build-aarch64
# ctest runs the test programs under qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(AARCH64_GNU_PREFIX aarch64-linux-gnu CACHE STRING "Triplet of the cross toolchain")
set(AARCH64_GNU_ROOT /usr/${AARCH64_GNU_PREFIX} CACHE PATH "Target libraries and headers")

set(CMAKE_C_COMPILER ${AARCH64_GNU_PREFIX}-gcc)
set(CMAKE_CXX_COMPILER ${AARCH64_GNU_PREFIX}-g++)
set(CMAKE_ASM_COMPILER ${AARCH64_GNU_PREFIX}-gcc)

# Look for target libraries and headers only in the target tree; programs on the host.
set(CMAKE_FIND_ROOT_PATH ${AARCH64_GNU_ROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Keep pkg-config from answering with the host's (x86-64) packages.
set(ENV{PKG_CONFIG_LIBDIR}
    /usr/lib/${AARCH64_GNU_PREFIX}/pkgconfig:${AARCH64_GNU_ROOT}/lib/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L ${AARCH64_GNU_ROOT})
