//! NVM command set I/O commands.

use crate::command::{opcode, ParseError, QueueType};
use crate::queue::Sqe;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// An NVM I/O command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoCommand {
    /// Read.
    Read {
        /// Namespace identifier.
        nsid: u32,
        /// Starting LBA.
        slba: u64,
        /// Number of logical blocks, zero-based.
        nlb: u16,
        /// Force unit access.
        fua: bool,
        /// Limited retry.
        lr: bool,
    },
    /// Write.
    Write {
        /// Namespace identifier.
        nsid: u32,
        /// Starting LBA.
        slba: u64,
        /// Number of logical blocks, zero-based.
        nlb: u16,
        /// Force unit access.
        fua: bool,
        /// Limited retry.
        lr: bool,
    },
    /// Flush.
    Flush {
        /// Namespace identifier (FFFFFFFFh: all).
        nsid: u32,
    },
    /// Dataset Management; the data buffer holds `nr + 1` [`DsmRange`]s.
    DatasetManagement {
        /// Namespace identifier.
        nsid: u32,
        /// Number of ranges, zero-based.
        nr: u8,
        /// Attribute: deallocate.
        ad: bool,
        /// Attribute: integral dataset for write.
        idw: bool,
        /// Attribute: integral dataset for read.
        idr: bool,
    },
    /// Write Zeroes.
    WriteZeroes {
        /// Namespace identifier.
        nsid: u32,
        /// Starting LBA.
        slba: u64,
        /// Number of logical blocks, zero-based.
        nlb: u16,
        /// Deallocate the blocks.
        deac: bool,
        /// Force unit access.
        fua: bool,
        /// Limited retry.
        lr: bool,
    },
}

impl IoCommand {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Self::Read { .. } => opcode::READ,
            Self::Write { .. } => opcode::WRITE,
            Self::Flush { .. } => opcode::FLUSH,
            Self::DatasetManagement { .. } => opcode::DATASET_MANAGEMENT,
            Self::WriteZeroes { .. } => opcode::WRITE_ZEROES,
        }
    }

    /// The namespace the command addresses.
    #[inline]
    pub fn nsid(&self) -> u32 {
        match *self {
            Self::Read { nsid, .. }
            | Self::Write { nsid, .. }
            | Self::Flush { nsid }
            | Self::DatasetManagement { nsid, .. }
            | Self::WriteZeroes { nsid, .. } => nsid,
        }
    }

    /// Starting LBA and block count for Read, Write and Write Zeroes.
    #[inline]
    pub fn lba_range(&self) -> Option<(u64, u32)> {
        match *self {
            Self::Read { slba, nlb, .. } | Self::Write { slba, nlb, .. } | Self::WriteZeroes { slba, nlb, .. } => {
                Some((slba, u32::from(nlb) + 1))
            }
            _ => None,
        }
    }

    /// Bytes of data the command carries, given the namespace block size
    /// (Read / Write: blocks, Dataset Management: the range list).
    pub fn data_len(&self, block_size: u32) -> u64 {
        match *self {
            Self::Read { nlb, .. } | Self::Write { nlb, .. } => (u64::from(nlb) + 1) * u64::from(block_size),
            Self::DatasetManagement { nr, .. } => (u64::from(nr) + 1) * 16,
            Self::Flush { .. } | Self::WriteZeroes { .. } => 0,
        }
    }

    /// Builds the submission queue entry (data pointer left zero).
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut s = Sqe::new(self.opcode(), cid);
        s.nsid = self.nsid().into();
        let rw12 = |nlb: u16, fua: bool, lr: bool| u32::from(nlb) | (u32::from(fua) << 30) | (u32::from(lr) << 31);
        match *self {
            Self::Read { slba, nlb, fua, lr, .. } | Self::Write { slba, nlb, fua, lr, .. } => {
                s.cdw10 = (slba as u32).into();
                s.cdw11 = ((slba >> 32) as u32).into();
                s.cdw12 = rw12(nlb, fua, lr).into();
            }
            Self::WriteZeroes { slba, nlb, deac, fua, lr, .. } => {
                s.cdw10 = (slba as u32).into();
                s.cdw11 = ((slba >> 32) as u32).into();
                s.cdw12 = (rw12(nlb, fua, lr) | (u32::from(deac) << 25)).into();
            }
            Self::DatasetManagement { nr, ad, idw, idr, .. } => {
                s.cdw10 = u32::from(nr).into();
                s.cdw11 = (u32::from(idr) | (u32::from(idw) << 1) | (u32::from(ad) << 2)).into();
            }
            Self::Flush { .. } => {}
        }
        s
    }

    /// Parses an I/O submission queue entry.
    pub fn parse(s: &Sqe) -> Result<Self, ParseError> {
        let nsid = s.nsid.get();
        let slba = u64::from(s.cdw10.get()) | (u64::from(s.cdw11.get()) << 32);
        let d12 = s.cdw12.get();
        let nlb = d12 as u16;
        let fua = d12 & (1 << 30) != 0;
        let lr = d12 & (1 << 31) != 0;
        Ok(match s.opcode() {
            opcode::READ => Self::Read { nsid, slba, nlb, fua, lr },
            opcode::WRITE => Self::Write { nsid, slba, nlb, fua, lr },
            opcode::FLUSH => Self::Flush { nsid },
            opcode::WRITE_ZEROES => Self::WriteZeroes { nsid, slba, nlb, deac: d12 & (1 << 25) != 0, fua, lr },
            opcode::DATASET_MANAGEMENT => {
                let d11 = s.cdw11.get();
                Self::DatasetManagement {
                    nsid,
                    nr: s.cdw10.get() as u8,
                    idr: d11 & 1 != 0,
                    idw: d11 & 2 != 0,
                    ad: d11 & 4 != 0,
                }
            }
            op => return Err(ParseError::InvalidOpcode { opcode: op, queue: QueueType::Io }),
        })
    }
}

