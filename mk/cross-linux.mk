# make test-aarch64 / make test-armhf: cross-build the library (threads and sync backends, and
# posix-aio: the cross sysroots have no liburing or libaio), the scheduler and network tests,
# the contract suite and afcp for 64-bit Arm (gcc-aarch64-linux-gnu) or 32-bit Arm (gcc-arm-linux-gnueabihf,
# ARMv7 hard float: a 32-bit long, size_t and pointer; corio on its ucontext switch) and run
# them under qemu-aarch64 / qemu-arm. Installs the toolchain and qemu-user through
# scripts/deps.sh when they are missing. The suites run through tests/helpers/suite.sh
# (tests/shim_tests.cmake): an entry that ran no test, or whose test skipped for a reason
# tests/helpers/skips.allow does not list, fails.
# What the port can break (the context switch, atomics, 32-bit sizes and offsets) is the same
# on every backend, so the suites that force one run on the thread pool, and on 32-bit Arm on
# sync too; the other backends run natively (CI's time).
A64_BUILD   ?= build-aarch64
ARMHF_BUILD ?= build-armhf

.PHONY: test-aarch64 test-armhf

# $(call afs_cross_test,BUILD-DIR,TOOLCHAIN-FILE,DEPS-GROUP,CTEST-EXCLUDE)
define afs_cross_test
	@scripts/deps.sh $(3)
	@cmake -S . -B $(1) -DCMAKE_TOOLCHAIN_FILE=$(2) \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYNCFS_WERROR=$(WERROR) -DASYNCFS_TOOLS=OFF \
	  -DASYNCFS_URING=OFF -DASYNCFS_LIBAIO=OFF -DASYNCFS_SHIM_TESTS=ON >/dev/null
	@cmake --build $(1) -j $(JOBS)
	@cd $(1) && rm -f Testing/suite-summary.txt; rc=0; ctest --output-on-failure -j 1 -E '$(4)' || rc=$$?; \
	  echo "== tests each suite really ran:"; cat Testing/suite-summary.txt 2>/dev/null; exit $$rc
endef

test-aarch64:
	$(call afs_cross_test,$(A64_BUILD),cmake/toolchain-aarch64-linux-gnu.cmake,aarch64,^(contract|corio_sched|corio_net)_(sync|posix-aio)$$)

test-armhf:
	$(call afs_cross_test,$(ARMHF_BUILD),cmake/toolchain-arm-linux-gnueabihf.cmake,armhf,^((contract|corio_sched|corio_net)_posix-aio|(corio_sched|corio_net)_sync)$$)
