//! NVMe over Fabrics commands (opcode 7Fh): Connect, Property Get / Set,
//! Disconnect, the 1024-byte Connect data and the Connect response.

use crate::command::{opcode, ParseError};
use crate::queue::{Cqe, Sqe};
use crate::util::{padded_str, write_padded};
use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The well-known NQN of discovery controllers.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Maximum length of an NQN in bytes (excluding the terminating NUL).
pub const NQN_MAX_LEN: usize = 223;

/// Fabrics command types (FCTYPE, byte 4 of the entry).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTH_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTH_RECEIVE: u8 = 0x06;
    /// Disconnect.
    pub const DISCONNECT: u8 = 0x08;
}

/// Width of a property access (ATTRIB bits 2:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertySize {
    /// 4 bytes.
    Four,
    /// 8 bytes.
    Eight,
}

impl PropertySize {
    fn from_attrib(a: u8) -> Result<Self, ParseError> {
        match a & 7 {
            0 => Ok(Self::Four),
            1 => Ok(Self::Eight),
            v => Err(ParseError::InvalidField { field: "property size", value: v.into() }),
        }
    }

    fn to_attrib(self) -> u8 {
        match self {
            Self::Four => 0,
            Self::Eight => 1,
        }
    }
}

/// A Fabrics command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FabricsCommand {
    /// Connect: creates the admin queue (qid 0) or an I/O queue; the data
    /// buffer holds [`ConnectData`].
    Connect {
        /// Record format (0).
        recfmt: u16,
        /// Queue identifier.
        qid: u16,
        /// Submission queue size, zero-based.
        sqsize: u16,
        /// Connect attributes (bit 2: SQ flow control disable).
        cattr: u8,
        /// Keep alive timeout in milliseconds (admin queue only).
        kato: u32,
    },
    /// Property Get: result in completion DW0 (and DW1 for 8 bytes).
    PropertyGet {
        /// Access width.
        size: PropertySize,
        /// Register offset ([`crate::regs`]).
        offset: u32,
    },
    /// Property Set.
    PropertySet {
        /// Access width.
        size: PropertySize,
        /// Register offset.
        offset: u32,
        /// Value (the low 4 bytes for a 4-byte access).
        value: u64,
    },
    /// Disconnect (deletes the I/O queue it is sent on).
    Disconnect {
        /// Record format.
        recfmt: u16,
    },
}

impl FabricsCommand {
    /// The FCTYPE.
    pub fn fctype(&self) -> u8 {
        match self {
            Self::Connect { .. } => fctype::CONNECT,
            Self::PropertyGet { .. } => fctype::PROPERTY_GET,
            Self::PropertySet { .. } => fctype::PROPERTY_SET,
            Self::Disconnect { .. } => fctype::DISCONNECT,
        }
    }

    /// Builds the submission queue entry (data pointer left zero).
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut s = Sqe::new(opcode::FABRICS, cid);
        s.nsid = u32::from(self.fctype()).into();
        match *self {
            Self::Connect { recfmt, qid, sqsize, cattr, kato } => {
                s.cdw10 = (u32::from(recfmt) | (u32::from(qid) << 16)).into();
                s.cdw11 = (u32::from(sqsize) | (u32::from(cattr) << 16)).into();
                s.cdw12 = kato.into();
            }
            Self::PropertyGet { size, offset } => {
                s.cdw10 = u32::from(size.to_attrib()).into();
                s.cdw11 = offset.into();
            }
            Self::PropertySet { size, offset, value } => {
                s.cdw10 = u32::from(size.to_attrib()).into();
                s.cdw11 = offset.into();
                s.cdw12 = (value as u32).into();
                s.cdw13 = ((value >> 32) as u32).into();
            }
            Self::Disconnect { recfmt } => s.cdw10 = u32::from(recfmt).into(),
        }
        s
    }

    /// Parses a Fabrics submission queue entry (opcode 7Fh).
    pub fn parse(s: &Sqe) -> Result<Self, ParseError> {
        if s.opcode() != opcode::FABRICS {
            return Err(ParseError::InvalidField { field: "fabrics opcode", value: s.opcode().into() });
        }
        let [d10, d11, d12, d13, ..] = s.cdw10_15();
        let fct = s.nsid.get() as u8;
        Ok(match fct {
            fctype::CONNECT => Self::Connect {
                recfmt: d10 as u16,
                qid: (d10 >> 16) as u16,
                sqsize: d11 as u16,
                cattr: (d11 >> 16) as u8,
                kato: d12,
            },
            fctype::PROPERTY_GET => Self::PropertyGet { size: PropertySize::from_attrib(d10 as u8)?, offset: d11 },
            fctype::PROPERTY_SET => Self::PropertySet {
                size: PropertySize::from_attrib(d10 as u8)?,
                offset: d11,
                value: u64::from(d12) | (u64::from(d13) << 32),
            },
            fctype::DISCONNECT => Self::Disconnect { recfmt: d10 as u16 },
            other => return Err(ParseError::UnknownFabricsType(other)),
        })
    }
}

