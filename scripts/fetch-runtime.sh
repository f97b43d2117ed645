#!/usr/bin/env bash
# Put libonnxruntime.so.1.31.1 (from the PyPI wheel onnxruntime==1.31.1) into
# $STEMROOM_CACHE/onnxruntime-1.31.1/, where stemroom looks for it. Idempotent.
source "$(dirname "$0")/common.sh"
lib="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
if [ -f "$lib" ]; then exit 0; fi
log "fetching ONNX Runtime $ORT_VERSION (PyPI wheel)"
wheel=$(ls "$DL_DIR"/onnxruntime-"$ORT_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: "onnxruntime==$ORT_VERSION" -d "$DL_DIR"
    wheel=$(ls "$DL_DIR"/onnxruntime-"$ORT_VERSION"-*.whl | head -n1)
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
unzip -q -o -j "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "onnxruntime/capi/libonnxruntime_providers_shared.so" -d "$tmp"
mkdir -p "$ORT_DIR"
mv "$tmp"/* "$ORT_DIR"/
log "ONNX Runtime in $ORT_DIR"
