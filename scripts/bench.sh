#!/usr/bin/env bash
# Runs the benchmarks behind BENCHMARKS.md and prints their tables (Markdown).
#   scripts/bench.sh                 # all: latency, proxy, clinc150, mesh, forward, edges, vector_check, soak, balance, tools, agent, media, budgets
#   scripts/bench.sh latency proxy   # some
# Needs the model (scripts/fetch-model.sh) and, for clinc150 and vector_check, ../shared/datasets
# or CLINC150_DIR. Figures depend on the machine: run on an otherwise idle one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(latency proxy clinc150 mesh forward edges vector_check soak balance tools agent media budgets)
cargo build --release --bins
out="${CARGO_TARGET_DIR:-target}/bench-results.md"
: > "$out"
for b in "${benches[@]}"; do
  echo "### cargo bench --bench $b ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD 2>/dev/null || echo unknown))" | tee -a "$out"
  cargo bench --quiet --bench "$b" 2>/dev/null | tee -a "$out"
  echo | tee -a "$out"
done
echo "bench: results also in $out" >&2
