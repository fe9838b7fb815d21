//! Asynchronous events: typed decoding of Asynchronous Event Request
//! completions (NVMe base spec, "Asynchronous Event Request command"), the
//! details the driver reads from the associated log page, and the bounded
//! log of events a [`crate::Controller`] keeps for its health API.

use std::collections::VecDeque;
use std::time::SystemTime;

use nvme_spec::command::{AsyncEvent, LogPageId};
use nvme_spec::log::{AnaLog, AnaState, ErrorLogEntry, SmartLog};

/// Asynchronous Event Configuration (Set Features 0Bh) bit: namespace
/// attribute notices.
pub const AEC_NS_ATTRIBUTE: u32 = 1 << 8;
/// Asynchronous Event Configuration bit: firmware activation notices.
pub const AEC_FW_ACTIVATION: u32 = 1 << 9;
/// Asynchronous Event Configuration bit: ANA change notices.
pub const AEC_ANA_CHANGE: u32 = 1 << 11;
/// Asynchronous Event Configuration bits 7:0: SMART critical warnings.
pub const AEC_SMART_MASK: u32 = 0xff;
/// Identify OAES bits that enable the notice of the same AEC bit.
pub const OAES_NOTICES: u32 = AEC_NS_ATTRIBUTE | AEC_FW_ACTIVATION | AEC_ANA_CHANGE;

/// Event type "error status" (event information values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorEvent {
    /// Write to an invalid doorbell register.
    InvalidDoorbell,
    /// Invalid doorbell write value.
    InvalidDoorbellValue,
    /// Diagnostic failure.
    DiagnosticFailure,
    /// Persistent internal error.
    PersistentInternalError,
    /// Transient internal error.
    TransientInternalError,
    /// Firmware image load error.
    FirmwareImageLoadError,
    /// A value this driver does not name.
    Other(u8),
}

/// Event type "SMART / health status" (event information values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthEvent {
    /// NVM subsystem reliability degraded.
    Reliability,
    /// Temperature above or below a threshold.
    TemperatureThreshold,
    /// Available spare below its threshold.
    SpareBelowThreshold,
    /// A value this driver does not name.
    Other(u8),
}

/// Event type "notice" (event information values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeEvent {
    /// Namespace attributes changed (Changed Namespace List log).
    NamespaceAttributeChanged,
    /// Firmware activation starting.
    FirmwareActivationStarting,
    /// Telemetry log changed.
    TelemetryLogChanged,
    /// Asymmetric namespace access change (ANA log).
    AnaChange,
    /// Predictable latency event aggregate log change.
    PredictableLatencyAggregate,
    /// LBA status information alert.
    LbaStatusAlert,
    /// Endurance group event aggregate log change.
    EnduranceGroupAggregate,
    /// A value this driver does not name.
    Other(u8),
}

macro_rules! info_codes {
    ($t:ident { $($v:ident = $n:expr,)* }) => {
        impl $t {
            /// Decode an event information value.
            pub fn from_info(info: u8) -> Self {
                match info {
                    $($n => $t::$v,)*
                    o => $t::Other(o),
                }
            }
            /// The event information value.
            pub fn info(self) -> u8 {
                match self {
                    $($t::$v => $n,)*
                    $t::Other(o) => o,
                }
            }
        }
    };
}

info_codes!(ErrorEvent {
    InvalidDoorbell = 0,
    InvalidDoorbellValue = 1,
    DiagnosticFailure = 2,
    PersistentInternalError = 3,
    TransientInternalError = 4,
    FirmwareImageLoadError = 5,
});
info_codes!(HealthEvent { Reliability = 0, TemperatureThreshold = 1, SpareBelowThreshold = 2, });
info_codes!(NoticeEvent {
    NamespaceAttributeChanged = 0,
    FirmwareActivationStarting = 1,
    TelemetryLogChanged = 2,
    AnaChange = 3,
    PredictableLatencyAggregate = 4,
    LbaStatusAlert = 5,
    EnduranceGroupAggregate = 6,
});

