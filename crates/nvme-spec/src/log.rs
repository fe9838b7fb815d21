//! Log pages: SMART / health, error information, firmware slot, ANA and
//! Discovery.

use crate::util::{padded_str, write_padded};
use zerocopy::little_endian::{U128, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Errors reading log pages.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    /// Buffer shorter than a structure it must hold.
    #[error("{what} needs {need} bytes at offset {offset}, log has {got}")]
    Short {
        /// What was being read.
        what: &'static str,
        /// Offset of it.
        offset: usize,
        /// Bytes needed from the offset.
        need: usize,
        /// Total bytes available.
        got: usize,
    },
    /// A count in the log that cannot be represented.
    #[error("{what} count {count} is too large")]
    TooMany {
        /// Which count.
        what: &'static str,
        /// Its value.
        count: u64,
    },
}

fn read_at<T: FromBytes + KnownLayout + Immutable>(
    buf: &[u8],
    offset: usize,
    what: &'static str,
) -> Result<T, LogError> {
    let short = LogError::Short { what, offset, need: core::mem::size_of::<T>(), got: buf.len() };
    let tail = buf.get(offset..).ok_or(short)?;
    T::read_from_prefix(tail).map(|(v, _)| v).map_err(|_| short)
}

/// SMART / health information log (LID 02h), 512 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SmartLog {
    /// Critical warning bits.
    pub critical_warning: u8,
    /// Composite temperature in kelvin.
    pub temperature: U16,
    /// Available spare, percent.
    pub avail_spare: u8,
    /// Available spare threshold, percent.
    pub spare_thresh: u8,
    /// Percentage used.
    pub percent_used: u8,
    /// Endurance group critical warning summary.
    pub endu_grp_crit_warn: u8,
    /// Reserved.
    pub rsvd7: [u8; 25],
    /// Data units read (1000 x 512 bytes).
    pub data_units_read: U128,
    /// Data units written.
    pub data_units_written: U128,
    /// Host read commands.
    pub host_reads: U128,
    /// Host write commands.
    pub host_writes: U128,
    /// Controller busy time in minutes.
    pub ctrl_busy_time: U128,
    /// Power cycles.
    pub power_cycles: U128,
    /// Power on hours.
    pub power_on_hours: U128,
    /// Unsafe shutdowns.
    pub unsafe_shutdowns: U128,
    /// Media and data integrity errors.
    pub media_errors: U128,
    /// Number of error information log entries.
    pub num_err_log_entries: U128,
    /// Warning composite temperature time, minutes.
    pub warning_temp_time: U32,
    /// Critical composite temperature time, minutes.
    pub critical_temp_time: U32,
    /// Temperature sensors 1..8, kelvin.
    pub temp_sensor: [U16; 8],
    /// Thermal management temperature 1 transition count.
    pub thm_temp1_trans_count: U32,
    /// Thermal management temperature 2 transition count.
    pub thm_temp2_trans_count: U32,
    /// Total time for thermal management temperature 1.
    pub thm_temp1_total_time: U32,
    /// Total time for thermal management temperature 2.
    pub thm_temp2_total_time: U32,
    /// Reserved.
    pub rsvd232: [u8; 280],
}
const _: () = assert!(core::mem::size_of::<SmartLog>() == 512);
const _: () = assert!(core::mem::offset_of!(SmartLog, data_units_read) == 32);
const _: () = assert!(core::mem::offset_of!(SmartLog, warning_temp_time) == 192);

impl SmartLog {
    /// Reads the log from `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, LogError> {
        read_at(buf, 0, "smart log")
    }

    /// A zeroed log.
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }
}