/// Errors building or reading Connect data.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectDataError {
    /// An NQN longer than 223 bytes.
    #[error("nqn of {0} bytes exceeds 223")]
    NqnTooLong(usize),
    /// An NQN field that is not NUL-terminated UTF-8.
    #[error("{0} is not nul-terminated utf-8")]
    BadNqn(&'static str),
    /// A buffer too short for the 1024-byte structure.
    #[error("connect data of {0} bytes is shorter than 1024")]
    Short(usize),
}

/// The 1024-byte data of a Connect command.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct ConnectData {
    /// Host identifier (128-bit).
    pub hostid: [u8; 16],
    /// Controller ID: FFFFh for the dynamic model on the admin queue, the
    /// allocated controller ID on I/O queues.
    pub cntlid: U16,
    /// Reserved.
    pub rsvd18: [u8; 238],
    /// Subsystem NQN, NUL-terminated.
    pub subnqn: [u8; 256],
    /// Host NQN, NUL-terminated.
    pub hostnqn: [u8; 256],
    /// Reserved.
    pub rsvd768: [u8; 256],
}
const _: () = assert!(core::mem::size_of::<ConnectData>() == 1024);
const _: () = assert!(core::mem::offset_of!(ConnectData, subnqn) == 256);
const _: () = assert!(core::mem::offset_of!(ConnectData, hostnqn) == 512);

impl ConnectData {
    /// Builds Connect data; NQNs must be at most [`NQN_MAX_LEN`] bytes.
    pub fn new(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Result<Self, ConnectDataError> {
        let mut d = Self::new_zeroed();
        d.hostid = hostid;
        d.cntlid = cntlid.into();
        for (field, nqn) in [(&mut d.subnqn, subnqn), (&mut d.hostnqn, hostnqn)] {
            if nqn.len() > NQN_MAX_LEN || !write_padded(field, nqn, 0) {
                return Err(ConnectDataError::NqnTooLong(nqn.len()));
            }
        }
        Ok(d)
    }

    /// Reads Connect data from the first 1024 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, ConnectDataError> {
        Self::read_from_prefix(buf).map(|(d, _)| d).map_err(|_| ConnectDataError::Short(buf.len()))
    }

    /// The subsystem NQN.
    pub fn subnqn(&self) -> Result<&str, ConnectDataError> {
        nqn_field(&self.subnqn, "subsystem nqn")
    }

    /// The host NQN.
    pub fn hostnqn(&self) -> Result<&str, ConnectDataError> {
        nqn_field(&self.hostnqn, "host nqn")
    }
}

fn nqn_field<'a>(f: &'a [u8; 256], name: &'static str) -> Result<&'a str, ConnectDataError> {
    if !f.contains(&0) {
        return Err(ConnectDataError::BadNqn(name));
    }
    padded_str(f).ok_or(ConnectDataError::BadNqn(name))
}

/// The command-specific DW0 of a Connect completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectResponse {
    /// Success: the controller ID and authentication requirements.
    Success {
        /// Controller ID.
        cntlid: u16,
        /// Authentication requirements (bits 17:16).
        authreq: u8,
    },
    /// Connect Invalid Parameters: where the bad parameter is (DW0 bits
    /// 15:0 IPO, bits 23:16 IATTR).
    InvalidParameter {
        /// True if in the Connect data, false if in the command.
        in_data: bool,
        /// Byte offset of the parameter.
        offset: u16,
    },
}

