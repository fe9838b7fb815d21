//! SGLs (Scatter Gather Lists) for NVMe over PCIe.
//!
//! - [`SglCaps`]: the SGLS field of Identify Controller, typed.
//! - [`Descriptor`]: one 16-byte SGL descriptor parsed into the kinds a PCIe
//!   controller uses (Data Block, Bit Bucket, Segment, Last Segment), with a
//!   typed [`DescriptorError`] (and its NVMe status) for everything else.
//! - [`build`]: the SGL of a transfer: a single Data Block descriptor in the
//!   command when the memory is one device-contiguous run, otherwise Data
//!   Block descriptors in list pages (one SGL segment per page, chained with
//!   Segment / Last Segment descriptors).

use nvme_spec::status::GenericStatus;
use nvme_spec::{SglDescriptor, Status, StatusCode};
use zerocopy::IntoBytes;

use crate::dma::{DmaBuffer, PAGE_SIZE};
use crate::error::SubmitError;
use crate::prp::PrpSource;

/// Bytes per SGL descriptor.
pub const DESCRIPTOR_BYTES: usize = 16;
/// Descriptors in one list page (one SGL segment per page).
pub const DESCRIPTORS_PER_PAGE: usize = PAGE_SIZE / DESCRIPTOR_BYTES;

/// SGL descriptor type codes (identifier bits 7:4).
pub mod desc_type {
    /// Data Block.
    pub const DATA_BLOCK: u8 = 0x0;
    /// Bit Bucket (read data to be discarded).
    pub const BIT_BUCKET: u8 = 0x1;
    /// Segment: points to the next SGL segment.
    pub const SEGMENT: u8 = 0x2;
    /// Last Segment: points to the last SGL segment.
    pub const LAST_SEGMENT: u8 = 0x3;
    /// Keyed Data Block (RDMA fabrics).
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    /// Transport Data Block (fabrics).
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
    /// Vendor specific.
    pub const VENDOR: u8 = 0xf;
}

/// SGL descriptor subtype codes (identifier bits 3:0).
pub mod subtype {
    /// The address field is a memory address.
    pub const ADDRESS: u8 = 0x0;
    /// The address field is an offset (fabrics in-capsule data).
    pub const OFFSET: u8 = 0x1;
    /// Transport specific.
    pub const TRANSPORT: u8 = 0xa;
}

/// Generic status 1Eh, SGL Data Block Granularity Invalid (address alignment
/// or length granularity of a Data Block descriptor), not named by
/// `nvme_spec`.
pub const SGL_DATA_BLOCK_GRANULARITY_INVALID: u8 = 0x1e;

/// Alignment and granularity a controller requires of Data Block descriptors
/// (SGLS bits 1:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SglAlignment {
    /// No requirement (01b).
    Byte,
    /// Addresses and lengths are multiples of 4 (10b).
    Dword,
}

impl SglAlignment {
    /// The mask address and length bits must leave clear.
    pub fn mask(self) -> u64 {
        match self {
            SglAlignment::Byte => 0,
            SglAlignment::Dword => 3,
        }
    }
}

/// The SGLS field of Identify Controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SglCaps {
    /// Data Block alignment and granularity.
    pub alignment: SglAlignment,
    /// Keyed SGL Data Block descriptors (bit 2).
    pub keyed: bool,
    /// Bit Bucket descriptors (bit 16).
    pub bit_bucket: bool,
    /// Byte-aligned contiguous metadata buffers (bit 17).
    pub mptr_contiguous: bool,
    /// SGLs describing more data than the command transfers (bit 18).
    pub excess_length: bool,
    /// MPTR holding an SGL descriptor (bit 19).
    pub mptr_sgl: bool,
    /// Address fields as offsets (bit 20).
    pub address_offset: bool,
    /// Transport SGL Data Block descriptors (bit 21).
    pub transport_data_block: bool,
}

impl SglCaps {
    /// Controller SGL support with `alignment` and nothing optional.
    pub fn new(alignment: SglAlignment) -> Self {
        Self {
            alignment,
            keyed: false,
            bit_bucket: false,
            mptr_contiguous: false,
            excess_length: false,
            mptr_sgl: false,
            address_offset: false,
            transport_data_block: false,
        }
    }

