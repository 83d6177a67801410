#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test target, and ends
# with one line that totals them ("tests: N passed, N failed").
# Extra arguments go to cargo test (e.g. scripts/test.sh -- --nocapture).
# --no-install (first) skips scripts/install-deps.sh, for the edit-test loop.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ${1:-} == --no-install ]]; then
	shift
else
	scripts/install-deps.sh
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --lib --bins --tests --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
	END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
