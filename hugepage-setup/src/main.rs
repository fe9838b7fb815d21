//! hugepage-setup: prepare a machine for xbdev's user-space NVMe driver, like SPDK's
//! `scripts/setup.sh`.
//!
//! ```text
//! hugepage-setup status
//! hugepage-setup config [--hugepages N] [--size 2M|1G] [--node N] [--devices BDF,...]
//!                       [--driver vfio-pci|uio_pci_generic] [--group NAME] [--no-mount]
//! hugepage-setup reset  [--keep-hugepages]
//! ```
//! `--root DIR` runs against a copy of /sys, /proc and /dev under DIR (for tests).

mod sysfs;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use sysfs::{hugepage_pools, hugetlbfs_mounts, nvme_devices, NvmeDevice, Root};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "asked for {want} hugepages of {size_kb} kB, the kernel reserved {got} (memory too fragmented or too small?)"
    )]
    ShortReservation { want: u64, got: u64, size_kb: u64 },
    #[error("no NVMe device {0}")]
    NoDevice(String),
    #[error("{bdf} did not bind to {driver} (now: {now})")]
    BindFailed { bdf: String, driver: String, now: String },
    #[error("unknown group '{0}'")]
    NoGroup(String),
}

struct Opts {
    root: Root,
    hugepages: Option<u64>,
    size_kb: u64,
    node: Option<u32>,
    devices: Option<Vec<String>>,
    driver: String,
    group: Option<String>,
    mount: bool,
    keep_hugepages: bool,
}

fn write(root: &Root, p: &str, v: &str) -> Result<(), SetupError> {
    root.write(p, v).map_err(|source| SetupError::Write { path: p.to_string(), source })
}

fn status(o: &Opts) {
    println!("Hugepages");
    println!("{:<8} {:>10} {:>10} {:>10}", "node", "size", "total", "free");
    for p in hugepage_pools(&o.root) {
        let node = p.node.map(|n| n.to_string()).unwrap_or_else(|| "all".into());
        let size = if p.size_kb >= 1 << 20 { format!("{}G", p.size_kb >> 20) } else { format!("{}M", p.size_kb >> 10) };
        println!("{node:<8} {size:>10} {:>10} {:>10}", p.total, p.free);
    }
    let mounts = hugetlbfs_mounts(&o.root);
    println!("hugetlbfs: {}", if mounts.is_empty() { "not mounted".to_string() } else { mounts.join(", ") });
    println!();
    println!("NVMe devices");
    println!(
        "{:<14} {:<10} {:<16} {:>4} {:>6}  {:<20} in use",
        "BDF", "id", "driver", "numa", "iommu", "block devices"
    );
    for d in nvme_devices(&o.root) {
        println!(
            "{:<14} {:<10} {:<16} {:>4} {:>6}  {:<20} {}",
            d.bdf,
            d.id,
            d.driver.as_deref().unwrap_or("-"),
            d.numa_node,
            d.iommu_group.as_deref().unwrap_or("-"),
            if d.block_devs.is_empty() { "-".to_string() } else { d.block_devs.join(",") },
            if d.in_use.is_empty() { "no".to_string() } else { d.in_use.join("; ") }
        );
    }
}

fn reserve(o: &Opts, n: u64) -> Result<(), SetupError> {
    let dir = match o.node {
        Some(node) => format!("/sys/devices/system/node/node{node}/hugepages/hugepages-{}kB", o.size_kb),
        None => format!("/sys/kernel/mm/hugepages/hugepages-{}kB", o.size_kb),
    };
    write(&o.root, &format!("{dir}/nr_hugepages"), &n.to_string())?;
    let got = o.root.read(&format!("{dir}/nr_hugepages")).and_then(|s| s.parse().ok()).unwrap_or(0);
    if got < n {
        return Err(SetupError::ShortReservation { want: n, got, size_kb: o.size_kb });
    }
    println!(
        "reserved {got} hugepages of {} kB{}",
        o.size_kb,
        o.node.map(|n| format!(" on node {n}")).unwrap_or_default()
    );
    if o.mount && hugetlbfs_mounts(&o.root).is_empty() {
        let mp = o.root.path("/dev/hugepages");
        let _ = std::fs::create_dir_all(&mp);
        let st = Command::new("mount").args(["-t", "hugetlbfs", "nodev"]).arg(&mp).status();
        match st {
            Ok(s) if s.success() => println!("mounted hugetlbfs on {}", mp.display()),
            _ => eprintln!(
                "warning: could not mount hugetlbfs on {} (xbdev maps hugepages anonymously anyway)",
                mp.display()
            ),
        }
    }
    Ok(())
}

