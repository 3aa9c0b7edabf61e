#!/usr/bin/env bash
# Runs one test program for ctest and decides its verdict from what really ran, not from the
# program's exit status alone.
#
# Usage: suite.sh [--plain] LABEL PROGRAM [ARGS...]
#   Criterion programs (and tests/shim ones) by default: the run fails when the program fails,
#   when it prints no summary, when no test ran, when a test skipped for a reason that is not
#   in tests/helpers/skips.allow, or when a sanitizer or valgrind report appears in its output
#   (a worker's LeakSanitizer report does not change Criterion's exit status).
#   --plain: any other program (the fuzz replay): it fails on a non-zero exit, 77 included,
#   or on a sanitizer report.
#
# PROGRAM may be a runner followed by the program (qemu-aarch64 -L ROOT prog, wine prog.exe,
# timeout N ...): the arguments go to the end of the line.
#
# The backend under test is ASYNCFS_BACKEND. It must be available: the only exception is
# io_uring where it is blocked on purpose (AFS_EXPECT_NO_URING=1, as in a container whose
# seccomp profile refuses io_uring_setup); then the entry is skipped with exit 77, and ctest
# counts it as skipped (SKIP_RETURN_CODE 77). An entry whose tests all skipped, each for a
# listed reason, is skipped the same way.
#
# One summary line goes to stdout and, when AFS_SUITE_SUMMARY names a file, is appended there
# (make test prints that file after ctest).
set -u
plain=0
if [ "${1:-}" = --plain ]; then plain=1; shift; fi
label=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
backend=${ASYNCFS_BACKEND:-auto}

summary() {
  echo "$1"
  if [ -n "${AFS_SUITE_SUMMARY:-}" ]; then echo "$1" >>"$AFS_SUITE_SUMMARY"; fi
}

if [ "$backend" = io_uring ] && [ "${AFS_EXPECT_NO_URING:-}" = 1 ]; then
  summary "$label: SKIPPED, io_uring blocked on purpose here (AFS_EXPECT_NO_URING=1)"
  exit 77
fi

log=$(mktemp "${TMPDIR:-/tmp}/afs-suite-XXXXXX")
trap 'rm -f "$log"' EXIT

if [ "$plain" = 0 ]; then
  # Criterion prints the skip reasons only when verbose (--verbose=0 hides them).
  args=()
  for a in "$@"; do case $a in --verbose*) ;; *) args+=("$a") ;; esac; done
  "${args[@]}" --verbose >"$log" 2>&1
else
  "$@" >"$log" 2>&1
fi
rc=$?
# Programs run under wine write CRLF line ends.
sed -i 's/\r$//' "$log"
# The log without one line per test that ran and passed, or that --filter left out.
grep -avE '^\[(RUN |PASS)\]|^\[SKIP\] [^ ]*: (Test is disabled|disabled)$' "$log"

fail=()
[ "$rc" -eq 0 ] || fail+=("exit status $rc")
if grep -aqE 'ERROR: (Leak|Address)Sanitizer|runtime error: |WARNING: ThreadSanitizer' "$log"; then
  fail+=("sanitizer report")
fi
if grep -aq 'VALGRIND-ERROR-BEGIN' "$log"; then
  fail+=("valgrind report")
fi

if [ "$plain" = 1 ]; then
  if [ ${#fail[@]} -gt 0 ]; then
    summary "$label: FAILED (${fail[*]})"
    exit 1
  fi
  summary "$label: passed"
  exit 0
fi

# Criterion: "Synthesis: Tested: N | Passing: P | Failing: F | Crashing: C";
# tests/shim: "P passed, F failed, S skipped".
ran= passed=
line=$(grep -aoE 'Synthesis: Tested: [0-9]+ \| Passing: [0-9]+' "$log" | tail -n 1)
if [ -n "$line" ]; then
  set -- $(echo "$line" | tr -c '0-9\n' ' ')
  ran=$1 passed=$2
else
  line=$(grep -aE '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    set -- $(echo "$line" | tr -c '0-9\n' ' ')
    ran=$(($1 + $2)) passed=$1
  fi
fi
[ -n "$ran" ] || { fail+=("no summary line"); ran=0 passed=0; }

# Skips: each reason must be one the allow list names.
allow=$(grep -vE '^(#|$)' "$here/skips.allow")
if [ "${AFS_EXPECT_NO_URING:-}" = 1 ]; then
  allow+=$'\n''^io_uring_setup fails here: '
fi
# "Test is disabled" (Criterion) and "disabled" (tests/shim) are the tests --filter left out:
# not counted. No test in the suites is marked .disabled.
skips=$(grep -aE '^\[SKIP\] ' "$log" | sed -E 's/^\[SKIP\] [^ ]*(: |$)//' |
        grep -avxE 'Test is disabled|disabled')
nskip=0
bad=()
if [ -n "$skips" ]; then
  nskip=$(printf '%s\n' "$skips" | wc -l)
  while IFS= read -r why; do
    printf '%s\n' "$why" | grep -qE -f <(printf '%s\n' "$allow") || bad+=("$why")
  done <<<"$skips"
fi
if [ ${#bad[@]} -gt 0 ]; then
  fail+=("${#bad[@]} skipped for a reason not in tests/helpers/skips.allow")
  printf '  skip not allowed: %s\n' "${bad[@]}"
fi

what="$ran ran, $passed passed, $nskip skipped (backend $backend)"
if [ ${#fail[@]} -eq 0 ] && [ "$ran" -eq 0 ]; then
  # Every test skipped, each for a listed reason: the entry is a skip, not a pass.
  if [ "$nskip" -gt 0 ]; then summary "$label: SKIPPED: $what"; exit 77; fi
  fail+=("no test ran")
fi
if [ ${#fail[@]} -gt 0 ]; then
  why=$(printf '%s; ' "${fail[@]}")
  summary "$label: FAILED: $what; ${why%; }"
  exit 1
fi
summary "$label: $what"
exit 0
