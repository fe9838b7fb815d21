//! NVMe/TCP PDUs: types, typed header parsing with validation, encoding,
//! digests.
//!
//! A PDU is laid out as `header (hlen) | HDGST (4, optional) | padding up to
//! PDO | data | DDGST (4, optional)`; `plen` covers all of it.

#![forbid(unsafe_code)]

pub mod digest;
pub mod wire;

use nvme_spec::{Cqe, Sqe};
use thiserror::Error;
use wire::{CapsuleCmdHeader, CapsuleRespHeader, CommonHeader, DataHeader, IcReqHeader, IcRespHeader, TermReqHeader};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Header digest flag (all PDUs that may carry one).
pub const FLAG_HDGST: u8 = 0x01;
/// Data digest flag.
pub const FLAG_DDGST: u8 = 0x02;
/// H2CData / C2HData: last PDU of the transfer.
pub const FLAG_LAST_PDU: u8 = 0x04;
/// C2HData: command completed successfully, no CapsuleResp follows.
pub const FLAG_SUCCESS: u8 = 0x08;

/// Digest enable bit for header digests in ICReq / ICResp.
pub const DGST_HEADER: u8 = 0x01;
/// Digest enable bit for data digests in ICReq / ICResp.
pub const DGST_DATA: u8 = 0x02;

/// Maximum bytes of a PDU before its data: header, digest and padding (PDO
/// is one byte).
pub const MAX_HEADER_REGION: usize = 256;
/// Maximum data of a termination request (the offending header).
pub const MAX_TERM_DATA: usize = 152;

/// Which end of the connection is receiving (or sending) PDUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The host (initiator).
    Host,
    /// The controller (target).
    Controller,
}

/// PDU types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PduType {
    /// Initialize connection request (host to controller).
    IcReq,
    /// Initialize connection response.
    IcResp,
    /// Host to controller termination request.
    H2CTermReq,
    /// Controller to host termination request.
    C2HTermReq,
    /// Command capsule.
    CapsuleCmd,
    /// Response capsule.
    CapsuleResp,
    /// Host to controller data.
    H2CData,
    /// Controller to host data.
    C2HData,
    /// Ready to transfer.
    R2T,
}

impl PduType {
    /// Decodes the type byte.
    pub fn from_raw(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Self::IcReq,
            0x01 => Self::IcResp,
            0x02 => Self::H2CTermReq,
            0x03 => Self::C2HTermReq,
            0x04 => Self::CapsuleCmd,
            0x05 => Self::CapsuleResp,
            0x06 => Self::H2CData,
            0x07 => Self::C2HData,
            0x09 => Self::R2T,
            _ => return None,
        })
    }

    /// The type byte.
    pub const fn to_raw(self) -> u8 {
        match self {
            Self::IcReq => 0x00,
            Self::IcResp => 0x01,
            Self::H2CTermReq => 0x02,
            Self::C2HTermReq => 0x03,
            Self::CapsuleCmd => 0x04,
            Self::CapsuleResp => 0x05,
            Self::H2CData => 0x06,
            Self::C2HData => 0x07,
            Self::R2T => 0x09,
        }
    }

    /// The role that receives this PDU type.
    pub fn receiver(self) -> Role {
        match self {
            Self::IcReq | Self::H2CTermReq | Self::CapsuleCmd | Self::H2CData => Role::Controller,
            _ => Role::Host,
        }
    }

    /// The fixed header length (HLEN).
    pub fn hlen(self) -> u8 {
        match self {
            Self::IcReq | Self::IcResp => 128,
            Self::CapsuleCmd => 72,
            _ => 24,
        }
    }

    /// Whether the PDU carries a header digest when they are negotiated.
    pub fn has_hdgst(self) -> bool {
        !matches!(self, Self::IcReq | Self::IcResp | Self::H2CTermReq | Self::C2HTermReq)
    }

    /// Whether the PDU may carry data.
    pub fn may_have_data(self) -> bool {
        matches!(self, Self::CapsuleCmd | Self::H2CData | Self::C2HData | Self::H2CTermReq | Self::C2HTermReq)
    }
}

