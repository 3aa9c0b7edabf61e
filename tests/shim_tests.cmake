# The contract suite and the scheduler tests built against the Criterion-compatible shim, for
# cross builds where Criterion is not packaged (AArch64 under qemu-user). Runs once per
# backend built for the target; ctest uses CMAKE_CROSSCOMPILING_EMULATOR.
set(SRC ${PROJECT_SOURCE_DIR}/tests)
foreach(t contract corio_sched)
  if(t STREQUAL contract)
    add_executable(${t}_shim ${SRC}/contract/test_ctx.c ${SRC}/contract/test_position.c
                   ${SRC}/contract/test_ops.c ${SRC}/contract/test_blocking.c
                   ${SRC}/contract/test_stream.c ${SRC}/contract/test_meta.c
                   ${SRC}/contract/test_cancel.c ${SRC}/contract/test_pipes.c
                   ${SRC}/contract/test_waker.c ${SRC}/shim/runner.c)
  else()
    add_executable(${t}_shim ${SRC}/corio/test_sched.c ${SRC}/corio/test_future.c
                   ${SRC}/shim/runner.c)
  endif()
  target_include_directories(${t}_shim PRIVATE ${SRC}/shim ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src/core)
  target_link_libraries(${t}_shim PRIVATE asyncfs_static)
  target_compile_definitions(${t}_shim PRIVATE ${AFS_DEFS}) # backends built, for syscount.h
  foreach(b threads sync)
    add_test(NAME ${t}_${b} COMMAND ${t}_shim)
    set_tests_properties(${t}_${b} PROPERTIES ENVIRONMENT "ASYNCFS_BACKEND=${b}" TIMEOUT 900)
  endforeach()
endforeach()
# The raw switch and stacks, plain C.
add_subdirectory(tests/corio)
