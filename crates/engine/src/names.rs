//! Names people see on disk: stems, song folders, exports.

/// Make a name safe as one path component on every OS: no separators,
/// control or reserved characters, not `.`/`..`, not a name Windows keeps
/// for a device (`CON`, `NUL`, `COM1` …, with or without an extension: a
/// `_` is added after the device name), at most 120 bytes.
pub fn safe_component(name: &str) -> String {
    let mut s = cut_to(without_reserved(name).trim(), 120);
    if s.is_empty() || s == "." || s == ".." {
        s = "track".into();
    }
    let device_len = s.find('.').unwrap_or(s.len());
    if is_windows_device(s[..device_len].trim_end()) {
        s.insert(device_len, '_');
        s = cut_to(&s, 120);
    }
    s
}

/// Whether `stem` (a name before its first dot) names a device on Windows,
/// which no file there may be called, whatever its extension: `CON`, `PRN`,
/// `AUX`, `NUL`, `COM1`-`COM9`, `LPT1`-`LPT9` (and their superscript-digit
/// forms), in any case (Microsoft's "Naming Files, Paths, and Namespaces").
fn is_windows_device(stem: &str) -> bool {
    let upper = stem.to_ascii_uppercase();
    if matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL") {
        return true;
    }
    // By bytes only where they are whole characters (`get`, never a panic).
    let (Some(head), Some(digit)) = (upper.get(..3), upper.get(3..)) else { return false };
    matches!(head, "COM" | "LPT")
        && matches!(digit, "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³")
}

/// `name` with path separators, control characters and the characters
/// Windows reserves (`\ : * ? " < > |`) as `_`; nothing else changed (not
/// trimmed, not cut).
pub fn without_reserved(name: &str) -> String {
    name.chars().map(|c| if c.is_control() || "/\\:*?\"<>|".contains(c) { '_' } else { c }).collect()
}

/// `name` cut to at most `max_bytes` on a character boundary, without a
/// trailing space or dot (a cut can end in one: trouble on Windows and
/// network shares).
pub fn cut_to(name: &str, max_bytes: usize) -> String {
    let mut s = name.to_string();
    while s.len() > max_bytes {
        s.pop();
    }
    s.trim_end_matches(|c: char| c == '.' || c.is_whitespace()).to_string()
}

/// `name` as a visible file or folder name on every OS: safe as one path
/// component (see [`safe_component`]) and without leading dots (no hidden
/// entries, never our `.stemroom-partial-*` or `.part` names); `fallback`
/// when nothing is left.
pub fn visible_name(name: &str, fallback: &str) -> String {
    // The dots go first: `.CON` must meet the device-name check as `CON`;
    // a name of dots and spaces alone is no name (not `track`).
    let name = name.trim_start_matches('.');
    if name.trim_matches(|c: char| c == '.' || c.is_whitespace()).is_empty() {
        return fallback.to_string();
    }
    let base = safe_component(name).trim_start_matches('.').to_string();
    if base.is_empty() {
        fallback.to_string()
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_never_end_in_a_space_or_dot() {
        assert_eq!(safe_component("a/b:c"), "a_b_c");
        assert_eq!(safe_component(".."), "track");
        let long = format!("{} x", "word ".repeat(30));
        let cut = safe_component(&long);
        assert!(cut.len() <= 120 && !cut.ends_with(' ') && !cut.ends_with('.'), "{cut:?}");
        let dots = format!("{}. . .tail", "a".repeat(117));
        let cut = safe_component(&dots);
        assert!(!cut.ends_with(' ') && !cut.ends_with('.'), "{cut:?}");
        assert_eq!(visible_name("...hidden", "x"), "hidden");
        // A device name behind dots is one once they go.
        assert_eq!(visible_name(".CON", "x"), "CON_");
        assert_eq!(visible_name("..nul.flac", "x"), "nul_.flac");
        assert_eq!(visible_name(". .", "x"), "x");
        // Windows' device names, with or without an extension.
        assert_eq!(safe_component("CON"), "CON_");
        assert_eq!(safe_component("nul.flac"), "nul_.flac");
        assert_eq!(safe_component("Com1.tar.gz"), "Com1_.tar.gz");
        assert_eq!(safe_component("LPT²"), "LPT²_");
        let long = safe_component(&format!("CON.{}", "x".repeat(116)));
        assert!(long.starts_with("CON_.") && long.len() == 120, "{long}");
        for fine in ["CONCERT", "console.mp3", "COM10", "LPT0", "aux-mix", "PRNT", "éé", "日本", "a"] {
            assert_eq!(safe_component(fine), fine);
        }
    }
}
