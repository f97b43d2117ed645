//! Where Stemroom looks for things it does not ship inside the binary: the
//! per-user cache (`$STEMROOM_CACHE`, else `$XDG_CACHE_HOME/stemroom`, else
//! `~/.cache/stemroom`) and the directory of the running executable.

use std::path::{Path, PathBuf};

/// The per-user cache directory. Not created here.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STEMROOM_CACHE").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(dir).join("stemroom"));
    }
    std::env::var_os("HOME").filter(|s| !s.is_empty()).map(|home| PathBuf::from(home).join(".cache").join("stemroom"))
}

/// The per-user data directory for what Stemroom installs that is not a
/// cache (yt-dlp for links): `$XDG_DATA_HOME/stemroom`, else
/// `~/.local/share/stemroom`. Not created here.
pub fn data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(dir).join("stemroom"));
    }
    std::env::var_os("HOME")
        .filter(|s| !s.is_empty())
        .map(|home| PathBuf::from(home).join(".local").join("share").join("stemroom"))
}

/// The directory holding the running executable, if it can be determined.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok().and_then(|p| p.canonicalize().ok()).and_then(|p| p.parent().map(|d| d.to_path_buf()))
}

/// The installed package's library folder, `<prefix>/lib/stemroom` for an
/// executable in `<prefix>/bin` (the .deb: `/usr/bin/stemroom-app` and
/// `/usr/bin/stemroom` -> `/usr/lib/stemroom`, holding the ONNX Runtime
/// CPU library), when it exists.
pub fn package_lib_dir() -> Option<PathBuf> {
    let exe = exe_dir()?;
    if exe.file_name()? != "bin" {
        return None;
    }
    Some(exe.parent()?.join("lib").join("stemroom")).filter(|d| d.is_dir())
}

/// Where `name` (a bare program name) is on `PATH`: the first folder holding
/// a file of that name. A name with a folder in it is returned as it is.
pub fn find_on_path(name: &Path) -> Option<PathBuf> {
    if name.components().count() != 1 {
        return Some(name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Serde helpers that write paths as text with any bytes that are not
/// UTF-8 replaced by U+FFFD (`serialize_with = "…::lossy::one"`). Serde's
/// own refuses such a path and fails the whole value: a JSON line would be
/// lost, and `serde_json::json!` panics.
pub mod lossy {
    use std::path::{Path, PathBuf};

    use serde::Serializer;

    /// One path.
    ///
    /// # Errors
    /// The serializer's.
    pub fn one<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&path.to_string_lossy())
    }

    /// An optional path (`null` when none).
    ///
    /// # Errors
    /// The serializer's.
    pub fn option<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match path {
            Some(p) => s.serialize_some(&p.to_string_lossy()),
            None => s.serialize_none(),
        }
    }

    /// A list of paths.
    ///
    /// # Errors
    /// The serializer's.
    pub fn all<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
    }

    #[cfg(test)]
    mod tests {
        use std::os::unix::ffi::OsStrExt;

        #[test]
        fn a_path_that_is_not_utf8_is_written_with_a_replacement_character() {
            #[derive(serde::Serialize)]
            struct Line {
                #[serde(serialize_with = "super::one")]
                input: std::path::PathBuf,
                #[serde(serialize_with = "super::option")]
                maybe: Option<std::path::PathBuf>,
                #[serde(serialize_with = "super::all")]
                outputs: Vec<std::path::PathBuf>,
            }
            let odd = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/music/bad\xff.wav"));
            let line = Line { input: odd.clone(), maybe: Some(odd.clone()), outputs: vec![odd] };
            let text = serde_json::to_string(&line).expect("written");
            let want = "/music/bad\u{fffd}.wav";
            assert_eq!(text, format!(r#"{{"input":"{want}","maybe":"{want}","outputs":["{want}"]}}"#),);
        }
    }
}
