#!/usr/bin/env bash
# Fuzzes the wire decoders (fuzz/fuzz_targets) for a bounded time each:
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Installs cargo-fuzz from crates.io when missing. Only a stable toolchain is
# assumed: RUSTC_BOOTSTRAP lets cargo-fuzz pass the flags it needs, and the
# address sanitizer is off (the decoders are safe Rust; libFuzzer still finds
# panics, overflows in debug arithmetic and hangs). Findings land in
# fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/ (neither
# is committed).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(route_update sync_response intent)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# Seed each corpus with the golden vectors, so mutations start from valid bytes.
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  for v in protocols/vectors/*.hex; do
    python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(open(sys.argv[1]).read()))' \
      "$v" > "fuzz/corpus/$t/golden-$(basename "$v" .hex)"
  done
done

export RUSTC_BOOTSTRAP=1
for t in "${TARGETS[@]}"; do
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s" >&2
  cargo fuzz run --sanitizer none --release "$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=1100000 -rss_limit_mb=2048 -timeout=10
done
echo "fuzz: no crash in ${#TARGETS[@]} target(s), ${SECONDS_PER_TARGET}s each" >&2