    /// Decode SGLS; `None` when SGLs are not supported (bits 1:0 = 00b) or
    /// the reserved encoding 11b is reported.
    pub fn from_sgls(raw: u32) -> Option<Self> {
        let alignment = match raw & 3 {
            1 => SglAlignment::Byte,
            2 => SglAlignment::Dword,
            _ => return None,
        };
        let bit = |n: u32| raw & (1 << n) != 0;
        Some(Self {
            alignment,
            keyed: bit(2),
            bit_bucket: bit(16),
            mptr_contiguous: bit(17),
            excess_length: bit(18),
            mptr_sgl: bit(19),
            address_offset: bit(20),
            transport_data_block: bit(21),
        })
    }

    /// Encode as SGLS.
    pub fn to_sgls(&self) -> u32 {
        let mut v = match self.alignment {
            SglAlignment::Byte => 1,
            SglAlignment::Dword => 2,
        };
        for (on, n) in [
            (self.keyed, 2),
            (self.bit_bucket, 16),
            (self.mptr_contiguous, 17),
            (self.excess_length, 18),
            (self.mptr_sgl, 19),
            (self.address_offset, 20),
            (self.transport_data_block, 21),
        ] {
            if on {
                v |= 1 << n;
            }
        }
        v
    }
}

/// An SGL descriptor of a kind a PCIe controller handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// Data at `addr`, `len` bytes.
    DataBlock {
        /// Memory address.
        addr: u64,
        /// Length in bytes.
        len: u32,
    },
    /// `len` bytes of read data to discard.
    BitBucket {
        /// Length in bytes.
        len: u32,
    },
    /// The next SGL segment: `len` bytes of descriptors at `addr`.
    Segment {
        /// Memory address of the segment.
        addr: u64,
        /// Length of the segment in bytes.
        len: u32,
    },
    /// The last SGL segment: `len` bytes of descriptors at `addr`.
    LastSegment {
        /// Memory address of the segment.
        addr: u64,
        /// Length of the segment in bytes.
        len: u32,
    },
}

/// Why a descriptor is not one a PCIe controller can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// Keyed, Transport Data Block and vendor specific descriptors.
    #[error("sgl descriptor type {0:#x} is not used on pcie")]
    NotForPcie(u8),
    /// A reserved descriptor type.
    #[error("sgl descriptor type {0:#x} is reserved")]
    ReservedType(u8),
    /// The Offset subtype (address is an offset into in-capsule data).
    #[error("sgl descriptor type {0:#x} uses an offset address")]
    OffsetAddress(u8),
    /// A subtype other than Address or Offset.
    #[error("sgl descriptor type {desc_type:#x} has unsupported subtype {subtype:#x}")]
    BadSubtype {
        /// Descriptor type.
        desc_type: u8,
        /// Its subtype.
        subtype: u8,
    },
}

impl DescriptorError {
    /// The completion status a controller reports for this descriptor.
    pub fn status(&self) -> Status {
        let g = match self {
            DescriptorError::OffsetAddress(_) => GenericStatus::SglOffsetInvalid,
            _ => GenericStatus::SglDescriptorTypeInvalid,
        };
        Status::new(StatusCode::Generic(g), true)
    }
}

impl Descriptor {
    /// Parse a raw descriptor.
    pub fn parse(d: &SglDescriptor) -> Result<Self, DescriptorError> {
        let (t, st) = (d.desc_type(), d.subtype());
        match t {
            desc_type::DATA_BLOCK | desc_type::BIT_BUCKET | desc_type::SEGMENT | desc_type::LAST_SEGMENT => {}
            desc_type::KEYED_DATA_BLOCK | desc_type::TRANSPORT_DATA_BLOCK | desc_type::VENDOR => {
                return Err(DescriptorError::NotForPcie(t))
            }
            _ => return Err(DescriptorError::ReservedType(t)),
        }
        match st {
            subtype::ADDRESS => {}
            subtype::OFFSET => return Err(DescriptorError::OffsetAddress(t)),
            _ => return Err(DescriptorError::BadSubtype { desc_type: t, subtype: st }),
        }
        let (addr, len) = (d.addr.get(), d.length.get());
        Ok(match t {
            desc_type::DATA_BLOCK => Descriptor::DataBlock { addr, len },
            desc_type::BIT_BUCKET => Descriptor::BitBucket { len },
            desc_type::SEGMENT => Descriptor::Segment { addr, len },
            _ => Descriptor::LastSegment { addr, len },
        })
    }