/// Fatal error status of a termination request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fes {
    /// Invalid PDU header field (FEI: byte offset of the field).
    InvalidHeaderField,
    /// PDU sequence error.
    SequenceError,
    /// Header digest error.
    HeaderDigest,
    /// Data transfer out of range.
    DataOutOfRange,
    /// Data transfer limit exceeded (R2T limit).
    R2tLimitExceeded,
    /// Unsupported parameter (FEI: byte offset of the field).
    UnsupportedParameter,
    /// A value this crate does not name.
    Other(u16),
}

impl Fes {
    /// Decodes the FES field.
    pub fn from_raw(v: u16) -> Self {
        match v {
            1 => Self::InvalidHeaderField,
            2 => Self::SequenceError,
            3 => Self::HeaderDigest,
            4 => Self::DataOutOfRange,
            5 => Self::R2tLimitExceeded,
            6 => Self::UnsupportedParameter,
            o => Self::Other(o),
        }
    }

    /// The FES field.
    pub fn to_raw(self) -> u16 {
        match self {
            Self::InvalidHeaderField => 1,
            Self::SequenceError => 2,
            Self::HeaderDigest => 3,
            Self::DataOutOfRange => 4,
            Self::R2tLimitExceeded => 5,
            Self::UnsupportedParameter => 6,
            Self::Other(o) => o,
        }
    }
}

/// ICReq fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcReq {
    /// PDU format version.
    pub pfv: u16,
    /// Host PDU data alignment (0's based dwords).
    pub hpda: u8,
    /// Header digest requested.
    pub hdgst: bool,
    /// Data digest requested.
    pub ddgst: bool,
    /// Maximum outstanding R2Ts per command, 0's based.
    pub maxr2t: u32,
}

/// ICResp fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcResp {
    /// PDU format version.
    pub pfv: u16,
    /// Controller PDU data alignment (0's based dwords).
    pub cpda: u8,
    /// Header digest enabled.
    pub hdgst: bool,
    /// Data digest enabled.
    pub ddgst: bool,
    /// Maximum H2CData data length.
    pub maxh2cdata: u32,
}

/// Termination request fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermReq {
    /// Fatal error status.
    pub fes: Fes,
    /// Fatal error information.
    pub fei: u32,
}

/// H2CData / C2HData / R2T fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPdu {
    /// Command identifier.
    pub cccid: u16,
    /// Transfer tag (H2CData, R2T).
    pub ttag: u16,
    /// Offset in the command's data buffer.
    pub offset: u32,
    /// Data length.
    pub length: u32,
    /// LAST_PDU flag (data PDUs).
    pub last: bool,
    /// SUCCESS flag (C2HData).
    pub success: bool,
}

/// A PDU header, typed.
///
/// `repr(C, u32)`: a 4-byte tag and 4-byte aligned fields, so the 64-byte
/// SQE sits aligned instead of right after a 1-byte tag; moving the value
/// then takes whole-word loads of whole-word stores (the packed layout made
/// every copy of a just-parsed PDU stall on store forwarding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, u32)]
pub enum Pdu {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq; data (the offending header) follows.
    H2CTermReq(TermReq),
    /// C2HTermReq.
    C2HTermReq(TermReq),
    /// Command capsule with `data_len` bytes of in-capsule data.
    CapsuleCmd {
        /// The command.
        sqe: Sqe,
        /// In-capsule data length.
        data_len: u32,
    },
    /// Response capsule.
    CapsuleResp {
        /// The completion.
        cqe: Cqe,
    },
    /// H2CData.
    H2CData(DataPdu),
    /// C2HData.
    C2HData(DataPdu),
    /// R2T.
    R2T(DataPdu),
}

