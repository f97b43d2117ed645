#!/usr/bin/env bash
# Everything Stemroom needs on a fresh Debian machine, idempotently: system
# packages, ONNX Runtime, the model, test music and the reference, and a
# release build of the CLI.
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/install-system-deps.sh"
"$REPO_ROOT/scripts/fetch-runtime.sh"
"$REPO_ROOT/scripts/fetch-model.sh"
"$REPO_ROOT/scripts/fetch-testdata.sh"
"$REPO_ROOT/scripts/fetch-ytdlp.sh"
log "building stemroom (release)"
(cd "$REPO_ROOT" && cargo build --release --locked -p stemroom-cli)
# The fast preset's int8 model, made here from the verified htdemucs.onnx by
# its pinned recipe (models/derive/) and checked against its sha256.
"$RELEASE_DIR/stemroom" models --fetch htdemucs_int8 --model-dir "$REPO_ROOT/models" >/dev/null
