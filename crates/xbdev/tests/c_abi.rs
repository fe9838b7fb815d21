//! Builds tests/c/abi_test.c against include/xbdev.h and the cdylib, and runs it.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_program_uses_the_abi() {
    // target/<profile>/deps/c_abi-xxxx -> target/<profile>/libxbdev.so
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    // `cargo build` puts the cdylib in the profile directory; `cargo test` alone may leave it
    // only in deps/. Take the newer: the other may be left from an older build.
    let lib_dir = [profile_dir.clone(), profile_dir.join("deps")]
        .into_iter()
        .filter_map(|d| Some((std::fs::metadata(d.join("libxbdev.so")).ok()?.modified().ok()?, d)))
        .max_by_key(|(mtime, _)| *mtime)
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("cdylib libxbdev.so not built under {}", profile_dir.display()));
    let profile_dir = lib_dir;
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let bin = out.path().join("abi_test");
    let cc = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/c/abi_test.c"))
        .arg("-o")
        .arg(&bin)
        .arg(format!("-L{}", profile_dir.display()))
        .arg("-lxbdev")
        .arg(format!("-Wl,-rpath,{}", profile_dir.display()))
        .output()
        .unwrap();
    assert!(cc.status.success(), "cc failed: {}", String::from_utf8_lossy(&cc.stderr));
    // cargo's LD_LIBRARY_PATH would win over the rpath and may name a stale copy.
    let run = Command::new(&bin).env_remove("LD_LIBRARY_PATH").output().unwrap();
    assert!(run.status.success(), "{}\n{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
}