impl Pdu {
    /// The PDU type.
    pub fn pdu_type(&self) -> PduType {
        match self {
            Self::IcReq(_) => PduType::IcReq,
            Self::IcResp(_) => PduType::IcResp,
            Self::H2CTermReq(_) => PduType::H2CTermReq,
            Self::C2HTermReq(_) => PduType::C2HTermReq,
            Self::CapsuleCmd { .. } => PduType::CapsuleCmd,
            Self::CapsuleResp { .. } => PduType::CapsuleResp,
            Self::H2CData(_) => PduType::H2CData,
            Self::C2HData(_) => PduType::C2HData,
            Self::R2T(_) => PduType::R2T,
        }
    }

    /// Length of the data part.
    pub fn data_len(&self) -> u32 {
        match self {
            Self::CapsuleCmd { data_len, .. } => *data_len,
            Self::H2CData(d) | Self::C2HData(d) => d.length,
            _ => 0,
        }
    }
}

/// Errors in received PDUs. Each names the offending field; all are fatal
/// to the connection (the receiver sends a termination request built by
/// [`PduError::term_req`] and closes it).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PduError {
    /// Unknown PDU type byte.
    #[error("unknown pdu type {0:#04x}")]
    UnknownType(u8),
    /// A PDU type that is not sent in this direction.
    #[error("{pdu_type:?} pdu is not valid towards the {receiver:?}")]
    WrongDirection {
        /// The type.
        pdu_type: PduType,
        /// Who received it.
        receiver: Role,
    },
    /// HLEN does not match the type.
    #[error("{pdu_type:?} pdu with hlen {hlen}, expected {expected}")]
    BadHlen {
        /// The type.
        pdu_type: PduType,
        /// Received HLEN.
        hlen: u8,
        /// Required HLEN.
        expected: u8,
    },
    /// Header digest flag does not match the negotiated setting.
    #[error("{pdu_type:?} pdu flags {flags:#04x} disagree with negotiated digests")]
    DigestFlag {
        /// The type.
        pdu_type: PduType,
        /// Received flags.
        flags: u8,
    },
    /// PDO inconsistent with HLEN / digest / PLEN.
    #[error("{pdu_type:?} pdu with pdo {pdo}, hlen {hlen}, plen {plen}")]
    BadPdo {
        /// The type.
        pdu_type: PduType,
        /// Received PDO.
        pdo: u8,
        /// Received HLEN.
        hlen: u8,
        /// Received PLEN.
        plen: u32,
    },
    /// PDO not a multiple of the negotiated data alignment.
    #[error("pdu data offset {pdo} not aligned to {align} bytes")]
    Misaligned {
        /// Received PDO.
        pdo: u8,
        /// Required alignment.
        align: u32,
    },
    /// PLEN inconsistent with the type.
    #[error("{pdu_type:?} pdu with plen {plen}")]
    BadPlen {
        /// The type.
        pdu_type: PduType,
        /// Received PLEN.
        plen: u32,
    },
    /// Data length field disagrees with PLEN.
    #[error("data length field {field} but plen leaves {from_plen} bytes of data")]
    DataLengthMismatch {
        /// DATAL (or R2TL) field.
        field: u32,
        /// Data length implied by PLEN.
        from_plen: u32,
    },
    /// Data beyond the negotiated or configured limit.
    #[error("{pdu_type:?} pdu carries {len} data bytes, limit {max}")]
    DataTooLong {
        /// The type.
        pdu_type: PduType,
        /// Data length.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// Header digest mismatch.
    #[error("header digest {got:#010x}, computed {computed:#010x}")]
    HeaderDigest {
        /// Received digest.
        got: u32,
        /// Computed digest.
        computed: u32,
    },
    /// Data digest mismatch.
    #[error("data digest {got:#010x}, computed {computed:#010x}")]
    DataDigest {
        /// Received digest.
        got: u32,
        /// Computed digest.
        computed: u32,
    },
    /// ICReq / ICResp field out of range.
    #[error("unsupported {field} {value}")]
    Unsupported {
        /// Field name.
        field: &'static str,
        /// Received value.
        value: u32,
        /// Byte offset of the field in the PDU.
        offset: u8,
    },
    /// Fewer bytes than the PDU needs (whole-PDU parsing only).
    #[error("pdu of {plen} bytes truncated to {got}")]
    Truncated {
        /// PLEN.
        plen: u32,
        /// Bytes available.
        got: usize,
    },
}

