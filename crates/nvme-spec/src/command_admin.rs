//! Admin commands.

use crate::command::{opcode, ParseError, QueueType};
use crate::queue::Sqe;
use crate::util::{bits32, set_bits32};

/// Identify Controller or Namespace Structure (CNS) values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cns {
    /// 00h: Identify Namespace for NSID.
    Namespace,
    /// 01h: Identify Controller.
    Controller,
    /// 02h: active namespace ID list (NSIDs greater than NSID).
    ActiveNamespaceList,
    /// 03h: namespace identification descriptor list for NSID.
    NamespaceDescriptorList,
    /// 04h: NVM set list.
    NvmSetList,
    /// 05h: I/O command set specific Identify Namespace.
    CsiNamespace,
    /// 06h: I/O command set specific Identify Controller.
    CsiController,
    /// 07h: I/O command set specific active namespace ID list.
    CsiActiveNamespaceList,
    /// 10h: allocated namespace ID list.
    AllocatedNamespaceList,
    /// 11h: Identify Namespace for an allocated NSID.
    AllocatedNamespace,
    /// 12h: controllers attached to NSID.
    NamespaceControllerList,
    /// 13h: controllers in the NVM subsystem.
    ControllerList,
    /// 1Ch: I/O command set data structure.
    IoCommandSet,
}

impl Cns {
    /// Every CNS value this crate knows.
    pub const ALL: [Cns; 13] = [
        Cns::Namespace,
        Cns::Controller,
        Cns::ActiveNamespaceList,
        Cns::NamespaceDescriptorList,
        Cns::NvmSetList,
        Cns::CsiNamespace,
        Cns::CsiController,
        Cns::CsiActiveNamespaceList,
        Cns::AllocatedNamespaceList,
        Cns::AllocatedNamespace,
        Cns::NamespaceControllerList,
        Cns::ControllerList,
        Cns::IoCommandSet,
    ];

    /// The raw CNS byte.
    pub fn to_raw(self) -> u8 {
        match self {
            Cns::Namespace => 0x00,
            Cns::Controller => 0x01,
            Cns::ActiveNamespaceList => 0x02,
            Cns::NamespaceDescriptorList => 0x03,
            Cns::NvmSetList => 0x04,
            Cns::CsiNamespace => 0x05,
            Cns::CsiController => 0x06,
            Cns::CsiActiveNamespaceList => 0x07,
            Cns::AllocatedNamespaceList => 0x10,
            Cns::AllocatedNamespace => 0x11,
            Cns::NamespaceControllerList => 0x12,
            Cns::ControllerList => 0x13,
            Cns::IoCommandSet => 0x1c,
        }
    }

    /// Decodes a raw CNS byte.
    pub fn from_raw(v: u8) -> Result<Self, ParseError> {
        Self::ALL.iter().copied().find(|c| c.to_raw() == v).ok_or(ParseError::UnsupportedCns(v))
    }
}

/// A feature identifier (open set; the constants name common ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeatureId(pub u8);

impl FeatureId {
    /// Arbitration.
    pub const ARBITRATION: Self = Self(0x01);
    /// Power management.
    pub const POWER_MANAGEMENT: Self = Self(0x02);
    /// Temperature threshold.
    pub const TEMPERATURE_THRESHOLD: Self = Self(0x04);
    /// Error recovery.
    pub const ERROR_RECOVERY: Self = Self(0x05);
    /// Volatile write cache (CDW11 bit 0: WCE).
    pub const VOLATILE_WRITE_CACHE: Self = Self(0x06);
    /// Number of queues (see [`NumQueues`]).
    pub const NUMBER_OF_QUEUES: Self = Self(0x07);
    /// Interrupt coalescing.
    pub const INTERRUPT_COALESCING: Self = Self(0x08);
    /// Asynchronous event configuration.
    pub const ASYNC_EVENT_CONFIG: Self = Self(0x0b);
    /// Timestamp.
    pub const TIMESTAMP: Self = Self(0x0e);
    /// Keep alive timer (CDW11: KATO in milliseconds).
    pub const KEEP_ALIVE_TIMER: Self = Self(0x0f);
    /// Host identifier.
    pub const HOST_IDENTIFIER: Self = Self(0x81);
}

/// A log page identifier (open set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogPageId(pub u8);

