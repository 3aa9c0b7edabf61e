# make test-aarch64: cross-build the library (threads and sync backends: the cross sysroot has
# no liburing or libaio), the scheduler tests and the contract suite for AArch64 with
# gcc-aarch64-linux-gnu, and run them under qemu-aarch64. Installs the toolchain and qemu-user
# through scripts/deps.sh when they are missing. The suites run through tests/helpers/suite.sh
# (tests/shim_tests.cmake): an entry that ran no test, or whose test skipped for a reason
# tests/helpers/skips.allow does not list, fails.
A64_BUILD ?= build-aarch64

.PHONY: test-aarch64

test-aarch64:
	@scripts/deps.sh aarch64
	@cmake -S . -B $(A64_BUILD) -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYNCFS_WERROR=$(WERROR) -DASYNCFS_TOOLS=OFF \
	  -DASYNCFS_URING=OFF -DASYNCFS_LIBAIO=OFF -DASYNCFS_SHIM_TESTS=ON >/dev/null
	@cmake --build $(A64_BUILD) -j $(JOBS)
	@cd $(A64_BUILD) && rm -f Testing/suite-summary.txt; rc=0; ctest --output-on-failure -j 1 || rc=$$?; \
	  echo "== tests each suite really ran:"; cat Testing/suite-summary.txt 2>/dev/null; exit $$rc
