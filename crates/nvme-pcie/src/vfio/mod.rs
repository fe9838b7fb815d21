//! Real PCI devices from user space.
//!
//! Two ways in, chosen explicitly by the caller ([`AccessMode`]):
//! - [`AccessMode::Vfio`]: VFIO type1 — container, group (must be viable),
//!   IOMMU model type1v2 (type1 as fallback), device fd, BAR0 region info and
//!   mmap, bus mastering through config space, and DMA maps at IOVAs we choose.
//!   The IOMMU confines the device to memory we mapped.
//! - [`AccessMode::NoIommu`]: no IOMMU (device bound to `uio_pci_generic`, or
//!   any driver that leaves it alone): BAR0 via the sysfs `resource0` mmap,
//!   bus mastering via the sysfs `config` file, and DMA to the *physical*
//!   addresses of locked hugepages read from `/proc/self/pagemap`. The device
//!   can then write anywhere in RAM; opening this way prints a loud warning.
//!
//! DMA memory is hugepage backed (`mmap(MAP_HUGETLB)`) when the system has
//! hugepages; under VFIO it falls back to locked 4 KiB pages.

mod ioctl;
mod sysfs;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::backing::DeviceBacking;
use crate::dma::{DmaAllocator, DmaError, DmaMapper, DmaMapping, MemorySource, PAGE_SIZE};
use crate::mmio::MmioRegion;

pub use sysfs::{physical_address, PagemapMapper};

/// Errors opening a PCI device.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// A file or ioctl failed.
    #[error("{what} failed for {path}")]
    Os {
        /// The operation.
        what: &'static str,
        /// The file or device involved.
        path: String,
        /// The OS error.
        #[source]
        cause: io::Error,
    },
    /// The VFIO API version is not the one this code speaks.
    #[error("unexpected vfio api version {0}")]
    ApiVersion(i32),
    /// The IOMMU group has devices not bound to vfio-pci.
    #[error("vfio group {0} is not viable (bind every device in it to vfio-pci)")]
    NotViable(String),
    /// No supported IOMMU model.
    #[error("the vfio container supports neither type1v2 nor type1 iommu")]
    NoIommuModel,
    /// BAR0 is missing, too small or not mappable.
    #[error("bar0 of {bdf} is unusable: {reason}")]
    Bar0 {
        /// The device.
        bdf: String,
        /// Why.
        reason: &'static str,
    },
    /// The PCI address is malformed.
    #[error("bad pci address {0:?} (expected dddd:bb:dd.f)")]
    BadAddress(String),
    /// DMA memory could not be set up.
    #[error("dma setup failed")]
    Dma(#[from] DmaError),
}

fn os(what: &'static str, path: impl Into<String>) -> impl FnOnce(io::Error) -> VfioError {
    let path = path.into();
    move |cause| VfioError::Os { what, path, cause }
}

/// How to reach the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    /// VFIO with an IOMMU (type1v2 / type1).
    Vfio,
    /// No IOMMU: sysfs BAR mmap + physical addresses of hugepages. Unsafe for
    /// the whole machine if the device misbehaves; prints a warning.
    NoIommu,
}

impl AccessMode {
    /// Parse `vfio`, `uio` or `noiommu` (as in the testbed's `VFIO_MODE`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "vfio" => Some(Self::Vfio),
            "uio" | "noiommu" | "sysfs" => Some(Self::NoIommu),
            _ => None,
        }
    }
}

/// Checks a PCI address of the form `dddd:bb:dd.f` (only hex digits and the
/// separators; this string is used in sysfs paths).
fn check_bdf(bdf: &str) -> Result<(), VfioError> {
    let b = bdf.as_bytes();
    let ok = b.len() == 12
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b':',
            10 => c == b'.',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        Err(VfioError::BadAddress(bdf.to_string()))
    }
}

/// A VFIO container's DMA mapper: IOVAs are handed out from a bump pointer
/// and mapped with VFIO_IOMMU_MAP_DMA.
#[derive(Debug)]
pub struct VfioMapper {
    container: Arc<OwnedFd>,
    next_iova: AtomicU64,
    limit: u64,
}

impl VfioMapper {
    /// IOVAs start at 4 GiB (clear of the x86 MSI window at 0xfee00000) and
    /// stay below 2^39, the smallest address width of an emulated Intel IOMMU.
    const IOVA_BASE: u64 = 1 << 32;
    const IOVA_LIMIT: u64 = 1 << 39;
}

