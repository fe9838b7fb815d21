//! Submission and completion queue entries.

use crate::status::Status;
use crate::util::{bits32, set_bits32};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// A 64-byte submission queue entry (NVMe Base 2.0, figure "Common Command
/// Format").
///
/// Dword 0 holds the opcode (bits 7:0), fused operation (9:8), PRP or SGL
/// selection (15:14) and the command identifier (31:16).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Sqe {
    /// Command dword 0: opcode, FUSE, PSDT, CID.
    pub cdw0: U32,
    /// Namespace identifier (for Fabrics commands, byte 4 holds FCTYPE).
    pub nsid: U32,
    /// Command dword 2.
    pub cdw2: U32,
    /// Command dword 3.
    pub cdw3: U32,
    /// Metadata pointer.
    pub mptr: U64,
    /// Data pointer: two PRP entries or one SGL descriptor (16 bytes).
    pub dptr: [u8; 16],
    /// Command dword 10.
    pub cdw10: U32,
    /// Command dword 11.
    pub cdw11: U32,
    /// Command dword 12.
    pub cdw12: U32,
    /// Command dword 13.
    pub cdw13: U32,
    /// Command dword 14.
    pub cdw14: U32,
    /// Command dword 15.
    pub cdw15: U32,
}
const _: () = assert!(core::mem::size_of::<Sqe>() == 64);

/// How the data pointer of a command is to be interpreted (PSDT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Psdt {
    /// PRP entries.
    Prp,
    /// SGL; metadata pointer is a contiguous buffer.
    SglMetaBuffer,
    /// SGL; metadata pointer addresses an SGL segment.
    SglMetaSegment,
}

impl Sqe {
    /// A zeroed entry with the given opcode and command identifier.
    #[inline]
    pub fn new(opcode: u8, cid: u16) -> Self {
        let mut s = Self::new_zeroed();
        s.set_opcode(opcode);
        s.set_cid(cid);
        s
    }

    /// The opcode (CDW0 bits 7:0).
    #[inline]
    pub fn opcode(&self) -> u8 {
        bits32(self.cdw0.get(), 0, 8) as u8
    }

    /// Sets the opcode.
    #[inline]
    pub fn set_opcode(&mut self, opcode: u8) {
        self.cdw0 = set_bits32(self.cdw0.get(), 0, 8, opcode.into()).into();
    }

    /// The fused operation field (CDW0 bits 9:8).
    pub fn fuse(&self) -> u8 {
        bits32(self.cdw0.get(), 8, 2) as u8
    }

    /// The command identifier (CDW0 bits 31:16).
    #[inline]
    pub fn cid(&self) -> u16 {
        bits32(self.cdw0.get(), 16, 16) as u16
    }

    /// Sets the command identifier.
    #[inline]
    pub fn set_cid(&mut self, cid: u16) {
        self.cdw0 = set_bits32(self.cdw0.get(), 16, 16, cid.into()).into();
    }

    /// The PRP/SGL selector; `None` for the reserved encoding 11b.
    #[inline]
    pub fn psdt(&self) -> Option<Psdt> {
        match bits32(self.cdw0.get(), 14, 2) {
            0 => Some(Psdt::Prp),
            1 => Some(Psdt::SglMetaBuffer),
            2 => Some(Psdt::SglMetaSegment),
            _ => None,
        }
    }

    /// Sets the PRP/SGL selector.
    #[inline]
    pub fn set_psdt(&mut self, psdt: Psdt) {
        let v = match psdt {
            Psdt::Prp => 0,
            Psdt::SglMetaBuffer => 1,
            Psdt::SglMetaSegment => 2,
        };
        self.cdw0 = set_bits32(self.cdw0.get(), 14, 2, v).into();
    }