impl ConnectResponse {
    /// Decodes a Connect completion (DW0 meaning depends on the status).
    pub fn from_cqe(cqe: &Cqe) -> Option<Self> {
        use crate::status::{command_specific, StatusCode};
        let dw0 = cqe.dw0.get();
        match cqe.status().code {
            StatusCode::SUCCESS => Some(Self::Success { cntlid: dw0 as u16, authreq: ((dw0 >> 16) & 3) as u8 }),
            StatusCode::CommandSpecific(command_specific::FABRICS_CONNECT_INVALID_PARAMETERS) => {
                Some(Self::InvalidParameter { in_data: (dw0 >> 16) & 1 != 0, offset: dw0 as u16 })
            }
            _ => None,
        }
    }

    /// Encodes DW0.
    pub fn to_dword(self) -> u32 {
        match self {
            Self::Success { cntlid, authreq } => u32::from(cntlid) | (u32::from(authreq & 3) << 16),
            Self::InvalidParameter { in_data, offset } => (u32::from(in_data) << 16) | u32::from(offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{command_specific, Status, StatusCode};

    #[test]
    fn connect_layout() {
        let c = FabricsCommand::Connect { recfmt: 0, qid: 1, sqsize: 127, cattr: 0, kato: 0 };
        let s = c.to_sqe(0x10);
        let b = s.as_bytes();
        assert_eq!(b[0], 0x7f);
        assert_eq!(b[4], 0x01);
        assert_eq!(&b[40..42], &0u16.to_le_bytes());
        assert_eq!(&b[42..44], &1u16.to_le_bytes());
        assert_eq!(&b[44..46], &127u16.to_le_bytes());
        let p = FabricsCommand::PropertySet { size: PropertySize::Four, offset: 0x14, value: 0x46_0001 };
        let b = p.to_sqe(1);
        let b = b.as_bytes();
        assert_eq!(b[40], 0);
        assert_eq!(&b[44..48], &0x14u32.to_le_bytes());
        assert_eq!(&b[48..56], &0x46_0001u64.to_le_bytes());
    }

    #[test]
    fn malformed_fabrics() {
        let mut s = FabricsCommand::PropertyGet { size: PropertySize::Eight, offset: 0 }.to_sqe(1);
        s.cdw10 = 2.into();
        assert!(matches!(FabricsCommand::parse(&s), Err(ParseError::InvalidField { .. })));
        s.nsid = 0x05.into();
        assert_eq!(FabricsCommand::parse(&s), Err(ParseError::UnknownFabricsType(5)));
        assert!(FabricsCommand::parse(&Sqe::new(0x02, 1)).is_err());
    }

    #[test]
    fn connect_data_round_trip() {
        let d = ConnectData::new([7; 16], 0xffff, "nqn.sub", "nqn.host").unwrap();
        let bytes = d.as_bytes();
        assert_eq!(&bytes[16..18], &[0xff, 0xff]);
        assert_eq!(&bytes[256..263], b"nqn.sub");
        let p = ConnectData::parse(bytes).unwrap();
        assert_eq!(p.subnqn(), Ok("nqn.sub"));
        assert_eq!(p.hostnqn(), Ok("nqn.host"));
        assert_eq!(p.cntlid.get(), 0xffff);
        assert_eq!(ConnectData::parse(&bytes[..1000]), Err(ConnectDataError::Short(1000)));
        let long = "n".repeat(224);
        assert_eq!(ConnectData::new([0; 16], 0, &long, "h"), Err(ConnectDataError::NqnTooLong(224)));
        let mut bad = d;
        bad.hostnqn = [b'a'; 256];
        assert_eq!(bad.hostnqn(), Err(ConnectDataError::BadNqn("host nqn")));
        bad.subnqn[0] = 0xff;
        assert!(bad.subnqn().is_err());
    }

    #[test]
    fn connect_response() {
        let ok = ConnectResponse::Success { cntlid: 5, authreq: 0 };
        let mut c = Cqe::new(1, Status::SUCCESS);
        c.dw0 = ok.to_dword().into();
        assert_eq!(ConnectResponse::from_cqe(&c), Some(ok));
        let inval = ConnectResponse::InvalidParameter { in_data: true, offset: 256 };
        let mut c = Cqe::new(
            1,
            Status::new(StatusCode::CommandSpecific(command_specific::FABRICS_CONNECT_INVALID_PARAMETERS), true),
        );
        c.dw0 = inval.to_dword().into();
        assert_eq!(c.dw0.get(), 0x0001_0100);
        assert_eq!(ConnectResponse::from_cqe(&c), Some(inval));
        let c = Cqe::new(1, Status::new(StatusCode::CommandSpecific(0x81), false));
        assert_eq!(ConnectResponse::from_cqe(&c), None);
    }
}