impl PduError {
    /// The FES / FEI to report in a termination request.
    pub fn term_req(&self) -> TermReq {
        let (fes, fei) = match *self {
            Self::UnknownType(_) | Self::WrongDirection { .. } => (Fes::InvalidHeaderField, 0),
            Self::DigestFlag { .. } => (Fes::InvalidHeaderField, 1),
            Self::BadHlen { .. } => (Fes::InvalidHeaderField, 2),
            Self::BadPdo { .. } | Self::Misaligned { .. } => (Fes::InvalidHeaderField, 3),
            Self::BadPlen { .. } | Self::Truncated { .. } => (Fes::InvalidHeaderField, 4),
            Self::DataLengthMismatch { .. } => (Fes::InvalidHeaderField, 16),
            Self::DataTooLong { .. } => (Fes::DataOutOfRange, 0),
            Self::HeaderDigest { .. } => (Fes::HeaderDigest, 0),
            Self::DataDigest { .. } => (Fes::InvalidHeaderField, 0),
            Self::Unsupported { offset, .. } => (Fes::UnsupportedParameter, offset.into()),
        };
        TermReq { fes, fei }
    }
}

/// What a receiver accepts. Before the IC exchange digests are off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxConfig {
    /// Who receives.
    pub role: Role,
    /// Header digests negotiated.
    pub hdgst: bool,
    /// Data digests negotiated.
    pub ddgst: bool,
    /// Required PDO alignment in bytes of received data PDUs:
    /// `(CPDA + 1) * 4` at the controller, `(HPDA + 1) * 4` at the host.
    pub align: u32,
    /// Largest data part accepted in one PDU (controller: MAXH2CDATA for
    /// H2CData; host: its C2HData limit).
    pub max_data: u32,
    /// Largest in-capsule data accepted with a CapsuleCmd (controller:
    /// IOCCSZ * 16 - 64).
    pub max_incapsule: u32,
}

impl RxConfig {
    /// The configuration before the IC exchange.
    pub fn initial(role: Role, max_data: u32) -> Self {
        Self { role, hdgst: false, ddgst: false, align: 4, max_data, max_incapsule: 0 }
    }
}

/// What the common header says about the rest of the PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// PDU type.
    pub pdu_type: PduType,
    /// Header length.
    pub hlen: usize,
    /// Header digest present.
    pub hdgst: bool,
    /// Bytes from the start of the PDU to the data (or to the end for PDUs
    /// without data): header, digest, padding.
    pub header_region: usize,
    /// Data bytes.
    pub data_len: u32,
    /// Data digest present after the data.
    pub ddgst: bool,
}

impl Layout {
    /// Total PDU length.
    pub fn plen(&self) -> usize {
        self.header_region + self.data_len as usize + if self.ddgst { 4 } else { 0 }
    }
}