impl DmaMapper for VfioMapper {
    fn map(&self, va: usize, len: usize) -> Result<DmaMapping, DmaError> {
        let size = len as u64;
        // Align each mapping's IOVA to 2 MiB so hugepages map as large pages.
        let step = size.next_multiple_of(2 << 20);
        let iova = self.next_iova.fetch_add(step, Ordering::Relaxed);
        if iova.checked_add(step).is_none_or(|e| e > self.limit) {
            return Err(DmaError::IovaExhausted { len });
        }
        let mut m = ioctl::DmaMap {
            argsz: core::mem::size_of::<ioctl::DmaMap>() as u32,
            flags: ioctl::DMA_MAP_FLAG_READ | ioctl::DMA_MAP_FLAG_WRITE,
            vaddr: va as u64,
            iova,
            size,
        };
        ioctl::ioctl_ptr(self.container.as_fd(), ioctl::IOMMU_MAP_DMA, &mut m).map_err(|cause| DmaError::Map {
            iova,
            len,
            cause,
        })?;
        Ok(DmaMapping::contiguous(iova, len))
    }

    fn unmap(&self, _va: usize, len: usize, mapping: &DmaMapping) {
        if let Some(&iova) = mapping.iovas.first() {
            let mut u = ioctl::DmaUnmap {
                argsz: core::mem::size_of::<ioctl::DmaUnmap>() as u32,
                flags: 0,
                iova,
                size: len as u64,
            };
            // Nothing useful can be done if unmapping fails (the container is
            // going away); the memory is freed after this either way.
            let _ = ioctl::ioctl_ptr(self.container.as_fd(), ioctl::IOMMU_UNMAP_DMA, &mut u);
        }
    }

    fn name(&self) -> &'static str {
        "vfio-type1"
    }
}

/// An opened PCI NVMe function: BAR0 mapped, bus mastering on, DMA ready.
pub struct PciDevice {
    bdf: String,
    mode: AccessMode,
    bar0: MmioRegion,
    dma: DmaAllocator,
    // Field order matters: the BAR mapping and DMA allocator drop before the
    // device/group/container fds they came from.
    _device: Option<OwnedFd>,
    _group: Option<OwnedFd>,
    _container: Option<Arc<OwnedFd>>,
}

impl std::fmt::Debug for PciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciDevice").field("bdf", &self.bdf).field("mode", &self.mode).field("dma", &self.dma).finish()
    }
}

impl DeviceBacking for PciDevice {
    type Registers = MmioRegion;
    fn id(&self) -> &str {
        &self.bdf
    }
    fn bar0(&self) -> &MmioRegion {
        &self.bar0
    }
    fn dma(&self) -> &DmaAllocator {
        &self.dma
    }
}

/// True if a 2 MiB hugepage can be mapped right now.
fn hugepages_available() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .is_some_and(|n| n > 0)
}

fn munmap_bar(p: *mut u8, len: usize) {
    // SAFETY: called once, from MmioRegion::drop, for a region we mmapped.
    unsafe { libc::munmap(p.cast(), len) };
}

/// mmap `len` bytes of `fd` at `offset` as device registers.
fn mmap_bar(fd: i32, offset: u64, len: usize, bdf: &str) -> Result<MmioRegion, VfioError> {
    let off = libc::off_t::try_from(offset)
        .map_err(|_| VfioError::Bar0 { bdf: bdf.to_string(), reason: "region offset out of range" })?;
    // SAFETY: a fresh shared mapping of the device file; no existing memory
    // is affected.
    let p =
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, off) };
    if p == libc::MAP_FAILED {
        return Err(os("mmap bar0", bdf)(io::Error::last_os_error()));
    }
    let ptr =
        NonNull::new(p.cast::<u8>()).ok_or(VfioError::Bar0 { bdf: bdf.to_string(), reason: "mmap returned null" })?;
    // SAFETY: ptr..ptr+len is our fresh mapping, unmapped only by the region.
    Ok(unsafe { MmioRegion::new(ptr, len, Some(munmap_bar)) })
}

/// The NVMe register window we map: registers plus doorbells for many queues.
fn bar_map_len(size: u64) -> usize {
    size.min(1 << 20) as usize
}

