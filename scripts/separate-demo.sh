#!/usr/bin/env bash
# Set everything up and separate the real "Falcon 69" mixture into separated/htdemucs/ (the demucs layout).
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/setup.sh"
cd "$REPO_ROOT"
cp "$TESTDATA_DIR/mixture.wav" "$TESTDATA_DIR/Falcon 69.wav"
"$RELEASE_DIR/stemroom" separate -o separated "$TESTDATA_DIR/Falcon 69.wav"
ls -l "separated/htdemucs/Falcon 69"
