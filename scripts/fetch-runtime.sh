#!/usr/bin/env bash
# Put ONNX Runtime 1.31.1 where stemroom looks for it. Idempotent.
#
#   scripts/fetch-runtime.sh         the CPU build into $STEMROOM_CACHE/onnxruntime-1.31.1/
#                                    (libonnxruntime.so.1.31.1 from the PyPI wheel onnxruntime==1.31.1)
#   scripts/fetch-runtime.sh --gpu   also GPU support into $STEMROOM_CACHE/onnxruntime-gpu-1.31.1/:
#                                    builds the CLI and runs `stemroom runtime fetch --gpu` (the GPU
#                                    build with CUDA 13 and cuDNN 9 from pinned, sha256-checked
#                                    PyPI wheels; 1.6 GB to download). Extra arguments (--from DIR,
#                                    --force) are passed on.
source "$(dirname "$0")/common.sh"
lib="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
# The CPython 3.11 wheel whatever this machine's Python: the one whose size
# and sha256 `stemroom runtime fetch` pins (install.rs, cpu_wheels); kept in
# the download folder (the CLI's tests install from it).
# Its sha256 as install.rs pins it: a wheel cut short (an interrupted run)
# or changed is fetched again.
wheel_sha256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
wheel=$(cached_with_sha256 "$(ls "$DL_DIR"/onnxruntime-"$ORT_VERSION"-cp311-*.whl 2>/dev/null | head -n1 || true)" "$wheel_sha256")
if [ -z "$wheel" ]; then
    log "fetching ONNX Runtime $ORT_VERSION (PyPI wheel)"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
        --platform manylinux_2_28_x86_64 "onnxruntime==$ORT_VERSION" -d "$DL_DIR"
    wheel=$(ls "$DL_DIR"/onnxruntime-"$ORT_VERSION"-cp311-*.whl | head -n1)
    if [ "$(sha256_of "$wheel")" != "$wheel_sha256" ]; then
        echo "$(basename "$wheel") does not match its pinned sha256 $wheel_sha256" >&2
        rm -f "$wheel"
        exit 1
    fi
fi
# Each library at the size the wheel holds (a copy cut short by a kill or a
# full disk is unpacked again, not loaded).
unpacked_ok() {
    local name=$1 want
    want=$(unzip -Zl "$wheel" "onnxruntime/capi/$name" 2>/dev/null | awk 'NR==1 {print $4}')
    [ -n "$want" ] && [ -f "$ORT_DIR/$name" ] && [ "$(stat -c %s "$ORT_DIR/$name")" = "$want" ]
}
if ! unpacked_ok "libonnxruntime.so.$ORT_VERSION" || ! unpacked_ok libonnxruntime_providers_shared.so; then
    mkdir -p "$ORT_DIR"
    # Unpacked beside the install folder (one file system), each file then
    # renamed into place whole.
    tmp=$(mktemp -d "$ORT_DIR/.unpack.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
    unzip -q -o -j "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "onnxruntime/capi/libonnxruntime_providers_shared.so" -d "$tmp"
    for f in "$tmp"/*; do
        mv -f "$f" "$ORT_DIR/"
    done
    log "ONNX Runtime in $ORT_DIR"
fi
if [ "${1:-}" = "--gpu" ]; then
    shift
    (cd "$REPO_ROOT" && cargo build --release --locked -p stemroom-cli)
    "$RELEASE_DIR/stemroom" runtime fetch --gpu "$@"
fi
