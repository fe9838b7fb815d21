//! The xbdev-perf and xbdev-dd binaries, run as users run them.

use std::process::Command;

fn perf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xbdev-perf")).args(args).output().unwrap()
}

#[test]
fn perf_runs_the_embedded_default_and_verifies() {
    let out = perf(&["-t", "0.3", "-w", "verify", "-q", "16", "--idle", "adaptive"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Malloc0"), "{text}");
    let out = perf(&["-t", "0.3", "-w", "randrw", "-M", "70", "-o", "8k", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["total"]["iops"].as_f64().unwrap() > 0.0);
    assert_eq!(v["total"]["errors"].as_u64(), Some(0));
}

#[test]
fn perf_rejects_bad_flags_clearly() {
    for (args, want) in [
        (vec!["-w", "dance"], "unknown workload 'dance'"),
        (vec!["-o", "4x"], "bad IO size '4x'"),
        (vec!["-q", "0"], "bad queue depth '0'"),
        (vec!["-b", "nope", "-t", "0.1"], "unknown device 'nope'"),
        (vec!["-o", "1000", "-t", "0.1"], "io size 1000 is not a multiple of the block size 4096"),
        (vec!["--frobnicate"], "unknown option '--frobnicate'"),
    ] {
        let out = perf(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn dd_copies_file_to_bdev_to_bdev_to_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(d.join("src.bin"), &src).unwrap();
    for n in ["a.img", "b.img"] {
        std::fs::File::create(d.join(n)).unwrap().set_len(4 << 20).unwrap();
    }
    let cfg = d.join("cfg.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"reactor": {{"cores": [0]}}, "base_devices": [
            {{"method": "aio", "params": {{"name": "A", "filename": "{}"}}}},
            {{"method": "aio", "params": {{"name": "B", "filename": "{}"}}}}]}}"#,
            d.join("a.img").display(),
            d.join("b.img").display()
        ),
    )
    .unwrap();
    let dd = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xbdev-dd")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let c = cfg.to_str().unwrap();
    dd(&["--if", d.join("src.bin").to_str().unwrap(), "--ob", "A", "--bs", "64k", "--seek", "2", "--json", c]);
    dd(&["--ib", "A", "--ob", "B", "--bs", "64k", "--skip", "2", "--count", "16", "--json", c]);
    dd(&["--ib", "B", "--of", d.join("out.bin").to_str().unwrap(), "--bs", "128k", "--count", "8", "--json", c]);
    assert_eq!(std::fs::read(d.join("out.bin")).unwrap(), src);
    let a = std::fs::read(d.join("a.img")).unwrap();
    assert_eq!(&a[128 << 10..(128 << 10) + src.len()], &src[..]);
    let out = Command::new(env!("CARGO_BIN_EXE_xbdev-dd"))
        .args(["--ib", "A", "--of", "/dev/null", "--count", "100000", "--json", c])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count 100000 needs"));
}