fn gid_of(root: &Root, group: &str) -> Result<u32, SetupError> {
    root.read("/etc/group")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&group)).then(|| f.get(2).and_then(|g| g.parse().ok())).flatten()
        })
        .ok_or_else(|| SetupError::NoGroup(group.to_string()))
}

fn bind(o: &Opts, d: &NvmeDevice, driver: &str) -> Result<(), SetupError> {
    let base = format!("/sys/bus/pci/devices/{}", d.bdf);
    if d.driver.as_deref() == Some(driver) {
        println!("{}: already bound to {driver}", d.bdf);
        return Ok(());
    }
    if o.root.list(&format!("/sys/bus/pci/drivers/{driver}")).is_empty() {
        let _ = Command::new("modprobe").arg(driver).status();
    }
    write(&o.root, &format!("{base}/driver_override"), driver)?;
    if d.driver.is_some() {
        write(&o.root, &format!("{base}/driver/unbind"), &d.bdf)?;
    }
    write(&o.root, "/sys/bus/pci/drivers_probe", &d.bdf)?;
    let now = o.root.link_name(&format!("{base}/driver")).unwrap_or_else(|| "none".into());
    if now != driver {
        return Err(SetupError::BindFailed { bdf: d.bdf.clone(), driver: driver.into(), now });
    }
    println!("{}: {} -> {driver}", d.bdf, d.driver.as_deref().unwrap_or("no driver"));
    Ok(())
}

fn grant(o: &Opts, d: &NvmeDevice, gid: u32) -> Result<(), SetupError> {
    let node = if o.driver == "vfio-pci" {
        match o.root.link_name(&format!("/sys/bus/pci/devices/{}/iommu_group", d.bdf)) {
            Some(g) => o.root.path(&format!("/dev/vfio/{g}")),
            None => return Ok(()),
        }
    } else {
        match o.root.list(&format!("/sys/bus/pci/devices/{}/uio", d.bdf)).first() {
            Some(u) => o.root.path(&format!("/dev/{u}")),
            None => return Ok(()),
        }
    };
    let err = |source| SetupError::Write { path: node.display().to_string(), source };
    std::os::unix::fs::chown(&node, None, Some(gid)).map_err(err)?;
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    println!("{}: group {gid} may use {}", d.bdf, node.display());
    Ok(())
}

fn config(o: &Opts) -> Result<(), SetupError> {
    if let Some(n) = o.hugepages {
        reserve(o, n)?;
    }
    let all = nvme_devices(&o.root);
    let chosen: Vec<&NvmeDevice> = match &o.devices {
        Some(list) => list
            .iter()
            .map(|b| all.iter().find(|d| &d.bdf == b).ok_or_else(|| SetupError::NoDevice(b.clone())))
            .collect::<Result<_, _>>()?,
        None => all.iter().collect(),
    };
    let gid = o.group.as_deref().map(|g| gid_of(&o.root, g)).transpose()?;
    let mut refused = 0;
    for d in chosen {
        if !d.in_use.is_empty() {
            println!("{}: not touched: {}", d.bdf, d.in_use.join("; "));
            refused += 1;
            continue;
        }
        bind(o, d, &o.driver)?;
        if let Some(g) = gid {
            grant(o, d, g)?;
        }
    }
    if refused > 0 && o.devices.is_some() {
        return Err(SetupError::Usage(format!("{refused} named device(s) are in use and were not unbound")));
    }
    Ok(())
}

