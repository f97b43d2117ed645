#!/usr/bin/env bash
# Set everything up, then run every test:
# - Rust: unit, DSP, decoders, queue persistence (restart, SIGKILL mid-update,
#   concurrent enqueue), worker with the real model (done, cancel), real model
#   on real music (SDR), parity with the npm reference, bad input, CLI;
# - UI: Vitest component tests against the mock backend;
# - the generated TypeScript bindings match the Rust commands, and every
#   command is granted to the window by name (scripts/check-permissions.sh);
# - end to end: the real app under Xvfb driven by tauri-driver;
# - the .deb: installed with apt, its CLI and app used from a first start
#   with an empty home (model and yt-dlp downloaded by them), removed;
# - clippy with -D warnings.
source "$(dirname "$0")/common.sh"
# apt installs the package after the build: whether root (or sudo) works is
# checked now, not half an hour in.
as_root true || { echo "this needs root or sudo (apt installs the package)" >&2; exit 1; }
"$REPO_ROOT/scripts/setup.sh"
if ! command -v pulseaudio >/dev/null 2>&1; then
    # Not installed over a desktop's PipeWire (install-system-deps.sh).
    echo "the playback and end-to-end tests start their own PulseAudio (a null sink), and it is not installed here: this machine's sound runs on PipeWire, which installing it would remove; run the tests in a container or on a machine without PipeWire" >&2
    exit 1
fi
"$REPO_ROOT/scripts/setup-app.sh"
cd "$REPO_ROOT"
log "Rust tests"
cargo build --release --locked --workspace --examples
cargo test --release --locked --workspace --exclude stemroom-app --exclude stemroom-playback
# The player's tests drive its real-time callback against its reader
# thread: one at a time, so that no other test's work starves the reader
# (a CI run on 2 cores heard a buffer of silence where one ran beside them).
cargo test --release --locked -p stemroom-playback -- --test-threads=1
log "UI tests (Vitest)"
npm test
log "building the app and its .deb"
npx tauri build --bundles deb -- --locked
# The app crate's own unit tests (after the build: it embeds the built UI).
cargo test --release --locked -p stemroom-app
log "checking the committed TypeScript bindings"
fresh=$(mktemp --suffix=.ts); trap 'rm -f "$fresh"' EXIT
"$RELEASE_DIR/stemroom-app" --export-bindings "$fresh"
diff -u ui/src/bindings.ts "$fresh" || { echo "ui/src/bindings.ts is stale: run target/release/stemroom-app --export-bindings ui/src/bindings.ts" >&2; exit 1; }
"$REPO_ROOT/scripts/check-permissions.sh"
STEMROOM_SKIP_BUILD=1 "$REPO_ROOT/scripts/e2e.sh"
STEMROOM_SKIP_BUILD=1 "$REPO_ROOT/scripts/test-package.sh"
log "clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
log "all tests passed"
