# make fuzz: the differential fuzzer (tests/fuzz) built with clang, libFuzzer, ASan and UBSan
# (the library too), run FUZZ_SECONDS per backend from the committed seed corpus
# tests/fuzz/corpus plus tests/fuzz/crashes. New corpus entries go to $(FUZZ_WORK)/corpus-*
# (never into the repository). Any finding fails the target and names the input libFuzzer
# saved; keep it in tests/fuzz/crashes/ (every `make test` replays that directory).
# A backend of FUZZ_BACKENDS that cannot be created fails the target (io_uring is skipped only
# with AFS_EXPECT_NO_URING=1, where it is blocked on purpose). Extra libFuzzer flags: FUZZ_FLAGS=...
# Leak checking is off here: LeakSanitizer loses the main stack across coroutine switches
# and reports libFuzzer's own objects (make test-sanitize checks leaks of the whole suite).
FUZZ_BUILD    ?= build-fuzz
FUZZ_SECONDS  ?= 60
FUZZ_BACKENDS ?= io_uring libaio threads sync posix-aio
FUZZ_WORK     ?= $(FUZZ_BUILD)/fuzz-work
FUZZ_FLAGS    ?=

.PHONY: fuzz fuzz-build

fuzz-build: deps
	@scripts/deps.sh sanitize
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYNCFS_FUZZ=ON \
	  -DASYNCFS_TOOLS=OFF -DASYNCFS_WERROR=$(WERROR) >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target afs_fuzz

fuzz: fuzz-build
	@set -u; fail=0; work="$(abspath $(FUZZ_WORK))"; \
	export ASAN_OPTIONS=detect_stack_use_after_return=0:abort_on_error=0:detect_leaks=0 \
	       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1; \
	for b in $(FUZZ_BACKENDS); do \
	  mkdir -p "$$work/corpus-$$b"; log="$$work/$$b.log"; \
	  echo "== fuzz: backend $$b, $(FUZZ_SECONDS) s"; \
	  ASYNCFS_BACKEND=$$b $(FUZZ_BUILD)/tests/fuzz/afs_fuzz -max_total_time=$(FUZZ_SECONDS) \
	    -max_len=2048 -timeout=30 -error_exitcode=1 -detect_leaks=0 -print_final_stats=1 \
	    -artifact_prefix="$$work/$$b-" \
	    $(FUZZ_FLAGS) "$$work/corpus-$$b" tests/fuzz/corpus tests/fuzz/crashes >"$$log" 2>&1; \
	  rc=$$?; \
	  if [ $$rc -eq 77 ]; then grep 'not available' "$$log"; \
	    if [ "$$b" = io_uring ] && [ "$${AFS_EXPECT_NO_URING:-}" = 1 ]; then \
	      echo "   skipped: io_uring blocked on purpose (AFS_EXPECT_NO_URING=1)"; continue; fi; \
	    echo "   FAILED: backend $$b missing (leave it out with FUZZ_BACKENDS=...)"; fail=1; continue; fi; \
	  cov=$$(grep -o 'cov: [0-9]*' "$$log" | tail -n 1); \
	  execs=$$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$$log" | grep -o '[0-9]*$$' | tail -n 1); \
	  runs=$$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$$log" | grep -o '[0-9]*$$' | tail -n 1); \
	  echo "   $${runs:-?} runs, $${execs:-?} exec/s, $${cov:-cov: ?}, log $$log"; \
	  if [ $$rc -ne 0 ]; then \
	    fail=1; \
	    grep -E 'MISMATCH|ERROR: (Address|Undefined|Leak)Sanitizer|runtime error|deadly signal|ERROR: libFuzzer' "$$log" | head -n 5; \
	    sed -n '/^==== asyncfs fuzz: MISMATCH/,/^---- end ----/p' "$$log" | head -n 120; \
	    grep -A 30 -E 'ERROR: (Address|Undefined)Sanitizer|runtime error' "$$log" | head -n 40; \
	    art=$$(grep -o "Test unit written to [^ ]*" "$$log" | tail -n 1 | cut -d' ' -f5); \
	    if [ -n "$$art" ] && [ -f "$$art" ]; then \
	      echo "   the input, base64 (base64 -d > tests/fuzz/crashes/NAME):"; base64 -w 100 "$$art"; fi; \
	    echo "   FAILED (exit $$rc): input $${art:-(none written, see the log)}"; \
	    echo "   replay: ASYNCFS_BACKEND=$$b FZ_TRACE=1 $(FUZZ_BUILD)/tests/fuzz/afs_fuzz $${art:-INPUT}"; \
	  fi; \
	done; \
	if [ $$fail -ne 0 ]; then echo "fuzz: FAILED (keep the inputs above in tests/fuzz/crashes/)"; exit 1; fi; \
	echo "fuzz: no findings"
