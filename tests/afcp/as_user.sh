#!/usr/bin/env bash
# Runs an afcp test script as a user other than root: as root, as the user nobody (setpriv),
# with a copy of afcp that nobody may run; otherwise as the caller.
# Usage: tests/afcp/as_user.sh tests/afcp/test_afcp.sh path/to/afcp
set -uo pipefail
SCRIPT=$(readlink -f "${1:?usage: $0 script path/to/afcp}")
AFCP=$(readlink -f "${2:?usage: $0 script path/to/afcp}")
if [[ $(id -u) -ne 0 ]]; then
    exec bash "$SCRIPT" "$AFCP"
fi
if ! command -v setpriv > /dev/null || ! id nobody > /dev/null 2>&1; then
    echo "SKIP: no setpriv or no user nobody: cannot run $SCRIPT as another user" >&2
    exit 0
fi
D=$(mktemp -d "${TMPDIR:-/tmp}/afcp_user.XXXXXX")
trap 'rm -rf "$D"' EXIT
chmod 755 "$D"
install -m 755 "$AFCP" "$D/afcp"
install -m 755 "$SCRIPT" "$D/test.sh"
install -m 644 "$(dirname "$SCRIPT")/lib.sh" "$D/lib.sh"
cd /
setpriv --reuid=nobody --regid="$(id -gn nobody)" --clear-groups \
    env HOME=/ TMPDIR=/tmp bash "$D/test.sh" "$D/afcp"