    /// The data pointer interpreted according to PSDT.
    #[inline]
    pub fn data_pointer(&self) -> Option<DataPointer> {
        Some(match self.psdt()? {
            Psdt::Prp => {
                let (p1, p2) = self.dptr.split_at(8);
                DataPointer::Prp {
                    prp1: u64::from_le_bytes(p1.try_into().ok()?),
                    prp2: u64::from_le_bytes(p2.try_into().ok()?),
                }
            }
            Psdt::SglMetaBuffer | Psdt::SglMetaSegment => {
                DataPointer::Sgl(SglDescriptor::read_from_bytes(&self.dptr).ok()?)
            }
        })
    }

    /// Sets PSDT and the data pointer.
    #[inline]
    pub fn set_data_pointer(&mut self, dp: DataPointer) {
        match dp {
            DataPointer::Prp { prp1, prp2 } => {
                self.set_psdt(Psdt::Prp);
                let (a, b) = self.dptr.split_at_mut(8);
                a.copy_from_slice(&prp1.to_le_bytes());
                b.copy_from_slice(&prp2.to_le_bytes());
            }
            DataPointer::Sgl(sgl) => {
                self.set_psdt(Psdt::SglMetaBuffer);
                self.dptr.copy_from_slice(sgl.as_bytes());
            }
        }
    }

    /// Command dwords 10..=15 as an array.
    pub fn cdw10_15(&self) -> [u32; 6] {
        [self.cdw10.get(), self.cdw11.get(), self.cdw12.get(), self.cdw13.get(), self.cdw14.get(), self.cdw15.get()]
    }
}

/// A command's data pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPointer {
    /// PRP entry 1 and PRP entry 2 (PCIe).
    Prp {
        /// PRP entry 1.
        prp1: u64,
        /// PRP entry 2 or PRP list pointer.
        prp2: u64,
    },
    /// A single SGL descriptor (Fabrics, or PCIe with SGL support).
    Sgl(SglDescriptor),
}

/// A 16-byte SGL descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SglDescriptor {
    /// Address (or offset into in-capsule data).
    pub addr: U64,
    /// Length in bytes.
    pub length: U32,
    /// Reserved (keyed descriptors use these bytes for the key).
    pub rsvd: [u8; 3],
    /// Descriptor type (bits 7:4) and subtype (bits 3:0).
    pub id: u8,
}
const _: () = assert!(core::mem::size_of::<SglDescriptor>() == 16);

impl SglDescriptor {
    /// Type 0h Data Block, subtype 1h Offset: data is in the capsule at
    /// `addr` bytes from the start of in-capsule data.
    pub const ID_DATA_BLOCK_OFFSET: u8 = 0x01;
    /// Type 5h Transport Data Block, subtype Ah transport specific: data is
    /// moved by the transport (NVMe/TCP R2T / H2CData / C2HData).
    pub const ID_TRANSPORT_DATA_BLOCK: u8 = 0x5a;
    /// Type 0h Data Block, subtype 0h Address (PCIe SGL).
    pub const ID_DATA_BLOCK_ADDRESS: u8 = 0x00;

    /// A descriptor with the given address, length and identifier byte.
    #[inline]
    pub fn new(addr: u64, length: u32, id: u8) -> Self {
        Self { addr: addr.into(), length: length.into(), rsvd: [0; 3], id }
    }

    /// In-capsule data of `length` bytes at `offset` within the capsule data.
    #[inline]
    pub fn in_capsule(offset: u64, length: u32) -> Self {
        Self::new(offset, length, Self::ID_DATA_BLOCK_OFFSET)
    }

    /// Transport-moved data of `length` bytes.
    #[inline]
    pub fn transport(length: u32) -> Self {
        Self::new(0, length, Self::ID_TRANSPORT_DATA_BLOCK)
    }

    /// Descriptor type (bits 7:4 of the identifier).
    pub fn desc_type(&self) -> u8 {
        self.id >> 4
    }

    /// Descriptor subtype (bits 3:0 of the identifier).
    pub fn subtype(&self) -> u8 {
        self.id & 0xf
    }
}

