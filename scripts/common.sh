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
# Messages carry the seconds since the outermost script started (a slow
# step shows in CI's log).
: "${STEMROOM_T0:=$(date +%s)}"
export STEMROOM_T0
log() { printf '\033[1m[stemroom %ss]\033[0m %s\n' "$(($(date +%s) - STEMROOM_T0))" "$*" >&2; }
# Run as root or through sudo.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Where cargo puts binaries (honours CARGO_TARGET_DIR).
RELEASE_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"
