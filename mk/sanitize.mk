# make test-sanitize: the whole ctest suite built with AddressSanitizer, UndefinedBehaviorSanitizer
# and LeakSanitizer (gcc); any report fails the run. Coroutine stack switches are annotated
# (src/corio/switch.h), so ASan follows tasks across stacks.
# A leak in a Criterion test is reported by the test's worker process after the test passed,
# which Criterion does not count: abort_on_error=1 makes that report end the worker with
# SIGABRT (Criterion warns and exits 1), and tests/helpers/suite.sh fails every entry whose
# output holds a sanitizer report. fast_unwind_on_malloc=0 gives the full allocation stacks
# that the narrow entries of tests/lsan.supp need.
# Entries that run code other entries already run under the sanitizers are left out, to keep
# the stage's time: contract_auto (contract_io_uring's backend, chosen by the ladder, whose
# checks run in ladder_seccomp), contract_noring (contract_libaio's), contract_sync (its
# backend runs each op inline, the core's paths every other contract entry takes; the
# scheduler suite runs on sync), contract_posix-aio (Linux builds that backend
# for testing; make fuzz runs it under ASan and UBSan), crash_sim (in every contract_*
# entry), afcp_cp (afcp's messages against cp's: the other afcp scripts take its code
# paths), soak_large_threads (soak_large_io_uring takes the core's paths of large I/O, the
# contract suite the pool's), sqlite_vfs_sync and the network suite on libaio, posix-aio and
# sync (their socket ops are the readiness engine's, which the threads entry runs); the afcp
# scripts run on AUTO only (AFCP_TEST_BACKENDS), the contract suites
# taking each backend, and two at a time (one process each, none judged by timing).
SAN_BUILD ?= build-sanitize
SAN_EXCLUDE ?= ^(contract_auto|contract_noring|contract_sync|contract_posix-aio|crash_sim|afcp_cp|soak_large_threads|sqlite_vfs_sync|corio_net_(libaio|posix-aio|sync))$$
SAN_SIDE_BY_SIDE ?= ^afcp

.PHONY: test-sanitize

test-sanitize: deps
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYNCFS_SANITIZE=ON \
	  -DASYNCFS_WERROR=$(WERROR) >/dev/null
	@cmake --build $(SAN_BUILD) -j $(JOBS)
	@cd $(SAN_BUILD) && rm -f Testing/suite-summary.txt; \
	  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0:fast_unwind_on_malloc=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0; \
	  export AFCP_TEST_BACKENDS=auto; \
	  rc=0; ctest --output-on-failure -j 2 -R '$(SAN_SIDE_BY_SIDE)' -E '$(SAN_EXCLUDE)' || rc=$$?; \
	  ctest --output-on-failure -j 1 -E '$(SAN_EXCLUDE)|$(SAN_SIDE_BY_SIDE)' || rc=$$?; \
	  echo "== tests each suite really ran:"; cat Testing/suite-summary.txt 2>/dev/null; exit $$rc
