#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test target.
# Extra arguments go to cargo test (e.g. scripts/test.sh -- --nocapture).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
cargo test --all-targets "$@"
