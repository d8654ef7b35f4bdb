#!/usr/bin/env bash
# Builds the node image without any image registry:
#   1. the binaries (atmosphere, echo-backend, camera-tool, chaos; release build) and the ONNX Runtime
#      library from the model cache (scripts/fetch-model.sh),
#   2. a minimal root filesystem holding them, the shared libraries they load,
#      CA certificates and a non-root user, imported as `atmosphere-rootfs:local`,
#   3. the node image `atmosphere:local` from it (testnet/image.Dockerfile: user,
#      environment, health check, entry point).
# The embedding model itself is not in the image: containers mount the model
# cache read-only at /cache (see testnet/docker-compose.yml).
#
#   scripts/image.sh            # prints the image size at the end
#
# ATMOSPHERE_PROFILE picks the cargo profile the binaries are built with:
# `release` (the default) or `dev` (what scripts/test.sh uses, so that the
# testnet test runs the binaries the Rust suite has just built instead of
# compiling everything a second time). A dev build is made as the suite
# makes it, with the tests (`--tests`): the tests' dependencies turn on
# features of shared crates, and a build without them would compile those
# crates, and everything above them, again.
#
# When the image was built from the same binaries, runtime and image files it
# is kept as it is (a label holds the inputs' checksum), so calling this before
# every use is cheap and never leaves a stale image.
#
# Docker with a registry can use the multi-stage ./Dockerfile instead.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${ATMOSPHERE_IMAGE:-atmosphere:local}"
ROOTFS_IMAGE="atmosphere-rootfs:local"
UID_GID=10001
CACHE="${ATMOSPHERE_CACHE:-$HOME/.cache/atmosphere}"
TARGET="${CARGO_TARGET_DIR:-target}"

command -v docker >/dev/null || { echo "image: docker is not installed" >&2; exit 1; }
scripts/fetch-model.sh
PROFILE="${ATMOSPHERE_PROFILE:-release}"
case "$PROFILE" in
  release) BIN="$TARGET/release" BUILD=(--release) ;;
  dev) BIN="$TARGET/debug" BUILD=(--profile dev --tests) ;;
  *) echo "image: ATMOSPHERE_PROFILE must be release or dev, not $PROFILE" >&2; exit 1 ;;
esac
echo "image: building $PROFILE binaries" >&2
cargo build "${BUILD[@]}" --quiet --bin atmosphere --bin echo-backend --bin camera-tool --bin chaos

ORT_LIB="$(readlink -f "$CACHE/onnxruntime/libonnxruntime.so")"
[ -f "$ORT_LIB" ] || { echo "image: no ONNX Runtime at $CACHE/onnxruntime" >&2; exit 1; }

INPUTS="$(cat "$BIN/atmosphere" "$BIN/echo-backend" "$BIN/camera-tool" "$BIN/chaos" "$ORT_LIB" \
  testnet/image.Dockerfile scripts/image.sh | sha256sum | cut -d' ' -f1)"
size_line() {
  local size
  size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
  echo "image: $IMAGE is $((size / 1024 / 1024)) MiB ($size bytes)$1"
}
if [ "$(docker image inspect --format '{{index .Config.Labels "org.atmosphere.inputs"}}' "$IMAGE" 2>/dev/null)" = "$INPUTS" ]; then
  size_line ", up to date"
  exit 0
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT

install -d "$ROOT"/{usr/local/bin,usr/local/lib/onnxruntime,etc/ssl/certs,tmp,data,cache}
chmod 1777 "$ROOT/tmp"
for bin in atmosphere echo-backend camera-tool chaos; do
  install -m 0755 "$BIN/$bin" "$ROOT/usr/local/bin/$bin"
  strip "$ROOT/usr/local/bin/$bin" 2>/dev/null || true
done
install -m 0644 "$ORT_LIB" "$ROOT/usr/local/lib/onnxruntime/$(basename "$ORT_LIB")"
ln -s "$(basename "$ORT_LIB")" "$ROOT/usr/local/lib/onnxruntime/libonnxruntime.so"
for f in LICENSE ThirdPartyNotices.txt; do
  install -m 0644 "$CACHE/onnxruntime/$f" "$ROOT/usr/local/lib/onnxruntime/$f"
done

# Every shared library the binaries and the runtime load, at the same path
# (resolved through symlinks), plus the dynamic loader.
ldd "$BIN/atmosphere" "$BIN/echo-backend" "$BIN/camera-tool" "$BIN/chaos" "$ORT_LIB" \
  | awk '/=> \// { print $3 } /^\t\// { print $1 }' | sort -u \
  | while read -r lib; do
      install -D -m 0755 "$(readlink -f "$lib")" "$ROOT$lib"
    done

install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cat >"$ROOT/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
atmosphere:x:$UID_GID:$UID_GID:atmosphere:/data:/sbin/nologin
EOF
cat >"$ROOT/etc/group" <<EOF
root:x:0:
atmosphere:x:$UID_GID:
EOF
echo "hosts: files dns" >"$ROOT/etc/nsswitch.conf"
chown "$UID_GID:$UID_GID" "$ROOT/data"

echo "image: importing the root filesystem as $ROOTFS_IMAGE" >&2
tar -C "$ROOT" --numeric-owner -c . | docker import \
  --message "atmosphere root filesystem (scripts/image.sh)" \
  --change "LABEL org.atmosphere.inputs=$INPUTS" - "$ROOTFS_IMAGE" >/dev/null

echo "image: building $IMAGE" >&2
# Quiet unless it fails (the classic builder warns that it is deprecated).
if ! docker build --quiet -t "$IMAGE" -f testnet/image.Dockerfile \
  --build-arg ROOTFS="$ROOTFS_IMAGE" --build-arg UID_GID="$UID_GID" \
  --label "org.atmosphere.inputs=$INPUTS" testnet >"$ROOT.log" 2>&1; then
  cat "$ROOT.log" >&2
  rm -f "$ROOT.log"
  exit 1
fi
rm -f "$ROOT.log"
# The previous build's layers, now untagged, would pile up.
docker image prune --force --filter "label=org.atmosphere.inputs" >/dev/null 2>&1 || true
size_line ""
