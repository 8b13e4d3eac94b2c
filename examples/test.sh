#!/usr/bin/env bash
# The tests on a fresh machine: installs what the build needs, then runs
# every unit, property and end-to-end test (`cargo test`; extra arguments
# go to it, e.g. `bash examples/test.sh crashloop`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh
exec cargo test "$@"
