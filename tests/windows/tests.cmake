# The contract suite on Windows: the same sources as tests/CMakeLists.txt, built against the
# Criterion-compatible shim (tests/shim) because Criterion is not packaged for Windows
# toolchains. Included (deferred, once every library target exists) from the WIN32 branch of
# the top-level CMakeLists.txt, so it runs in the top-level directory's scope. Cross builds
# run it under wine through CMAKE_CROSSCOMPILING_EMULATOR (cmake/toolchain-mingw64.cmake).
set(SRC ${PROJECT_SOURCE_DIR}/tests)

# Linux-only suites (test_ladder.c: libaio and seccomp) are not part of the Windows list.
add_executable(contract_win
  ${SRC}/contract/test_ctx.c ${SRC}/contract/test_position.c ${SRC}/contract/test_ops.c
  ${SRC}/contract/test_blocking.c ${SRC}/contract/test_stream.c ${SRC}/contract/test_meta.c
  ${SRC}/contract/test_waker.c ${SRC}/contract/test_cancel.c ${SRC}/contract/test_storage.c
  ${SRC}/contract/test_register.c ${SRC}/contract/test_sockets.c ${SRC}/contract/test_crash.c
  ${SRC}/contract/test_crash_wal.c ${SRC}/contract/test_chain.c
  ${SRC}/contract/test_cached.c ${SRC}/contract/test_sendfile.c ${SRC}/contract/test_tune.c
  ${SRC}/windows/test_win_posix.c
  ${SRC}/shim/runner.c)
target_include_directories(contract_win PRIVATE ${SRC}/shim ${PROJECT_SOURCE_DIR}/include
                           ${PROJECT_SOURCE_DIR}/src/core)
target_link_libraries(contract_win PRIVATE asyncfs_static psapi)
if(MINGW)
  # C99 printf formats (%zd) in the messages, as on POSIX.
  target_compile_definitions(contract_win PRIVATE __USE_MINGW_ANSI_STDIO=1)
  # One self-contained .exe: no libgcc/libwinpthread DLLs to find at run time (under wine).
  target_link_options(contract_win PRIVATE -static)
endif()

# The corio scheduler (Win32 fibers), run once per backend like tests/corio/test_sched.c on
# POSIX.
add_executable(corio_sched_win ${SRC}/corio/test_sched.c ${SRC}/corio/test_future.c ${SRC}/corio/test_rt.c
                               ${SRC}/shim/runner.c)
target_include_directories(corio_sched_win PRIVATE ${SRC}/shim ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(corio_sched_win PRIVATE asyncfs_static)
if(MINGW)
  target_compile_definitions(corio_sched_win PRIVATE __USE_MINGW_ANSI_STDIO=1)
  target_link_options(corio_sched_win PRIVATE -static)
endif()

# corio's network calls (dial, listen, accept, streams over sockets) through Winsock, run
# once per backend like tests/corio/test_net.c on POSIX.
add_executable(corio_net_win ${SRC}/corio/test_net.c ${SRC}/shim/runner.c)
target_include_directories(corio_net_win PRIVATE ${SRC}/shim ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(corio_net_win PRIVATE asyncfs_static)
if(MINGW)
  target_compile_definitions(corio_net_win PRIVATE __USE_MINGW_ANSI_STDIO=1)
  target_compile_options(corio_net_win PRIVATE -Wno-unused-function) # common.h's file helpers
  target_link_options(corio_net_win PRIVATE -static)
endif()

# The spawn benchmark, cross-built to measure spawn + finish on fibers (not run by the suite).
add_executable(bench_spawn_win ${PROJECT_SOURCE_DIR}/bench/bench_spawn.c)
target_link_libraries(bench_spawn_win PRIVATE asyncfs_static psapi)
if(MINGW)
  target_link_options(bench_spawn_win PRIVATE -static)
endif()

set(AFS_WIN_BACKENDS iocp threads sync)
foreach(b ${AFS_WIN_BACKENDS})
  add_test(NAME contract_${b} COMMAND contract_win)
  set_tests_properties(contract_${b} PROPERTIES ENVIRONMENT "ASYNCFS_BACKEND=${b}" TIMEOUT 900)
  add_test(NAME corio_sched_${b} COMMAND corio_sched_win)
  set_tests_properties(corio_sched_${b} PROPERTIES ENVIRONMENT "ASYNCFS_BACKEND=${b}"
                                                   TIMEOUT 600)
  add_test(NAME corio_net_${b} COMMAND corio_net_win)
  set_tests_properties(corio_net_${b} PROPERTIES ENVIRONMENT "ASYNCFS_BACKEND=${b}" TIMEOUT 600)
endforeach()
add_test(NAME contract_auto COMMAND contract_win)
set_tests_properties(contract_auto PROPERTIES ENVIRONMENT_MODIFICATION "ASYNCFS_BACKEND=unset:"
                                              TIMEOUT 900)

# afcp for Windows (tools/afcp/win_*.c), and its tests: test_afcp_win.c runs afcp.exe on
# trees in a fresh temporary directory and compares them with their sources.
if(NOT TARGET afcp)
  include(${PROJECT_SOURCE_DIR}/tools/afcp/win_afcp.cmake)
endif()
add_executable(afcp_win ${SRC}/windows/test_afcp_win.c ${SRC}/shim/runner.c)
target_include_directories(afcp_win PRIVATE ${SRC}/shim)
add_dependencies(afcp_win afcp)
if(MINGW)
  target_compile_definitions(afcp_win PRIVATE __USE_MINGW_ANSI_STDIO=1)
  target_link_options(afcp_win PRIVATE -static)
endif()
add_test(NAME afcp_win COMMAND afcp_win)
set_tests_properties(afcp_win PROPERTIES TIMEOUT 900)

# The file server for Windows (examples/file_server.c), which tests/windows/file_server_win.sh
# drives under wine (make test-windows): built here when the examples are not.
if(MINGW AND NOT TARGET file_server)
  add_executable(file_server ${PROJECT_SOURCE_DIR}/examples/file_server.c)
  target_link_libraries(file_server PRIVATE asyncfs_static)
  target_link_options(file_server PRIVATE -static)
endif()
