# Thin wrapper over CMake. `make test` and `make run` install what is missing first.
BUILD    ?= build
PREFIX   ?= /usr/local
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
# CI builds treat warnings as errors.
ifneq ($(CI),)
WERROR   := ON
else
WERROR   ?= OFF
endif
CMAKE_FLAGS ?=
# The hardening Debian builds its packages with, at its strongest (glibc 2.34+ reads level 3
# as 2 where it has no 3): buffer overflows that the compiler can size abort at once. Left to
# the caller when CFLAGS already sets _FORTIFY_SOURCE.
ifeq ($(findstring _FORTIFY_SOURCE,$(CFLAGS)),)
HARDEN_CFLAGS ?= -D_FORTIFY_SOURCE=3 -fstack-protector-strong -fstack-clash-protection
endif

.PHONY: all deps configure build test run install clean

all: build

deps:
	@scripts/deps.sh test

configure:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYNCFS_WERROR=$(WERROR) \
	  -DCMAKE_C_FLAGS="$(strip $(HARDEN_CFLAGS) $(CFLAGS))" $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# WINDOWS=0 skips the Windows suite (cross-built with MinGW-w64, run under wine);
# AARCH64=0 skips the AArch64 suite, ARMHF=0 the 32-bit Arm one (cross-built, run under
# qemu-user).
WINDOWS ?= 1
AARCH64 ?= 1
ARMHF   ?= 1

# The entries that may run side by side (ctest -j 2): Memcheck's, which judge memory only and
# run one thread at a time, and afcp's comparisons with cp (one process at a time, none
# judged by timing: their signals come after a count of files, not a delay). Every other
# entry runs alone, as some judge by timing.
SIDE_BY_SIDE := ^(valgrind_.*|afcp_cp|afcp_fix)$$

# The AArch64 and 32-bit Arm suites run side by side: each is one emulated process at a time.
CROSS := $(if $(filter-out 0,$(AARCH64)),test-aarch64) $(if $(filter-out 0,$(ARMHF)),test-armhf)

test: deps
	@$(MAKE) --no-print-directory build
	@cd $(BUILD) && rm -f Testing/suite-summary.txt; rc=0; \
	  ctest --output-on-failure -j 2 -R '$(SIDE_BY_SIDE)' || rc=$$?; \
	  ctest --output-on-failure -j 1 -E '$(SIDE_BY_SIDE)' || rc=$$?; \
	  echo "== tests each suite really ran:"; cat Testing/suite-summary.txt 2>/dev/null; exit $$rc
ifneq ($(WINDOWS),0)
	@$(MAKE) --no-print-directory test-windows
endif
ifneq ($(strip $(CROSS)),)
	@scripts/deps.sh $(patsubst test-%,%,$(CROSS))
	@$(MAKE) --no-print-directory -j 2 --output-sync=target $(CROSS)
endif

run:
	@scripts/deps.sh run
	@$(MAKE) --no-print-directory build CMAKE_FLAGS="$(CMAKE_FLAGS) -DASYNCFS_TESTS=OFF" BUILD=$(BUILD)-run
	@BUILD=$(BUILD)-run scripts/showcase.sh

install:
	@scripts/deps.sh build
	@$(MAKE) --no-print-directory build CMAKE_FLAGS="$(CMAKE_FLAGS) -DASYNCFS_TESTS=OFF -DCMAKE_INSTALL_PREFIX=$(PREFIX)" BUILD=$(BUILD)-install
	@cmake --install $(BUILD)-install --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(BUILD)-run $(BUILD)-install build-windows build-aarch64 build-armhf

# Extra targets (test-windows, test-aarch64, test-armhf, test-sanitize...) live in mk/.
-include mk/*.mk