impl LogPageId {
    /// Error information (64-byte entries).
    pub const ERROR: Self = Self(0x01);
    /// SMART / health information (512 bytes).
    pub const SMART: Self = Self(0x02);
    /// Firmware slot information (512 bytes).
    pub const FIRMWARE_SLOT: Self = Self(0x03);
    /// Changed namespace list.
    pub const CHANGED_NAMESPACES: Self = Self(0x04);
    /// Commands supported and effects.
    pub const COMMANDS_SUPPORTED: Self = Self(0x05);
    /// Asymmetric namespace access.
    pub const ANA: Self = Self(0x0c);
    /// Discovery (Fabrics discovery controllers).
    pub const DISCOVERY: Self = Self(0x70);
}

/// Get Features select field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeatureSelect {
    /// Current value.
    Current,
    /// Default value.
    Default,
    /// Saved value.
    Saved,
    /// Supported capabilities.
    SupportedCapabilities,
}

impl FeatureSelect {
    /// Decodes the 3-bit SEL field; reserved values give `None`.
    pub fn from_raw(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Current),
            1 => Some(Self::Default),
            2 => Some(Self::Saved),
            3 => Some(Self::SupportedCapabilities),
            _ => None,
        }
    }

    /// The raw SEL value.
    pub fn to_raw(self) -> u8 {
        match self {
            Self::Current => 0,
            Self::Default => 1,
            Self::Saved => 2,
            Self::SupportedCapabilities => 3,
        }
    }
}

/// The Number of Queues feature value (CDW11 of Set Features, DW0 of its
/// completion). Both counts are zero-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NumQueues {
    /// Number of I/O submission queues minus one.
    pub nsqr: u16,
    /// Number of I/O completion queues minus one.
    pub ncqr: u16,
}

impl NumQueues {
    /// Decodes the dword.
    pub fn from_dword(v: u32) -> Self {
        Self { nsqr: v as u16, ncqr: (v >> 16) as u16 }
    }

    /// Encodes the dword.
    pub fn to_dword(self) -> u32 {
        u32::from(self.nsqr) | (u32::from(self.ncqr) << 16)
    }
}

/// An admin command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Delete I/O Submission Queue.
    DeleteIoSq {
        /// Queue identifier.
        qid: u16,
    },
    /// Create I/O Submission Queue (PRP1: queue base).
    CreateIoSq {
        /// Queue identifier.
        qid: u16,
        /// Queue size, zero-based (entries minus one).
        qsize: u16,
        /// Completion queue to post to.
        cqid: u16,
        /// Queue priority (2 bits).
        prio: u8,
        /// Physically contiguous.
        contiguous: bool,
        /// NVM set identifier.
        nvmsetid: u16,
    },
    /// Get Log Page.
    GetLogPage {
        /// Namespace (FFFFFFFFh: all).
        nsid: u32,
        /// Log page identifier.
        lid: LogPageId,
        /// Log specific field (7 bits).
        lsp: u8,
        /// Retain asynchronous event.
        rae: bool,
        /// Number of dwords to transfer, zero-based.
        numd: u32,
        /// Byte offset into the log page.
        offset: u64,
        /// Log specific identifier.
        lsi: u16,
        /// Command set identifier.
        csi: u8,
    },
    /// Delete I/O Completion Queue.
    DeleteIoCq {
        /// Queue identifier.
        qid: u16,
    },
    /// Create I/O Completion Queue (PRP1: queue base).
    CreateIoCq {
        /// Queue identifier.
        qid: u16,
        /// Queue size, zero-based.
        qsize: u16,
        /// Interrupt vector.
        iv: u16,
        /// Interrupts enabled.
        ien: bool,
        /// Physically contiguous.
        contiguous: bool,
    },
    /// Identify (4096-byte data).
    Identify {
        /// What to return.
        cns: Cns,
        /// Namespace identifier.
        nsid: u32,
        /// Controller identifier.
        cntid: u16,
        /// CNS specific identifier.
        cnssid: u16,
        /// Command set identifier.
        csi: u8,
    },
    /// Abort.
    Abort {
        /// Submission queue of the command to abort.
        sqid: u16,
        /// Its command identifier.
        cid: u16,
    },
    /// Set Features.
    SetFeatures {
        /// Namespace identifier.
        nsid: u32,
        /// Feature.
        fid: FeatureId,
        /// Save across resets.
        save: bool,
        /// Feature specific dword 11.
        cdw11: u32,
        /// Feature specific dwords 12 to 15.
        cdw12_15: [u32; 4],
    },
    /// Get Features.
    GetFeatures {
        /// Namespace identifier.
        nsid: u32,
        /// Feature.
        fid: FeatureId,
        /// Which value.
        sel: FeatureSelect,
        /// Feature specific dword 11.
        cdw11: u32,
    },
    /// Asynchronous Event Request.
    AsyncEventRequest,
    /// Keep Alive.
    KeepAlive,
}

