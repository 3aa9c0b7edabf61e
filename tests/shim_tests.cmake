# The contract suite, the scheduler tests and corio's network tests built against the Criterion-compatible shim, for
# cross builds where Criterion is not packaged (AArch64 and 32-bit Arm under qemu-user). Runs
# once per backend built for the target (threads, sync, posix-aio), under
# CMAKE_CROSSCOMPILING_EMULATOR, through tests/helpers/suite.sh as the native suites do: an entry fails when no test ran or a test
# skipped for a reason tests/helpers/skips.allow does not list (no SKIP_RETURN_CODE: an entry
# whose tests all skipped fails too).
set(SRC ${PROJECT_SOURCE_DIR}/tests)
foreach(t contract corio_sched corio_net)
  if(t STREQUAL contract)
    add_executable(${t}_shim ${SRC}/contract/test_ctx.c ${SRC}/contract/test_position.c
                   ${SRC}/contract/test_ops.c ${SRC}/contract/test_blocking.c
                   ${SRC}/contract/test_stream.c ${SRC}/contract/test_meta.c
                   ${SRC}/contract/test_cancel.c ${SRC}/contract/test_pipes.c
                   ${SRC}/contract/test_waker.c ${SRC}/contract/test_storage.c
                   ${SRC}/contract/test_register.c ${SRC}/contract/test_sockets.c
                   ${SRC}/contract/test_crash.c ${SRC}/contract/test_crash_wal.c
                   ${SRC}/contract/test_chain.c ${SRC}/contract/test_cached.c
                   ${SRC}/contract/test_sendfile.c ${SRC}/contract/test_tune.c
                   ${SRC}/shim/runner.c)
    # The readiness engine's kqueue flavour runs over a stand-in (tests/contract/sock_flavours.h).
    target_sources(${t}_shim PRIVATE ${SRC}/helpers/kqueue_shim.c)
  elseif(t STREQUAL corio_sched)
    add_executable(${t}_shim ${SRC}/corio/test_sched.c ${SRC}/corio/test_future.c
                   ${SRC}/corio/test_rt.c ${SRC}/shim/runner.c)
  else()
    add_executable(${t}_shim ${SRC}/corio/test_net.c ${SRC}/shim/runner.c)
    target_compile_options(${t}_shim PRIVATE -Wno-unused-function) # common.h's file helpers
  endif()
  target_include_directories(${t}_shim PRIVATE ${SRC}/shim ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src/core)
  target_link_libraries(${t}_shim PRIVATE asyncfs_static m) # m: the rounding-mode test
  target_compile_definitions(${t}_shim PRIVATE ${AFS_DEFS}) # backends built, for syscount.h
  set(backends threads sync)
  if(ASYNCFS_POSIX_AIO)
    list(APPEND backends posix-aio)
  endif()
  foreach(b ${backends})
    add_test(NAME ${t}_${b} COMMAND ${SRC}/helpers/suite.sh ${t}_${b}
             ${CMAKE_CROSSCOMPILING_EMULATOR} $<TARGET_FILE:${t}_shim>)
    set_tests_properties(${t}_${b} PROPERTIES TIMEOUT 900 ENVIRONMENT
      "ASYNCFS_BACKEND=${b};AFS_SUITE_SUMMARY=${CMAKE_BINARY_DIR}/Testing/suite-summary.txt")
  endforeach()
endforeach()
# afcp's end-to-end suite (tests/afcp/test_afcp.sh) with the target's afcp run under the
# emulator through a wrapper script; the host's cp, diff and stat check what it copied.
if(CMAKE_CROSSCOMPILING_EMULATOR AND NOT WIN32)
  if(NOT TARGET afcp)
    add_subdirectory(${PROJECT_SOURCE_DIR}/tools/afcp ${PROJECT_BINARY_DIR}/tools/afcp)
  endif()
  list(JOIN CMAKE_CROSSCOMPILING_EMULATOR " " emulator)
  file(GENERATE OUTPUT ${PROJECT_BINARY_DIR}/afcp-emulated
       CONTENT "#!/bin/sh\nexec ${emulator} $<TARGET_FILE:afcp> \"$@\"\n"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                        WORLD_READ WORLD_EXECUTE)
  add_test(NAME afcp COMMAND ${SRC}/afcp/test_afcp.sh ${PROJECT_BINARY_DIR}/afcp-emulated)
  set_tests_properties(afcp PROPERTIES TIMEOUT 900)
endif()
# The raw switch and stacks, plain C.
add_subdirectory(tests/corio)
