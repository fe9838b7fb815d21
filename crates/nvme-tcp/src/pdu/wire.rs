//! Byte layouts of the NVMe/TCP PDU headers (NVMe/TCP transport 1.0).

use nvme_spec::{Cqe, Sqe};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The 8-byte common header at the start of every PDU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct CommonHeader {
    /// PDU type.
    pub pdu_type: u8,
    /// Type specific flags (HDGSTF, DDGSTF, LAST_PDU, SUCCESS).
    pub flags: u8,
    /// Header length, without header digest.
    pub hlen: u8,
    /// PDU data offset from the start of the PDU (0 if no data).
    pub pdo: u8,
    /// Total PDU length including digests and padding.
    pub plen: U32,
}
const _: () = assert!(core::mem::size_of::<CommonHeader>() == 8);

/// ICReq (128 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct IcReqHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// PDU format version (0).
    pub pfv: U16,
    /// Host PDU data alignment, 0's based dwords.
    pub hpda: u8,
    /// Digest enables: bit 0 header, bit 1 data.
    pub dgst: u8,
    /// Maximum outstanding R2Ts per command, 0's based.
    pub maxr2t: U32,
    /// Reserved.
    pub rsvd: [u8; 112],
}
const _: () = assert!(core::mem::size_of::<IcReqHeader>() == 128);

/// ICResp (128 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct IcRespHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// PDU format version (0).
    pub pfv: U16,
    /// Controller PDU data alignment, 0's based dwords.
    pub cpda: u8,
    /// Digest enables: bit 0 header, bit 1 data.
    pub dgst: u8,
    /// Maximum data bytes in one H2CData PDU.
    pub maxh2cdata: U32,
    /// Reserved.
    pub rsvd: [u8; 112],
}
const _: () = assert!(core::mem::size_of::<IcRespHeader>() == 128);

/// H2CTermReq / C2HTermReq header (24 bytes); the offending PDU header
/// follows as data.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct TermReqHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// Fatal error status.
    pub fes: U16,
    /// Fatal error information.
    pub fei: U32,
    /// Reserved.
    pub rsvd: [u8; 10],
}
const _: () = assert!(core::mem::size_of::<TermReqHeader>() == 24);

/// CapsuleCmd header (72 bytes): the submission queue entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct CapsuleCmdHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// The command.
    pub sqe: Sqe,
}
const _: () = assert!(core::mem::size_of::<CapsuleCmdHeader>() == 72);

/// CapsuleResp header (24 bytes): the completion queue entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct CapsuleRespHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// The completion.
    pub cqe: Cqe,
}
const _: () = assert!(core::mem::size_of::<CapsuleRespHeader>() == 24);

/// H2CData, C2HData and R2T header (24 bytes; C2HData's TTAG is reserved).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DataHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// Command capsule CID.
    pub cccid: U16,
    /// Transfer tag (from R2T).
    pub ttag: U16,
    /// Offset of this data (or of the requested data for R2T) in the
    /// command's data buffer.
    pub offset: U32,
    /// Length of the data.
    pub length: U32,
    /// Reserved.
    pub rsvd: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<DataHeader>() == 24);