impl PciDevice {
    /// Open `bdf` (e.g. `0000:00:03.0`) for user-space driving.
    pub fn open(bdf: &str, mode: AccessMode) -> Result<Self, VfioError> {
        check_bdf(bdf)?;
        match mode {
            AccessMode::Vfio => Self::open_vfio(bdf),
            AccessMode::NoIommu => Self::open_noiommu(bdf),
        }
    }

    /// The PCI address.
    pub fn bdf(&self) -> &str {
        &self.bdf
    }

    /// How the device was opened.
    pub fn mode(&self) -> AccessMode {
        self.mode
    }

    fn open_vfio(bdf: &str) -> Result<Self, VfioError> {
        let link = format!("/sys/bus/pci/devices/{bdf}/iommu_group");
        let target = std::fs::read_link(&link).map_err(os("readlink", &link))?;
        let group_no =
            target.file_name().and_then(|s| s.to_str()).ok_or(VfioError::BadAddress(bdf.to_string()))?.to_string();
        let container_file =
            OpenOptions::new().read(true).write(true).open("/dev/vfio/vfio").map_err(os("open", "/dev/vfio/vfio"))?;
        let container = Arc::new(OwnedFd::from(container_file));
        let v = ioctl::ioctl_val(container.as_fd(), ioctl::GET_API_VERSION, 0)
            .map_err(os("VFIO_GET_API_VERSION", "/dev/vfio/vfio"))?;
        if v != ioctl::API_VERSION {
            return Err(VfioError::ApiVersion(v));
        }
        let group_path = format!("/dev/vfio/{group_no}");
        let group: OwnedFd =
            OpenOptions::new().read(true).write(true).open(&group_path).map_err(os("open", &group_path))?.into();
        let mut st = ioctl::GroupStatus { argsz: 8, flags: 0 };
        ioctl::ioctl_ptr(group.as_fd(), ioctl::GROUP_GET_STATUS, &mut st)
            .map_err(os("VFIO_GROUP_GET_STATUS", &group_path))?;
        if st.flags & ioctl::GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::NotViable(group_path));
        }
        ioctl::set_container(group.as_fd(), container.as_fd()).map_err(os("VFIO_GROUP_SET_CONTAINER", &group_path))?;
        let model = [ioctl::TYPE1V2_IOMMU, ioctl::TYPE1_IOMMU]
            .into_iter()
            .find(|&m| ioctl::ioctl_val(container.as_fd(), ioctl::CHECK_EXTENSION, m).is_ok_and(|r| r > 0))
            .ok_or(VfioError::NoIommuModel)?;
        ioctl::ioctl_val(container.as_fd(), ioctl::SET_IOMMU, model).map_err(os("VFIO_SET_IOMMU", "/dev/vfio/vfio"))?;
        let name = CString::new(bdf).map_err(|_| VfioError::BadAddress(bdf.to_string()))?;
        let dev_raw = ioctl::get_device_fd(group.as_fd(), &name).map_err(os("VFIO_GROUP_GET_DEVICE_FD", bdf))?;
        // SAFETY: the ioctl returned a fresh fd that we now own.
        let device = unsafe { OwnedFd::from_raw_fd(dev_raw) };
        let mut info = ioctl::DeviceInfo { argsz: 16, ..Default::default() };
        ioctl::ioctl_ptr(device.as_fd(), ioctl::DEVICE_GET_INFO, &mut info).map_err(os("VFIO_DEVICE_GET_INFO", bdf))?;

        // Config space: enable memory decoding and bus mastering.
        let mut cfg = ioctl::RegionInfo { argsz: 32, index: ioctl::PCI_CONFIG_REGION_INDEX, ..Default::default() };
        ioctl::ioctl_ptr(device.as_fd(), ioctl::DEVICE_GET_REGION_INFO, &mut cfg)
            .map_err(os("VFIO_DEVICE_GET_REGION_INFO(config)", bdf))?;
        let dev_file = File::from(device.try_clone().map_err(os("dup", bdf))?);
        enable_bus_master(&dev_file, cfg.offset, bdf)?;

        let mut r0 = ioctl::RegionInfo { argsz: 32, index: ioctl::PCI_BAR0_REGION_INDEX, ..Default::default() };
        ioctl::ioctl_ptr(device.as_fd(), ioctl::DEVICE_GET_REGION_INFO, &mut r0)
            .map_err(os("VFIO_DEVICE_GET_REGION_INFO(bar0)", bdf))?;
        if r0.size < 0x2000 {
            return Err(VfioError::Bar0 { bdf: bdf.to_string(), reason: "smaller than 8 KiB" });
        }
        if r0.flags & ioctl::REGION_INFO_FLAG_MMAP == 0 {
            return Err(VfioError::Bar0 { bdf: bdf.to_string(), reason: "not mmappable" });
        }
        use std::os::fd::AsRawFd;
        let bar0 = mmap_bar(device.as_raw_fd(), r0.offset, bar_map_len(r0.size), bdf)?;

        let mapper = Arc::new(VfioMapper {
            container: container.clone(),
            next_iova: AtomicU64::new(VfioMapper::IOVA_BASE),
            limit: VfioMapper::IOVA_LIMIT,
        });
        let source = if hugepages_available() {
            MemorySource::Hugepages
        } else {
            eprintln!("nvme-pcie: {bdf}: no free hugepages; using locked 4 KiB pages for DMA");
            MemorySource::Locked
        };
        Ok(Self {
            bdf: bdf.to_string(),
            mode: AccessMode::Vfio,
            bar0,
            dma: DmaAllocator::new(mapper, source),
            _device: Some(device),
            _group: Some(group),
            _container: Some(container),
        })
    }

    fn open_noiommu(bdf: &str) -> Result<Self, VfioError> {
        eprintln!(
            "nvme-pcie: WARNING: {bdf} opened WITHOUT AN IOMMU (sysfs BAR mmap, physical DMA \
             addresses). The device can read and write ALL of this machine's memory; use only \
             on test machines."
        );
        let base = PathBuf::from(format!("/sys/bus/pci/devices/{bdf}"));
        let cfg_path = base.join("config");
        let cfg = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cfg_path)
            .map_err(os("open", cfg_path.display().to_string()))?;
        enable_bus_master(&cfg, 0, bdf)?;
        let res_path = base.join("resource0");
        let res = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&res_path)
            .map_err(os("open", res_path.display().to_string()))?;
        let size = res.metadata().map_err(os("stat", res_path.display().to_string()))?.len();
        if size < 0x2000 {
            return Err(VfioError::Bar0 { bdf: bdf.to_string(), reason: "smaller than 8 KiB" });
        }
        use std::os::fd::AsRawFd;
        let bar0 = mmap_bar(res.as_raw_fd(), 0, bar_map_len(size), bdf)?;
        if !hugepages_available() {
            return Err(DmaError::Alloc {
                len: PAGE_SIZE,
                source_kind: "hugepage (required without an iommu)",
                cause: None,
            }
            .into());
        }
        let mapper = Arc::new(PagemapMapper::new(21));
        Ok(Self {
            bdf: bdf.to_string(),
            mode: AccessMode::NoIommu,
            bar0,
            dma: DmaAllocator::new(mapper, MemorySource::Hugepages),
            _device: None,
            _group: None,
            _container: None,
        })
    }
}

