# make test-sanitize: the whole ctest suite built with AddressSanitizer, UndefinedBehaviorSanitizer
# and LeakSanitizer (gcc); any report fails the run. Coroutine stack switches are annotated
# (src/corio/switch.h), so ASan follows tasks across stacks.
SAN_BUILD ?= build-sanitize

.PHONY: test-sanitize

test-sanitize: deps
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYNCFS_SANITIZE=ON \
	  -DASYNCFS_WERROR=$(WERROR) >/dev/null
	@cmake --build $(SAN_BUILD) -j $(JOBS)
	@cd $(SAN_BUILD) && \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	  ctest --output-on-failure -j 1
