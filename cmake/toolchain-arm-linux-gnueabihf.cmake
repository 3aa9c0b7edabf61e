# Cross-compiling for 32-bit Arm Linux (ARMv7, hard float) with the Debian/Ubuntu cross
# toolchain:
#   apt-get install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user
#   cmake -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-arm-linux-gnueabihf.cmake
#   cmake --build build-armhf && ctest --test-dir build-armhf
# ctest runs the test programs under qemu-arm (CMAKE_CROSSCOMPILING_EMULATOR).
set(AFS_CROSS_TRIPLET arm-linux-gnueabihf)
set(AFS_CROSS_PROCESSOR arm)
set(AFS_CROSS_QEMU qemu-arm)
include(${CMAKE_CURRENT_LIST_DIR}/toolchain-linux-cross.cmake)
