#!/usr/bin/env bash
# Testnet figures for BENCHMARKS.md: for each number of `scale` nodes, the time
# from `docker-compose up` to a fully converged mesh (every node lists every
# capability and routes every question of testnet/questions.toml right) and
# the memory of each node container once converged. Then the image size.
#
#   scripts/testnet-bench.sh            # 0, 10 and 20 extra nodes (5, 15, 25 in all)
#   scripts/testnet-bench.sh 0 40       # other sizes
#
# Partition, heal, kill and restart times come from scripts/testnet-test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

export TESTNET_PROJECT="atmosphere-bench-$$"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export TESTNET_HTTP_PORT="$(free_port)" TESTNET_P2P_PORT="$(free_port)"
trap 'scripts/testnet.sh down >/dev/null 2>&1 || true' EXIT

scripts/image.sh >/dev/null
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(0 10 20)

rows=()
for extra in "${sizes[@]}"; do
  scripts/testnet.sh down >/dev/null 2>&1 || true
  start=$(date +%s.%N)
  TESTNET_UP_WAIT=300 scripts/testnet.sh up "$extra" >/dev/null 2>&1 \
    || { echo "testnet-bench: $extra extra nodes did not converge" >&2; scripts/testnet.sh check >&2 || true; exit 1; }
  took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")
  # Memory of the node containers (not the echo backends), in MiB.
  mem=$(docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' \
      $(docker ps -q --filter "label=com.docker.compose.project=$TESTNET_PROJECT") \
    | grep -v -- '-llm_' | awk '{print $2}' | python3 -c '
import sys
units = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
vals = []
for v in sys.stdin.read().split():
    for u, f in units.items():
        if v.endswith(u):
            vals.append(float(v[: -len(u)]) * f)
vals.sort()
print(f"{vals[len(vals) // 2]:.0f} | {vals[-1]:.0f}")')
  nodes=$((5 + extra))
  rows+=("| $nodes | $took | $mem |")
  echo "testnet-bench: $nodes nodes converged in $took s" >&2
done
scripts/testnet.sh down >/dev/null 2>&1 || true

size=$(docker image inspect --format '{{.Size}}' "${ATMOSPHERE_IMAGE:-atmosphere:local}")
echo
echo "| nodes | up to converged (s) | node memory median (MiB) | max (MiB) |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "image ${ATMOSPHERE_IMAGE:-atmosphere:local}: $((size / 1024 / 1024)) MiB ($size bytes)"
