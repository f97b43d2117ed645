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
