#!/usr/bin/env bash
# End-to-end test of the real desktop app: build it, then drive it with
# tauri-driver + WebKitWebDriver under Xvfb with a temporary home (so a fresh
# data directory) while ONNX Runtime and the model come from the usual cache.
# Screenshots go to a temporary folder, so a test run leaves the checkout as
# it was; STEMROOM_SCREENSHOTS=docs/screenshots refreshes the README's.
source "$(dirname "$0")/common.sh"
[ -n "${STEMROOM_SKIP_BUILD:-}" ] || "$REPO_ROOT/scripts/build-app.sh"
"$REPO_ROOT/scripts/setup-app.sh"
cd "$REPO_ROOT"
tmp=$(mktemp -d)
# A D-Bus session bus (dbus-run-session below): songs are added as a second
# launch hands them over ("Open with"), the way the single-instance plugin works.
# A real-time audio device for the player: a PulseAudio null sink that ALSA's
# default device reaches through the pulse plugin (docs: environment.md).
mkdir -p "$tmp/run"; chmod 700 "$tmp/run"
stop_pulse() {
    [ -f "$tmp/run/pulse/pid" ] && kill "$(cat "$tmp/run/pulse/pid")" 2>/dev/null || true
    [ -n "${site_pid:-}" ] && kill "$site_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap stop_pulse EXIT
command -v pulseaudio >/dev/null || { echo "the end-to-end test needs pulseaudio (see scripts/install-system-deps.sh)" >&2; exit 1; }
XDG_RUNTIME_DIR="$tmp/run" HOME="$tmp/run" pulseaudio -n --daemonize=yes --exit-idle-time=-1 --use-pid-file=yes \
    --load="module-null-sink sink_name=nullsink" --load=module-native-protocol-unix 2>"$tmp/pulse.log" \
    || { log "PulseAudio did not start"; cat "$tmp/pulse.log" >&2; exit 1; }
for _ in $(seq 1 100); do [ -S "$tmp/run/pulse/native" ] && break; sleep 0.1; done
[ -S "$tmp/run/pulse/native" ] || { log "PulseAudio did not start"; cat "$tmp/pulse.log" >&2; exit 1; }
cp "$TESTDATA_DIR/mixture.wav" "$tmp/The Easton Ellises - Falcon 69.wav"
# A longer song (the preview four times, 24 s) to listen to while it
# separates, at 48 kHz: its stream is at the model's 44.1 kHz, its finished
# stems at 48 kHz, so a new player takes over at the end.
ffmpeg -loglevel error -y -stream_loop 3 -i "$TESTDATA_DIR/mixture.wav" -ar 48000 "$tmp/Falcon 69 (long).wav"
# A loopback web server for the link test: yt-dlp fetches a song from it.
mkdir -p "$tmp/site"; cp "$TESTDATA_DIR/mixture.wav" "$tmp/site/Falcon 69 (from a link).wav"
# A web image (a real JPEG) the window's CSP must refuse to show.
ffmpeg -loglevel error -y -f lavfi -i color=c=red:s=2x2 -frames:v 1 "$tmp/site/cover.jpg"
python3 -u -m http.server --bind 127.0.0.1 0 --directory "$tmp/site" > "$tmp/site.log" 2>"$tmp/site.err" &
site_pid=$!
for _ in $(seq 1 100); do grep -q "port" "$tmp/site.log" 2>/dev/null && break; sleep 0.1; done
site_port=$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$tmp/site.log" | head -n1)
[ -n "$site_port" ] || { log "the loopback web server did not start"; cat "$tmp/site.err" >&2; exit 1; }
log "end-to-end test of the app under Xvfb"
XDG_RUNTIME_DIR="$tmp/run" HOME="$tmp/home" XDG_DATA_HOME="$tmp/home/.local/share" STEMROOM_CACHE="$STEMROOM_CACHE" \
STEMROOM_APP="$RELEASE_DIR/stemroom-app" STEMROOM_E2E_INPUT="$tmp/The Easton Ellises - Falcon 69.wav" \
STEMROOM_E2E_LONG="$tmp/Falcon 69 (long).wav" \
TAURI_DRIVER="$STEMROOM_CACHE/tools/bin/tauri-driver" STEMROOM_E2E_SHOTS="${STEMROOM_SCREENSHOTS:-$tmp/shots}" \
STEMROOM_E2E_URL="http://127.0.0.1:$site_port/Falcon%2069%20%28from%20a%20link%29.wav" \
STEMROOM_E2E_DATA="$tmp/home/.local/share/app.stemroom.desktop" \
    dbus-run-session -- xvfb-run -a -s "-screen 0 1280x800x24" "$(command -v node)" ui/e2e/app.e2e.mjs
