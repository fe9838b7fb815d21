//! Identify data structures: controller, namespace, namespace
//! identification descriptors and the active namespace ID list.

use crate::util::{padded_str, write_padded};
use zerocopy::little_endian::{U128, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Errors reading identify data.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentifyError {
    /// Buffer shorter than the structure.
    #[error("identify data of {got} bytes is shorter than {need}")]
    Short {
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A namespace identification descriptor runs past the buffer.
    #[error("namespace descriptor at offset {offset} overruns the list")]
    DescriptorOverrun {
        /// Offset of the descriptor.
        offset: usize,
    },
    /// A namespace identification descriptor with a length that does not
    /// match its type.
    #[error("namespace descriptor type {nidt} has length {nidl}")]
    DescriptorLength {
        /// Descriptor type.
        nidt: u8,
        /// Descriptor length.
        nidl: u8,
    },
}

fn read<T: FromBytes + KnownLayout + Immutable>(buf: &[u8]) -> Result<T, IdentifyError> {
    T::read_from_prefix(buf)
        .map(|(v, _)| v)
        .map_err(|_| IdentifyError::Short { got: buf.len(), need: core::mem::size_of::<T>() })
}

/// Identify Controller data structure (CNS 01h), 4096 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct IdentifyController {
    /// PCI vendor ID.
    pub vid: U16,
    /// PCI subsystem vendor ID.
    pub ssvid: U16,
    /// Serial number (ASCII, space padded).
    pub sn: [u8; 20],
    /// Model number (ASCII, space padded).
    pub mn: [u8; 40],
    /// Firmware revision (ASCII, space padded).
    pub fr: [u8; 8],
    /// Recommended arbitration burst.
    pub rab: u8,
    /// IEEE OUI.
    pub ieee: [u8; 3],
    /// Multi-path I/O and namespace sharing capabilities.
    pub cmic: u8,
    /// Maximum data transfer size: 2^MDTS units of CAP.MPSMIN (0: none).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: U16,
    /// Version (same encoding as the VS register).
    pub ver: U32,
    /// RTD3 resume latency.
    pub rtd3r: U32,
    /// RTD3 entry latency.
    pub rtd3e: U32,
    /// Optional asynchronous events supported.
    pub oaes: U32,
    /// Controller attributes.
    pub ctratt: U32,
    /// Read recovery levels supported.
    pub rrls: U16,
    /// Reserved.
    pub rsvd102: [u8; 9],
    /// Controller type (1 I/O, 2 discovery, 3 administrative).
    pub cntrltype: u8,
    /// FRU globally unique identifier.
    pub fguid: [u8; 16],
    /// Command retry delay times 1..3 (100 ms units).
    pub crdt: [U16; 3],
    /// Reserved.
    pub rsvd134: [u8; 119],
    /// NVM subsystem report.
    pub nvmsr: u8,
    /// VPD write cycle information.
    pub vwci: u8,
    /// Management endpoint capabilities.
    pub mec: u8,
    /// Optional admin command support.
    pub oacs: U16,
    /// Abort command limit, zero-based.
    pub acl: u8,
    /// Asynchronous event request limit, zero-based.
    pub aerl: u8,
    /// Firmware updates.
    pub frmw: u8,
    /// Log page attributes.
    pub lpa: u8,
    /// Error log page entries, zero-based.
    pub elpe: u8,
    /// Number of power states support, zero-based.
    pub npss: u8,
    /// Admin vendor specific command configuration.
    pub avscc: u8,
    /// Autonomous power state transition attributes.
    pub apsta: u8,
    /// Warning composite temperature threshold.
    pub wctemp: U16,
    /// Critical composite temperature threshold.
    pub cctemp: U16,
    /// Maximum time for firmware activation.
    pub mtfa: U16,
    /// Host memory buffer preferred size.
    pub hmpre: U32,
    /// Host memory buffer minimum size.
    pub hmmin: U32,
    /// Total NVM capacity in bytes.
    pub tnvmcap: U128,
    /// Unallocated NVM capacity in bytes.
    pub unvmcap: U128,
    /// Replay protected memory block support.
    pub rpmbs: U32,
    /// Extended device self-test time.
    pub edstt: U16,
    /// Device self-test options.
    pub dsto: u8,
    /// Firmware update granularity.
    pub fwug: u8,
    /// Keep alive support: granularity in 100 ms units (0: unsupported).
    pub kas: U16,
    /// Host controlled thermal management attributes.
    pub hctma: U16,
    /// Minimum thermal management temperature.
    pub mntmt: U16,
    /// Maximum thermal management temperature.
    pub mxtmt: U16,
    /// Sanitize capabilities.
    pub sanicap: U32,
    /// Host memory buffer minimum descriptor entry size.
    pub hmminds: U32,
    /// Host memory maximum descriptors entries.
    pub hmmaxd: U16,
    /// NVM set identifier maximum.
    pub nsetidmax: U16,
    /// Endurance group identifier maximum.
    pub endgidmax: U16,
    /// ANA transition time in seconds.
    pub anatt: u8,
    /// ANA capabilities (bit 0 optimized, 1 non-optimized, 2 inaccessible,
    /// 3 persistent loss, 4 change state reported, 6 ANAGRPID does not
    /// change, 7 non-zero ANAGRPID supported).
    pub anacap: u8,
    /// ANA group identifier maximum.
    pub anagrpmax: U32,
    /// Number of ANA group identifiers.
    pub nanagrpid: U32,
    /// Persistent event log size.
    pub pels: U32,
    /// Domain identifier.
    pub domainid: U16,
    /// Reserved.
    pub rsvd358: [u8; 10],
    /// Max endurance group capacity.
    pub megcap: U128,
    /// Reserved.
    pub rsvd384: [u8; 128],
    /// SQ entry size: required (bits 3:0) and maximum (7:4), as 2^n.
    pub sqes: u8,
    /// CQ entry size: required (bits 3:0) and maximum (7:4), as 2^n.
    pub cqes: u8,
    /// Maximum outstanding commands (Fabrics).
    pub maxcmd: U16,
    /// Number of namespaces (maximum NSID).
    pub nn: U32,
    /// Optional NVM command support (bit 2 DSM, bit 3 Write Zeroes ...).
    pub oncs: U16,
    /// Fused operation support.
    pub fuses: U16,
    /// Format NVM attributes.
    pub fna: u8,
    /// Volatile write cache (bit 0: present).
    pub vwc: u8,
    /// Atomic write unit normal.
    pub awun: U16,
    /// Atomic write unit power fail.
    pub awupf: U16,
    /// I/O command set vendor specific command configuration.
    pub icsvscc: u8,
    /// Namespace write protection capabilities.
    pub nwpc: u8,
    /// Atomic compare and write unit.
    pub acwu: U16,
    /// Copy descriptor formats supported.
    pub ocfs: U16,
    /// SGL support.
    pub sgls: U32,
    /// Maximum number of allowed namespaces.
    pub mnan: U32,
    /// Maximum domain namespace attachments.
    pub maxdna: U128,
    /// Maximum I/O controller namespace attachments.
    pub maxcna: U32,
    /// Reserved.
    pub rsvd564: [u8; 204],
    /// NVM subsystem NQN (UTF-8, NUL padded).
    pub subnqn: [u8; 256],
    /// Reserved.
    pub rsvd1024: [u8; 768],
    /// Fabrics: I/O queue command capsule supported size in 16-byte units.
    pub ioccsz: U32,
    /// Fabrics: I/O queue response capsule supported size in 16-byte units.
    pub iorcsz: U32,
    /// Fabrics: in-capsule data offset in 16-byte units.
    pub icdoff: U16,
    /// Fabrics: controller attributes (bit 0: static model).
    pub fcatt: u8,
    /// Fabrics: maximum SGL data block descriptors.
    pub msdbd: u8,
    /// Fabrics: optional fabric commands supported.
    pub ofcs: U16,
    /// Reserved.
    pub rsvd1806: [u8; 242],
    /// Power state descriptors.
    pub psd: [u8; 1024],
    /// Vendor specific.
    pub vs: [u8; 1024],
}
const _: () = assert!(core::mem::size_of::<IdentifyController>() == 4096);
const _: () = assert!(core::mem::offset_of!(IdentifyController, cntlid) == 78);
const _: () = assert!(core::mem::offset_of!(IdentifyController, oacs) == 256);
const _: () = assert!(core::mem::offset_of!(IdentifyController, kas) == 320);
const _: () = assert!(core::mem::offset_of!(IdentifyController, anatt) == 342);
const _: () = assert!(core::mem::offset_of!(IdentifyController, sqes) == 512);
const _: () = assert!(core::mem::offset_of!(IdentifyController, sgls) == 536);
const _: () = assert!(core::mem::offset_of!(IdentifyController, subnqn) == 768);
const _: () = assert!(core::mem::offset_of!(IdentifyController, ioccsz) == 1792);
const _: () = assert!(core::mem::offset_of!(IdentifyController, psd) == 2048);

/// Bits of [`IdentifyController::oncs`].
pub mod oncs {
    /// Compare.
    pub const COMPARE: u16 = 1 << 0;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u16 = 1 << 1;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u16 = 1 << 2;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u16 = 1 << 3;
    /// Save field in Set / Get Features.
    pub const SAVE: u16 = 1 << 4;
    /// Reservations.
    pub const RESERVATIONS: u16 = 1 << 5;
    /// Timestamp.
    pub const TIMESTAMP: u16 = 1 << 6;
    /// Verify.
    pub const VERIFY: u16 = 1 << 7;
}

impl IdentifyController {
    /// Reads the structure from the first 4096 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, IdentifyError> {
        read(buf)
    }

    /// A zeroed structure.
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }

    /// Serial number, trimmed (`None` if not UTF-8).
    pub fn serial(&self) -> Option<&str> {
        padded_str(&self.sn)
    }

    /// Model number, trimmed.
    pub fn model(&self) -> Option<&str> {
        padded_str(&self.mn)
    }

    /// Firmware revision, trimmed.
    pub fn firmware(&self) -> Option<&str> {
        padded_str(&self.fr)
    }

    /// Subsystem NQN.
    pub fn subnqn(&self) -> Option<&str> {
        padded_str(&self.subnqn)
    }

    /// Sets SN / MN / FR (space padded, as the specification requires);
    /// returns `false` if a string is too long.
    pub fn set_strings(&mut self, sn: &str, mn: &str, fr: &str) -> bool {
        write_padded(&mut self.sn, sn, b' ')
            && write_padded(&mut self.mn, mn, b' ')
            && write_padded(&mut self.fr, fr, b' ')
    }

    /// Sets the subsystem NQN (NUL padded); `false` if too long.
    pub fn set_subnqn(&mut self, nqn: &str) -> bool {
        nqn.len() < self.subnqn.len() && write_padded(&mut self.subnqn, nqn, 0)
    }

    /// Maximum data transfer size in bytes given the minimum memory page
    /// size in bytes, or `None` for "no limit".
    pub fn max_transfer_bytes(&self, min_page_size: u64) -> Option<u64> {
        if self.mdts == 0 {
            None
        } else {
            min_page_size.checked_shl(self.mdts.into())
        }
    }

    /// I/O command capsule size in bytes (Fabrics), including the 64-byte
    /// command.
    pub fn io_capsule_bytes(&self) -> u64 {
        u64::from(self.ioccsz.get()) * 16
    }
}