/// One error information log entry (LID 01h), 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct ErrorLogEntry {
    /// Error count (0: entry invalid).
    pub error_count: U64,
    /// Submission queue ID.
    pub sqid: U16,
    /// Command ID.
    pub cmdid: U16,
    /// Status field (bit 0: phase tag).
    pub status_field: U16,
    /// Parameter error location.
    pub param_error_location: U16,
    /// LBA.
    pub lba: U64,
    /// Namespace.
    pub nsid: U32,
    /// Vendor specific information available.
    pub vs: u8,
    /// Transport type.
    pub trtype: u8,
    /// Reserved.
    pub rsvd30: [u8; 2],
    /// Command specific information.
    pub cs: U64,
    /// Transport type specific information.
    pub trtype_spec_info: U16,
    /// Reserved.
    pub rsvd42: [u8; 22],
}
const _: () = assert!(core::mem::size_of::<ErrorLogEntry>() == 64);

impl ErrorLogEntry {
    /// Reads all whole entries in `buf`.
    pub fn parse_all(buf: &[u8]) -> Vec<Self> {
        buf.chunks_exact(64).filter_map(|c| Self::read_from_bytes(c).ok()).collect()
    }

    /// The decoded completion status of the failed command.
    pub fn status(&self) -> crate::status::Status {
        crate::status::Status::from_raw(self.status_field.get())
    }
}

/// Firmware slot information log (LID 03h), 512 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct FirmwareSlotLog {
    /// Active firmware info: active slot (bits 2:0), next slot (6:4).
    pub afi: u8,
    /// Reserved.
    pub rsvd1: [u8; 7],
    /// Firmware revision of slots 1..=7.
    pub frs: [[u8; 8]; 7],
    /// Reserved.
    pub rsvd64: [u8; 448],
}
const _: () = assert!(core::mem::size_of::<FirmwareSlotLog>() == 512);

impl FirmwareSlotLog {
    /// Reads the log from `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, LogError> {
        read_at(buf, 0, "firmware slot log")
    }

    /// The active slot (1..=7).
    pub fn active_slot(&self) -> u8 {
        self.afi & 7
    }

    /// The firmware revision of `slot` (1..=7), trimmed; `None` if out of
    /// range, empty or not UTF-8.
    pub fn revision(&self, slot: u8) -> Option<&str> {
        let f = self.frs.get(usize::from(slot).checked_sub(1)?)?;
        padded_str(f).filter(|s| !s.is_empty())
    }
}

/// ANA states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnaState {
    /// Optimized.
    Optimized,
    /// Non-optimized.
    NonOptimized,
    /// Inaccessible.
    Inaccessible,
    /// Persistent loss.
    PersistentLoss,
    /// Change.
    Change,
    /// A reserved value.
    Reserved(u8),
}

impl AnaState {
    /// Decodes bits 3:0.
    pub fn from_raw(v: u8) -> Self {
        match v & 0xf {
            1 => Self::Optimized,
            2 => Self::NonOptimized,
            3 => Self::Inaccessible,
            4 => Self::PersistentLoss,
            0xf => Self::Change,
            r => Self::Reserved(r),
        }
    }

    /// The raw value.
    pub fn to_raw(self) -> u8 {
        match self {
            Self::Optimized => 1,
            Self::NonOptimized => 2,
            Self::Inaccessible => 3,
            Self::PersistentLoss => 4,
            Self::Change => 0xf,
            Self::Reserved(r) => r & 0xf,
        }
    }

    /// Whether IO may be sent to a namespace in this state.
    pub fn is_usable(self) -> bool {
        matches!(self, Self::Optimized | Self::NonOptimized)
    }
}

/// ANA log page header (LID 0Ch), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct AnaLogHeader {
    /// Change count.
    pub chgcnt: U64,
    /// Number of ANA group descriptors.
    pub ngrps: U16,
    /// Reserved.
    pub rsvd: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<AnaLogHeader>() == 16);

/// ANA group descriptor header, 32 bytes, followed by `nnsids` NSIDs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct AnaGroupDescHeader {
    /// ANA group ID.
    pub grpid: U32,
    /// Number of NSIDs that follow.
    pub nnsids: U32,
    /// Change count.
    pub chgcnt: U64,
    /// ANA state (bits 3:0).
    pub state: u8,
    /// Reserved.
    pub rsvd: [u8; 15],
}
const _: () = assert!(core::mem::size_of::<AnaGroupDescHeader>() == 32);

