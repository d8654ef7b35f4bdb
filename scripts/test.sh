#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine or a warm one:
#   1. fetches the embedding model and ONNX Runtime into the cache (if missing),
#   2. makes a Python venv in the cache with the official `openai` package and
#      py-libp2p (the foreign peer of tests/interop.rs),
#   3. runs every test with cargo-nextest (cargo test when nextest is absent),
#   4. runs the docker-compose testnet test (scripts/testnet-test.sh) on the
#      suite's own (dev profile) binaries.
# Extra arguments go to the test runner (e.g. a filter) and skip step 4.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${ATMOSPHERE_CACHE:-$HOME/.cache/atmosphere}"
OPENAI_SDK_VERSION="3.54.0"
PY_LIBP2P_VERSION="0.8.1"
# The official MCP SDK: tests/mcp/tools_server.py is an MCP server on it.
PY_MCP_VERSION="2.3.0"

scripts/fetch-model.sh

VENV="$CACHE/venv"
if ! "$VENV/bin/python" -c "
import sys
from importlib.metadata import version
sys.exit(version('openai') != '$OPENAI_SDK_VERSION' or version('libp2p') != '$PY_LIBP2P_VERSION'
         or version('mcp') != '$PY_MCP_VERSION')
" 2>/dev/null; then
  echo "test: installing openai==$OPENAI_SDK_VERSION, libp2p==$PY_LIBP2P_VERSION and mcp==$PY_MCP_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "openai==$OPENAI_SDK_VERSION" "libp2p==$PY_LIBP2P_VERSION" "mcp==$PY_MCP_VERSION"
fi
export ATMOSPHERE_PYTHON="$VENV/bin/python"

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@" || status=$?
else
  cargo test --no-fail-fast "$@" || status=$?
fi

# The docker-compose testnet, end to end (not when a filter picks Rust tests),
# on the binaries the suite has just built: a release build would compile
# every dependency a second time (about 15 minutes on 2 cores).
if [ $# -eq 0 ]; then
  ATMOSPHERE_PROFILE=dev scripts/testnet-test.sh || status=$?
fi
exit "$status"
