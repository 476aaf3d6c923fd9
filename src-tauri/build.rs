//! Reads the root `tauri.conf.json` (paths in it are relative to the repository root) and
//! embeds `ui/dist`, so the binary is rebuilt when the UI is rebuilt.
fn main() {
    println!("cargo:rerun-if-changed=../tauri.conf.json");
    println!("cargo:rerun-if-changed=../ui/dist");
    println!("cargo:rerun-if-changed=../ui/dist/index.html");
    println!("cargo:rerun-if-changed=../ui/dist/assets");
    println!("cargo:rerun-if-changed=capabilities");
    if let Err(e) =
        tauri_build::try_build(tauri_build::Attributes::new().config_path("../tauri.conf.json"))
    {
        panic!("tauri build step failed: {e:#}");
    }
}
