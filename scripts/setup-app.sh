#!/usr/bin/env bash
# What the desktop app and its tests need beyond setup.sh (idempotent): the
# npm packages (UI, Vite, Vitest, Tauri CLI, WebdriverIO) into the clone's
# node_modules (skipped while the lock file is the one they were installed
# from), and tauri-driver into the cache.
source "$(dirname "$0")/common.sh"
cd "$REPO_ROOT"
stamp=node_modules/.stemroom-lock.sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(sha256sum package-lock.json | cut -d' ' -f1)" ]; then
    log "installing npm packages"
    # `npm install` (not `npm ci`): the lock file pins every version, and npm ci
    # refuses lock files that omit optional per-platform packages of @tauri-apps/cli.
    # An older npm (Debian's 9.2 beside the pinned Node.js) writes the lock
    # anew, dropping fields it does not know: the committed lock is put
    # back (the clone stays clean), unless it was changed here on purpose.
    # (package.json changed here: the lock's update is meant.)
    lock_was_clean=
    git diff --quiet -- package-lock.json package.json 2>/dev/null && lock_was_clean=1
    npm install --no-audit --no-fund --loglevel=error
    if [ -n "$lock_was_clean" ] && ! git diff --quiet -- package-lock.json 2>/dev/null; then
        log "npm $(npm --version) rewrote package-lock.json: putting the committed one back"
        git checkout -- package-lock.json
    fi
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