/// One LBA format descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct LbaFormat {
    /// Metadata size in bytes.
    pub ms: U16,
    /// LBA data size as 2^LBADS (0: format not available).
    pub lbads: u8,
    /// Relative performance (bits 1:0).
    pub rp: u8,
}
const _: () = assert!(core::mem::size_of::<LbaFormat>() == 4);

/// Identify Namespace data structure (CNS 00h), 4096 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct IdentifyNamespace {
    /// Namespace size in logical blocks.
    pub nsze: U64,
    /// Namespace capacity in logical blocks.
    pub ncap: U64,
    /// Namespace utilization in logical blocks.
    pub nuse: U64,
    /// Namespace features (bit 0 thin provisioning, bit 2 DULBE ...).
    pub nsfeat: u8,
    /// Number of LBA formats, zero-based.
    pub nlbaf: u8,
    /// Formatted LBA size: format index bits 3:0 (low) and 6:5 (high);
    /// bit 4 extended metadata.
    pub flbas: u8,
    /// Metadata capabilities.
    pub mc: u8,
    /// End-to-end data protection capabilities.
    pub dpc: u8,
    /// End-to-end data protection type settings.
    pub dps: u8,
    /// Multi-path I/O and namespace sharing capabilities.
    pub nmic: u8,
    /// Reservation capabilities.
    pub rescap: u8,
    /// Format progress indicator.
    pub fpi: u8,
    /// Deallocate logical block features.
    pub dlfeat: u8,
    /// Namespace atomic write unit normal.
    pub nawun: U16,
    /// Namespace atomic write unit power fail.
    pub nawupf: U16,
    /// Namespace atomic compare and write unit.
    pub nacwu: U16,
    /// Namespace atomic boundary size normal.
    pub nabsn: U16,
    /// Namespace atomic boundary offset.
    pub nabo: U16,
    /// Namespace atomic boundary size power fail.
    pub nabspf: U16,
    /// Namespace optimal I/O boundary.
    pub noiob: U16,
    /// NVM capacity in bytes.
    pub nvmcap: U128,
    /// Namespace preferred write granularity.
    pub npwg: U16,
    /// Namespace preferred write alignment.
    pub npwa: U16,
    /// Namespace preferred deallocate granularity.
    pub npdg: U16,
    /// Namespace preferred deallocate alignment.
    pub npda: U16,
    /// Namespace optimal write size.
    pub nows: U16,
    /// Maximum single source range length.
    pub mssrl: U16,
    /// Maximum copy length.
    pub mcl: U32,
    /// Maximum source range count.
    pub msrc: u8,
    /// Reserved.
    pub rsvd81: [u8; 11],
    /// ANA group identifier.
    pub anagrpid: U32,
    /// Reserved.
    pub rsvd96: [u8; 3],
    /// Namespace attributes (bit 0: write protected).
    pub nsattr: u8,
    /// NVM set identifier.
    pub nvmsetid: U16,
    /// Endurance group identifier.
    pub endgid: U16,
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// IEEE extended unique identifier.
    pub eui64: [u8; 8],
    /// LBA formats 0..=63.
    pub lbaf: [LbaFormat; 64],
    /// Vendor specific / reserved.
    pub rsvd384: [u8; 3712],
}
const _: () = assert!(core::mem::size_of::<IdentifyNamespace>() == 4096);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, nvmcap) == 48);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, anagrpid) == 92);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, nguid) == 104);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, lbaf) == 128);