/// A decoded ANA group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnaGroup {
    /// ANA group ID.
    pub grpid: u32,
    /// Change count.
    pub chgcnt: u64,
    /// State.
    pub state: AnaState,
    /// Namespaces in the group (empty if the RGO bit was set).
    pub nsids: Vec<u32>,
}

/// A decoded ANA log page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnaLog {
    /// Change count.
    pub chgcnt: u64,
    /// Groups.
    pub groups: Vec<AnaGroup>,
}

impl AnaLog {
    /// Parses an ANA log page.
    pub fn parse(buf: &[u8]) -> Result<Self, LogError> {
        let h: AnaLogHeader = read_at(buf, 0, "ana log header")?;
        let mut off = 16usize;
        let mut groups = Vec::new();
        for _ in 0..h.ngrps.get() {
            let g: AnaGroupDescHeader = read_at(buf, off, "ana group descriptor")?;
            off += 32;
            let n = g.nnsids.get() as usize;
            let len = n.checked_mul(4).ok_or(LogError::TooMany { what: "ana nsid", count: n as u64 })?;
            let ids = buf.get(off..).and_then(|t| t.get(..len)).ok_or(LogError::Short {
                what: "ana nsid list",
                offset: off,
                need: len,
                got: buf.len(),
            })?;
            off += len;
            groups.push(AnaGroup {
                grpid: g.grpid.get(),
                chgcnt: g.chgcnt.get(),
                state: AnaState::from_raw(g.state),
                nsids: ids.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            });
        }
        Ok(Self { chgcnt: h.chgcnt.get(), groups })
    }

    /// Encodes the log page.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let h = AnaLogHeader { chgcnt: self.chgcnt.into(), ngrps: (self.groups.len() as u16).into(), rsvd: [0; 6] };
        out.extend_from_slice(h.as_bytes());
        for g in self.groups.iter().take(usize::from(u16::MAX)) {
            let d = AnaGroupDescHeader {
                grpid: g.grpid.into(),
                nnsids: (g.nsids.len() as u32).into(),
                chgcnt: g.chgcnt.into(),
                state: g.state.to_raw(),
                rsvd: [0; 15],
            };
            out.extend_from_slice(d.as_bytes());
            for n in &g.nsids {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    /// The state of namespace `nsid`, if listed.
    pub fn state_of(&self, nsid: u32) -> Option<AnaState> {
        self.groups.iter().find(|g| g.nsids.contains(&nsid)).map(|g| g.state)
    }
}

/// Discovery log page header, 1024 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DiscoveryLogHeader {
    /// Generation counter.
    pub genctr: U64,
    /// Number of records.
    pub numrec: U64,
    /// Record format (0).
    pub recfmt: U16,
    /// Reserved.
    pub rsvd: [u8; 1006],
}
const _: () = assert!(core::mem::size_of::<DiscoveryLogHeader>() == 1024);

/// Transport types (TRTYPE).
pub mod trtype {
    /// RDMA.
    pub const RDMA: u8 = 1;
    /// Fibre Channel.
    pub const FC: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 3;
    /// Intra-host (loop).
    pub const LOOP: u8 = 254;
}

/// Address families (ADRFAM).
pub mod adrfam {
    /// IPv4.
    pub const IPV4: u8 = 1;
    /// IPv6.
    pub const IPV6: u8 = 2;
}

/// Subsystem types (SUBTYPE).
pub mod subtype {
    /// Referral to another discovery service.
    pub const REFERRAL: u8 = 1;
    /// NVM subsystem.
    pub const NVME: u8 = 2;
    /// The current discovery subsystem.
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// One discovery log page entry, 1024 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DiscoveryLogEntry {
    /// Transport type ([`trtype`]).
    pub trtype: u8,
    /// Address family ([`adrfam`]).
    pub adrfam: u8,
    /// Subsystem type ([`subtype`]).
    pub subtype: u8,
    /// Transport requirements.
    pub treq: u8,
    /// Port ID.
    pub portid: U16,
    /// Controller ID (FFFFh: dynamic).
    pub cntlid: U16,
    /// Admin max SQ size.
    pub asqsz: U16,
    /// Entry flags.
    pub eflags: U16,
    /// Reserved.
    pub rsvd12: [u8; 20],
    /// Transport service ID (TCP port, ASCII, space padded).
    pub trsvcid: [u8; 32],
    /// Reserved.
    pub rsvd64: [u8; 192],
    /// Subsystem NQN (NUL padded).
    pub subnqn: [u8; 256],
    /// Transport address (ASCII, space padded).
    pub traddr: [u8; 256],
    /// Transport specific address subtype.
    pub tsas: [u8; 256],
}
const _: () = assert!(core::mem::size_of::<DiscoveryLogEntry>() == 1024);
const _: () = assert!(core::mem::offset_of!(DiscoveryLogEntry, trsvcid) == 32);
const _: () = assert!(core::mem::offset_of!(DiscoveryLogEntry, subnqn) == 256);
const _: () = assert!(core::mem::offset_of!(DiscoveryLogEntry, traddr) == 512);

impl DiscoveryLogEntry {
    /// A TCP entry; returns `None` if a string does not fit its field.
    pub fn tcp(subtype: u8, adrfam: u8, traddr: &str, trsvcid: &str, subnqn: &str, portid: u16) -> Option<Self> {
        let mut e = Self::new_zeroed();
        e.trtype = trtype::TCP;
        e.adrfam = adrfam;
        e.subtype = subtype;
        e.portid = portid.into();
        e.cntlid = 0xffff.into();
        e.asqsz = 32.into();
        (write_padded(&mut e.traddr, traddr, b' ')
            && write_padded(&mut e.trsvcid, trsvcid, b' ')
            && subnqn.len() < 256
            && write_padded(&mut e.subnqn, subnqn, 0))
        .then_some(e)
    }

