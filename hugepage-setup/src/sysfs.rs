//! Reading the machine's state from /sys and /proc (under a configurable root, so tests can
//! run against a fake tree).

use std::fs;
use std::path::{Path, PathBuf};

/// Where /sys, /proc and /dev are.
#[derive(Clone, Debug)]
pub struct Root {
    /// Prefix prepended to every absolute path ("" on a real machine).
    pub prefix: PathBuf,
}

impl Root {
    /// The real machine.
    pub fn real() -> Root {
        Root { prefix: PathBuf::from("/") }
    }

    /// Absolute path `p` under the root.
    pub fn path(&self, p: &str) -> PathBuf {
        self.prefix.join(p.trim_start_matches('/'))
    }

    /// A file's contents, trimmed (`None` if unreadable).
    pub fn read(&self, p: &str) -> Option<String> {
        fs::read_to_string(self.path(p)).ok().map(|s| s.trim().to_string())
    }

    /// Entries of a directory, sorted.
    pub fn list(&self, p: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path(p))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Last component of a symlink's target.
    pub fn link_name(&self, p: &str) -> Option<String> {
        let t = fs::read_link(self.path(p)).ok()?;
        Path::new(&t).file_name().map(|s| s.to_string_lossy().to_string())
    }

    /// Write a sysfs attribute.
    pub fn write(&self, p: &str, value: &str) -> std::io::Result<()> {
        fs::write(self.path(p), value)
    }
}

/// Hugepage counts of one page size (globally or on one NUMA node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HugepagePool {
    /// NUMA node, or `None` for the whole machine.
    pub node: Option<u32>,
    /// Page size in KiB.
    pub size_kb: u64,
    /// Pages reserved.
    pub total: u64,
    /// Pages free.
    pub free: u64,
}

/// Every hugepage pool of the machine and its NUMA nodes.
pub fn hugepage_pools(root: &Root) -> Vec<HugepagePool> {
    let mut out = Vec::new();
    let mut scan = |dir: &str, node: Option<u32>| {
        for e in root.list(dir) {
            let Some(kb) = e.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")).and_then(|s| s.parse().ok())
            else {
                continue;
            };
            let total = root.read(&format!("{dir}/{e}/nr_hugepages")).and_then(|s| s.parse().ok()).unwrap_or(0);
            let free = root.read(&format!("{dir}/{e}/free_hugepages")).and_then(|s| s.parse().ok()).unwrap_or(0);
            out.push(HugepagePool { node, size_kb: kb, total, free });
        }
    };
    scan("/sys/kernel/mm/hugepages", None);
    for n in root.list("/sys/devices/system/node") {
        if let Some(id) = n.strip_prefix("node").and_then(|s| s.parse().ok()) {
            scan(&format!("/sys/devices/system/node/{n}/hugepages"), Some(id));
        }
    }
    out
}

/// Mount points of hugetlbfs.
pub fn hugetlbfs_mounts(root: &Root) -> Vec<String> {
    root.read("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"hugetlbfs")).then(|| f.get(1).map(|s| s.to_string())).flatten()
        })
        .collect()
}

/// One NVMe controller on the PCI bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmeDevice {
    /// PCI address, e.g. `0000:01:00.0`.
    pub bdf: String,
    /// `vendor:device` in hex.
    pub id: String,
    /// Bound driver, if any.
    pub driver: Option<String>,
    /// NUMA node (-1 if unknown).
    pub numa_node: i32,
    /// IOMMU group number, if the device has one.
    pub iommu_group: Option<String>,
    /// Block devices of its namespaces (`nvme0n1`, ...), when bound to the kernel driver.
    pub block_devs: Vec<String>,
    /// Why the device must not be taken from the kernel (mounted filesystem, swap, holder).
    pub in_use: Vec<String>,
}

/// PCI class code of NVMe controllers.
const NVME_CLASS: &str = "0x010802";

/// Every NVMe controller, with what uses it.
pub fn nvme_devices(root: &Root) -> Vec<NvmeDevice> {
    let mounts = root.read("/proc/mounts").unwrap_or_default();
    let swaps = root.read("/proc/swaps").unwrap_or_default();
    let mut out = Vec::new();
    for bdf in root.list("/sys/bus/pci/devices") {
        let base = format!("/sys/bus/pci/devices/{bdf}");
        if root.read(&format!("{base}/class")).as_deref() != Some(NVME_CLASS) {
            continue;
        }
        let vendor = root.read(&format!("{base}/vendor")).unwrap_or_default();
        let device = root.read(&format!("{base}/device")).unwrap_or_default();
        let mut block_devs = Vec::new();
        for ctrl in root.list(&format!("{base}/nvme")) {
            for ns in root.list(&format!("{base}/nvme/{ctrl}")) {
                if ns.starts_with(&ctrl) && ns.contains('n') && ns.len() > ctrl.len() {
                    block_devs.push(ns);
                }
            }
        }
        let mut in_use = Vec::new();
        for b in &block_devs {
            for line in mounts.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let (Some(dev), Some(mp)) = (f.first(), f.get(1)) {
                    if dev.strip_prefix("/dev/").is_some_and(|d| d == b || d.starts_with(&format!("{b}p"))) {
                        in_use.push(format!("/dev/{} is mounted on {mp}", &dev[5..]));
                    }
                }
            }
            for line in swaps.lines().skip(1) {
                if let Some(dev) = line.split_whitespace().next() {
                    if dev.strip_prefix("/dev/").is_some_and(|d| d == b || d.starts_with(&format!("{b}p"))) {
                        in_use.push(format!("{dev} is active swap"));
                    }
                }
            }
            for h in root.list(&format!("/sys/block/{b}/holders")) {
                in_use.push(format!("/dev/{b} is held by {h}"));
            }
        }
        out.push(NvmeDevice {
            id: format!("{}:{}", vendor.trim_start_matches("0x"), device.trim_start_matches("0x")),
            driver: root.link_name(&format!("{base}/driver")),
            numa_node: root.read(&format!("{base}/numa_node")).and_then(|s| s.parse().ok()).unwrap_or(-1),
            iommu_group: root.link_name(&format!("{base}/iommu_group")),
            block_devs,
            in_use,
            bdf,
        });
    }
    out
}
