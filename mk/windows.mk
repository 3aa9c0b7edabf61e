# make test-windows: cross-build the library, the contract suite and the corio scheduler tests
# with MinGW-w64 and run them under wine: the contract suite once per Windows backend (iocp,
# threads, sync) and once with AUTO, the scheduler tests (corio on Win32 fibers) once per
# backend in WIN_CORIO_BACKENDS.
# Installs gcc-mingw-w64-x86-64 and wine64 through scripts/deps.sh when they are missing.
# Wine runs headless with a private prefix under the build directory (first start: ~10 s).
# The last line is the total, "N passed, M failed, K skipped"; the target fails if M > 0 or a
# program ran no test. A backend that cannot be created fails its tests (tests/common.h).
WIN_BUILD    ?= build-windows
WIN_BACKENDS ?= iocp threads sync auto
WIN_CORIO_BACKENDS ?= iocp threads sync
WIN_TIMEOUT  ?= 1200

.PHONY: test-windows build-windows

build-windows:
	@scripts/deps.sh windows
	@cmake -S . -B $(WIN_BUILD) -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-mingw64.cmake \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYNCFS_WERROR=$(WERROR) -DASYNCFS_TOOLS=OFF \
	  -DASYNCFS_TESTS=ON >/dev/null
	@cmake --build $(WIN_BUILD) -j $(JOBS) --target asyncfs_shared asyncfs_static contract_win \
	  corio_sched_win

test-windows: build-windows
	@set -u; \
	wine=$$(command -v wine64 || command -v wine || echo /usr/lib/wine/wine64); \
	wineserver=$$(command -v wineserver || echo /usr/lib/wine/wineserver); \
	export WINEPREFIX="$(abspath $(WIN_BUILD))/wineprefix" WINEDEBUG=-all \
	       WINEDLLOVERRIDES="mscoree,mshtml=" DISPLAY= WAYLAND_DISPLAY=; \
	if [ ! -f "$$WINEPREFIX/system.reg" ]; then \
	  echo "wine: initialising $$WINEPREFIX"; \
	  "$$wine" wineboot -i >/dev/null 2>&1 || true; "$$wineserver" -w || true; \
	fi; \
	pass=0; fail=0; skip=0; summary=; \
	for b in $(WIN_BACKENDS); do \
	  case " $(WIN_CORIO_BACKENDS) " in *" $$b "*) progs="contract corio_sched";; \
	    *) progs=contract;; esac; \
	  for p in $$progs; do \
	    echo "== $${p}_win.exe, backend $$b, under wine"; \
	    log="$(WIN_BUILD)/$$p-$$b.log"; \
	    if [ "$$b" = auto ]; then set -- env -u ASYNCFS_BACKEND; else set -- env ASYNCFS_BACKEND=$$b; fi; \
	    "$$@" timeout $(WIN_TIMEOUT) "$$wine" "$(WIN_BUILD)/$${p}_win.exe" >"$$log" 2>&1; \
	    rc=$$?; cat "$$log"; \
	    line=$$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$$log" | tail -n 1); \
	    if [ -z "$$line" ]; then echo "$${p}_win.exe ($$b) ended without a summary (exit $$rc)"; \
	      fail=$$((fail + 1)); continue; fi; \
	    set -- $$(echo "$$line" | tr -dc '0-9 '); \
	    pass=$$((pass + $$1)); fail=$$((fail + $$2)); skip=$$((skip + $${3:-0})); \
	    if [ "$$(($$1 + $$2))" -eq 0 ]; then echo "$${p}_win.exe ($$b) ran no test"; \
	      fail=$$((fail + 1)); fi; \
	    summary=$$(printf '%s\n%s' "$$summary" "$${p}_win.exe ($$b): $$line"); \
	  done; \
	done; \
	"$$wineserver" -k >/dev/null 2>&1 || true; \
	printf '== tests each program really ran:%s\n' "$$summary"; \
	echo "$$pass passed, $$fail failed, $$skip skipped"; \
	[ "$$fail" -eq 0 ]