    /// Transport address, trimmed.
    pub fn traddr(&self) -> Option<&str> {
        padded_str(&self.traddr)
    }

    /// Transport service ID, trimmed.
    pub fn trsvcid(&self) -> Option<&str> {
        padded_str(&self.trsvcid)
    }

    /// Subsystem NQN.
    pub fn subnqn(&self) -> Option<&str> {
        padded_str(&self.subnqn)
    }
}

/// A decoded discovery log page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryLog {
    /// Generation counter.
    pub genctr: u64,
    /// Total number of records the controller reported.
    pub numrec: u64,
    /// The entries present in the buffer (possibly fewer than `numrec` if
    /// the host read only part of the page).
    pub entries: Vec<DiscoveryLogEntry>,
}

impl DiscoveryLog {
    /// Parses a discovery log page (header plus as many whole entries as
    /// the buffer and NUMREC allow).
    pub fn parse(buf: &[u8]) -> Result<Self, LogError> {
        let h: DiscoveryLogHeader = read_at(buf, 0, "discovery log header")?;
        let numrec = h.numrec.get();
        let entries = buf
            .get(1024..)
            .unwrap_or(&[])
            .chunks_exact(1024)
            .take(usize::try_from(numrec).unwrap_or(usize::MAX))
            .filter_map(|c| DiscoveryLogEntry::read_from_bytes(c).ok())
            .collect();
        Ok(Self { genctr: h.genctr.get(), numrec, entries })
    }

