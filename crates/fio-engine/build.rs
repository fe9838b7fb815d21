//! Compiles the C shim (csrc/fio_xbdev.c) against the headers of the installed fio.
//!
//! fio ships no headers, so they come from Debian's source package of exactly the installed
//! fio version, configured by fio's `./configure`. `setup-fio.sh` prepares that tree in a
//! cache directory outside the repository (and installs fio when it is missing); this script
//! runs it when `XBDEV_FIO_SRC` does not already name a configured tree.
//!
//! Environment:
//! - `XBDEV_FIO_SRC`: a configured fio source tree to use as is.
//! - `XBDEV_FIO_NO_SETUP=1`: never run setup-fio.sh; fail with instructions instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    eprintln!(
        "hint: run `crates/fio-engine/setup-fio.sh` once (as root: it installs fio, adds a deb-src \
         line and fetches fio's source with apt-get source), or point XBDEV_FIO_SRC at a fio source \
         tree of the installed version on which ./configure has run"
    );
    std::process::exit(1);
}

fn configured(dir: &Path) -> bool {
    dir.join("fio.h").is_file() && dir.join("ioengines.h").is_file() && dir.join("config-host.h").is_file()
}

fn fio_source_dir(manifest: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("XBDEV_FIO_SRC") {
        let dir = PathBuf::from(dir);
        if configured(&dir) {
            return dir;
        }
    }
    if std::env::var("XBDEV_FIO_NO_SETUP").is_ok_and(|v| v == "1") {
        fail("no configured fio source tree (XBDEV_FIO_SRC unset or not configured) and XBDEV_FIO_NO_SETUP=1");
    }
    let script = manifest.join("setup-fio.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-dir")
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", script.display())));
    if !out.status.success() {
        fail(&format!("{} failed ({})", script.display(), out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(text.lines().last().unwrap_or("").trim());
    if !configured(&dir) {
        fail(&format!("setup-fio.sh printed '{}', which is not a configured fio source tree", dir.display()));
    }
    dir
}

/// The version string fio reports (`fio-3.33`), from the source tree's FIO-VERSION-GEN.
fn source_version(dir: &Path) -> String {
    let gen = std::fs::read_to_string(dir.join("FIO-VERSION-GEN"))
        .unwrap_or_else(|e| fail(&format!("cannot read {}/FIO-VERSION-GEN: {e}", dir.display())));
    gen.lines()
        .find_map(|l| l.strip_prefix("DEF_VER="))
        .map(|v| v.trim().to_string())
        .filter(|v| v.starts_with("fio-"))
        .unwrap_or_else(|| fail("FIO-VERSION-GEN has no DEF_VER=fio-... line"))
}

/// The version the installed fio binary reports, if fio is installed.
fn installed_version() -> Option<String> {
    let out = Command::new("fio").arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=csrc/fio_xbdev.c");
    println!("cargo:rerun-if-changed=setup-fio.sh");
    println!("cargo:rerun-if-env-changed=XBDEV_FIO_SRC");
    println!("cargo:rerun-if-env-changed=XBDEV_FIO_NO_SETUP");

    let src = fio_source_dir(&manifest);
    println!("cargo:rerun-if-changed={}", src.join("config-host.h").display());
    println!("cargo:rerun-if-changed={}", src.join("ioengines.h").display());
    println!("cargo:rerun-if-changed={}", src.join("fio.h").display());

    let version = source_version(&src);
    if let Some(installed) = installed_version() {
        if installed != version {
            fail(&format!("the fio headers at {} are {version} but the installed fio is {installed}", src.display()));
        }
    }
    println!("cargo:rustc-env=XBDEV_FIO_BUILT_VERSION={version}");

    cc::Build::new()
        .file(manifest.join("csrc/fio_xbdev.c"))
        .include(&src)
        .flag("-include")
        .flag(src.join("config-host.h").to_string_lossy().as_ref())
        .define("_GNU_SOURCE", None)
        .define("_LARGEFILE_SOURCE", None)
        .define("_FILE_OFFSET_BITS", "64")
        .define("XBDEV_FIO_BUILT_VERSION", format!("\"{version}\"").as_str())
        .flag("-std=gnu99")
        .flag("-fPIC")
        .warnings(true)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-sign-compare")
        .flag_if_supported("-Wno-missing-field-initializers")
        .compile("fio_xbdev_shim");
}