/// Validates a common header against `cfg` and computes the layout of the
/// rest of the PDU.
#[inline(always)]
pub fn layout(ch: &CommonHeader, cfg: &RxConfig) -> Result<Layout, PduError> {
    let t = PduType::from_raw(ch.pdu_type).ok_or(PduError::UnknownType(ch.pdu_type))?;
    if t.receiver() != cfg.role {
        return Err(PduError::WrongDirection { pdu_type: t, receiver: cfg.role });
    }
    if ch.hlen != t.hlen() {
        return Err(PduError::BadHlen { pdu_type: t, hlen: ch.hlen, expected: t.hlen() });
    }
    let hlen = usize::from(ch.hlen);
    let plen = ch.plen.get();
    let hdgst = t.has_hdgst() && cfg.hdgst;
    if (ch.flags & FLAG_HDGST != 0) != hdgst {
        return Err(PduError::DigestFlag { pdu_type: t, flags: ch.flags });
    }
    let after_header = hlen + if hdgst { 4 } else { 0 };
    let bad_pdo = PduError::BadPdo { pdu_type: t, pdo: ch.pdo, hlen: ch.hlen, plen };
    let bad_plen = PduError::BadPlen { pdu_type: t, plen };
    if matches!(t, PduType::H2CTermReq | PduType::C2HTermReq) {
        // Data is the offending header right after ours; no digests.
        if ch.flags & FLAG_DDGST != 0 {
            return Err(PduError::DigestFlag { pdu_type: t, flags: ch.flags });
        }
        let plen_us = plen as usize;
        if plen_us < hlen || plen_us > hlen + MAX_TERM_DATA {
            return Err(bad_plen);
        }
        return Ok(Layout {
            pdu_type: t,
            hlen,
            hdgst: false,
            header_region: hlen,
            data_len: plen - u32::from(ch.hlen),
            ddgst: false,
        });
    }
    let ddgst_flag = ch.flags & FLAG_DDGST != 0;
    let has_data = t.may_have_data() && plen as usize > after_header;
    if !has_data {
        if ddgst_flag {
            return Err(PduError::DigestFlag { pdu_type: t, flags: ch.flags });
        }
        if plen as usize != after_header {
            return Err(bad_plen);
        }
        if ch.pdo != 0 && usize::from(ch.pdo) != after_header {
            return Err(bad_pdo);
        }
        return Ok(Layout { pdu_type: t, hlen, hdgst, header_region: after_header, data_len: 0, ddgst: false });
    }
    if ddgst_flag != cfg.ddgst {
        return Err(PduError::DigestFlag { pdu_type: t, flags: ch.flags });
    }
    let pdo = usize::from(ch.pdo);
    if pdo < after_header || pdo > plen as usize {
        return Err(bad_pdo);
    }
    if cfg.align != 0 && (pdo as u32).checked_rem(cfg.align) != Some(0) {
        return Err(PduError::Misaligned { pdo: ch.pdo, align: cfg.align });
    }
    let dd = if ddgst_flag { 4 } else { 0 };
    let data_len = plen.checked_sub(pdo as u32 + dd).filter(|&n| n > 0).ok_or(bad_plen)?;
    let max = if t == PduType::CapsuleCmd { cfg.max_incapsule } else { cfg.max_data };
    if data_len > max {
        return Err(PduError::DataTooLong { pdu_type: t, len: data_len, max });
    }
    Ok(Layout { pdu_type: t, hlen, hdgst, header_region: pdo, data_len, ddgst: ddgst_flag })
}

