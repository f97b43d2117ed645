#!/usr/bin/env bash
# Debian packages the build and tests need (idempotent): a C toolchain,
# cmake and pkg-config for crates that build C (LAME; libopus with cmake), curl/unzip for fetches,
# Python 3 + pip (ONNX Runtime and stempeg wheels), Node.js + npm (model
# package, reference implementation), ffmpeg (test data, and the optional decoder of formats the built-in ones
# do not read: the codec tests run with and without it), curl and jq (the
# README's `stemroom serve` lines run as tests).
source "$(dirname "$0")/common.sh"
need=()
for cmd_pkg in gcc:build-essential cmake:cmake pkg-config:pkg-config unzip:unzip curl:curl jq:jq ffmpeg:ffmpeg python3:python3 node:nodejs npm:npm; do
    cmd=${cmd_pkg%%:*}; pkg=${cmd_pkg#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# Virtual environments for the pinned yt-dlp (ensurepip lives in python3-venv).
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# Tauri 2 on Linux (WebKitGTK), ALSA for cpal, and the GUI/audio test tools:
# Xvfb, WebKitWebDriver, ImageMagick (screenshots), xdotool (a real pointer
# drag for the drag-out test), a PulseAudio null sink,
# redis-server (the broker tests start their own on a loopback port),
# libclang for bindgen (the signalsmith-stretch crate binds its C++ library),
# and a D-Bus session bus (dbus-run-session: the package test's second
# launch hands its file to the running app over it).
for pkg in libwebkit2gtk-4.1-dev libgtk-3-dev librsvg2-dev libayatana-appindicator3-dev \
           libssl-dev libxdo-dev libasound2-dev xvfb webkit2gtk-driver imagemagick xdotool \
           pulseaudio libasound2-plugins redis-server libclang-dev dbus-daemon; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "Rust (cargo) is required: https://rustup.rs" >&2
    exit 1
fi
