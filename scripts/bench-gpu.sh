#!/usr/bin/env bash
# GPU benchmark (issue 12's targets): a 4-minute song (the Falcon 69 preview
# looped to 243 s) separated to WAV stems, and printed beside each target:
#   - agreement: the preview's stems on the device against the CPU's (dB)
#   - cold: CLI start to done, one file (model load, cuDNN set-up, separation)
#   - warm: the second of two files in one process (the model already
#     loaded, as in the app) and the mean GPU utilisation while it separates
#   - --mp3: how much MP3 stems add to the cold run, and the encoding tail
#     (last segment to done) of both
#   - the network's share: seconds inside the network per segment
# Each row is printed as it is measured; a run that falls back to the CPU,
# fails or passes RUN_TIMEOUT stops the benchmark at once with the reason.
# Runs anywhere `stemroom` runs; utilisation needs nvidia-smi.
#
#   scripts/bench-gpu.sh                      this checkout (target/release/stemroom, after setup)
#   X=BIN A="FLAGS" MIX=WAV scripts/bench-gpu.sh    e.g. on the GPU test machine:
#                                             scripts/gpu-check.sh does it (../shared/design/gpu-check.md)
#   DEVICE=cpu scripts/bench-gpu.sh           the same figures on the CPU (a dry run of the script)
#   SONG_SECONDS=20                           a shorter song (a quick dry run)
#   AGREE=1                                   the agreement check on the CPU too (a dry run of it)
#   WORK=DIR                                  inputs, stems and event logs (default: a temporary folder)
#   OUT=DIR                                   where the table and a tarball of the event logs go
#                                             (two small files: what a GPU run brings back)
#   RUN_TIMEOUT=240                           seconds one stemroom run may take
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
X="${X:-$ROOT/target/release/stemroom}"
A="${A:-}"
DEVICE="${DEVICE:-cuda}"
MIX="${MIX:-${STEMROOM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stemroom}/testdata/mixture.wav}"
# (A folder made here has its songs and stems, about 1 GB, removed at the
# end; the logs stay in the tarball. One given is left as it is.)
made_work=
[ -n "${WORK:-}" ] || { WORK=$(mktemp -d); made_work=1; }
# (On every exit, an early one too.)
drop_songs() { [ -z "$made_work" ] || find "$WORK" -type f \( -name '*.wav' -o -name '*.mp3' \) -delete 2>/dev/null || true; }
trap drop_songs EXIT
OUT="${OUT:-$WORK}"
mkdir -p "$WORK" "$OUT"
[ -x "$X" ] || { echo "bench-gpu: no stemroom binary at $X" >&2; exit 3; }
[ -s "$MIX" ] || { echo "bench-gpu: no input at $MIX" >&2; exit 3; }
set +e
PYTHONUNBUFFERED=1 python3 - "$X" "$A" "$DEVICE" "$MIX" "$WORK" "${SONG_SECONDS:-240}" "${RUN_TIMEOUT:-240}" "${AGREE:-}" <<'PY' | tee "$OUT/bench-gpu.txt"
import json, math, os, shlex, shutil, statistics, subprocess, sys, threading, time, wave

