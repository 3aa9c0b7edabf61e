# Cross-compiling for 64-bit Arm Linux with the Debian/Ubuntu cross toolchain:
#   apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
#   cmake -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake
#   cmake --build build-aarch64 && ctest --test-dir build-aarch64
# ctest runs the test programs under qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR).
set(AFS_CROSS_TRIPLET aarch64-linux-gnu)
set(AFS_CROSS_PROCESSOR aarch64)
set(AFS_CROSS_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/toolchain-linux-cross.cmake)