/// A decoded asynchronous event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AsyncEventKind {
    /// Event type 0: error status.
    Error(ErrorEvent),
    /// Event type 1: SMART / health status.
    Health(HealthEvent),
    /// Event type 2: notice.
    Notice(NoticeEvent),
    /// Event type 6: I/O command set specific status (information value).
    CommandSet(u8),
    /// Event type 7: vendor specific (information value).
    Vendor(u8),
    /// A reserved event type.
    Reserved {
        /// Event type.
        event_type: u8,
        /// Event information.
        info: u8,
    },
}

impl AsyncEventKind {
    /// Decode the event of an Asynchronous Event Request completion.
    pub fn decode(ev: &AsyncEvent) -> Self {
        match ev.event_type {
            0 => Self::Error(ErrorEvent::from_info(ev.info)),
            1 => Self::Health(HealthEvent::from_info(ev.info)),
            2 => Self::Notice(NoticeEvent::from_info(ev.info)),
            6 => Self::CommandSet(ev.info),
            7 => Self::Vendor(ev.info),
            t => Self::Reserved { event_type: t, info: ev.info },
        }
    }

    /// The (event type, event information) pair.
    pub fn encode(&self) -> (u8, u8) {
        match *self {
            Self::Error(e) => (0, e.info()),
            Self::Health(h) => (1, h.info()),
            Self::Notice(n) => (2, n.info()),
            Self::CommandSet(i) => (6, i),
            Self::Vendor(i) => (7, i),
            Self::Reserved { event_type, info } => (event_type & 7, info),
        }
    }
}

/// What the log page read to clear an event reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDetail {
    /// No log page was read, or it could not be read or parsed.
    None,
    /// The newest error information log entry.
    Error(Box<ErrorLogEntry>),
    /// SMART / health fields.
    Health {
        /// Critical warning bits.
        critical_warning: u8,
        /// Composite temperature in kelvin.
        temperature_k: u16,
        /// Available spare, percent.
        available_spare: u8,
    },
    /// Namespaces whose attributes changed (`[0xffffffff]`: more than 1024).
    ChangedNamespaces(Vec<u32>),
    /// ANA state of every namespace the ANA log lists.
    Ana(Vec<(u32, AnaState)>),
}

impl EventDetail {
    /// Interpret `page`, the log page `lid` the driver read for an event.
    pub fn from_log(lid: LogPageId, page: &[u8]) -> Self {
        match lid {
            LogPageId::ERROR => ErrorLogEntry::parse_all(page)
                .into_iter()
                .next()
                .filter(|e| e.error_count.get() != 0)
                .map_or(Self::None, |e| Self::Error(Box::new(e))),
            LogPageId::SMART => SmartLog::parse(page).map_or(Self::None, |s| Self::Health {
                critical_warning: s.critical_warning,
                temperature_k: s.temperature.get(),
                available_spare: s.avail_spare,
            }),
            LogPageId::CHANGED_NAMESPACES => Self::ChangedNamespaces(nvme_spec::identify::parse_ns_list(page)),
            LogPageId::ANA => AnaLog::parse(page).map_or(Self::None, |log| {
                Self::Ana(log.groups.iter().flat_map(|g| g.nsids.iter().map(move |&n| (n, g.state))).collect())
            }),
            _ => Self::None,
        }
    }

    /// Bytes of log page `lid` the driver reads for an event (the read is
    /// what lets the controller report that event type again; 0: none).
    pub fn log_len(lid: LogPageId) -> usize {
        match lid {
            LogPageId(0) => 0,
            LogPageId::ERROR => 64,
            LogPageId::SMART => 512,
            LogPageId::CHANGED_NAMESPACES | LogPageId::ANA => 4096,
            _ => 512,
        }
    }
}

/// One asynchronous event the controller reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncEventRecord {
    /// Sequence number (1 for the first event of the controller).
    pub seq: u64,
    /// When the driver saw it.
    pub at: SystemTime,
    /// Completion dword 0 as the controller reported it.
    pub raw: u32,
    /// The decoded event.
    pub kind: AsyncEventKind,
    /// The log page associated with the event.
    pub log_page: LogPageId,
    /// What that log page said.
    pub detail: EventDetail,
}

