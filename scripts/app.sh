#!/usr/bin/env bash
# Set everything up (system packages, ONNX Runtime, model, npm packages),
# build the desktop app and launch it. Without a display (a server, CI) it
# runs under Xvfb and saves a screenshot to separated/app.png after 10 s.
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/build-app.sh"
app="$RELEASE_DIR/stemroom-app"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
    exec "$app" "$@"
fi
log "no display: running under Xvfb for 10 s"
mkdir -p "$REPO_ROOT/separated"
xvfb-run -a -s "-screen 0 1280x800x24" bash -c '"$0" & pid=$!; sleep 10; import -window root "$1"; kill $pid' \
    "$app" "$REPO_ROOT/separated/app.png"
log "screenshot: separated/app.png"
