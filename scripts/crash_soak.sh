#!/usr/bin/env bash
# The crash simulator's demonstrations at scale (docs/CRASHSIM.md): the write-ahead log and
# corio log tests of tests/contract/test_crash_wal.c, and SQLite through the asyncfs VFS
# (tests/crash/test_crash_sqlite.c, when built), with N crashes each (default 20,000)
# from seed S on (default a random one, printed so that a failure can be replayed), on each
# backend named (default: every Linux backend).
#   scripts/crash_soak.sh [N] [backend...]      BUILD=build SEED=S
set -euo pipefail
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
n=${1:-20000}
shift || true
backends=${*:-io_uring libaio posix-aio threads sync}
seed=${SEED:-$(( (RANDOM << 15 | RANDOM) ))}
echo "crash soak: $n crashes per test from seed $seed (replay: SEED=$seed $0 $n <backend>)"
for b in $backends; do
  echo "== $b"
  AFS_CRASH_RUNS=$n AFS_CRASH_SEED=$seed ASYNCFS_BACKEND=$b \
    nice "$BUILD/tests/contract" --filter 'crash_wal/*' --jobs 1 --verbose 2>&1 |
    grep -E '^\[(PASS|FAIL|----)\]|Synthesis' || true
  if [ -x "$BUILD/tests/crash_sqlite" ]; then
    AFS_CRASH_RUNS=$n AFS_CRASH_SEED=$seed ASYNCFS_BACKEND=$b \
      nice "$BUILD/tests/crash_sqlite" --jobs 1 --verbose 2>&1 |
      grep -E '^\[(PASS|FAIL|----)\]|Synthesis' || true
  fi
done
