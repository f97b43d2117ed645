#!/usr/bin/env bash
# Build the desktop app (release, UI bundled) into target/release/stemroom-app.
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/setup.sh"
"$REPO_ROOT/scripts/setup-app.sh"
cd "$REPO_ROOT"
log "building the desktop app"
npx tauri build --no-bundle -- --locked
