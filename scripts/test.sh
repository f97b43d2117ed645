#!/usr/bin/env bash
# Set everything up, then run every test: unit, DSP, decoders, real model on
# real music, parity with the npm reference, bad input. Then clippy.
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/setup.sh"
cd "$REPO_ROOT"
log "running tests"
cargo build --release --locked --workspace --examples
cargo test --release --locked --workspace
log "clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
