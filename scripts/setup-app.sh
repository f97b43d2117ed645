#!/usr/bin/env bash
# What the desktop app and its tests need beyond setup.sh (idempotent): the
# npm packages (UI, Vite, Vitest, Tauri CLI, WebdriverIO) and tauri-driver,
# installed into the cache so repeated runs skip it.
source "$(dirname "$0")/common.sh"
cd "$REPO_ROOT"
stamp=node_modules/.stemroom-lock.sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(sha256sum package-lock.json | cut -d' ' -f1)" ]; then
    log "installing npm packages"
    # `npm install` (not `npm ci`): the lock file pins every version, and npm ci
    # refuses lock files that omit optional per-platform packages of @tauri-apps/cli.
    npm install --no-audit --no-fund --loglevel=error
    # The lock as npm left it (an older npm may write it anew): the next
    # run compares against that, not against what it replaced.
    sha256sum package-lock.json | cut -d' ' -f1 > "$stamp"
fi
TOOLS_DIR="$STEMROOM_CACHE/tools"
# Pinned (a newer 2.x may need a newer Rust); the version cargo recorded
# says whether the one there is it.
TAURI_DRIVER_VERSION=2.1.0
if ! grep -q "\"tauri-driver $TAURI_DRIVER_VERSION " "$TOOLS_DIR/.crates.toml" 2>/dev/null || [ ! -x "$TOOLS_DIR/bin/tauri-driver" ]; then
    log "installing tauri-driver $TAURI_DRIVER_VERSION"
    cargo install tauri-driver --version "=$TAURI_DRIVER_VERSION" --locked --root "$TOOLS_DIR" --quiet --force
fi
