//! Tauri's build step. The manifest is at the repository root, so point it
//! at the capabilities kept in src-tauri/.
fn main() {
    let attrs = tauri_build::Attributes::new().capabilities_path_pattern("./src-tauri/capabilities/**/*");
    if let Err(e) = tauri_build::try_build(attrs) {
        panic!("tauri build step failed: {e:#}");
    }
}
