//! Picks the linker memory layout: `../../memory-x/memory-$KEEPSYNC_BOARD.x` (default
//! `mps2-an386`, the board QEMU emulates) becomes `memory.x`, which cortex-m-rt's `link.x`
//! includes.
//!
//! Emits `cfg(ks_ram_partitions)` for boards whose CHECKPOINT and DATA partitions are
//! RAM-backed code memory (MPS2 under QEMU): the self-test then uses the partitions named by
//! the linker script as its "flash". Other boards' images are link checks: they cannot write
//! their flash without a flash driver, so they emulate the partitions in static RAM.

use std::path::PathBuf;
use std::{env, fs};

const BOARDS: &[&str] = &["mps2-an386", "stm32f405", "nrf52840"];

fn main() {
    println!("cargo::rerun-if-env-changed=KEEPSYNC_BOARD");
    println!("cargo::rustc-check-cfg=cfg(ks_ram_partitions)");
    println!("cargo::rustc-check-cfg=cfg(ks_host_fixture)");

    let board = env::var("KEEPSYNC_BOARD").unwrap_or_else(|_| "mps2-an386".into());
    if !BOARDS.contains(&board.as_str()) {
        panic!("KEEPSYNC_BOARD={board:?} is not one of {BOARDS:?}");
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let layout = manifest.join("../../memory-x").join(format!("memory-{board}.x"));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::copy(&layout, out.join("memory.x"))
        .unwrap_or_else(|e| panic!("copy {} to OUT_DIR: {e}", layout.display()));
    println!("cargo::rerun-if-changed={}", layout.display());
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rustc-env=KEEPSYNC_BOARD={board}");
    // defmt's linker script (the interned format strings' section), next to cortex-m-rt's.
    if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo::rustc-link-arg=-Tdefmt.x");
    }
    if board == "mps2-an386" {
        println!("cargo::rustc-cfg=ks_ram_partitions");
    }

    // A container packed by the host CLI, unpacked on the device (see check-container.sh
    // --refresh-fixture). Optional: without it the self-test says it skipped that step.
    let fixture = manifest.join("fixtures/host-lz4-4k.ks");
    println!("cargo::rerun-if-changed={}", manifest.join("fixtures").display());
    if fixture.exists() {
        println!("cargo::rustc-cfg=ks_host_fixture");
    }
}
