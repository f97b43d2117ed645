#!/usr/bin/env bash
# GPU benchmark (issue 12's targets): a 4-minute song (the Falcon 69 preview
# looped to 243 s) separated to WAV stems, and printed beside each target:
#   - cold: CLI start to done, one file (model load, cuDNN set-up, separation)
#   - warm: the second of two files in one process (the model already
#     loaded, as in the app) and the mean GPU utilisation during it
#   - --mp3: how much MP3 stems add to the cold run
#   - the network's share: seconds inside the network per segment
# Runs anywhere `stemroom` runs; utilisation needs nvidia-smi.
#
#   scripts/bench-gpu.sh                      this checkout (target/release/stemroom, after setup)
#   X=BIN A="FLAGS" MIX=WAV scripts/bench-gpu.sh    e.g. on the GPU test machine after
#                                             `. .gpu2/unpack.sh` (see ../shared/design/gpu-check.md):
#                                             MIX=.gpu2/mixture.wav
#   DEVICE=cpu scripts/bench-gpu.sh           the same figures on the CPU (a dry run of the script)
#   OUT=DIR                                   keep the event logs there (default: a temporary folder)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
X="${X:-$ROOT/target/release/stemroom}"
A="${A:-}"
DEVICE="${DEVICE:-cuda}"
MIX="${MIX:-${STEMROOM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stemroom}/testdata/mixture.wav}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
exec python3 - "$X" "$A" "$DEVICE" "$MIX" "$OUT" <<'PY'
import json, os, shlex, shutil, statistics, subprocess, sys, threading, time, wave

x, extra, device, mix, out = sys.argv[1], shlex.split(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

# A 4-minute input: the preview looped (PCM WAV, any rate/width).
song = os.path.join(out, "song4.wav")
with wave.open(mix) as w:
    params, frames = w.getparams(), w.readframes(w.getnframes())
loops = int(240 * params.framerate // params.nframes) + 1
with wave.open(song, "wb") as w:
    w.setparams(params)
    w.writeframes(frames * loops)
song_b = os.path.join(out, "song4b.wav")
shutil.copy(song, song_b)
seconds = loops * params.nframes / params.framerate

class Util:
    """nvidia-smi's utilisation, sampled every 100 ms with wall-clock times."""
    def __init__(self):
        self.samples, self.proc = [], None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, text=True)
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

def run(name, args):
    """Run stemroom with --json; returns wall seconds and the timed events."""
    cmd = [x, "separate", *extra, "-d", device, "--json", "-o", os.path.join(out, name), *args]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    with open(os.path.join(out, name + ".jsonl"), "w") as log:
        for line in p.stdout:
            log.write(f"{time.time() - t0:.3f} {line}")
            try:
                events.append((time.time(), json.loads(line)))
            except json.JSONDecodeError:
                pass
    err = p.stderr.read()
    if p.wait() != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    return time.time() - t0, events, t0

util = Util()
rows = []
def row(what, value, unit, target):
    rows.append((what, "n/a" if value is None else f"{value:.2f} {unit}", target))

wall, ev, t0 = run("cold", [song])
done = [e for _, e in ev if e["event"] == "done"][0]
provider = done["provider"]
row("cold: CLI start to done (WAV)", wall, "s", "<= 6 s on an H100/H200")
row("network per segment", done["network_seconds_per_segment"], "s", f"{done['segments']} segments")

wall2, ev2, _ = run("warm", [song, song_b])
starts = [t for t, e in ev2 if e["event"] == "started"]
dones = [(t, e) for t, e in ev2 if e["event"] == "done"]
t_start, (t_end, second) = starts[1], dones[1]
row("warm: 4-min song, model loaded (in process)", second["seconds"], "s", "<= 3.0 s on an H100/H200")
row("warm: network share of the wall", second["network_seconds_per_segment"] * second["segments"] / second["seconds"] * 100, "%", "")
seg = [t for t, e in ev2 if e["event"] == "segment" and t >= t_start]
if len(seg) > 1:
    mean_util = util.mean(seg[0], t_end)
    row("warm: mean GPU utilisation (first segment to done)", mean_util, "%", ">= 60 %")
    row("warm: peak GPU memory used", util.peak_memory(t_start, t_end), "MiB", "")

wall3, ev3, _ = run("mp3", ["--mp3", song])
row("--mp3: cold wall", wall3, "s", "")
row("--mp3 adds", wall3 - wall, "s", "<= 1.5 s")
util.stop()

print(f"\nstemroom on {device} (ran on: {provider}), {seconds:.0f} s input, {os.cpu_count()} CPU threads")
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip())
w = max(len(r[0]) for r in rows)
for what, value, target in rows:
    print(f"{what:<{w}}  {value:>12}  {target}")
print(f"(event logs in {out})")
PY
