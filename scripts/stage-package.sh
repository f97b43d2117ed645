#!/usr/bin/env bash
# Tauri's beforeBundleCommand (tauri.conf.json): what the .deb carries besides
# the app, staged in target/package/ where bundle.linux.deb.files names it:
# the `stemroom` CLI (release build) and the ONNX Runtime CPU libraries from
# the pinned PyPI wheel, installed by the CLI itself (`stemroom runtime
# fetch`, which checks the wheel's sha256). The package puts them in
# /usr/bin/stemroom and /usr/lib/stemroom/, where both binaries look
# (stemroom_engine::paths::package_lib_dir): no environment variables.
# The binaries go in without their debug information (Debian's practice;
# the release profile keeps line tables for backtraces in development):
# the CLI as a stripped copy, the app stripped in place (the bundler takes
# it from target/release; cargo does not rebuild a binary newer than its
# sources), about 200 MB less in all.
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/fetch-runtime.sh"
log "building the stemroom CLI for the package"
(cd "$REPO_ROOT" && cargo build --release --locked -p stemroom-cli)
stage="$REPO_ROOT/target/package"
rm -rf "$stage"; mkdir -p "$stage"
# Installed from the wheel setup downloaded, verified against the pin.
STEMROOM_CACHE="$stage/cache" "$RELEASE_DIR/stemroom" runtime fetch --from "$DL_DIR" >&2
for lib in libonnxruntime.so.1.31.1 libonnxruntime_providers_shared.so; do
    install -m 0644 "$stage/cache/onnxruntime-1.31.1/$lib" "$stage/$lib"
done
rm -rf "$stage/cache"
install -m 0755 "$RELEASE_DIR/stemroom" "$stage/stemroom"
strip "$stage/stemroom"
strip --strip-debug "$RELEASE_DIR/stemroom-app"
