#!/usr/bin/env bash
# The app's commands are granted by name (Tauri's ACL): the list in
# src-tauri/build.rs (COMMANDS), the main window's permission set
# (src-tauri/permissions/main-window.toml) and the commands the generated
# bindings call (ui/src/bindings.ts) must be the same set, or a command is
# either refused at run time or granted without being used.
set -euo pipefail
cd "$(dirname "$0")/.."
from_build=$(sed -n '/^const COMMANDS/,/^];/p' src-tauri/build.rs | grep -oE '"[a-z_]+"' | tr -d '"' | sort)
from_set=$(grep -oE '"allow-[a-z-]+"' src-tauri/permissions/main-window.toml | sed 's/"allow-//; s/"//; s/-/_/g' | sort)
from_ui=$(grep -oE '__TAURI_INVOKE(<[^>]*>)?\("[a-z_]+"' ui/src/bindings.ts | grep -oE '"[a-z_]+"' | tr -d '"' | sort -u)
status=0
for pair in "build.rs COMMANDS:from_build" "permissions/main-window.toml:from_set"; do
    name=${pair%%:*}; var=${pair##*:}
    if ! diff <(echo "${!var}") <(echo "$from_ui") > /dev/null; then
        echo "$name and ui/src/bindings.ts disagree (< only in $name, > only in the bindings):" >&2
        diff <(echo "${!var}") <(echo "$from_ui") >&2 || true
        status=1
    fi
done
grep -q '"main-window"' src-tauri/capabilities/default.json || { echo "the main window's capability does not grant main-window" >&2; status=1; }
[ "$status" = 0 ] && echo "permissions: $(echo "$from_ui" | wc -l) commands, each granted by name"
exit "$status"