impl IdentifyNamespace {
    /// Reads the structure from the first 4096 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, IdentifyError> {
        read(buf)
    }

    /// A zeroed structure.
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }

    /// Index of the formatted LBA format.
    pub fn formatted_lba_index(&self) -> usize {
        usize::from(self.flbas & 0xf) | (usize::from((self.flbas >> 5) & 3) << 4)
    }

    /// The LBA format in use (`None` if FLBAS names a format beyond NLBAF).
    pub fn formatted_lba(&self) -> Option<LbaFormat> {
        let i = self.formatted_lba_index();
        if i > usize::from(self.nlbaf) {
            return None;
        }
        self.lbaf.get(i).copied()
    }

    /// Logical block size in bytes, if the format is valid (LBADS 9..=31).
    pub fn block_size(&self) -> Option<u32> {
        let f = self.formatted_lba()?;
        (9..32).contains(&f.lbads).then(|| 1u32 << f.lbads)
    }

    /// Sets NSZE / NCAP / NUSE to `blocks` and a single LBA format of
    /// 2^`lbads` bytes without metadata.
    pub fn set_simple(&mut self, blocks: u64, lbads: u8) {
        self.nsze = blocks.into();
        self.ncap = blocks.into();
        self.nuse = blocks.into();
        self.nlbaf = 0;
        self.flbas = 0;
        self.lbaf[0] = LbaFormat { ms: 0.into(), lbads, rp: 0 };
    }
}

