#!/usr/bin/env bash
# yt-dlp, pinned (PyPI yt-dlp==2026.10.26, the version crates/core/src/link.rs
# tests against), in its own virtual environment under the cache:
# $STEMROOM_CACHE/tools/yt-dlp/bin/yt-dlp, where Stemroom looks for it after
# an explicit setting and $STEMROOM_YTDLP. Idempotent.
source "$(dirname "$0")/common.sh"
version=2026.10.26
venv="$STEMROOM_CACHE/tools/yt-dlp"
if [ "$("$venv/bin/yt-dlp" --version 2>/dev/null)" != "$version" ]; then
    log "installing yt-dlp $version"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "yt-dlp==$version"
fi
