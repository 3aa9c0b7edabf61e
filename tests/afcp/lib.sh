# Sourced by the afcp test scripts: the afcp under test, a fresh temporary directory removed
# at exit, the pass/fail/skip counters and the checks they share, and the loop that runs a
# script's run_suite once per backend (AUTO, threads, sync).
#   . "$(dirname "$0")/lib.sh" NAME path/to/afcp     (NAME names the temporary directory)

AFCP=${2:?usage: $0 path/to/afcp}
AFCP=$(readlink -f "$AFCP")
T=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
trap 'chmod -R u+rwx "$T" 2>/dev/null; rm -rf "$T"' EXIT
umask 022
fails=0 passes=0 skips=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL [$(id -un) ${BACKEND:-auto}]: $*" >&2; fails=$((fails + 1)); }
skip() { echo "SKIP [$(id -un) ${BACKEND:-auto}]: $*" >&2; skips=$((skips + 1)); }
check() { local what=$1; shift; if "$@"; then ok; else bad "$what"; fi; }
mode() { stat -c %a "$1"; }
no_temps() { [[ -z $(find "$1" -name '.afcp.*' 2>/dev/null) ]]; }
# Every regular file under dst is complete: equal to the file of the same name under src (a
# file written under its own name must be gone after an error or a signal).
complete_only() { # src dst
    [[ -d $2 ]] || return 0
    (cd "$2" && find . -type f ! -name '.afcp.*') | while read -r f; do
        cmp -s "$1/$f" "$2/$f" || { echo "partial copy: $2/$f" >&2; return 1; }
    done
}

# Runs run_suite once per backend, prints "WHAT tests: N passed, M failed, K skipped" and
# exits 1 when anything failed. AFCP_TEST_BACKENDS narrows the list ("auto threads sync";
# make test-sanitize runs AUTO only: the contract suites take each backend there).
run_backends() { # what
    local b
    for b in ${AFCP_TEST_BACKENDS:-auto threads sync}; do
        BACKEND=$b; [[ $b == auto ]] && BACKEND=
        if [[ -n $BACKEND ]]; then export ASYNCFS_BACKEND=$BACKEND; else unset ASYNCFS_BACKEND; fi
        run_suite
    done
    echo "$1 tests ($(id -un)): $passes passed, $fails failed, $skips skipped"
    ((fails == 0))
}