fn reset(o: &Opts) -> Result<(), SetupError> {
    if o.root.list("/sys/bus/pci/drivers/nvme").is_empty() {
        let _ = Command::new("modprobe").arg("nvme").status();
    }
    for d in nvme_devices(&o.root) {
        let Some(drv) = d.driver.as_deref() else { continue };
        if drv != "vfio-pci" && drv != "uio_pci_generic" {
            continue;
        }
        let base = format!("/sys/bus/pci/devices/{}", d.bdf);
        write(&o.root, &format!("{base}/driver_override"), "\n")?;
        write(&o.root, &format!("{base}/driver/unbind"), &d.bdf)?;
        write(&o.root, "/sys/bus/pci/drivers_probe", &d.bdf)?;
        let now = o.root.link_name(&format!("{base}/driver")).unwrap_or_else(|| "none".into());
        println!("{}: {drv} -> {now}", d.bdf);
    }
    if !o.keep_hugepages {
        for p in hugepage_pools(&o.root).into_iter().filter(|p| p.node.is_none() && p.total > 0) {
            write(&o.root, &format!("/sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages", p.size_kb), "0")?;
            println!("freed {} hugepages of {} kB", p.total, p.size_kb);
        }
    }
    Ok(())
}

fn parse(args: &[String]) -> Result<(String, Opts), SetupError> {
    let mut o = Opts {
        root: Root::real(),
        hugepages: None,
        size_kb: 2048,
        node: None,
        devices: None,
        driver: "vfio-pci".into(),
        group: None,
        mount: true,
        keep_hugepages: false,
    };
    let mut cmd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| SetupError::Usage(format!("{a} needs a value")));
        match a.as_str() {
            "status" | "config" | "reset" if cmd.is_none() => cmd = Some(a.clone()),
            "--root" => o.root = Root { prefix: val()?.into() },
            "--hugepages" => {
                let v = val()?;
                o.hugepages =
                    Some(v.parse().map_err(|_| SetupError::Usage(format!("--hugepages: '{v}' is not a number")))?);
            }
            "--size" => {
                o.size_kb = match val()?.to_ascii_uppercase().as_str() {
                    "2M" | "2048K" => 2048,
                    "1G" => 1 << 20,
                    v => return Err(SetupError::Usage(format!("--size: '{v}' (expected 2M or 1G)"))),
                }
            }
            "--node" => {
                let v = val()?;
                o.node = Some(v.parse().map_err(|_| SetupError::Usage(format!("--node: '{v}' is not a number")))?);
            }
            "--devices" => o.devices = Some(val()?.split(',').filter(|s| !s.is_empty()).map(String::from).collect()),
            "--driver" => {
                o.driver = val()?;
                if o.driver != "vfio-pci" && o.driver != "uio_pci_generic" {
                    return Err(SetupError::Usage(format!(
                        "--driver: '{}' (expected vfio-pci or uio_pci_generic)",
                        o.driver
                    )));
                }
            }
            "--group" => o.group = Some(val()?),
            "--no-mount" => o.mount = false,
            "--keep-hugepages" => o.keep_hugepages = true,
            "-h" | "--help" => return Err(SetupError::Usage(String::new())),
            other => return Err(SetupError::Usage(format!("unknown argument '{other}'"))),
        }
    }
    Ok((cmd.unwrap_or_else(|| "status".into()), o))
}

const USAGE: &str = "usage: hugepage-setup status | config [--hugepages N] [--size 2M|1G] [--node N] \
[--devices BDF,...] [--driver vfio-pci|uio_pci_generic] [--group NAME] [--no-mount] | reset [--keep-hugepages]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = parse(&args).and_then(|(cmd, o)| match cmd.as_str() {
        "config" => config(&o),
        "reset" => reset(&o),
        _ => {
            status(&o);
            Ok(())
        }
    });
    if let Err(e) = r {
        match e {
            SetupError::Usage(m) if m.is_empty() => println!("{USAGE}"),
            SetupError::Usage(m) => {
                eprintln!("hugepage-setup: {m}\n{USAGE}");
                std::process::exit(2)
            }
            e => {
                eprintln!("hugepage-setup: {e}");
                std::process::exit(1)
            }
        }
    }
}
