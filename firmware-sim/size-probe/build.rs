//! Puts the QEMU board's memory layout on the linker path (sizes do not depend on it).
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy("../../memory-x/memory-mps2-an386.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=../../memory-x/memory-mps2-an386.x");
}