/// Parses and validates the complete header region (`layout.header_region`
/// bytes: header, header digest, padding) of a PDU whose layout came from
/// [`layout`].
#[inline(always)]
pub fn parse_header(region: &[u8], l: &Layout) -> Result<Pdu, PduError> {
    let truncated = PduError::Truncated { plen: l.plen() as u32, got: region.len() };
    let hdr = region.get(..l.hlen).ok_or(truncated)?;
    if l.hdgst {
        let d = region.get(l.hlen..l.hlen + 4).ok_or(truncated)?;
        let got = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let computed = digest::crc32c(hdr);
        if got != computed {
            return Err(PduError::HeaderDigest { got, computed });
        }
    }
    let flags = hdr.get(1).copied().unwrap_or(0);
    Ok(match l.pdu_type {
        PduType::IcReq => {
            let h = IcReqHeader::read_from_bytes(hdr).map_err(|_| truncated)?;
            let pfv = h.pfv.get();
            if pfv != 0 {
                return Err(PduError::Unsupported { field: "pfv", value: pfv.into(), offset: 8 });
            }
            if h.hpda > 31 {
                return Err(PduError::Unsupported { field: "hpda", value: h.hpda.into(), offset: 10 });
            }
            Pdu::IcReq(IcReq {
                pfv,
                hpda: h.hpda,
                hdgst: h.dgst & DGST_HEADER != 0,
                ddgst: h.dgst & DGST_DATA != 0,
                maxr2t: h.maxr2t.get(),
            })
        }
        PduType::IcResp => {
            let h = IcRespHeader::read_from_bytes(hdr).map_err(|_| truncated)?;
            let pfv = h.pfv.get();
            if pfv != 0 {
                return Err(PduError::Unsupported { field: "pfv", value: pfv.into(), offset: 8 });
            }
            if h.cpda > 31 {
                return Err(PduError::Unsupported { field: "cpda", value: h.cpda.into(), offset: 10 });
            }
            let m = h.maxh2cdata.get();
            if m < 4096 || m.checked_rem(4) != Some(0) {
                return Err(PduError::Unsupported { field: "maxh2cdata", value: m, offset: 12 });
            }
            Pdu::IcResp(IcResp {
                pfv,
                cpda: h.cpda,
                hdgst: h.dgst & DGST_HEADER != 0,
                ddgst: h.dgst & DGST_DATA != 0,
                maxh2cdata: m,
            })
        }
        PduType::H2CTermReq | PduType::C2HTermReq => {
            let h = TermReqHeader::read_from_bytes(hdr).map_err(|_| truncated)?;
            let t = TermReq { fes: Fes::from_raw(h.fes.get()), fei: h.fei.get() };
            if l.pdu_type == PduType::H2CTermReq {
                Pdu::H2CTermReq(t)
            } else {
                Pdu::C2HTermReq(t)
            }
        }
        PduType::CapsuleCmd => {
            let h = CapsuleCmdHeader::read_from_bytes(hdr).map_err(|_| truncated)?;
            Pdu::CapsuleCmd { sqe: h.sqe, data_len: l.data_len }
        }
        PduType::CapsuleResp => {
            let h = CapsuleRespHeader::read_from_bytes(hdr).map_err(|_| truncated)?;
            Pdu::CapsuleResp { cqe: h.cqe }
        }
        PduType::H2CData | PduType::C2HData | PduType::R2T => {
            let h = DataHeader::read_from_bytes(hdr).map_err(|_| truncated)?;
            let t = l.pdu_type;
            // Reserved fields and flags that do not apply to the type are
            // ignored (and read as zero).
            let d = DataPdu {
                cccid: h.cccid.get(),
                ttag: if t == PduType::C2HData { 0 } else { h.ttag.get() },
                offset: h.offset.get(),
                length: h.length.get(),
                last: t != PduType::R2T && flags & FLAG_LAST_PDU != 0,
                success: t == PduType::C2HData && flags & FLAG_SUCCESS != 0,
            };
            if d.length == 0 {
                return Err(PduError::BadPlen { pdu_type: t, plen: l.plen() as u32 });
            }
            match t {
                PduType::R2T => Pdu::R2T(d),
                _ => {
                    if d.length != l.data_len {
                        return Err(PduError::DataLengthMismatch { field: d.length, from_plen: l.data_len });
                    }
                    if t == PduType::H2CData {
                        Pdu::H2CData(d)
                    } else {
                        Pdu::C2HData(d)
                    }
                }
            }
        }
    })
}

/// Parses one complete PDU from the start of `buf`: returns the header,
/// the data part and the total length consumed. Verifies both digests.
pub fn parse_pdu<'a>(buf: &'a [u8], cfg: &RxConfig) -> Result<(Pdu, &'a [u8], usize), PduError> {
    let ch = CommonHeader::read_from_prefix(buf)
        .map(|(c, _)| c)
        .map_err(|_| PduError::Truncated { plen: 8, got: buf.len() })?;
    let l = layout(&ch, cfg)?;
    let total = l.plen();
    let pdu_bytes = buf.get(..total).ok_or(PduError::Truncated { plen: total as u32, got: buf.len() })?;
    let region = pdu_bytes.get(..l.header_region).unwrap_or(&[]);
    let pdu = parse_header(region, &l)?;
    let data_end = l.header_region + l.data_len as usize;
    let data = pdu_bytes.get(l.header_region..data_end).unwrap_or(&[]);
    if l.ddgst {
        let d = pdu_bytes.get(data_end..data_end + 4).unwrap_or(&[0; 4]);
        let got = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let computed = digest::crc32c(data);
        if got != computed {
            return Err(PduError::DataDigest { got, computed });
        }
    }
    Ok((pdu, data, total))
}