impl AdminCommand {
    /// Get Log Page for `len` bytes (rounded up to dwords, at least one) at
    /// `offset`.
    pub fn get_log_page(lid: LogPageId, nsid: u32, len: u32, offset: u64) -> Self {
        Self::GetLogPage {
            nsid,
            lid,
            lsp: 0,
            rae: false,
            numd: len.div_ceil(4).saturating_sub(1),
            offset,
            lsi: 0,
            csi: 0,
        }
    }

    /// Identify with the given CNS and NSID.
    pub fn identify(cns: Cns, nsid: u32) -> Self {
        Self::Identify { cns, nsid, cntid: 0, cnssid: 0, csi: 0 }
    }

    /// Set Features Number of Queues.
    pub fn set_num_queues(nq: NumQueues) -> Self {
        Self::SetFeatures {
            nsid: 0,
            fid: FeatureId::NUMBER_OF_QUEUES,
            save: false,
            cdw11: nq.to_dword(),
            cdw12_15: [0; 4],
        }
    }

    /// Number of bytes the command transfers to the host, if it is fixed by
    /// the command fields (Identify: 4096, Get Log Page: NUMD).
    pub fn data_len_to_host(&self) -> Option<u64> {
        match self {
            Self::Identify { .. } => Some(4096),
            Self::GetLogPage { numd, .. } => Some((u64::from(*numd) + 1) * 4),
            _ => None,
        }
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Self::DeleteIoSq { .. } => opcode::DELETE_IO_SQ,
            Self::CreateIoSq { .. } => opcode::CREATE_IO_SQ,
            Self::GetLogPage { .. } => opcode::GET_LOG_PAGE,
            Self::DeleteIoCq { .. } => opcode::DELETE_IO_CQ,
            Self::CreateIoCq { .. } => opcode::CREATE_IO_CQ,
            Self::Identify { .. } => opcode::IDENTIFY,
            Self::Abort { .. } => opcode::ABORT,
            Self::SetFeatures { .. } => opcode::SET_FEATURES,
            Self::GetFeatures { .. } => opcode::GET_FEATURES,
            Self::AsyncEventRequest => opcode::ASYNC_EVENT_REQUEST,
            Self::KeepAlive => opcode::KEEP_ALIVE,
        }
    }

    /// Builds the submission queue entry (data pointer left zero).
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut s = Sqe::new(self.opcode(), cid);
        match *self {
            Self::DeleteIoSq { qid } | Self::DeleteIoCq { qid } => s.cdw10 = u32::from(qid).into(),
            Self::CreateIoSq { qid, qsize, cqid, prio, contiguous, nvmsetid } => {
                s.cdw10 = (u32::from(qid) | (u32::from(qsize) << 16)).into();
                let mut d11 = u32::from(contiguous);
                d11 = set_bits32(d11, 1, 2, prio.into());
                d11 = set_bits32(d11, 16, 16, cqid.into());
                s.cdw11 = d11.into();
                s.cdw12 = u32::from(nvmsetid).into();
            }
            Self::CreateIoCq { qid, qsize, iv, ien, contiguous } => {
                s.cdw10 = (u32::from(qid) | (u32::from(qsize) << 16)).into();
                let d11 = u32::from(contiguous) | (u32::from(ien) << 1) | (u32::from(iv) << 16);
                s.cdw11 = d11.into();
            }
            Self::GetLogPage { nsid, lid, lsp, rae, numd, offset, lsi, csi } => {
                s.nsid = nsid.into();
                let mut d10 = u32::from(lid.0);
                d10 = set_bits32(d10, 8, 7, lsp.into());
                d10 = set_bits32(d10, 15, 1, rae.into());
                d10 = set_bits32(d10, 16, 16, numd & 0xffff);
                s.cdw10 = d10.into();
                s.cdw11 = ((numd >> 16) | (u32::from(lsi) << 16)).into();
                s.cdw12 = (offset as u32).into();
                s.cdw13 = ((offset >> 32) as u32).into();
                s.cdw14 = (u32::from(csi) << 24).into();
            }
            Self::Identify { cns, nsid, cntid, cnssid, csi } => {
                s.nsid = nsid.into();
                s.cdw10 = (u32::from(cns.to_raw()) | (u32::from(cntid) << 16)).into();
                s.cdw11 = (u32::from(cnssid) | (u32::from(csi) << 24)).into();
            }
            Self::Abort { sqid, cid } => {
                s.cdw10 = (u32::from(sqid) | (u32::from(cid) << 16)).into();
            }
            Self::SetFeatures { nsid, fid, save, cdw11, cdw12_15 } => {
                s.nsid = nsid.into();
                s.cdw10 = (u32::from(fid.0) | (u32::from(save) << 31)).into();
                s.cdw11 = cdw11.into();
                let [a, b, c, d] = cdw12_15;
                s.cdw12 = a.into();
                s.cdw13 = b.into();
                s.cdw14 = c.into();
                s.cdw15 = d.into();
            }
            Self::GetFeatures { nsid, fid, sel, cdw11 } => {
                s.nsid = nsid.into();
                s.cdw10 = (u32::from(fid.0) | (u32::from(sel.to_raw()) << 8)).into();
                s.cdw11 = cdw11.into();
            }
            Self::AsyncEventRequest | Self::KeepAlive => {}
        }
        s
    }

    /// Parses an admin submission queue entry.
    pub fn parse(s: &Sqe) -> Result<Self, ParseError> {
        let [d10, d11, d12, d13, d14, d15] = s.cdw10_15();
        let nsid = s.nsid.get();
        Ok(match s.opcode() {
            opcode::DELETE_IO_SQ => Self::DeleteIoSq { qid: d10 as u16 },
            opcode::DELETE_IO_CQ => Self::DeleteIoCq { qid: d10 as u16 },
            opcode::CREATE_IO_SQ => Self::CreateIoSq {
                qid: d10 as u16,
                qsize: (d10 >> 16) as u16,
                contiguous: d11 & 1 != 0,
                prio: bits32(d11, 1, 2) as u8,
                cqid: (d11 >> 16) as u16,
                nvmsetid: d12 as u16,
            },
            opcode::CREATE_IO_CQ => Self::CreateIoCq {
                qid: d10 as u16,
                qsize: (d10 >> 16) as u16,
                contiguous: d11 & 1 != 0,
                ien: d11 & 2 != 0,
                iv: (d11 >> 16) as u16,
            },
            opcode::GET_LOG_PAGE => Self::GetLogPage {
                nsid,
                lid: LogPageId(d10 as u8),
                lsp: bits32(d10, 8, 7) as u8,
                rae: bits32(d10, 15, 1) != 0,
                numd: (d10 >> 16) | ((d11 & 0xffff) << 16),
                lsi: (d11 >> 16) as u16,
                offset: u64::from(d12) | (u64::from(d13) << 32),
                csi: (d14 >> 24) as u8,
            },
            opcode::IDENTIFY => Self::Identify {
                cns: Cns::from_raw(d10 as u8)?,
                nsid,
                cntid: (d10 >> 16) as u16,
                cnssid: d11 as u16,
                csi: (d11 >> 24) as u8,
            },
            opcode::ABORT => Self::Abort { sqid: d10 as u16, cid: (d10 >> 16) as u16 },
            opcode::SET_FEATURES => Self::SetFeatures {
                nsid,
                fid: FeatureId(d10 as u8),
                save: d10 >> 31 != 0,
                cdw11: d11,
                cdw12_15: [d12, d13, d14, d15],
            },
            opcode::GET_FEATURES => {
                let raw = bits32(d10, 8, 3) as u8;
                Self::GetFeatures {
                    nsid,
                    fid: FeatureId(d10 as u8),
                    sel: FeatureSelect::from_raw(raw)
                        .ok_or(ParseError::InvalidField { field: "get features select", value: raw.into() })?,
                    cdw11: d11,
                }
            }
            opcode::ASYNC_EVENT_REQUEST => Self::AsyncEventRequest,
            opcode::KEEP_ALIVE => Self::KeepAlive,
            op => return Err(ParseError::InvalidOpcode { opcode: op, queue: QueueType::Admin }),
        })
    }
}