    /// Encode as a raw descriptor.
    pub fn encode(&self) -> SglDescriptor {
        let id = |t: u8| (t << 4) | subtype::ADDRESS;
        match *self {
            Descriptor::DataBlock { addr, len } => SglDescriptor::new(addr, len, id(desc_type::DATA_BLOCK)),
            Descriptor::BitBucket { len } => SglDescriptor::new(0, len, id(desc_type::BIT_BUCKET)),
            Descriptor::Segment { addr, len } => SglDescriptor::new(addr, len, id(desc_type::SEGMENT)),
            Descriptor::LastSegment { addr, len } => SglDescriptor::new(addr, len, id(desc_type::LAST_SEGMENT)),
        }
    }
}

/// List pages per command enough for any transfer of up to `max_bytes` over
/// up to `max_segments` memory segments (a Data Block descriptor per
/// device-contiguous run: at most one per page crossed plus one per segment).
pub fn list_pages_for(max_bytes: usize, max_segments: usize) -> usize {
    let runs = max_bytes / PAGE_SIZE + 1 + max_segments;
    segments_for(runs)
}

/// SGL segments (list pages) for `descriptors` Data Block descriptors: every
/// page but the last gives its last slot to the chain descriptor.
fn segments_for(descriptors: usize) -> usize {
    if descriptors <= DESCRIPTORS_PER_PAGE {
        1
    } else {
        (descriptors - 1).div_ceil(DESCRIPTORS_PER_PAGE - 1)
    }
}

/// Device-contiguous runs of `[pos, end)` of a source, adjacent pieces
/// merged (one source lookup per piece).
struct Runs<'a, S: PrpSource + ?Sized> {
    buf: &'a S,
    pos: usize,
    end: usize,
    /// The piece at `pos`, already looked up.
    ahead: Option<(u64, usize)>,
}

impl<S: PrpSource + ?Sized> Runs<'_, S> {
    /// The piece at `at` (an iova and its length, capped at `end`).
    fn piece(&self, at: usize) -> Option<(u64, usize)> {
        let (a, l) = self.buf.run_at(at)?;
        let l = l.min(self.end - at);
        (l > 0).then_some((a, l))
    }
}

impl<S: PrpSource + ?Sized> Iterator for Runs<'_, S> {
    type Item = Result<(u64, u32), SubmitError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let Some((start, mut n)) = self.ahead.take().or_else(|| self.piece(self.pos)) else {
            self.pos = self.end;
            return Some(Err(SubmitError::TooLarge));
        };
        let max = u32::MAX as usize & !3;
        n = n.min(max);
        while self.pos + n < self.end && n < max {
            match self.piece(self.pos + n) {
                Some((a, l)) if start.checked_add(n as u64) == Some(a) => n += l.min(max - n),
                other => {
                    self.ahead = other;
                    break;
                }
            }
        }
        self.pos += n;
        Some(Ok((start, n as u32)))
    }
}