/// Namespace identification descriptor types.
pub mod nidt {
    /// IEEE EUI-64 (8 bytes).
    pub const EUI64: u8 = 1;
    /// NGUID (16 bytes).
    pub const NGUID: u8 = 2;
    /// UUID (16 bytes).
    pub const UUID: u8 = 3;
    /// Command set identifier (1 byte).
    pub const CSI: u8 = 4;
}

/// One namespace identification descriptor (CNS 03h list entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NsDescriptor {
    /// IEEE EUI-64.
    Eui64([u8; 8]),
    /// Namespace globally unique identifier.
    Nguid([u8; 16]),
    /// RFC 4122 UUID.
    Uuid([u8; 16]),
    /// Command set identifier.
    Csi(u8),
    /// A type this crate does not know (skipped by length).
    Unknown {
        /// Descriptor type.
        nidt: u8,
    },
}

impl NsDescriptor {
    /// Parses a descriptor list (4096 bytes from CNS 03h; shorter input is
    /// accepted). The list ends at a zero type or the end of the buffer.
    pub fn parse_list(buf: &[u8]) -> Result<Vec<NsDescriptor>, IdentifyError> {
        let mut out = Vec::new();
        let mut off = 0usize;
        while let Some(hdr) = buf.get(off..off.saturating_add(4)) {
            let (nidt, nidl) = (hdr[0], hdr[1]);
            if nidt == 0 {
                break;
            }
            let start = off + 4;
            let end = start + usize::from(nidl);
            let body = buf.get(start..end).ok_or(IdentifyError::DescriptorOverrun { offset: off })?;
            let bad = IdentifyError::DescriptorLength { nidt, nidl };
            out.push(match nidt {
                nidt::EUI64 => NsDescriptor::Eui64(body.try_into().map_err(|_| bad)?),
                nidt::NGUID => NsDescriptor::Nguid(body.try_into().map_err(|_| bad)?),
                nidt::UUID => NsDescriptor::Uuid(body.try_into().map_err(|_| bad)?),
                nidt::CSI => match body {
                    [c] => NsDescriptor::Csi(*c),
                    _ => return Err(bad),
                },
                other => NsDescriptor::Unknown { nidt: other },
            });
            off = end;
        }
        Ok(out)
    }

