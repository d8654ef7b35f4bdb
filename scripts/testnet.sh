#!/usr/bin/env bash
# Drives the docker-compose testnet in testnet/.
#
#   scripts/testnet.sh up [N]         build the image (scripts/image.sh), start the testnet
#                                     (plus N `scale` nodes) and wait until it converges
#   scripts/testnet.sh check [SECS]   ask every node the questions in testnet/questions.toml
#                                     (retrying up to SECS seconds, default 0)
#   scripts/testnet.sh partition NODE cut NODE off the testnet network
#   scripts/testnet.sh heal           reconnect every node that was cut off
#   scripts/testnet.sh kill NODE      stop NODE at once (SIGKILL: no goodbye; for a
#                                     scaled service, its first running container)
#   scripts/testnet.sh restart NODE   start NODE's stopped containers (or restart it if it runs)
#   scripts/testnet.sh ps             containers and their health
#   scripts/testnet.sh logs [NODE]    logs of every service, or of one
#   scripts/testnet.sh down           stop and remove containers, network and volumes
#
# NODE is a service name: bootstrap, camelid, coder, wildlife, finance,
# vision, edge-gateway, research (or extra).
# Environment: TESTNET_PROJECT (compose project, default atmosphere-testnet),
# TESTNET_HTTP_PORT (camelid's API on the host, 8000), TESTNET_P2P_PORT
# (bootstrap's p2p port on the host, 11451), ATMOSPHERE_IMAGE (atmosphere:local),
# ATMOSPHERE_CACHE (model cache, ~/.cache/atmosphere).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT="${TESTNET_PROJECT:-atmosphere-testnet}"
# Compose (v1 and v2) names the network <project>_<network>.
NETWORK="${PROJECT}_mesh"
export ATMOSPHERE_IMAGE="${ATMOSPHERE_IMAGE:-atmosphere:local}"
project_slug="$(echo "$PROJECT" | tr -cd 'a-z0-9_-')"
[ "$project_slug" = "$PROJECT" ] || { echo "testnet: TESTNET_PROJECT may hold only a-z 0-9 _ -" >&2; exit 2; }

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  echo "testnet: neither 'docker compose' nor docker-compose is installed" >&2
  exit 1
fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f testnet/docker-compose.yml "$@"; }
# Every service, the `scale` profile's too (only `up` leaves them out unless asked).
compose_all() { compose --profile scale "$@"; }

die() { echo "testnet: $*" >&2; exit 1; }

# The containers of a service, running or not, in name order (a scaled one has several).
containers_of() {
  local ids
  ids="$(compose_all ps -q "$1" 2>/dev/null)"
  [ -n "$ids" ] || die "no container for service '$1' (is the testnet up? services: $(compose_all config --services | tr '\n' ' '))"
  # shellcheck disable=SC2086
  docker inspect -f '{{.Name}} {{.Id}}' $ids | sort | cut -d' ' -f2
}
running() { [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ]; }
# The first container of a service (the first running one for `running`).
container_of() {
  local id
  for id in $(containers_of "$1"); do
    if [ "${2:-}" != running ] || running "$id"; then
      echo "$id"
      return
    fi
  done
  die "no container of '$1' is running"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up)
    extra="${1:-0}"
    [[ "$extra" =~ ^[0-9]+$ ]] || die "up takes a number of extra nodes, not '$extra'"
    scripts/fetch-model.sh
    if [ "$ATMOSPHERE_IMAGE" = atmosphere:local ]; then
      scripts/image.sh # builds or refreshes it from this checkout; quick when current
    else
      docker image inspect "$ATMOSPHERE_IMAGE" >/dev/null 2>&1 || die "image $ATMOSPHERE_IMAGE not found"
    fi
    if [ "$extra" -gt 0 ]; then
      compose --profile scale up -d --scale extra="$extra"
    else
      compose up -d
    fi
    python3 scripts/testnet_check.py --project "$PROJECT" --wait "${TESTNET_UP_WAIT:-120}"
    ;;
  check)
    python3 scripts/testnet_check.py --project "$PROJECT" --wait "${1:-0}"
    ;;
  partition)
    [ $# -eq 1 ] || die "partition takes one service name"
    docker network disconnect "$NETWORK" "$(container_of "$1")"
    echo "testnet: $1 is cut off from $NETWORK"
    ;;
  heal)
    healed=0
    for id in $(compose_all ps -q); do
      if ! docker inspect -f '{{json .NetworkSettings.Networks}}' "$id" | grep -q "\"$NETWORK\""; then
        service="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")"
        # The service name stays its DNS name on the network.
        docker network connect --alias "$service" "$NETWORK" "$id"
        echo "testnet: $service is back on $NETWORK"
        healed=$((healed + 1))
      fi
    done
    [ "$healed" -gt 0 ] || echo "testnet: nothing was cut off"
    ;;
  kill)
    [ $# -eq 1 ] || die "kill takes one service name"
    id="$(container_of "$1" running)"
    docker kill --signal SIGKILL "$id" >/dev/null
    echo "testnet: $1 killed ($(docker inspect -f '{{.Name}}' "$id" | tr -d /))"
    ;;
  restart)
    [ $# -eq 1 ] || die "restart takes one service name"
    # Start what is stopped; restart the first if everything runs.
    started=0
    for id in $(containers_of "$1"); do
      if ! running "$id"; then
        docker start "$id" >/dev/null
        started=$((started + 1))
      fi
    done
    if [ "$started" -eq 0 ]; then
      docker restart "$(container_of "$1")" >/dev/null
      echo "testnet: $1 restarted"
    else
      echo "testnet: $1 started ($started container(s))"
    fi
    ;;
  ps)
    compose_all ps
    ;;
  logs)
    compose_all logs --no-color --timestamps "$@"
    ;;
  down)
    compose_all down -v --remove-orphans
    ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] || [ "$cmd" = help ] || { echo "testnet: unknown command '$cmd'" >&2; exit 2; }
    ;;
esac
