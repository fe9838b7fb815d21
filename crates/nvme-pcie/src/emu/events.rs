//! Asynchronous events of the emulated controller: Asynchronous Event
//! Requests wait until an event is injected; a reported event type is
//! masked until the host reads its log page (without Retain Asynchronous
//! Event); events the host has not enabled (Set Features Asynchronous Event
//! Configuration) are not reported, except error events.

use std::collections::VecDeque;

use nvme_spec::command::{AsyncEvent, FeatureId, LogPageId};
use nvme_spec::log::{AnaGroup, AnaLog, AnaState};
use nvme_spec::status::command_specific as cs;
use nvme_spec::{Status, StatusCode};

use super::queues::{Cq, Outcome};
use super::{lock, Ctl};
use crate::events::{ErrorEvent, HealthEvent, NoticeEvent, AEC_ANA_CHANGE, AEC_NS_ATTRIBUTE};

/// Events waiting to be reported at most; more are dropped.
const QUEUED_MAX: usize = 16;

/// An event to raise on the emulated controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmuEvent {
    /// An error status event (always reported; log page: error information).
    Error(ErrorEvent),
    /// A SMART / health event raising `critical_warning` bits in the SMART
    /// log (reported if one of those bits is enabled).
    Health {
        /// Which health event.
        event: HealthEvent,
        /// Critical warning bits to set.
        critical_warning: u8,
    },
    /// Attributes of these namespaces changed (Changed Namespace List log;
    /// reported if namespace attribute notices are enabled).
    NamespaceChanged(Vec<u32>),
    /// Every namespace's ANA group moved to this state (ANA log; reported
    /// if ANA change notices are enabled).
    AnaChange(AnaState),
}

/// Asynchronous event state (kept across controller resets, except the
/// requests, which a reset drops, and the masks).
#[derive(Debug, Default)]
pub(crate) struct AerState {
    /// CIDs of outstanding Asynchronous Event Requests, oldest first.
    waiting: Vec<u16>,
    /// Completion dword 0 of events not reported yet.
    queued: VecDeque<u32>,
    /// Per event type: the log page whose read unmasks it (None: not masked).
    masked: [Option<LogPageId>; 8],
    /// SMART critical warning bits.
    pub(crate) critical_warning: u8,
    /// Namespaces in the Changed Namespace List log.
    changed: Vec<u32>,
    /// ANA state of the (single) ANA group, and its change count.
    ana: Option<AnaState>,
    ana_changes: u64,
}

impl AerState {
    /// Take the oldest queued event whose type is not masked, masking it.
    fn take_deliverable(&mut self) -> Option<u32> {
        let i = self.queued.iter().position(|&d| {
            let t = usize::from(AsyncEvent::from_dword(d).event_type);
            self.masked.get(t).is_some_and(Option::is_none)
        })?;
        let d = self.queued.remove(i)?;
        let ev = AsyncEvent::from_dword(d);
        if let Some(m) = self.masked.get_mut(usize::from(ev.event_type)) {
            *m = Some(ev.log_page);
        }
        Some(d)
    }

    /// A controller reset drops outstanding requests and masks.
    pub(crate) fn reset(&mut self) {
        self.waiting.clear();
        self.masked = [None; 8];
    }
}

impl Ctl {
    fn aer_limit(&self) -> usize {
        usize::from(Self::AERL) + 1
    }

    /// Execute an Asynchronous Event Request: complete it at once with a
    /// waiting event, else keep it (deferred completion).
    pub(crate) fn async_event_request(&self, cid: u16) -> Outcome {
        let mut st = lock(&self.aer);
        if st.waiting.len() >= self.aer_limit() {
            return Outcome::err(Status::new(StatusCode::CommandSpecific(cs::AER_LIMIT_EXCEEDED), true));
        }
        match st.take_deliverable() {
            Some(dw0) => Outcome::ok(dw0),
            None => {
                st.waiting.push(cid);
                Outcome::deferred()
            }
        }
    }

