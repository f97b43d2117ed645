//! Names people see on disk: stems, song folders, exports.

/// Make a name safe as one path component on every OS: no separators,
/// control or reserved characters, not `.`/`..`, at most 120 bytes.
pub fn safe_component(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_control() || "/\\:*?\"<>|".contains(c) { '_' } else { c }).collect();
    s = s.trim().trim_end_matches('.').to_string();
    while s.len() > 120 {
        s.pop();
    }
    if s.is_empty() || s == "." || s == ".." {
        s = "track".into();
    }
    s
}

/// `name` as a visible file or folder name on every OS: safe as one path
/// component (see [`safe_component`]) and without leading dots (no hidden
/// entries, never our `.stemroom-partial-*` or `.part` names); `fallback`
/// when nothing is left.
pub fn visible_name(name: &str, fallback: &str) -> String {
    let base = safe_component(name).trim_start_matches('.').to_string();
    if base.is_empty() {
        fallback.to_string()
    } else {
        base
    }
}