    /// Appends this descriptor to `buf` (the caller zero-fills the rest of
    /// the 4096-byte list). Unknown descriptors are not encodable and are
    /// skipped.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let (t, body): (u8, &[u8]) = match self {
            NsDescriptor::Eui64(b) => (nidt::EUI64, b),
            NsDescriptor::Nguid(b) => (nidt::NGUID, b),
            NsDescriptor::Uuid(b) => (nidt::UUID, b),
            NsDescriptor::Csi(c) => (nidt::CSI, core::slice::from_ref(c)),
            NsDescriptor::Unknown { .. } => return,
        };
        buf.extend_from_slice(&[t, body.len() as u8, 0, 0]);
        buf.extend_from_slice(body);
    }
}

/// Parses an active namespace ID list (CNS 02h): NSIDs in increasing order,
/// terminated by zero or the end of the buffer. Trailing bytes that do not
/// make a whole entry are ignored.
pub fn parse_ns_list(buf: &[u8]) -> Vec<u32> {
    buf.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).take_while(|&n| n != 0).collect()
}

/// Encodes an active namespace ID list into a 4096-byte buffer (at most
/// 1024 entries are written).
pub fn encode_ns_list(nsids: &[u32]) -> [u8; 4096] {
    let mut out = [0u8; 4096];
    for (chunk, n) in out.chunks_exact_mut(4).zip(nsids) {
        chunk.copy_from_slice(&n.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_round_trip() {
        let mut c = IdentifyController::zeroed();
        assert!(c.set_strings("SN123", "xbdev model", "1.0"));
        assert!(c.set_subnqn("nqn.2024-01.io.xbdev:sub"));
        c.cntlid = 7.into();
        c.mdts = 5;
        c.ioccsz = 260.into();
        c.kas = 10.into();
        let bytes = c.as_bytes().to_vec();
        let bytes = &bytes[..];
        assert_eq!(&bytes[4..9], b"SN123");
        assert_eq!(bytes[9], b' ');
        assert_eq!(&bytes[78..80], &7u16.to_le_bytes());
        let p = IdentifyController::parse(bytes).unwrap();
        assert_eq!(p, c);
        assert_eq!(p.serial(), Some("SN123"));
        assert_eq!(p.model(), Some("xbdev model"));
        assert_eq!(p.firmware(), Some("1.0"));
        assert_eq!(p.subnqn(), Some("nqn.2024-01.io.xbdev:sub"));
        assert_eq!(p.max_transfer_bytes(4096), Some(128 * 1024));
        assert_eq!(p.io_capsule_bytes(), 4160);
        assert!(!c.set_strings(&"x".repeat(21), "", ""));
        assert!(!c.set_subnqn(&"x".repeat(256)));
        assert_eq!(IdentifyController::parse(&bytes[..4095]), Err(IdentifyError::Short { got: 4095, need: 4096 }));
        c.mdts = 0;
        assert_eq!(c.max_transfer_bytes(4096), None);
        c.mdts = 255;
        assert_eq!(c.max_transfer_bytes(4096), None);
    }

    #[test]
    fn namespace_formats() {
        let mut n = IdentifyNamespace::zeroed();
        n.set_simple(1 << 20, 12);
        n.nguid = [0xab; 16];
        let bytes = n.as_bytes();
        assert_eq!(&bytes[0..8], &(1u64 << 20).to_le_bytes());
        assert_eq!(bytes[128 + 2], 12);
        let p = IdentifyNamespace::parse(bytes).unwrap();
        assert_eq!(p.block_size(), Some(4096));
        assert_eq!(p.nguid, [0xab; 16]);
        // Format index beyond NLBAF.
        let mut bad = p;
        bad.flbas = 1;
        assert_eq!(bad.formatted_lba(), None);
        assert_eq!(bad.block_size(), None);
        // High index bits.
        bad.nlbaf = 63;
        bad.flbas = 0x60 | 0x0f;
        assert_eq!(bad.formatted_lba_index(), 63);
        bad.lbaf[63].lbads = 9;
        assert_eq!(bad.block_size(), Some(512));
        bad.lbaf[63].lbads = 40;
        assert_eq!(bad.block_size(), None);
        assert!(IdentifyNamespace::parse(&[0; 10]).is_err());
    }

    #[test]
    fn descriptor_list() {
        let descs = [
            NsDescriptor::Eui64([1; 8]),
            NsDescriptor::Nguid([2; 16]),
            NsDescriptor::Uuid([3; 16]),
            NsDescriptor::Csi(0),
        ];
        let mut buf = Vec::new();
        for d in &descs {
            d.encode(&mut buf);
        }
        NsDescriptor::Unknown { nidt: 9 }.encode(&mut buf);
        let unknown_at = buf.len();
        buf.extend_from_slice(&[9, 2, 0, 0, 0xaa, 0xbb]);
        buf.resize(4096, 0);
        let mut want = descs.to_vec();
        want.push(NsDescriptor::Unknown { nidt: 9 });
        assert_eq!(NsDescriptor::parse_list(&buf).unwrap(), want);
        // Wrong length for the type.
        let mut bad = buf.clone();
        bad[1] = 7;
        assert!(matches!(NsDescriptor::parse_list(&bad), Err(IdentifyError::DescriptorLength { nidt: 1, nidl: 7 })));
        // Overrun at the end of a truncated buffer.
        assert_eq!(
            NsDescriptor::parse_list(&buf[..unknown_at + 5]),
            Err(IdentifyError::DescriptorOverrun { offset: unknown_at })
        );
        assert_eq!(NsDescriptor::parse_list(&[]).unwrap(), vec![]);
        assert_eq!(NsDescriptor::parse_list(&[1, 8]).unwrap(), vec![]);
    }

    #[test]
    fn ns_list() {
        let list = encode_ns_list(&[1, 2, 10]);
        assert_eq!(parse_ns_list(&list), vec![1, 2, 10]);
        assert_eq!(parse_ns_list(&list[..9]), vec![1, 2]);
        assert_eq!(parse_ns_list(&[]), Vec::<u32>::new());
        let many: Vec<u32> = (1..=2000).collect();
        assert_eq!(parse_ns_list(&encode_ns_list(&many)).len(), 1024);
    }
}