    /// Complete waiting requests with deliverable events (admin CQ locked).
    pub(crate) fn deliver_events(&self, cq: &mut Cq, sqhd: u16) {
        let mut st = lock(&self.aer);
        while !st.waiting.is_empty() && !cq.full() {
            let Some(dw0) = st.take_deliverable() else {
                break;
            };
            let cid = st.waiting.remove(0);
            self.post(cq, 0, cid, sqhd, dw0, Status::SUCCESS);
        }
    }

    /// The host read log page `lid`: without RAE, event types masked by it
    /// are reported again, and the Changed Namespace List is cleared.
    pub(crate) fn log_page_read(&self, lid: LogPageId, rae: bool) {
        if rae {
            return;
        }
        let mut st = lock(&self.aer);
        for m in st.masked.iter_mut() {
            if *m == Some(lid) {
                *m = None;
            }
        }
        if lid == LogPageId::CHANGED_NAMESPACES {
            st.changed.clear();
        }
    }

    /// Changed Namespace List log page.
    pub(crate) fn changed_ns_log(&self) -> Vec<u8> {
        let st = lock(&self.aer);
        let list = if st.changed.len() > 1024 { vec![u32::MAX] } else { st.changed.clone() };
        nvme_spec::identify::encode_ns_list(&list).to_vec()
    }

    /// ANA log page: one group (1) holding every namespace.
    pub(crate) fn ana_log(&self) -> Vec<u8> {
        let st = lock(&self.aer);
        let group = AnaGroup {
            grpid: 1,
            chgcnt: st.ana_changes,
            state: st.ana.unwrap_or(AnaState::Optimized),
            nsids: (1..=self.ns.len() as u32).collect(),
        };
        AnaLog { chgcnt: st.ana_changes, groups: vec![group] }.encode()
    }

    /// Raise an event; false if it is not enabled or too many are waiting.
    pub(crate) fn raise(&self, ev: EmuEvent) -> bool {
        let aec = self.feature(FeatureId::ASYNC_EVENT_CONFIG).unwrap_or(0);
        let (event_type, info, log_page, enabled) = {
            let mut st = lock(&self.aer);
            match ev {
                EmuEvent::Error(e) => (0, e.info(), LogPageId::ERROR, true),
                EmuEvent::Health { event, critical_warning } => {
                    st.critical_warning |= critical_warning;
                    (1, event.info(), LogPageId::SMART, u32::from(critical_warning) & aec != 0)
                }
                EmuEvent::NamespaceChanged(ids) => {
                    for id in ids {
                        if !st.changed.contains(&id) {
                            st.changed.push(id);
                        }
                    }
                    st.changed.sort_unstable();
                    let info = NoticeEvent::NamespaceAttributeChanged.info();
                    (2, info, LogPageId::CHANGED_NAMESPACES, aec & AEC_NS_ATTRIBUTE != 0)
                }
                EmuEvent::AnaChange(state) => {
                    st.ana = Some(state);
                    st.ana_changes += 1;
                    (2, NoticeEvent::AnaChange.info(), LogPageId::ANA, aec & AEC_ANA_CHANGE != 0)
                }
            }
        };
        if !enabled {
            return false;
        }
        {
            let mut st = lock(&self.aer);
            if st.queued.len() >= QUEUED_MAX {
                return false;
            }
            st.queued.push_back(AsyncEvent { event_type, info, log_page }.to_dword());
        }
        if self.running() {
            // Same lock order as command processing: SQ, CQ, event state.
            if let (Some(sq), Some(cq)) = (self.sqs.first(), self.cqs.first()) {
                let sg = lock(sq);
                let head = sg.as_ref().map_or(0, |q| q.head);
                if let Some(cq) = lock(cq).as_mut() {
                    self.deliver_events(cq, head);
                }
            }
        }
        true
    }

    /// Events raised but not reported yet, and requests waiting for one.
    pub(crate) fn event_counts(&self) -> (usize, usize) {
        let st = lock(&self.aer);
        (st.queued.len(), st.waiting.len())
    }
}
