#!/usr/bin/env bash
# Benchmark of `stemroom serve` on this machine:
# - requests/s of GET /status/{id} (32 keep-alive connections, 5 s), with
#   the server idle and while it separates a song;
# - the overhead of synchronous POST /separate over the CLI on the same
#   60-second input (the Falcon 69 preview looped 10 times), same options
#   (--shifts 1, 16-bit WAV), alternating the two, ROUNDS times.
#
#   scripts/bench-serve.sh [ROUNDS]      (default 2)
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/setup.sh" >&2
rounds="${1:-2}"
cd "$REPO_ROOT"
cargo build --release --locked -p stemroom-cli -p stemroom-server --examples --bins >&2
work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mix60="$work/mix60.wav"
ffmpeg -loglevel error -y -stream_loop 9 -i "$TESTDATA_DIR/mixture.wav" -c:a pcm_s16le "$mix60"

"$RELEASE_DIR/stemroom" serve --listen 127.0.0.1:0 --data-dir "$work/data" --jobs-per-hour 1000 \
    > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^Stemroom server listening on http:\/\///p' "$work/server.out")
[ -n "$addr" ] || { cat "$work/server.err" >&2; echo "the server did not start" >&2; exit 1; }
token=$(cat "$work/data/server-token")
auth="Authorization: Bearer $token"

# Job $1's status line, once it says $2 (a grep pattern) or has ended;
# gives up (with the server's log) when the server is gone or after 30
# minutes, instead of polling for ever.
wait_for() {  # $1 job id, $2 pattern
    local deadline=$((SECONDS + 1800)) st
    while :; do
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err" >&2; echo "the server stopped" >&2; exit 1; }
        st=$(curl -fsS -H "$auth" "http://$addr/status/$1" || true)
        grep -q "$2" <<<"$st" && return 0
        grep -q '"status":"\(completed\|failed\|cancelled\)"' <<<"$st" && { echo "job $1 ended first: $st" >&2; exit 1; }
        [ "$SECONDS" -lt "$deadline" ] || { echo "job $1: no \"$2\" in 30 minutes: $st" >&2; exit 1; }
        sleep 0.2
    done
}
wait_done() { wait_for "$1" '"status":"completed"'; }

log "GET /status/{id} requests/s"
job=$(curl -fsS -H "$auth" -F "file=@$TESTDATA_DIR/mixture.wav" -F shifts=0 "http://$addr/upload" | jq -r .job_id)
wait_done "$job"
idle=$("$RELEASE_DIR/examples/bench_requests" "$addr" "$token" "/status/$job" 5 32)
busy_job=$(curl -fsS -H "$auth" -F "file=@$mix60" -F shifts=0 "http://$addr/upload" | jq -r .job_id)
wait_for "$busy_job" '"stage":"separating"'
busy=$("$RELEASE_DIR/examples/bench_requests" "$addr" "$token" "/status/$busy_job" 5 32)
wait_done "$busy_job"

log "POST /separate vs the CLI on a 60 s input ($rounds rounds)"
results="$work/results.tsv"; : > "$results"
for r in $(seq "$rounds"); do
    t0=$(date +%s.%N)
    "$RELEASE_DIR/stemroom" separate --shifts 1 -o "$work/cli-$r" "$mix60" > /dev/null 2>&1
    t1=$(date +%s.%N)
    curl -fsS -H "$auth" -F "audio_file=@$mix60" -F shifts=1 -o "$work/sync-$r.zip" "http://$addr/separate"
    t2=$(date +%s.%N)
    unzip -tq "$work/sync-$r.zip" > /dev/null
    printf '%s\t%s\t%s\t%s\n' "$r" "$t0" "$t1" "$t2" >> "$results"
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "idle server:       $idle"
echo "while separating:  $busy"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
cli = [float(r[2]) - float(r[1]) for r in rows]; srv = [float(r[3]) - float(r[2]) for r in rows]
for r, c, s in zip(rows, cli, srv):
    print(f"round {r[0]}: CLI {c:.1f} s, POST /separate {s:.1f} s (upload, queue, separation, zip download)")
mc, ms = statistics.median(cli), statistics.median(srv)
print(f"median: CLI {mc:.1f} s, /separate {ms:.1f} s, overhead {ms - mc:+.1f} s ({100 * (ms - mc) / mc:+.1f} %)")
PY