/// A 16-byte completion queue entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Cqe {
    /// Command specific result (dword 0).
    pub dw0: U32,
    /// Command specific result (dword 1).
    pub dw1: U32,
    /// Submission queue head pointer.
    pub sqhd: U16,
    /// Submission queue identifier.
    pub sqid: U16,
    /// Command identifier.
    pub cid: U16,
    /// Phase tag (bit 0) and status field (bits 15:1).
    pub status: U16,
}
const _: () = assert!(core::mem::size_of::<Cqe>() == 16);

impl Cqe {
    /// A completion for `cid` with the given status and phase 0.
    #[inline]
    pub fn new(cid: u16, status: Status) -> Self {
        let mut c = Self::new_zeroed();
        c.cid = cid.into();
        c.status = status.to_raw().into();
        c
    }

    /// The phase tag.
    pub fn phase(&self) -> bool {
        self.status.get() & 1 != 0
    }

    /// Sets the phase tag.
    pub fn set_phase(&mut self, phase: bool) {
        self.status = ((self.status.get() & !1) | u16::from(phase)).into();
    }

    /// The decoded status field (phase bit ignored).
    #[inline]
    pub fn status(&self) -> Status {
        Status::from_raw(self.status.get())
    }

    /// The 64-bit result (dword 1 : dword 0), e.g. a Property Get value.
    pub fn result64(&self) -> u64 {
        (u64::from(self.dw1.get()) << 32) | u64::from(self.dw0.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{GenericStatus, StatusCode};

    #[test]
    fn sqe_cdw0_fields() {
        let mut s = Sqe::new(0x02, 0xbeef);
        assert_eq!(s.opcode(), 0x02);
        assert_eq!(s.cid(), 0xbeef);
        assert_eq!(s.psdt(), Some(Psdt::Prp));
        s.set_psdt(Psdt::SglMetaSegment);
        assert_eq!(s.psdt(), Some(Psdt::SglMetaSegment));
        assert_eq!(s.cid(), 0xbeef);
        assert_eq!(s.as_bytes()[0], 0x02);
        assert_eq!(&s.as_bytes()[2..4], &0xbeefu16.to_le_bytes());
        s.cdw0 = (s.cdw0.get() | 0xc000).into();
        assert_eq!(s.psdt(), None);
        assert_eq!(s.data_pointer(), None);
    }

    #[test]
    fn data_pointer_round_trip() {
        let mut s = Sqe::new(1, 1);
        let prp = DataPointer::Prp { prp1: 0x1000, prp2: 0x2000_0000_0000 };
        s.set_data_pointer(prp);
        assert_eq!(s.data_pointer(), Some(prp));
        assert_eq!(&s.as_bytes()[24..32], &0x1000u64.to_le_bytes());
        let sgl = DataPointer::Sgl(SglDescriptor::transport(8192));
        s.set_data_pointer(sgl);
        assert_eq!(s.data_pointer(), Some(sgl));
        assert_eq!(s.as_bytes()[39], 0x5a);
        assert_eq!(&s.as_bytes()[32..36], &8192u32.to_le_bytes());
        let DataPointer::Sgl(d) = sgl else { unreachable!("constructed as sgl") };
        assert_eq!((d.desc_type(), d.subtype()), (5, 0xa));
    }

    #[test]
    fn cqe_layout_and_status() {
        let st = Status::new(StatusCode::Generic(GenericStatus::InvalidField), true);
        let mut c = Cqe::new(7, st);
        c.set_phase(true);
        assert!(c.phase());
        assert_eq!(c.status(), st);
        let b = c.as_bytes();
        assert_eq!(&b[12..14], &7u16.to_le_bytes());
        // SC=2 at bits 8:1, DNR bit 15, phase bit 0.
        assert_eq!(u16::from_le_bytes([b[14], b[15]]), 0x8000 | (2 << 1) | 1);
        c.dw0 = 0x1122_3344.into();
        c.dw1 = 0x5566_7788.into();
        assert_eq!(c.result64(), 0x5566_7788_1122_3344);
    }
}