/// Set Memory Space Enable and Bus Master Enable in the PCI command register
/// of a config space reachable through `f` at `cfg_offset`.
fn enable_bus_master(f: &File, cfg_offset: u64, bdf: &str) -> Result<(), VfioError> {
    let mut cmd = [0u8; 2];
    f.read_exact_at(&mut cmd, cfg_offset + 4).map_err(os("read pci command register", bdf))?;
    let v = u16::from_le_bytes(cmd) | 0x6;
    f.write_all_at(&v.to_le_bytes(), cfg_offset + 4).map_err(os("write pci command register", bdf))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_address_checked() {
        assert!(check_bdf("0000:00:03.0").is_ok());
        assert!(check_bdf("0000:00:03.0/../x").is_err());
        assert!(check_bdf("00:03.0").is_err());
        assert!(check_bdf("0000:00:03:0").is_err());
        assert_eq!(AccessMode::parse("uio"), Some(AccessMode::NoIommu));
        assert_eq!(AccessMode::parse("kernel"), None);
    }

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(ioctl::GET_API_VERSION, 0x3b64);
        assert_eq!(ioctl::GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(ioctl::IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(ioctl::IOMMU_UNMAP_DMA, 0x3b72);
    }

    #[test]
    fn opening_a_missing_device_is_a_typed_error() {
        let e = PciDevice::open("0000:ff:1f.7", AccessMode::Vfio).unwrap_err();
        assert!(matches!(e, VfioError::Os { .. }), "{e}");
    }
}
