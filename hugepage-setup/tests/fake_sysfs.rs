//! hugepage-setup against a fake /sys and /proc: status, refusals of devices in use, and a
//! bind that the (fake) kernel does not carry out.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

fn w(root: &Path, p: &str, v: &str) {
    let f = root.join(p.trim_start_matches('/'));
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(f, v).unwrap();
}

fn nvme(root: &Path, bdf: &str, ctrl: &str, driver: &str) {
    let base = format!("sys/bus/pci/devices/{bdf}");
    w(root, &format!("{base}/class"), "0x010802\n");
    w(root, &format!("{base}/vendor"), "0x1b36\n");
    w(root, &format!("{base}/device"), "0x0010\n");
    w(root, &format!("{base}/numa_node"), "0\n");
    w(root, &format!("{base}/driver_override"), "(null)\n");
    fs::create_dir_all(root.join(format!("{base}/nvme/{ctrl}/{ctrl}n1"))).unwrap();
    fs::create_dir_all(root.join(format!("sys/bus/pci/drivers/{driver}"))).unwrap();
    symlink(root.join(format!("sys/bus/pci/drivers/{driver}")), root.join(format!("{base}/driver"))).unwrap();
    fs::create_dir_all(root.join(format!("sys/kernel/iommu_groups/{}", &bdf[8..10]))).unwrap();
    symlink(root.join(format!("sys/kernel/iommu_groups/{}", &bdf[8..10])), root.join(format!("{base}/iommu_group")))
        .unwrap();
    fs::create_dir_all(root.join(format!("sys/block/{ctrl}n1/holders"))).unwrap();
    w(root, &format!("sys/bus/pci/devices/{bdf}/driver/unbind"), "");
}

fn setup() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    w(r, "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n");
    w(r, "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "0\n");
    w(r, "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages", "0\n");
    w(r, "sys/bus/pci/drivers_probe", "");
    nvme(r, "0000:00:04.0", "nvme0", "nvme");
    nvme(r, "0000:00:05.0", "nvme1", "nvme");
    nvme(r, "0000:00:06.0", "nvme2", "nvme");
    nvme(r, "0000:00:07.0", "nvme3", "nvme");
    w(r, "proc/mounts", "/dev/nvme0n1p1 /data ext4 rw 0 0\nproc /proc proc rw 0 0\n");
    w(r, "proc/swaps", "Filename Type Size Used Priority\n/dev/nvme1n1 partition 1024 0 -2\n");
    w(r, "etc/group", "root:x:0:\nstorage:x:1234:\n");
    fs::create_dir_all(r.join("sys/block/nvme2n1/holders/md0")).unwrap();
    t
}

fn run(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hugepage-setup")).arg("--root").arg(root).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn status_lists_devices_and_what_holds_them() {
    let t = setup();
    let (code, out, _) = run(t.path(), &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("0000:00:04.0") && out.contains("nvme0n1"), "{out}");
    assert!(out.contains("/dev/nvme0n1p1 is mounted on /data"), "{out}");
    assert!(out.contains("/dev/nvme1n1 is active swap"), "{out}");
    assert!(out.contains("/dev/nvme2n1 is held by md0"), "{out}");
    assert!(out.contains("hugetlbfs: not mounted"));
}

#[test]
fn config_refuses_devices_in_use_and_says_why() {
    let t = setup();
    let (code, out, err) = run(t.path(), &["config", "--devices", "0000:00:04.0,0000:00:05.0", "--no-mount"]);
    assert_ne!(code, 0);
    assert!(out.contains("0000:00:04.0: not touched: /dev/nvme0n1p1 is mounted on /data"), "{out}");
    assert!(out.contains("0000:00:05.0: not touched: /dev/nvme1n1 is active swap"), "{out}");
    assert!(err.contains("2 named device(s) are in use"), "{err}");
    let o = fs::read_to_string(t.path().join("sys/bus/pci/devices/0000:00:04.0/driver_override")).unwrap();
    assert_eq!(o, "(null)\n", "nothing written for a refused device");
}

#[test]
fn config_reserves_hugepages_and_detects_a_bind_that_did_not_happen() {
    let t = setup();
    let (code, out, err) = run(t.path(), &["config", "--hugepages", "64", "--no-mount"]);
    assert!(out.contains("reserved 64 hugepages of 2048 kB"), "{out}");
    // The fake kernel does not move the device: the tool must notice and fail.
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("did not bind to vfio-pci (now: nvme)"), "{err}");
    let o = fs::read_to_string(t.path().join("sys/bus/pci/devices/0000:00:04.0/driver_override")).unwrap();
    assert_eq!(o, "(null)\n", "in-use device untouched");
    let o = fs::read_to_string(t.path().join("sys/bus/pci/devices/0000:00:07.0/driver_override")).unwrap();
    assert_eq!(o, "vfio-pci", "free device asked to move");
    let (_, _, err) = run(t.path(), &["config", "--devices", "0000:09:00.0"]);
    assert!(err.contains("no NVMe device 0000:09:00.0"), "{err}");
    let (code, _, err) = run(t.path(), &["config", "--group", "nogroup", "--devices", "0000:00:06.0"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown group 'nogroup'"), "{err}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let t = setup();
    for (args, want) in [
        (vec!["config", "--size", "3M"], "--size: '3M'"),
        (vec!["config", "--hugepages", "x"], "--hugepages: 'x' is not a number"),
        (vec!["config", "--driver", "nvme"], "expected vfio-pci or uio_pci_generic"),
        (vec!["frob"], "unknown argument 'frob'"),
    ] {
        let (code, _, err) = run(t.path(), &args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
