#!/usr/bin/env bash
# Sets up and runs a node: fetches the embedding model and ONNX Runtime into the
# cache if missing (scripts/fetch-model.sh), builds the release binary, and starts
# it. Arguments go to `atmosphere start` (e.g. --config FILE --http ADDR:PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --quiet --bin atmosphere
exec "${CARGO_TARGET_DIR:-target}/release/atmosphere" start "$@"
