#!/bin/sh
# Runs a test program under Valgrind for its Memcheck reports alone (tests/CMakeLists.txt):
# the program's own verdict is ignored, since Valgrind runs one thread at a time and tests
# that judge by timing or by how work spread over threads may fail there; tests/helpers/
# suite.sh fails the entry on any Memcheck report in the output.
# Usage: memcheck.sh VALGRIND [OPTIONS...] PROGRAM [ARGS...]
"$@"
exit 0
