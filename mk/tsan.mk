# make test-tsan: the suites that use threads, built with ThreadSanitizer (gcc), in their own
# build directory: the contract suite on the thread pool, and the scheduler suite on the
# thread pool and on io_uring (dispatchers answering from other threads, futures and pool
# work completed from other threads, the context's waker, and runtimes of 16 schedulers on
# as many threads: tests/corio/test_rt.c). The contract suite on AUTO (io_uring here) is left
# out for CI's time: its cross-thread paths are the pool's and the waker's, which those runs
# take. Any report fails the run; each run goes through
# tests/helpers/suite.sh (no test ran, or a skip the allow list does not name, fails it too).
#
# Criterion's process sandbox cannot start under TSan (its shared arena collides with TSan's
# memory layout), so the suites are built against the Criterion-compatible shim in tests/shim,
# which forks one process per test as well. Coroutine switches are annotated as TSan fibers
# (src/corio/switch.h), so TSan follows tasks across stacks. Its tests' time limits are
# tripled (CRS_TIMEOUT_SCALE): the 6,000 tasks of thousands_of_tasks_each_read_into_their_own_state
# take 56-60 s of a 60 s limit under TSan on a VM whose page faults trap to the hypervisor.
TSAN_BUILD ?= build-tsan
# gcc's TSan allows 8128 threads and fibers alive at once; clang's (TSAN_CC=clang, packages of
# `scripts/deps.sh sanitize`) has no such limit and makes fibers faster. These suites need
# neither.
TSAN_CC    ?= gcc
TSAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer
# suite:backend pairs; "auto" leaves ASYNCFS_BACKEND unset.
TSAN_RUNS  ?= contract:threads corio_sched:threads corio_sched:io_uring

.PHONY: test-tsan

test-tsan:
	@scripts/deps.sh test tsan
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_C_COMPILER=$(TSAN_CC) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DASYNCFS_TOOLS=OFF -DASYNCFS_SHIM_TESTS=ON -DASYNCFS_WERROR=$(WERROR) \
	  -DCMAKE_C_FLAGS="$(TSAN_FLAGS)" -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread \
	  -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS) --target contract_shim corio_sched_shim
	@export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 \
	  suppressions=$(abspath tests/tsan.supp)" CRS_TIMEOUT_SCALE=$${CRS_TIMEOUT_SCALE:-3}; rc=0; rm -f $(TSAN_BUILD)/suite-summary.txt; \
	for run in $(TSAN_RUNS); do \
	  suite=$${run%%:*}; be=$${run#*:}; \
	  echo "== tsan: $$suite on $$be"; \
	  if [ "$$be" = auto ]; then set -- env -u ASYNCFS_BACKEND; else set -- env ASYNCFS_BACKEND=$$be; fi; \
	  "$$@" AFS_SUITE_SUMMARY=$(abspath $(TSAN_BUILD))/suite-summary.txt \
	    tests/helpers/suite.sh "tsan $$suite" $(TSAN_BUILD)/$${suite}_shim || rc=1; \
	done; \
	echo "== tests each suite really ran:"; cat $(TSAN_BUILD)/suite-summary.txt; exit $$rc