/// Build the SGL for `len` bytes of `buf` from `off`: returns SGL1 (the
/// descriptor for the command's data pointer), writing descriptor lists
/// into `list` (whole pages) when more than one descriptor is needed.
/// Descriptors that break `align` give [`SubmitError::Misaligned`], more
/// descriptors than `list` holds [`SubmitError::TooLarge`].
pub fn build<S: PrpSource + ?Sized>(
    buf: &S,
    off: usize,
    len: usize,
    list: &DmaBuffer,
    align: SglAlignment,
) -> Result<SglDescriptor, SubmitError> {
    let end = off.checked_add(len).ok_or(SubmitError::TooLarge)?;
    if len == 0 || end > buf.len() {
        return Err(SubmitError::TooLarge);
    }
    let mask = align.mask();
    let data = |r: Result<(u64, u32), SubmitError>| -> Result<Descriptor, SubmitError> {
        let (addr, len) = r?;
        if addr & mask != 0 || u64::from(len) & mask != 0 {
            return Err(SubmitError::Misaligned);
        }
        Ok(Descriptor::DataBlock { addr, len })
    };
    let mut runs = Runs { buf, pos: off, end, ahead: None }.peekable();
    let first = data(runs.next().ok_or(SubmitError::TooLarge)?)?;
    if runs.peek().is_none() {
        return Ok(first.encode());
    }
    let pages = list.len() / PAGE_SIZE;
    let page_iova = |p: usize| list.iova_at(p * PAGE_SIZE).ok_or(SubmitError::TooLarge);
    let put = |page: usize, slot: usize, d: Descriptor| {
        list.write_bytes(page * PAGE_SIZE + slot * DESCRIPTOR_BYTES, d.encode().as_bytes())
            .map_err(|_| SubmitError::TooLarge)
    };
    if pages == 0 {
        return Err(SubmitError::TooLarge);
    }
    put(0, 0, first)?;
    let (mut page, mut slot) = (0usize, 1usize);
    while let Some(r) = runs.next() {
        let d = data(r)?;
        if slot == DESCRIPTORS_PER_PAGE - 1 && runs.peek().is_some() {
            // The page's last slot chains to the next page (a Segment of a
            // full page; the one before the last page is fixed up below).
            if page + 1 >= pages {
                return Err(SubmitError::TooLarge);
            }
            put(page, slot, Descriptor::Segment { addr: page_iova(page + 1)?, len: PAGE_SIZE as u32 })?;
            page += 1;
            slot = 0;
        }
        put(page, slot, d)?;
        slot += 1;
    }
    let last_len = (slot * DESCRIPTOR_BYTES) as u32;
    if page == 0 {
        return Ok(Descriptor::LastSegment { addr: page_iova(0)?, len: last_len }.encode());
    }
    put(page - 1, DESCRIPTORS_PER_PAGE - 1, Descriptor::LastSegment { addr: page_iova(page)?, len: last_len })?;
    Ok(Descriptor::Segment { addr: page_iova(0)?, len: PAGE_SIZE as u32 }.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaAllocator, MemorySource, SoftIommu};
    use std::sync::Arc;

    #[test]
    fn sgls_field_round_trip() {
        assert_eq!(SglCaps::from_sgls(0), None);
        assert_eq!(SglCaps::from_sgls(3), None);
        let c = SglCaps::from_sgls(0x0005_0001).unwrap();
        assert_eq!(c.alignment, SglAlignment::Byte);
        assert!(c.bit_bucket && c.excess_length && !c.keyed && !c.mptr_sgl);
        assert_eq!(c.to_sgls(), 0x0005_0001);
        let d = SglCaps { address_offset: true, ..SglCaps::new(SglAlignment::Dword) };
        assert_eq!(d.to_sgls(), (1 << 20) | 2);
        assert_eq!(SglCaps::from_sgls(d.to_sgls()), Some(d));
    }

    #[test]
    fn descriptor_parse_and_errors() {
        let d = Descriptor::Segment { addr: 0x1000, len: 32 };
        assert_eq!(d.encode().id, 0x20);
        assert_eq!(Descriptor::parse(&d.encode()), Ok(d));
        let raw = |id| SglDescriptor::new(0, 16, id);
        assert_eq!(Descriptor::parse(&raw(0x30)), Ok(Descriptor::LastSegment { addr: 0, len: 16 }));
        assert_eq!(Descriptor::parse(&raw(0x10)), Ok(Descriptor::BitBucket { len: 16 }));
        assert_eq!(Descriptor::parse(&raw(0x40)), Err(DescriptorError::NotForPcie(4)));
        assert_eq!(Descriptor::parse(&raw(0x5a)), Err(DescriptorError::NotForPcie(5)));
        assert_eq!(Descriptor::parse(&raw(0x70)), Err(DescriptorError::ReservedType(7)));
        assert_eq!(Descriptor::parse(&raw(0x01)), Err(DescriptorError::OffsetAddress(0)));
        assert_eq!(Descriptor::parse(&raw(0x02)), Err(DescriptorError::BadSubtype { desc_type: 0, subtype: 2 }));
        assert_eq!(
            DescriptorError::OffsetAddress(0).status().code,
            StatusCode::Generic(GenericStatus::SglOffsetInvalid)
        );
        assert_eq!(
            DescriptorError::ReservedType(9).status().code,
            StatusCode::Generic(GenericStatus::SglDescriptorTypeInvalid)
        );
    }

    /// A source of several buffers back to back (each its own mapping).
    struct Bufs(Vec<DmaBuffer>);

    impl PrpSource for Bufs {
        fn len(&self) -> usize {
            self.0.iter().map(DmaBuffer::len).sum()
        }
        fn iova_at(&self, mut off: usize) -> Option<u64> {
            for b in &self.0 {
                if off < b.len() {
                    return b.iova_at(off);
                }
                off -= b.len();
            }
            None
        }
        fn contiguous_len(&self, mut off: usize) -> usize {
            for b in &self.0 {
                if off < b.len() {
                    return b.contiguous_len(off);
                }
                off -= b.len();
            }
            0
        }
    }

    /// Reference walk of an SGL built by `build`, returning the data runs.
    fn walk(sgl1: SglDescriptor, list: &DmaBuffer) -> Vec<(u64, u32)> {
        let mut out = vec![];
        let mut next = Some(Descriptor::parse(&sgl1).unwrap());
        while let Some(d) = next.take() {
            match d {
                Descriptor::DataBlock { addr, len } => out.push((addr, len)),
                Descriptor::Segment { addr, len } | Descriptor::LastSegment { addr, len } => {
                    let base = usize::try_from(addr - list.iova()).unwrap();
                    let n = len as usize / DESCRIPTOR_BYTES;
                    for i in 0..n {
                        let mut raw = [0u8; 16];
                        list.read_bytes(base + i * DESCRIPTOR_BYTES, &mut raw).unwrap();
                        let e = Descriptor::parse(&zerocopy::FromBytes::read_from_bytes(&raw[..]).unwrap()).unwrap();
                        match e {
                            Descriptor::DataBlock { addr, len } => out.push((addr, len)),
                            _ => {
                                assert_eq!(i, n - 1, "chain descriptors end a segment");
                                assert!(matches!(d, Descriptor::Segment { .. }), "no chain after last segment");
                                next = Some(e);
                            }
                        }
                    }
                }
                Descriptor::BitBucket { .. } => panic!("no bit buckets"),
            }
        }
        out
    }

    #[test]
    fn one_run_is_a_data_block_in_the_command() {
        let a = DmaAllocator::new(Arc::new(SoftIommu::default()), MemorySource::Heap);
        let buf = a.alloc(64 << 10).unwrap();
        let list = a.alloc(PAGE_SIZE).unwrap();
        let d = build(&buf, 100, 5000, &list, SglAlignment::Byte).unwrap();
        assert_eq!(Descriptor::parse(&d), Ok(Descriptor::DataBlock { addr: buf.iova() + 100, len: 5000 }));
        assert_eq!(build(&buf, 2, 8, &list, SglAlignment::Dword), Err(SubmitError::Misaligned));
        assert_eq!(build(&buf, 0, 0, &list, SglAlignment::Dword), Err(SubmitError::TooLarge));
        assert_eq!(build(&buf, 4096, 64 << 10, &list, SglAlignment::Dword), Err(SubmitError::TooLarge));
    }

    #[test]
    fn many_runs_chain_segments_and_respect_list_size() {
        let a = DmaAllocator::new(Arc::new(SoftIommu::default()), MemorySource::Heap);
        // 600 separate mappings of 8 bytes each: 600 runs, 3 segments.
        let bufs = Bufs((0..600).map(|_| a.alloc(8).unwrap()).collect());
        let list = a.alloc(3 * PAGE_SIZE).unwrap();
        let d = build(&bufs, 0, 600 * 8, &list, SglAlignment::Dword).unwrap();
        assert!(matches!(Descriptor::parse(&d), Ok(Descriptor::Segment { len: 4096, .. })));
        let runs = walk(d, &list);
        assert_eq!(runs.len(), 600);
        for (r, b) in runs.iter().zip(&bufs.0) {
            assert_eq!(*r, (b.iova(), 8));
        }
        let small = list.slice(0, 2 * PAGE_SIZE).unwrap();
        assert_eq!(build(&bufs, 0, 600 * 8, &small, SglAlignment::Dword), Err(SubmitError::TooLarge));
        // 256 runs still fit one segment (a Last Segment in the command).
        let d = build(&bufs, 0, 256 * 8, &small, SglAlignment::Dword).unwrap();
        assert!(matches!(Descriptor::parse(&d), Ok(Descriptor::LastSegment { len: 4096, .. })));
        assert_eq!(walk(d, &small).len(), 256);
        // 257 runs need two.
        let d = build(&bufs, 4, 256 * 8, &small, SglAlignment::Dword).unwrap();
        assert!(matches!(Descriptor::parse(&d), Ok(Descriptor::Segment { .. })));
        assert_eq!(walk(d, &small).len(), 257);
        assert_eq!(build(&bufs, 4, 256 * 8, &small, SglAlignment::Byte).map(|_| ()), Ok(()));
        assert_eq!(build(&bufs, 2, 16, &small, SglAlignment::Dword), Err(SubmitError::Misaligned));
        assert_eq!(list_pages_for(1 << 20, 8), 2);
        assert_eq!(segments_for(256), 1);
        assert_eq!(segments_for(257), 2);
        assert_eq!(segments_for(511), 2);
        assert_eq!(segments_for(512), 3);
    }
}