/// One 16-byte Dataset Management range.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DsmRange {
    /// Context attributes.
    pub cattr: U32,
    /// Length in logical blocks.
    pub nlb: U32,
    /// Starting LBA.
    pub slba: U64,
}
const _: () = assert!(core::mem::size_of::<DsmRange>() == 16);

impl DsmRange {
    /// A range of `nlb` blocks at `slba`.
    pub fn new(slba: u64, nlb: u32) -> Self {
        Self { cattr: 0.into(), nlb: nlb.into(), slba: slba.into() }
    }

    /// Parses up to `count` ranges from a data buffer; fails if the buffer
    /// is shorter than `count * 16` bytes.
    pub fn parse_list(data: &[u8], count: usize) -> Result<&[DsmRange], ParseError> {
        let need =
            count.checked_mul(16).ok_or(ParseError::InvalidField { field: "dsm range count", value: count as u64 })?;
        let bytes = data
            .get(..need)
            .ok_or(ParseError::InvalidField { field: "dsm range list length", value: data.len() as u64 })?;
        <[DsmRange]>::ref_from_bytes(bytes)
            .map_err(|_| ParseError::InvalidField { field: "dsm range list length", value: data.len() as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn read_layout() {
        let c = IoCommand::Read { nsid: 1, slba: 0x1_0000_0002, nlb: 7, fua: true, lr: false };
        let s = c.to_sqe(5);
        assert_eq!(s.opcode(), 2);
        assert_eq!(s.cdw10.get(), 2);
        assert_eq!(s.cdw11.get(), 1);
        assert_eq!(s.cdw12.get(), 7 | (1 << 30));
        assert_eq!(c.lba_range(), Some((0x1_0000_0002, 8)));
        assert_eq!(c.data_len(4096), 8 * 4096);
        assert_eq!(IoCommand::parse(&s), Ok(c));
    }

    #[test]
    fn write_zeroes_and_dsm_bits() {
        let wz = IoCommand::WriteZeroes { nsid: 1, slba: 0, nlb: 0xffff, deac: true, fua: false, lr: false };
        assert_eq!(wz.to_sqe(1).cdw12.get(), 0xffff | (1 << 25));
        assert_eq!(wz.data_len(512), 0);
        assert_eq!(wz.lba_range(), Some((0, 65536)));
        let dsm = IoCommand::DatasetManagement { nsid: 1, nr: 1, ad: true, idw: false, idr: false };
        let s = dsm.to_sqe(1);
        assert_eq!((s.cdw10.get(), s.cdw11.get()), (1, 4));
        assert_eq!(dsm.data_len(512), 32);
        assert_eq!(dsm.lba_range(), None);
    }

    #[test]
    fn dsm_range_list() {
        let ranges = [DsmRange::new(10, 4), DsmRange::new(100, 8)];
        let bytes = ranges.as_bytes();
        assert_eq!(&bytes[4..8], &4u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &10u64.to_le_bytes());
        let parsed = DsmRange::parse_list(bytes, 2).unwrap();
        assert_eq!(parsed, &ranges);
        assert!(DsmRange::parse_list(bytes, 3).is_err());
        assert!(DsmRange::parse_list(bytes, usize::MAX).is_err());
        assert_eq!(DsmRange::parse_list(&bytes[..20], 1).unwrap().len(), 1);
    }
}