/// What a sender applies when encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxConfig {
    /// Header digests negotiated.
    pub hdgst: bool,
    /// Data digests negotiated.
    pub ddgst: bool,
    /// PDO alignment the peer requires, in bytes.
    pub align: u32,
}

impl TxConfig {
    /// Before the IC exchange.
    pub const INITIAL: Self = Self { hdgst: false, ddgst: false, align: 4 };
}

/// An encoded PDU header region (header, digest, padding), ready to be
/// followed by `data_len` data bytes and the data digest if `ddgst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_REGION],
    len: u8,
    /// Data bytes that must follow.
    pub data_len: u32,
    /// Whether a data digest must follow the data.
    pub ddgst: bool,
}

impl EncodedHeader {
    /// An empty header region (to encode into with [`encode_into`]).
    pub const EMPTY: EncodedHeader = EncodedHeader { bytes: [0; MAX_HEADER_REGION], len: 0, data_len: 0, ddgst: false };

    /// The header region bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Errors encoding a PDU.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    /// The PDU would be longer than PLEN can express.
    #[error("pdu data of {0} bytes too long")]
    TooLong(u32),
    /// Termination request data beyond 152 bytes.
    #[error("termination request data of {0} bytes exceeds 152")]
    TermDataTooLong(usize),
    /// Alignment not a positive multiple of 4 up to 128.
    #[error("invalid pdu data alignment {0}")]
    BadAlign(u32),
}

/// Encodes the header region of `pdu`. For termination requests use
/// [`encode_term_req`].
pub fn encode(pdu: &Pdu, cfg: &TxConfig) -> Result<EncodedHeader, EncodeError> {
    let mut out = EncodedHeader::EMPTY;
    encode_into(pdu, cfg, &mut out)?;
    Ok(out)
}