/// The newest events, oldest first, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct EventLog {
    entries: VecDeque<AsyncEventRecord>,
    capacity: usize,
    total: u64,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: VecDeque::with_capacity(capacity.max(1)), capacity: capacity.max(1), total: 0 }
    }

    /// Record an event, dropping the oldest when full; returns its
    /// sequence number.
    pub(crate) fn push(&mut self, raw: u32, detail: EventDetail) -> u64 {
        let ev = AsyncEvent::from_dword(raw);
        self.total += 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(AsyncEventRecord {
            seq: self.total,
            at: SystemTime::now(),
            raw,
            kind: AsyncEventKind::decode(&ev),
            log_page: ev.log_page,
            detail,
        });
        self.total
    }

    pub(crate) fn snapshot(&self) -> Vec<AsyncEventRecord> {
        self.entries.iter().cloned().collect()
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_round_trip() {
        for dw in 0u32..0x800 {
            let ev = AsyncEvent::from_dword(dw);
            let k = AsyncEventKind::decode(&ev);
            assert_eq!(k.encode(), (ev.event_type, ev.info));
        }
        let ana = AsyncEvent { event_type: 2, info: 3, log_page: LogPageId::ANA };
        assert_eq!(AsyncEventKind::decode(&ana), AsyncEventKind::Notice(NoticeEvent::AnaChange));
        let t = AsyncEvent { event_type: 1, info: 1, log_page: LogPageId::SMART };
        assert_eq!(AsyncEventKind::decode(&t), AsyncEventKind::Health(HealthEvent::TemperatureThreshold));
        assert_eq!(ErrorEvent::from_info(9), ErrorEvent::Other(9));
        assert_eq!(
            AsyncEventKind::decode(&AsyncEvent { event_type: 4, info: 1, log_page: LogPageId(0) }),
            AsyncEventKind::Reserved { event_type: 4, info: 1 }
        );
    }

    #[test]
    fn details_from_log_pages() {
        let mut page = vec![0u8; 4096];
        page[..4].copy_from_slice(&7u32.to_le_bytes());
        page[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            EventDetail::from_log(LogPageId::CHANGED_NAMESPACES, &page),
            EventDetail::ChangedNamespaces(vec![7, 9])
        );
        let mut s = SmartLog::zeroed();
        s.critical_warning = 0x2;
        s.temperature = 350.into();
        s.avail_spare = 5;
        assert_eq!(
            EventDetail::from_log(LogPageId::SMART, zerocopy::IntoBytes::as_bytes(&s)),
            EventDetail::Health { critical_warning: 2, temperature_k: 350, available_spare: 5 }
        );
        assert_eq!(EventDetail::from_log(LogPageId::SMART, &[1, 2]), EventDetail::None);
        assert_eq!(EventDetail::from_log(LogPageId::ERROR, &[0u8; 64]), EventDetail::None);
        let ana = nvme_spec::log::AnaLog {
            chgcnt: 1,
            groups: vec![nvme_spec::log::AnaGroup {
                grpid: 1,
                chgcnt: 1,
                state: AnaState::Inaccessible,
                nsids: vec![1, 2],
            }],
        };
        assert_eq!(
            EventDetail::from_log(LogPageId::ANA, &ana.encode()),
            EventDetail::Ana(vec![(1, AnaState::Inaccessible), (2, AnaState::Inaccessible)])
        );
        assert_eq!(EventDetail::from_log(LogPageId::ANA, &[0xff; 20]), EventDetail::None);
    }

    #[test]
    fn event_log_is_bounded_and_numbered() {
        let mut l = EventLog::new(3);
        for i in 0..5u32 {
            assert_eq!(l.push(i << 8, EventDetail::None), u64::from(i) + 1);
        }
        let s = l.snapshot();
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(s[0].kind, AsyncEventKind::Error(ErrorEvent::DiagnosticFailure));
        assert_eq!(l.total(), 5);
    }
}
