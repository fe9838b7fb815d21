//! fio itself loading the engine built by this crate (`libfio_xbdev.so`): a crc32c verify job in
//! process and thread mode, an interrupted-early job, and `--enghelp`. The full matrix is
//! tests/run-fio-tests.sh.

use std::path::PathBuf;
use std::process::Command;

/// The cdylib cargo built next to this test binary.
fn engine() -> PathBuf {
    // target/<profile>/deps/fio-xxxx -> target/<profile>/deps/libfio_xbdev.so (or one level up)
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    for dir in [deps.clone(), deps.parent().unwrap().to_path_buf()] {
        let p = dir.join("libfio_xbdev.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libfio_xbdev.so not found next to {}", exe.display());
}

fn config(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("xb.json");
    std::fs::write(
        &p,
        r#"{"reactor": {"cores": [0], "pin": false},
            "base_devices": [{"method": "malloc", "params": {"name": "malloc0", "size_mb": 32, "block_size": 512}}]}"#,
    )
    .unwrap();
    p
}

fn fio(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("fio")
        .current_dir(dir)
        .arg(format!("--ioengine=external:{}", engine().display()))
        .args(args)
        .output()
        .expect("fio is not installed (run crates/fio-engine/setup-fio.sh)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn verify_job_passes_in_process_and_thread_mode() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path());
    let conf_opt = format!("--xbdev_conf={}", conf.display());
    for extra in [&[][..], &["--thread"][..]] {
        let mut args = vec![
            "--name=v",
            conf_opt.as_str(),
            "--filename=malloc0",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=8m",
            "--verify=crc32c",
            "--numjobs=2",
            "--offset_increment=16m",
        ];
        args.extend_from_slice(extra);
        let (ok, text) = fio(dir.path(), &args);
        assert!(ok, "fio failed {extra:?}:\n{text}");
        assert_eq!(text.matches("err= 0").count(), 2, "{text}");
        assert!(text.contains("ioengine=xbdev"), "{text}");
    }
}

#[test]
fn unknown_device_fails_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path());
    let conf_opt = format!("--xbdev_conf={}", conf.display());
    let (ok, text) = fio(dir.path(), &["--name=e", &conf_opt, "--filename=nosuch", "--rw=read", "--size=1m"]);
    assert!(!ok, "{text}");
    assert!(text.contains("unknown device 'nosuch'"), "{text}");
}

#[test]
fn enghelp_lists_the_options() {
    let out = Command::new("fio").arg(format!("--enghelp={}", engine().display())).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for o in ["xbdev_conf", "xbdev_cores", "xbdev_idle", "xbdev_mode"] {
        assert!(text.contains(o), "{o} missing from:\n{text}");
    }
}
