//! The VFIO ioctl ABI (linux/vfio.h), written out by hand: request numbers,
//! argument structs, and thin wrappers returning `io::Result`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const VFIO_TYPE: libc::c_ulong = b';' as libc::c_ulong;
const VFIO_BASE: libc::c_ulong = 100;
const fn io(nr: libc::c_ulong) -> libc::c_ulong {
    (VFIO_TYPE << 8) | (VFIO_BASE + nr)
}

pub const GET_API_VERSION: libc::c_ulong = io(0);
pub const CHECK_EXTENSION: libc::c_ulong = io(1);
pub const SET_IOMMU: libc::c_ulong = io(2);
pub const GROUP_GET_STATUS: libc::c_ulong = io(3);
pub const GROUP_SET_CONTAINER: libc::c_ulong = io(4);
pub const GROUP_GET_DEVICE_FD: libc::c_ulong = io(6);
pub const DEVICE_GET_INFO: libc::c_ulong = io(7);
pub const DEVICE_GET_REGION_INFO: libc::c_ulong = io(8);
pub const IOMMU_MAP_DMA: libc::c_ulong = io(13);
pub const IOMMU_UNMAP_DMA: libc::c_ulong = io(14);

pub const API_VERSION: libc::c_int = 0;
pub const TYPE1_IOMMU: libc::c_ulong = 1;
pub const TYPE1V2_IOMMU: libc::c_ulong = 3;
pub const GROUP_FLAGS_VIABLE: u32 = 1;
pub const REGION_INFO_FLAG_MMAP: u32 = 4;
pub const DMA_MAP_FLAG_READ: u32 = 1;
pub const DMA_MAP_FLAG_WRITE: u32 = 2;
pub const PCI_BAR0_REGION_INDEX: u32 = 0;
pub const PCI_CONFIG_REGION_INDEX: u32 = 7;

#[repr(C)]
#[derive(Debug, Default)]
pub struct GroupStatus {
    pub argsz: u32,
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<GroupStatus>() == 8);

#[repr(C)]
#[derive(Debug, Default)]
pub struct DeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}
const _: () = assert!(core::mem::size_of::<DeviceInfo>() == 16);

#[repr(C)]
#[derive(Debug, Default)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}
const _: () = assert!(core::mem::size_of::<RegionInfo>() == 32);

#[repr(C)]
#[derive(Debug, Default)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}
const _: () = assert!(core::mem::size_of::<DmaMap>() == 32);

#[repr(C)]
#[derive(Debug, Default)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}
const _: () = assert!(core::mem::size_of::<DmaUnmap>() == 24);

/// ioctl with an integer argument; returns the (non-negative) result.
pub fn ioctl_val(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: these requests take an integer argument (or none), so the
    // kernel reads no memory of ours.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// ioctl whose argument is a pointer to `T` (read and/or written by the kernel).
///
/// Callers pass only the request matching `T`'s layout from linux/vfio.h.
pub fn ioctl_ptr<T>(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: &mut T) -> io::Result<i32> {
    // SAFETY: `arg` is a valid, exclusively borrowed T for the call; T is the
    // #[repr(C)] struct the request expects, with argsz set by the caller.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// VFIO_GROUP_GET_DEVICE_FD takes a NUL-terminated device name.
pub fn get_device_fd(group: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<i32> {
    // SAFETY: the request reads a NUL-terminated string, which `name` is.
    let r = unsafe { libc::ioctl(group.as_raw_fd(), GROUP_GET_DEVICE_FD, name.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// VFIO_GROUP_SET_CONTAINER takes a pointer to the container fd.
pub fn set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> io::Result<()> {
    let mut fd: libc::c_int = container.as_raw_fd();
    ioctl_ptr(group, GROUP_SET_CONTAINER, &mut fd).map(|_| ())
}