x, extra, device, mix, work = sys.argv[1], shlex.split(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
song_seconds, run_timeout = float(sys.argv[6]), float(sys.argv[7])
agree = device != "cpu" or sys.argv[8] == "1"

# The song: the preview looped to at least SONG_SECONDS (PCM WAV, any rate/width).
song = os.path.join(work, "song4.wav")
with wave.open(mix) as w:
    params, frames = w.getparams(), w.readframes(w.getnframes())
loops = int(song_seconds * params.framerate // params.nframes) + 1
with wave.open(song, "wb") as w:
    w.setparams(params)
    w.writeframes(frames * loops)
song_b = os.path.join(work, "song4b.wav")
shutil.copy(song, song_b)
seconds = loops * params.nframes / params.framerate

class Util:
    """nvidia-smi's utilisation, sampled every 100 ms, timed as it is read."""
    def __init__(self):
        self.samples, self.proc = [], None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
            threading.Thread(target=self.read, daemon=True).start()
    def read(self):
        for line in self.proc.stdout:
            try:
                u, m = (float(v) for v in line.split(",")[:2])
                self.samples.append((time.time(), u, m))
            except ValueError:
                pass
    def mean(self, t0, t1):
        u = [s[1] for s in self.samples if t0 <= s[0] <= t1]
        return statistics.mean(u) if u else None
    def peak_memory(self, t0, t1):
        m = [s[2] for s in self.samples if t0 <= s[0] <= t1]
        return max(m) if m else None
    def stop(self):
        if self.proc:
            self.proc.terminate()

def run(name, args, on=None):
    """Run stemroom with --json; returns wall seconds, the timed events and the start time.
    Stops the benchmark (with stemroom's own error) when the run fails, passes
    RUN_TIMEOUT, or does not run on the device asked for."""
    on = on or device
    cmd = [x, "separate", *extra, "-d", on, "--json", "-o", os.path.join(work, name), *args]
    t0 = time.time()
    events = []
    err_path = os.path.join(work, name + ".stderr")
    with open(os.path.join(work, name + ".jsonl"), "w") as log, open(err_path, "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        killer = threading.Timer(run_timeout, p.kill)
        killer.start()
        try:
            for line in p.stdout:
                log.write(f"{time.time() - t0:.3f} {line}")
                try:
                    events.append((time.time(), json.loads(line)))
                except json.JSONDecodeError:
                    continue
                e = events[-1][1]
                ran = e.get("provider")
                if on != "cpu" and (e["event"] == "provider_changed" or (ran and ran != "cuda")):
                    p.kill()
                    sys.exit(f"{name}: asked for {on}, ran on {ran or 'the CPU'}: {json.dumps(e)}\n"
                             f"(stderr: {open(err_path).read()[-2000:]})")
            code = p.wait()
        finally:
            killer.cancel()
    if code != 0:
        said = [e.get("message", "") for _, e in events if e["event"] == "error"]
        why = "killed after RUN_TIMEOUT" if code < 0 else f"exit {code}"
        sys.exit(f"{name}: {' '.join(cmd)} failed ({why}): {' | '.join(said)}\n"
                 f"stderr: {open(err_path).read()[-3000:]}")
    return time.time() - t0, events, t0

def done_of(events, k=0):
    return [(t, e) for t, e in events if e["event"] == "done"][k]

def tail(events, k=0):
    """Seconds from the last segment of file k to its done (the stems' encoding after separation)."""
    t_done, _ = done_of(events, k)
    starts = [t for t, e in events if e["event"] == "started"]
    segs = [t for t, e in events if e["event"] == "segment" and starts[k] <= t <= t_done]
    return t_done - segs[-1] if segs else None

def read_wav(path):
    """16-bit PCM samples of a WAV stem."""
    import array
    with wave.open(path) as w:
        assert w.getsampwidth() == 2, f"{path}: {w.getsampwidth() * 8}-bit"
        a = array.array("h")
        a.frombytes(w.readframes(w.getnframes()))
    return a

def row(what, value, unit, target):
    shown = "n/a" if value is None else f"{value:.2f} {unit}"
    print(f"{what:<52} {shown:>12}  {target}", flush=True)

print(f"stemroom {device}: {seconds:.0f} s song, {os.cpu_count()} CPU threads, {x} {' '.join(extra)}")
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip())

# First, short: the preview on the device and on the CPU (also a smoke test).
if agree:
    _, evd, _ = run("agree-device", [mix])
    _, evc, _ = run("agree-cpu", [mix], on="cpu")
    worst = None
    for a, b in zip(done_of(evd)[1]["outputs"], done_of(evc)[1]["outputs"]):
        g, c = read_wav(a), read_wav(b)
        signal = sum(v * v for v in c)
        noise = sum((u - v) ** 2 for u, v in zip(g, c))
        db = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-9) / noise)
        row(f"agreement, {os.path.basename(a)} ({device} vs cpu)", db, "dB", "58-70 dB measured on an H200")
        worst = db if worst is None else min(worst, db)
    if worst is not None and worst < 30:
        sys.exit(f"the {device} stems differ from the CPU's ({worst:.1f} dB): stopping before the timings")

util = Util()
wall, ev, t0 = run("cold", [song])
_, done = done_of(ev)
provider = done["provider"]
row("cold: CLI start to done (WAV)", wall, "s", "<= 6 s on an H100/H200")
row("network per segment", done["network_seconds_per_segment"], "s", f"{done['segments']} segments")
row("cold: encoding tail (last segment to done)", tail(ev), "s", "")

wall2, ev2, _ = run("warm", [song, song_b])
starts = [t for t, e in ev2 if e["event"] == "started"]
t_end, second = done_of(ev2, 1)
t_start = starts[1]
row(f"warm: {seconds:.0f} s song, model loaded (in process)", second["seconds"], "s", "<= 3.0 s on an H100/H200")
row("warm: network share of the wall", second["network_seconds_per_segment"] * second["segments"] / second["seconds"] * 100, "%", "")
decoded = [t for t, e in ev2 if e["event"] == "decoded" and t >= t_start]
seg = [t for t, e in ev2 if e["event"] == "segment" and t_start <= t <= t_end]
if seg:
    # While it separates: from its mixture decoded to its last segment.
    sep_from = decoded[0] if decoded else t_start
    row("warm: mean GPU utilisation while separating", util.mean(sep_from, seg[-1]), "%", ">= 60 %")
    row("warm: peak GPU memory used", util.peak_memory(t_start, t_end), "MiB", "")

wall3, ev3, _ = run("mp3", ["--mp3", song])
row("--mp3: cold wall", wall3, "s", "")
row("--mp3 adds", wall3 - wall, "s", "<= 1.5 s")
row("--mp3: encoding tail (last segment to done)", tail(ev3), "s", "")
util.stop()
print(f"(ran on: {provider}; event logs in {work})")
PY
status=${PIPESTATUS[0]}
set -e
tar czf "$OUT/bench-gpu-logs.tgz" -C "$WORK" --exclude='*.wav' --exclude='*.mp3' . 2>/dev/null || true
exit "$status"
