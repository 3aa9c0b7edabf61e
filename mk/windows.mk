# make test-windows: cross-build the library, the contract suite and the corio scheduler tests
# with MinGW-w64 and run them under wine: the contract suite once per Windows backend (iocp,
# threads, sync) and once with AUTO, the scheduler tests (corio on Win32 fibers) once per
# backend in WIN_CORIO_BACKENDS, and corio's network tests (sockets through Winsock) likewise.
# Installs gcc-mingw-w64-x86-64 and wine64 through scripts/deps.sh when they are missing.
# Wine runs headless with a private prefix under the build directory (first start: ~10 s).
# Each program runs through tests/helpers/suite.sh, as the native suites do: it fails when it
# fails, when it ran no test, or when a test skipped for a reason tests/helpers/skips.allow does
# not list; a program whose tests all skipped (suite.sh's exit 77) fails too. A backend that
# cannot be created fails its tests (tests/common.h). The last lines say how many tests each
# program really ran. afcp for Windows (tools/afcp/win_*.c) is built too, and its tests
# (tests/windows/test_afcp_win.c, which runs afcp.exe on trees) run once per backend in
# WIN_AFCP_BACKENDS, with a drive V: of the prefix mapped onto a scratch directory for the
# test of a drive's root copied into itself. The file server (examples/file_server.c) is built too and driven over
# loopback by tests/windows/file_server_win.sh once per backend in WIN_SERVER_BACKENDS.
WIN_BUILD    ?= build-windows
WIN_BACKENDS ?= iocp threads sync auto
WIN_CORIO_BACKENDS ?= iocp threads sync
WIN_AFCP_BACKENDS ?= auto threads
WIN_SERVER_BACKENDS ?= auto threads
WIN_TIMEOUT  ?= 1200

.PHONY: test-windows build-windows

build-windows:
	@scripts/deps.sh windows
	@cmake -S . -B $(WIN_BUILD) -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-mingw64.cmake \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYNCFS_WERROR=$(WERROR) -DASYNCFS_TOOLS=OFF \
	  -DASYNCFS_TESTS=ON >/dev/null
	@cmake --build $(WIN_BUILD) -j $(JOBS) --target asyncfs_shared asyncfs_static contract_win \
	  corio_sched_win corio_net_win afcp afcp_win file_server

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
	summary="$(abspath $(WIN_BUILD))/suite-summary.txt"; rm -f "$$summary"; fail=0; \
	for b in $(WIN_BACKENDS); do \
	  case " $(WIN_CORIO_BACKENDS) " in *" $$b "*) progs="contract corio_sched corio_net";; \
	    *) progs=contract;; esac; \
	  for p in $$progs; do \
	    echo "== $${p}_win.exe, backend $$b, under wine"; \
	    if [ "$$b" = auto ]; then set -- env -u ASYNCFS_BACKEND; else set -- env ASYNCFS_BACKEND=$$b; fi; \
	    "$$@" AFS_SUITE_SUMMARY="$$summary" tests/helpers/suite.sh "$${p}_win.exe ($$b)" \
	      timeout $(WIN_TIMEOUT) "$$wine" "$(WIN_BUILD)/$${p}_win.exe"; \
	    rc=$$?; \
	    if [ "$$rc" -eq 77 ]; then echo "$${p}_win.exe ($$b) ran no test"; fi; \
	    if [ "$$rc" -ne 0 ]; then fail=$$((fail + 1)); fi; \
	  done; \
	done; \
	vroot=$$(mktemp -d /tmp/afcp-vroot.XXXXXX); \
	ln -sfn "$$vroot" "$$WINEPREFIX/dosdevices/v:"; \
	export AFCP_TEST_DRIVE=V: AFCP_TEST_DRIVE_ALIAS="Z:$$(printf %s "$$vroot" | tr / '\\')"; \
	for b in $(WIN_AFCP_BACKENDS); do \
	  echo "== afcp_win.exe (afcp.exe on trees), backend $$b, under wine"; \
	  if [ "$$b" = auto ]; then set -- env -u ASYNCFS_BACKEND; else set -- env ASYNCFS_BACKEND=$$b; fi; \
	  "$$@" AFS_SUITE_SUMMARY="$$summary" tests/helpers/suite.sh "afcp_win.exe ($$b)" \
	    timeout $(WIN_TIMEOUT) "$$wine" "$(WIN_BUILD)/afcp_win.exe"; \
	  if [ "$$?" -ne 0 ]; then fail=$$((fail + 1)); fi; \
	done; \
	rm -f "$$WINEPREFIX/dosdevices/v:"; rm -rf "$$vroot"; \
	for b in $(WIN_SERVER_BACKENDS); do \
	  echo "== file_server.exe over loopback, backend $$b, under wine"; \
	  if [ "$$b" = auto ]; then set -- env -u ASYNCFS_BACKEND; else set -- env ASYNCFS_BACKEND=$$b; fi; \
	  "$$@" AFS_SUITE_SUMMARY="$$summary" tests/helpers/suite.sh --plain "file_server.exe ($$b)" \
	    timeout $(WIN_TIMEOUT) tests/windows/file_server_win.sh "$$wine" "$(WIN_BUILD)/file_server.exe"; \
	  if [ "$$?" -ne 0 ]; then fail=$$((fail + 1)); fi; \
	done; \
	"$$wineserver" -k >/dev/null 2>&1 || true; \
	echo "== tests each program really ran:"; cat "$$summary"; \
	echo "$$fail program(s) failed"; \
	[ "$$fail" -eq 0 ]
