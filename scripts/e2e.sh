#!/usr/bin/env bash
# End-to-end test of the real desktop app: build it, then drive it with
# tauri-driver + WebKitWebDriver under Xvfb with a temporary home (so a fresh
# data directory) while ONNX Runtime and the model come from the usual cache.
# Screenshots land in docs/screenshots/ (the README shows them).
source "$(dirname "$0")/common.sh"
[ -n "${STEMROOM_SKIP_BUILD:-}" ] || "$REPO_ROOT/scripts/build-app.sh"
"$REPO_ROOT/scripts/setup-app.sh"
cd "$REPO_ROOT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp "$TESTDATA_DIR/mixture.wav" "$tmp/The Easton Ellises - Falcon 69.wav"
log "end-to-end test of the app under Xvfb"
HOME="$tmp/home" XDG_DATA_HOME="$tmp/home/.local/share" STEMROOM_CACHE="$STEMROOM_CACHE" \
STEMROOM_APP="$RELEASE_DIR/stemroom-app" STEMROOM_E2E_INPUT="$tmp/The Easton Ellises - Falcon 69.wav" \
TAURI_DRIVER="$STEMROOM_CACHE/tools/bin/tauri-driver" STEMROOM_E2E_SHOTS="$REPO_ROOT/docs/screenshots" \
    xvfb-run -a -s "-screen 0 1280x800x24" node ui/e2e/app.e2e.mjs
