#!/usr/bin/env bash
# yt-dlp for links, pinned with its JavaScript runtime: the exact wheels of
# scripts/ytdlp-requirements.txt (yt-dlp 2026.10.26 with its `default` extra,
# the yt-dlp-ejs challenge solvers and deno), checked against their sha256,
# in a virtual environment under the cache: $STEMROOM_CACHE/tools/yt-dlp/bin/
# holds yt-dlp and deno, where Stemroom looks for them after an explicit
# setting and $STEMROOM_YTDLP. Idempotent (a stamp holds the requirements'
# hash).
source "$(dirname "$0")/common.sh"
req="$REPO_ROOT/scripts/ytdlp-requirements.txt"
venv="$STEMROOM_CACHE/tools/yt-dlp"
want=$(sha256sum "$req" | cut -d' ' -f1)
stamp="$venv/.stemroom-requirements.sha256"
# (Run, not only found: the environment's python is a link to the
# interpreter that made it, and one removed or upgraded since, by pyenv or
# a Debian release, leaves a yt-dlp that is there and does not start.)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$venv/bin/yt-dlp" --version >/dev/null 2>&1 \
    || ! "$venv/bin/deno" --version >/dev/null 2>&1; then
    log "installing yt-dlp with yt-dlp-ejs and deno (pinned, hash-checked)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$req"
    "$venv/bin/yt-dlp" --version >/dev/null
    "$venv/bin/deno" --version >/dev/null
    echo "$want" > "$stamp"
fi
