# Cross-compiling for Linux with a Debian/Ubuntu cross toolchain, included by the per-target
# files (toolchain-aarch64-linux-gnu.cmake, toolchain-arm-linux-gnueabihf.cmake), which set
# AFS_CROSS_TRIPLET (the toolchain's prefix), AFS_CROSS_PROCESSOR and AFS_CROSS_QEMU (the
# qemu-user program ctest runs the tests under, CMAKE_CROSSCOMPILING_EMULATOR).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${AFS_CROSS_PROCESSOR})

set(AFS_CROSS_ROOT /usr/${AFS_CROSS_TRIPLET} CACHE PATH "Target libraries and headers")

set(CMAKE_C_COMPILER ${AFS_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${AFS_CROSS_TRIPLET}-g++)
set(CMAKE_ASM_COMPILER ${AFS_CROSS_TRIPLET}-gcc)

# Look for target libraries and headers only in the target tree; programs on the host.
set(CMAKE_FIND_ROOT_PATH ${AFS_CROSS_ROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Keep pkg-config from answering with the host's (x86-64) packages.
set(ENV{PKG_CONFIG_LIBDIR}
    /usr/lib/${AFS_CROSS_TRIPLET}/pkgconfig:${AFS_CROSS_ROOT}/lib/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

set(CMAKE_CROSSCOMPILING_EMULATOR ${AFS_CROSS_QEMU} -L ${AFS_CROSS_ROOT})
