#!/usr/bin/env bash
# Build Stemroom's .deb and install it with apt (the app, the `stemroom` CLI,
# ONNX Runtime; the model is downloaded by the app on first start). At a
# desktop (a display and a terminal, not CI) it then starts the installed
# app. Otherwise (a server, CI, a display alone such as xvfb-run's) it
# runs the real job on the installed package as a new user would: the CLI
# downloads the model and separates the Falcon 69 song, and the app goes
# through its welcome screen to a finished separation under Xvfb, with a
# screenshot of each screen in separated/screenshots/ (the package stays
# installed).
source "$(dirname "$0")/common.sh"
# apt installs the package after the build: whether root (or sudo) works is
# checked now, not half an hour in.
as_root true || { echo "this needs root or sudo (apt installs the package)" >&2; exit 1; }
"$REPO_ROOT/scripts/setup.sh"
"$REPO_ROOT/scripts/setup-app.sh"
cd "$REPO_ROOT"
log "building the .deb"
npx tauri build --bundles deb -- --locked
deb=$(ls -t "$RELEASE_DIR"/bundle/deb/Stemroom_*_amd64.deb 2>/dev/null | head -n1 || true)
[ -n "$deb" ] || { echo "the build made no .deb in $RELEASE_DIR/bundle/deb" >&2; exit 1; }
log "installing $deb"
# --reinstall: the same version already installed (an earlier run) is
# replaced by this build, not kept.
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall --no-remove "$deb" >/dev/null
log "installed: /usr/bin/stemroom-app (Stemroom in the applications menu) and /usr/bin/stemroom"
# A person at a desktop (a display and a terminal, not CI): the app opens.
# A display alone (xvfb-run, ssh -X, a CI runner's) runs the job below.
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -t 0 ] && [ -t 1 ] && [ -z "${CI:-}" ]; then
    exec /usr/bin/stemroom-app
fi
log "not at a desktop: a first start of the installed package, under Xvfb"
mkdir -p "$REPO_ROOT/separated/screenshots"
STEMROOM_SKIP_BUILD=1 STEMROOM_KEEP_INSTALLED=1 STEMROOM_PACKAGE_SHOTS="$REPO_ROOT/separated/screenshots" \
    "$REPO_ROOT/scripts/test-package.sh"
log "screenshots of each screen: separated/screenshots/"