    /// Encodes the page.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = DiscoveryLogHeader::new_zeroed();
        h.genctr = self.genctr.into();
        h.numrec = (self.entries.len() as u64).into();
        let mut out = Vec::with_capacity(1024 * (1 + self.entries.len()));
        out.extend_from_slice(h.as_bytes());
        for e in &self.entries {
            out.extend_from_slice(e.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_layout() {
        let mut s = SmartLog::zeroed();
        s.temperature = 300.into();
        s.media_errors = 5.into();
        let b = s.as_bytes();
        assert_eq!(&b[1..3], &300u16.to_le_bytes());
        assert_eq!(b[160], 5);
        assert_eq!(SmartLog::parse(b).unwrap(), s);
        assert!(matches!(SmartLog::parse(&b[..511]), Err(LogError::Short { need: 512, .. })));
    }

    #[test]
    fn error_log_and_firmware() {
        let mut e = ErrorLogEntry::new_zeroed();
        e.error_count = 3.into();
        e.status_field = ((0x81 << 1) | (2 << 9)).into();
        let mut buf = e.as_bytes().to_vec();
        buf.extend_from_slice(&[0; 70]);
        let all = ErrorLogEntry::parse_all(&buf);
        assert_eq!(all.len(), 2);
        assert!(all[0].status().is_media_error());
        let mut f = FirmwareSlotLog::new_zeroed();
        f.afi = 0x21;
        f.frs[0] = *b"1.2.3   ";
        assert_eq!(f.active_slot(), 1);
        assert_eq!(f.revision(1), Some("1.2.3"));
        assert_eq!(f.revision(2), None);
        assert_eq!(f.revision(0), None);
        assert_eq!(f.revision(8), None);
        assert_eq!(FirmwareSlotLog::parse(f.as_bytes()).unwrap(), f);
    }

    #[test]
    fn ana_round_trip_and_malformed() {
        let log = AnaLog {
            chgcnt: 9,
            groups: vec![
                AnaGroup { grpid: 1, chgcnt: 2, state: AnaState::Optimized, nsids: vec![1, 2] },
                AnaGroup { grpid: 2, chgcnt: 3, state: AnaState::Inaccessible, nsids: vec![3] },
            ],
        };
        let b = log.encode();
        assert_eq!(b.len(), 16 + 32 + 8 + 32 + 4);
        let p = AnaLog::parse(&b).unwrap();
        assert_eq!(p, log);
        assert_eq!(p.state_of(3), Some(AnaState::Inaccessible));
        assert!(!AnaState::Inaccessible.is_usable());
        assert!(AnaState::NonOptimized.is_usable());
        assert_eq!(p.state_of(4), None);
        assert!(matches!(AnaLog::parse(&b[..b.len() - 1]), Err(LogError::Short { what: "ana nsid list", .. })));
        let mut huge = b.clone();
        huge[16 + 4..16 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(AnaLog::parse(&huge).is_err());
        assert!(AnaLog::parse(&b[..10]).is_err());
        assert_eq!(AnaState::from_raw(7), AnaState::Reserved(7));
    }

    #[test]
    fn discovery_round_trip() {
        let e = DiscoveryLogEntry::tcp(subtype::NVME, adrfam::IPV4, "127.0.0.1", "4420", "nqn.test", 1).unwrap();
        let log = DiscoveryLog { genctr: 4, numrec: 2, entries: vec![e, e] };
        let b = log.encode();
        assert_eq!(b.len(), 3 * 1024);
        assert_eq!(b[1024], trtype::TCP);
        // Byte offsets within the entry: TRSVCID 32, SUBNQN 256, TRADDR 512.
        assert_eq!(&b[1024 + 32..1024 + 36], b"4420");
        assert_eq!(&b[1024 + 256..1024 + 264], b"nqn.test");
        assert_eq!(&b[1024 + 512..1024 + 521], b"127.0.0.1");
        let p = DiscoveryLog::parse(&b).unwrap();
        assert_eq!(p, log);
        assert_eq!(p.entries[0].traddr(), Some("127.0.0.1"));
        assert_eq!(p.entries[0].trsvcid(), Some("4420"));
        assert_eq!(p.entries[0].subnqn(), Some("nqn.test"));
        // Partial read: header only.
        let p = DiscoveryLog::parse(&b[..1024]).unwrap();
        assert_eq!((p.numrec, p.entries.len()), (2, 0));
        assert!(DiscoveryLog::parse(&b[..100]).is_err());
        assert!(DiscoveryLogEntry::tcp(2, 1, &"a".repeat(300), "1", "n", 0).is_none());
    }
}
