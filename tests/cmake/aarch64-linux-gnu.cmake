# CMake toolchain file for building tests/cmake (or any project) for aarch64 on an x86-64
# Debian host with gcc-aarch64-linux-gnu; ctest runs the programs under qemu-aarch64 (plain,
# with the multiarch arm64 libc that scripts/test-aarch64.sh's packages install).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
# Programs from the host; libraries, headers and packages from the target's sysroot and from
# CMAKE_PREFIX_PATH (the unpacked tarball).
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