/// Asynchronous event information carried in DW0 of an Asynchronous Event
/// Request completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AsyncEvent {
    /// Event type (bits 2:0): 0 error, 1 SMART/health, 2 notice, 6 I/O
    /// command set specific, 7 vendor.
    pub event_type: u8,
    /// Event information (bits 15:8); for notices 0 = namespace attribute
    /// changed, 3 = ANA change.
    pub info: u8,
    /// Log page to read to clear the event (bits 23:16).
    pub log_page: LogPageId,
}

impl AsyncEvent {
    /// Decodes completion DW0.
    pub fn from_dword(v: u32) -> Self {
        Self {
            event_type: bits32(v, 0, 3) as u8,
            info: bits32(v, 8, 8) as u8,
            log_page: LogPageId(bits32(v, 16, 8) as u8),
        }
    }

    /// Encodes completion DW0.
    pub fn to_dword(self) -> u32 {
        u32::from(self.event_type & 7) | (u32::from(self.info) << 8) | (u32::from(self.log_page.0) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_layout() {
        let s = AdminCommand::Identify { cns: Cns::Controller, nsid: 0, cntid: 0x1234, cnssid: 0, csi: 0 }.to_sqe(9);
        assert_eq!(s.opcode(), 0x06);
        assert_eq!(s.cdw10.get(), 0x1234_0001);
        assert_eq!(Cns::from_raw(0x08), Err(ParseError::UnsupportedCns(0x08)));
        let mut bad = s;
        bad.cdw10 = 0x55.into();
        assert_eq!(AdminCommand::parse(&bad), Err(ParseError::UnsupportedCns(0x55)));
    }

    #[test]
    fn get_log_page_numd_split() {
        let c = AdminCommand::get_log_page(LogPageId::DISCOVERY, 0, 0x4_0000 + 3, 1 << 33);
        let s = c.to_sqe(1);
        // 0x40003 bytes -> 0x10001 dwords -> numd 0x10000
        assert_eq!(s.cdw10.get() >> 16, 0);
        assert_eq!(s.cdw11.get() & 0xffff, 1);
        assert_eq!(s.cdw13.get(), 2);
        assert_eq!(c.data_len_to_host(), Some(0x4_0004));
        assert_eq!(AdminCommand::parse(&s), Ok(c));
        let z = AdminCommand::get_log_page(LogPageId::SMART, 0, 0, 0);
        assert_eq!(z.data_len_to_host(), Some(4));
    }

    #[test]
    fn get_features_bad_select() {
        let mut s = Sqe::new(opcode::GET_FEATURES, 1);
        s.cdw10 = (7u32 << 8 | 7).into();
        assert_eq!(AdminCommand::parse(&s), Err(ParseError::InvalidField { field: "get features select", value: 7 }));
    }

    #[test]
    fn num_queues_and_async_event() {
        let nq = NumQueues { nsqr: 3, ncqr: 0xffff };
        assert_eq!(NumQueues::from_dword(nq.to_dword()), nq);
        let s = AdminCommand::set_num_queues(nq).to_sqe(2);
        assert_eq!(s.cdw10.get(), 7);
        assert_eq!(s.cdw11.get(), 0xffff_0003);
        let ev = AsyncEvent { event_type: 2, info: 3, log_page: LogPageId::ANA };
        assert_eq!(ev.to_dword(), 0x000c_0302);
        assert_eq!(AsyncEvent::from_dword(ev.to_dword()), ev);
    }

    #[test]
    fn create_queue_fields() {
        let c = AdminCommand::CreateIoSq { qid: 2, qsize: 1023, cqid: 2, prio: 1, contiguous: true, nvmsetid: 0 };
        let s = c.to_sqe(3);
        assert_eq!(s.cdw10.get(), (1023 << 16) | 2);
        assert_eq!(s.cdw11.get(), (2 << 16) | (1 << 1) | 1);
        let c = AdminCommand::CreateIoCq { qid: 2, qsize: 1023, iv: 5, ien: true, contiguous: true };
        assert_eq!(c.to_sqe(3).cdw11.get(), (5 << 16) | 3);
    }
}
