#!/usr/bin/env bash
# The demo on a fresh machine: installs what the build needs, builds, and
# starts three demo backends (127.0.0.1:3001-3003) with Switchyard in front
# of them on 127.0.0.1:8080 (admin on 127.0.0.1:9901), using proxy.toml.
# Ctrl-C stops everything. Extra arguments go to the demo (--config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh
cargo build --release --example demo
cat <<'TRY'

  curl localhost:8080              -> backend-1, backend-2, backend-3, backend-1, ...
  curl localhost:9901/metrics      -> switchyard_requests_total counts them
  curl localhost:9901/status       -> each backend: healthy or not, and why

TRY
exec "${CARGO_TARGET_DIR:-target}/release/examples/demo" "$@"
