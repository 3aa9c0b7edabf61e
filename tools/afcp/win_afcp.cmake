# afcp on Windows: the Windows front end (win_*.c) with the progress bar, semaphore, name
# quoting and -v's ordering of the POSIX afcp (progress.c, quote.c, verbose.c); see
# docs/afcp-windows.md. Included by tools/afcp/CMakeLists.txt on Windows, and by
# tests/windows/tests.cmake when the tools are not built (make test-windows), whose afcp_win
# test program runs it.
set(AFCP_SRC ${PROJECT_SOURCE_DIR}/tools/afcp)
add_executable(afcp ${AFCP_SRC}/win_afcp.c ${AFCP_SRC}/win_walk.c ${AFCP_SRC}/win_fs.c
                    ${AFCP_SRC}/common.c
                    ${AFCP_SRC}/progress.c ${AFCP_SRC}/quote.c ${AFCP_SRC}/verbose.c)
target_link_libraries(afcp PRIVATE asyncfs_static shell32)
target_include_directories(afcp PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_compile_definitions(afcp PRIVATE _WIN32_WINNT=0x0602 WIN32_LEAN_AND_MEAN NOMINMAX)
if(MINGW)
  # C99 printf formats, and one self-contained .exe (no libgcc/libwinpthread DLLs).
  target_compile_definitions(afcp PRIVATE __USE_MINGW_ANSI_STDIO=1)
  target_link_options(afcp PRIVATE -static)
endif()