/// Encodes the header region of `pdu` into `out` (whatever it held
/// before), so a transmit queue can encode in place. On error `out` is
/// left unspecified.
pub fn encode_into(pdu: &Pdu, cfg: &TxConfig, out: &mut EncodedHeader) -> Result<(), EncodeError> {
    let t = pdu.pdu_type();
    let hlen = t.hlen();
    let hdgst = cfg.hdgst && t.has_hdgst();
    let data_len = pdu.data_len();
    let mut flags = if hdgst { FLAG_HDGST } else { 0 };
    out.data_len = data_len;
    out.ddgst = false;
    let after_header = u32::from(hlen) + if hdgst { 4 } else { 0 };
    let (pdo, plen) = if data_len > 0 {
        if cfg.align.checked_rem(4) != Some(0) || cfg.align == 0 || cfg.align > 128 {
            return Err(EncodeError::BadAlign(cfg.align));
        }
        let pdo = after_header.div_ceil(cfg.align) * cfg.align;
        out.ddgst = cfg.ddgst;
        if cfg.ddgst {
            flags |= FLAG_DDGST;
        }
        let plen = pdo
            .checked_add(data_len)
            .and_then(|p| p.checked_add(if cfg.ddgst { 4 } else { 0 }))
            .ok_or(EncodeError::TooLong(data_len))?;
        (pdo, plen)
    } else {
        (0, after_header)
    };
    let body = &mut out.bytes[..usize::from(hlen)];
    match pdu {
        Pdu::IcReq(r) => {
            let mut h = IcReqHeader::new_zeroed();
            h.pfv = r.pfv.into();
            h.hpda = r.hpda;
            h.dgst = (u8::from(r.hdgst) * DGST_HEADER) | (u8::from(r.ddgst) * DGST_DATA);
            h.maxr2t = r.maxr2t.into();
            body.copy_from_slice(h.as_bytes());
        }
        Pdu::IcResp(r) => {
            let mut h = IcRespHeader::new_zeroed();
            h.pfv = r.pfv.into();
            h.cpda = r.cpda;
            h.dgst = (u8::from(r.hdgst) * DGST_HEADER) | (u8::from(r.ddgst) * DGST_DATA);
            h.maxh2cdata = r.maxh2cdata.into();
            body.copy_from_slice(h.as_bytes());
        }
        Pdu::H2CTermReq(tr) | Pdu::C2HTermReq(tr) => {
            let mut h = TermReqHeader::new_zeroed();
            h.fes = tr.fes.to_raw().into();
            h.fei = tr.fei.into();
            body.copy_from_slice(h.as_bytes());
        }
        Pdu::CapsuleCmd { sqe, .. } => {
            let mut h = CapsuleCmdHeader::new_zeroed();
            h.sqe = *sqe;
            body.copy_from_slice(h.as_bytes());
        }
        Pdu::CapsuleResp { cqe } => {
            let mut h = CapsuleRespHeader::new_zeroed();
            h.cqe = *cqe;
            body.copy_from_slice(h.as_bytes());
        }
        Pdu::H2CData(d) | Pdu::C2HData(d) | Pdu::R2T(d) => {
            let mut h = DataHeader::new_zeroed();
            h.cccid = d.cccid.into();
            h.ttag = if t == PduType::C2HData { 0 } else { d.ttag }.into();
            h.offset = d.offset.into();
            h.length = d.length.into();
            if t != PduType::R2T && d.last {
                flags |= FLAG_LAST_PDU;
            }
            if t == PduType::C2HData && d.success {
                flags |= FLAG_SUCCESS;
            }
            body.copy_from_slice(h.as_bytes());
        }
    }
    let ch = CommonHeader { pdu_type: t.to_raw(), flags, hlen, pdo: pdo as u8, plen: plen.into() };
    out.bytes[..8].copy_from_slice(ch.as_bytes());
    let mut len = usize::from(hlen);
    if hdgst {
        let d = digest::crc32c(&out.bytes[..len]);
        out.bytes[len..len + 4].copy_from_slice(&d.to_le_bytes());
        len += 4;
    }
    if data_len > 0 {
        let pad = out.bytes.get_mut(len..pdo as usize).ok_or(EncodeError::BadAlign(cfg.align))?;
        pad.fill(0);
        len = pdo as usize;
    }
    out.len = len as u8;
    Ok(())
}

/// Encodes a complete termination request sent by `sender` carrying the
/// offending PDU header bytes (at most 152).
pub fn encode_term_req(sender: Role, term: TermReq, offending: &[u8]) -> Result<EncodedHeader, EncodeError> {
    if offending.len() > MAX_TERM_DATA {
        return Err(EncodeError::TermDataTooLong(offending.len()));
    }
    let pdu = match sender {
        Role::Host => Pdu::H2CTermReq(term),
        Role::Controller => Pdu::C2HTermReq(term),
    };
    let mut e = encode(&pdu, &TxConfig::INITIAL)?;
    let plen = 24 + offending.len() as u32;
    e.bytes[4..8].copy_from_slice(&plen.to_le_bytes());
    e.bytes[24..24 + offending.len()].copy_from_slice(offending);
    e.len = plen as u8;
    e.data_len = 0;
    Ok(e)
}

/// Encodes a complete PDU (header region, `data`, data digest) into a new
/// vector; `pdu.data_len()` must equal `data.len()`. For tests, tools and
/// the fuzzer; the queues use [`encode`] and send data from its buffer.
pub fn to_vec(pdu: &Pdu, data: &[u8], cfg: &TxConfig) -> Result<Vec<u8>, EncodeError> {
    if pdu.data_len() as usize != data.len() {
        return Err(EncodeError::TooLong(pdu.data_len()));
    }
    let h = encode(pdu, cfg)?;
    let mut v = Vec::with_capacity(h.as_slice().len() + data.len() + 4);
    v.extend_from_slice(h.as_slice());
    v.extend_from_slice(data);
    if h.ddgst {
        v.extend_from_slice(&digest::crc32c(data).to_le_bytes());
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
