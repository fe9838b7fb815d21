//! Admin command execution of the emulated controller.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use nvme_spec::command::{AdminCommand, Cns, FeatureId, LogPageId, NumQueues};
use nvme_spec::identify::{oncs, IdentifyController, IdentifyNamespace, NsDescriptor};
use nvme_spec::log::{ErrorLogEntry, FirmwareSlotLog, SmartLog};
use nvme_spec::status::{command_specific as cs, GenericStatus};
use nvme_spec::{Command, QueueType, Sqe, Status, StatusCode};
use zerocopy::{FromZeros, IntoBytes};

use super::queues::{generic, Cq, Outcome, Sq};
use super::{lock, Ctl};
use crate::events::{AEC_ANA_CHANGE, AEC_NS_ATTRIBUTE};

/// Opcode of Doorbell Buffer Config (NVMe 1.3, not in nvme-spec's parser).
pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
/// OACS bit: Doorbell Buffer Config supported.
pub const OACS_DBBUF: u16 = 1 << 8;
/// Error log entries kept (ELPE + 1).
const ERROR_LOG_ENTRIES: usize = 4;

/// Admin-visible controller state (reset with the controller).
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    /// Granted I/O queue count (None: Set Features not issued yet).
    granted_queues: Option<u16>,
    features: BTreeMap<u8, u32>,
    error_count: u64,
    errors: Vec<ErrorLogEntry>,
    pub(crate) host_reads: u64,
    pub(crate) host_writes: u64,
}

fn cmd_specific(sc: u8) -> Status {
    Status::new(StatusCode::CommandSpecific(sc), true)
}

impl Ctl {
    /// Asynchronous event request limit, zero-based (Identify AERL).
    pub(crate) const AERL: u8 = 3;

    pub(crate) fn log_error(&self, sqid: u16, cid: u16, status: Status) {
        let mut a = lock(&self.admin);
        a.error_count += 1;
        let mut e = ErrorLogEntry::new_zeroed();
        e.error_count = a.error_count.into();
        e.sqid = sqid.into();
        e.cmdid = cid.into();
        e.status_field = status.to_raw().into();
        e.param_error_location = 0xffff.into();
        a.errors.insert(0, e);
        a.errors.truncate(ERROR_LOG_ENTRIES);
    }

    pub(crate) fn exec_admin(&self, sqe: &Sqe) -> Outcome {
        if sqe.opcode() == DOORBELL_BUFFER_CONFIG {
            return self.doorbell_buffer_config(sqe);
        }
        let cmd = match Command::parse(sqe, QueueType::Admin) {
            Ok(Command::Admin(c)) => c,
            Ok(_) => return Outcome::err(generic(GenericStatus::InvalidOpcode)),
            Err(e) => return Outcome::err(e.status()),
        };
        match cmd {
            AdminCommand::Identify { cns, nsid, .. } => self.identify(sqe, cns, nsid),
            AdminCommand::SetFeatures { fid, cdw11, .. } => self.set_features(fid, cdw11),
            AdminCommand::GetFeatures { fid, .. } => self.get_features(fid),
            AdminCommand::CreateIoCq { qid, qsize, contiguous, .. } => self.create_cq(sqe, qid, qsize, contiguous),
            AdminCommand::CreateIoSq { qid, qsize, cqid, contiguous, .. } => {
                self.create_sq(sqe, qid, qsize, cqid, contiguous)
            }
            AdminCommand::DeleteIoSq { qid } => self.delete_sq(qid),
            AdminCommand::DeleteIoCq { qid } => self.delete_cq(qid),
            AdminCommand::GetLogPage { lid, numd, offset, rae, .. } => {
                let out = self.get_log_page(sqe, lid, numd, offset);
                if out.status.is_success() {
                    self.log_page_read(lid, rae);
                }
                out
            }
            AdminCommand::Abort { sqid, cid } => self.abort(sqid, cid),
            AdminCommand::KeepAlive => Outcome::ok(0),
            // Completed when an event is raised.
            AdminCommand::AsyncEventRequest => self.async_event_request(sqe.cid()),
        }
    }

    /// Copy `data` to the command's PRP-described buffer of `len` bytes.
    fn to_host(&self, sqe: &Sqe, data: &[u8], len: usize) -> Result<(), Status> {
        let mut segs = Vec::new();
        self.prp_segments(sqe, len, &mut segs)?;
        let mut pos = 0usize;
        let xfer = generic(GenericStatus::DataTransferError);
        for (iova, n) in segs {
            let end = pos + n;
            // Past the end of `data` the transfer is zero-filled.
            let avail = data.get(pos..end.min(data.len())).unwrap_or(&[]);
            self.iommu.write(iova, avail).map_err(|_| xfer)?;
            if avail.len() < n {
                self.iommu.fill(iova + avail.len() as u64, n - avail.len(), 0).map_err(|_| xfer)?;
            }
            pos = end;
        }
        Ok(())
    }

    fn identify_controller(&self) -> IdentifyController {
        let mut id = IdentifyController::zeroed();
        id.vid = 0x1b36.into();
        id.ssvid = 0x1af4.into();
        let _ = id.set_strings(&self.cfg.serial, "xbdev emulated NVMe controller", "EMU1.0");
        id.ieee = [0x38, 0x25, 0x00];
        id.mdts = self.cfg.mdts;
        id.cntlid = 1.into();
        id.ver = 0x0001_0400.into();
        let mut oacs = 0u16;
        if self.cfg.doorbell_buffer {
            oacs |= OACS_DBBUF;
        }
        id.oacs = oacs.into();
        id.acl = 3;
        id.aerl = Self::AERL;
        id.oaes = (AEC_NS_ATTRIBUTE | AEC_ANA_CHANGE).into();
        id.frmw = 0x3; // slot 1 read-only, 1 slot
        id.lpa = 0x2;
        id.elpe = (ERROR_LOG_ENTRIES - 1) as u8;
        id.sqes = 0x66;
        id.cqes = 0x44;
        id.nn = (self.ns.len() as u32).into();
        id.oncs = (oncs::DATASET_MANAGEMENT | oncs::WRITE_ZEROES).into();
        id.vwc = 1;
        id.sgls = self.sgl_caps().map_or(0, |c| c.to_sgls()).into();
        let _ = id.set_subnqn("nqn.2024-01.dev.xbdev:emu");
        id
    }

    fn identify(&self, sqe: &Sqe, cns: Cns, nsid: u32) -> Outcome {
        let ns_of = |nsid: u32| nsid.checked_sub(1).and_then(|i| self.ns.get(usize::try_from(i).ok()?));
        let result = match cns {
            Cns::Controller => self.to_host(sqe, self.identify_controller().as_bytes(), 4096),
            Cns::Namespace => {
                let Some(ns) = ns_of(nsid) else {
                    return Outcome::err(generic(GenericStatus::InvalidNamespaceOrFormat));
                };
                let mut id = IdentifyNamespace::zeroed();
                id.set_simple(ns.info.blocks, ns.info.lba_shift);
                if let Some(f) = id.lbaf.first_mut() {
                    f.ms = ns.info.metadata_size.into();
                }
                id.dlfeat = 0x9; // deallocated blocks read as zeroes; WZ may deallocate
                id.nguid = ns.info.nguid;
                id.eui64 = ns.info.eui64;
                self.to_host(sqe, id.as_bytes(), 4096)
            }
            Cns::ActiveNamespaceList => {
                let ids: Vec<u32> = (1..=self.ns.len() as u32).filter(|&n| n > nsid).collect();
                self.to_host(sqe, &nvme_spec::identify::encode_ns_list(&ids), 4096)
            }
            Cns::NamespaceDescriptorList => {
                let Some(ns) = ns_of(nsid) else {
                    return Outcome::err(generic(GenericStatus::InvalidNamespaceOrFormat));
                };
                let mut buf = Vec::with_capacity(4096);
                NsDescriptor::Eui64(ns.info.eui64).encode(&mut buf);
                NsDescriptor::Nguid(ns.info.nguid).encode(&mut buf);
                if let Some(u) = ns.info.uuid {
                    NsDescriptor::Uuid(u).encode(&mut buf);
                }
                NsDescriptor::Csi(0).encode(&mut buf);
                self.to_host(sqe, &buf, 4096)
            }
            _ => return Outcome::err(generic(GenericStatus::InvalidField)),
        };
        match result {
            Ok(()) => Outcome::ok(0),
            Err(s) => Outcome::err(s),
        }
    }

    fn set_features(&self, fid: FeatureId, cdw11: u32) -> Outcome {
        let mut a = lock(&self.admin);
        if fid == FeatureId::NUMBER_OF_QUEUES {
            let req = NumQueues::from_dword(cdw11);
            if req.nsqr == 0xffff || req.ncqr == 0xffff {
                return Outcome::err(generic(GenericStatus::InvalidField));
            }
            let max = self.cfg.max_io_queues.max(1);
            let granted = *a.granted_queues.get_or_insert((req.nsqr.min(req.ncqr) + 1).min(max));
            let n = NumQueues { nsqr: granted - 1, ncqr: granted - 1 };
            return Outcome::ok(n.to_dword());
        }
        match fid {
            FeatureId::ARBITRATION
            | FeatureId::POWER_MANAGEMENT
            | FeatureId::TEMPERATURE_THRESHOLD
            | FeatureId::ERROR_RECOVERY
            | FeatureId::VOLATILE_WRITE_CACHE
            | FeatureId::INTERRUPT_COALESCING
            | FeatureId::ASYNC_EVENT_CONFIG
            | FeatureId::KEEP_ALIVE_TIMER => {
                a.features.insert(fid.0, cdw11);
                Outcome::ok(0)
            }
            _ => Outcome::err(generic(GenericStatus::InvalidField)),
        }
    }

    fn get_features(&self, fid: FeatureId) -> Outcome {
        let a = lock(&self.admin);
        if fid == FeatureId::NUMBER_OF_QUEUES {
            let n = a.granted_queues.unwrap_or(self.cfg.max_io_queues).max(1);
            return Outcome::ok(NumQueues { nsqr: n - 1, ncqr: n - 1 }.to_dword());
        }
        let default = match fid {
            FeatureId::TEMPERATURE_THRESHOLD => 0x157,
            FeatureId::VOLATILE_WRITE_CACHE => 1,
            FeatureId::ARBITRATION
            | FeatureId::POWER_MANAGEMENT
            | FeatureId::ERROR_RECOVERY
            | FeatureId::INTERRUPT_COALESCING
            | FeatureId::ASYNC_EVENT_CONFIG
            | FeatureId::KEEP_ALIVE_TIMER => 0,
            _ => return Outcome::err(generic(GenericStatus::InvalidField)),
        };
        Outcome::ok(*a.features.get(&fid.0).unwrap_or(&default))
    }

    /// The current value of a feature the host set (None: never set).
    pub(crate) fn feature(&self, fid: FeatureId) -> Option<u32> {
        lock(&self.admin).features.get(&fid.0).copied()
    }

    fn queue_limit(&self) -> u16 {
        lock(&self.admin).granted_queues.unwrap_or(self.cfg.max_io_queues)
    }

    fn check_new_queue(&self, sqe: &Sqe, qid: u16, qsize: u16, contiguous: bool) -> Option<Status> {
        if qid == 0 || qid > self.queue_limit() {
            return Some(cmd_specific(cs::INVALID_QUEUE_IDENTIFIER));
        }
        if qsize == 0 || qsize > self.cap.mqes() {
            return Some(cmd_specific(cs::INVALID_QUEUE_SIZE));
        }
        if !contiguous {
            return Some(generic(GenericStatus::InvalidField));
        }
        match sqe.data_pointer() {
            Some(nvme_spec::DataPointer::Prp { prp1, .. }) if prp1 != 0 && prp1 % self.page_size() as u64 == 0 => None,
            _ => Some(generic(GenericStatus::PrpOffsetInvalid)),
        }
    }

    fn prp1(sqe: &Sqe) -> u64 {
        match sqe.data_pointer() {
            Some(nvme_spec::DataPointer::Prp { prp1, .. }) => prp1,
            _ => 0,
        }
    }

    fn create_cq(&self, sqe: &Sqe, qid: u16, qsize: u16, contiguous: bool) -> Outcome {
        if let Some(s) = self.check_new_queue(sqe, qid, qsize, contiguous) {
            return Outcome::err(s);
        }
        let Some(slot) = self.cqs.get(usize::from(qid)) else {
            return Outcome::err(cmd_specific(cs::INVALID_QUEUE_IDENTIFIER));
        };
        let mut g = lock(slot);
        if g.is_some() {
            return Outcome::err(cmd_specific(cs::INVALID_QUEUE_IDENTIFIER));
        }
        *g = Some(Cq::new(Self::prp1(sqe), qsize + 1, Vec::new()));
        Outcome::ok(0)
    }

    fn create_sq(&self, sqe: &Sqe, qid: u16, qsize: u16, cqid: u16, contiguous: bool) -> Outcome {
        if let Some(s) = self.check_new_queue(sqe, qid, qsize, contiguous) {
            return Outcome::err(s);
        }
        let (Some(sslot), Some(cslot)) = (self.sqs.get(usize::from(qid)), self.cqs.get(usize::from(cqid))) else {
            return Outcome::err(cmd_specific(cs::COMPLETION_QUEUE_INVALID));
        };
        if cqid == 0 {
            return Outcome::err(cmd_specific(cs::COMPLETION_QUEUE_INVALID));
        }
        let mut sg = lock(sslot);
        if sg.is_some() {
            return Outcome::err(cmd_specific(cs::INVALID_QUEUE_IDENTIFIER));
        }
        let mut cg = lock(cslot);
        let Some(cq) = cg.as_mut() else {
            return Outcome::err(cmd_specific(cs::COMPLETION_QUEUE_INVALID));
        };
        cq.sqs.push(qid);
        *sg = Some(Sq::new(Self::prp1(sqe), qsize + 1, cqid));
        Outcome::ok(0)
    }

    fn delete_sq(&self, qid: u16) -> Outcome {
        let Some(slot) = self.sqs.get(usize::from(qid)).filter(|_| qid != 0) else {
            return Outcome::err(cmd_specific(cs::INVALID_QUEUE_IDENTIFIER));
        };
        let Some(sq) = lock(slot).take() else {
            return Outcome::err(cmd_specific(cs::INVALID_QUEUE_IDENTIFIER));
        };
        // Withheld commands of this queue complete as aborted by deletion
        // (their CQ still exists at this point).
        let held: Vec<_> = {
            let mut h = lock(&self.held);
            let (mine, rest) = h.drain(..).partition(|x| x.sqid == qid);
            *h = rest;
            mine
        };
        if let Some(cslot) = self.cqs.get(usize::from(sq.cqid)) {
            if let Some(cq) = lock(cslot).as_mut() {
                for h in held {
                    self.post(cq, h.sqid, h.cid, h.sqhd, 0, generic(GenericStatus::AbortedSqDeletion));
                }
                cq.sqs.retain(|&s| s != qid);
            }
        }
        Outcome::ok(0)
    }

    fn delete_cq(&self, qid: u16) -> Outcome {
        let Some(slot) = self.cqs.get(usize::from(qid)).filter(|_| qid != 0) else {
            return Outcome::err(cmd_specific(cs::INVALID_QUEUE_IDENTIFIER));
        };
        let mut g = lock(slot);
        match g.as_ref() {
            None => Outcome::err(cmd_specific(cs::INVALID_QUEUE_IDENTIFIER)),
            Some(cq) if !cq.sqs.is_empty() => Outcome::err(cmd_specific(cs::INVALID_QUEUE_DELETION)),
            Some(_) => {
                *g = None;
                Outcome::ok(0)
            }
        }
    }

    fn get_log_page(&self, sqe: &Sqe, lid: LogPageId, numd: u32, offset: u64) -> Outcome {
        let len = (numd as usize + 1) * 4;
        let page: Vec<u8> = match lid {
            LogPageId::SMART => {
                let a = lock(&self.admin);
                let mut s = SmartLog::zeroed();
                s.temperature = 310.into();
                s.avail_spare = 100;
                s.critical_warning = lock(&self.aer).critical_warning;
                s.spare_thresh = 10;
                s.host_reads = u128::from(a.host_reads).into();
                s.host_writes = u128::from(a.host_writes).into();
                s.power_cycles = 1u128.into();
                s.num_err_log_entries = u128::from(a.error_count).into();
                s.as_bytes().to_vec()
            }
            LogPageId::ERROR => {
                let a = lock(&self.admin);
                let mut v = Vec::with_capacity(64 * ERROR_LOG_ENTRIES);
                for e in &a.errors {
                    v.extend_from_slice(e.as_bytes());
                }
                v.resize(64 * ERROR_LOG_ENTRIES, 0);
                v
            }
            LogPageId::CHANGED_NAMESPACES => self.changed_ns_log(),
            LogPageId::ANA => self.ana_log(),
            LogPageId::FIRMWARE_SLOT => {
                let mut f = FirmwareSlotLog::new_zeroed();
                f.afi = 1;
                if let Some(s) = f.frs.first_mut() {
                    *s = *b"EMU1.0  ";
                }
                f.as_bytes().to_vec()
            }
            _ => return Outcome::err(cmd_specific(cs::INVALID_LOG_PAGE)),
        };
        let Some(tail) = usize::try_from(offset).ok().and_then(|o| page.get(o..)) else {
            return Outcome::err(generic(GenericStatus::InvalidField));
        };
        match self.to_host(sqe, tail, len) {
            Ok(()) => Outcome::ok(0),
            Err(s) => Outcome::err(s),
        }
    }

    fn abort(&self, sqid: u16, cid: u16) -> Outcome {
        // DW0 bit 0: 1 = command not aborted.
        if self.abort_ineffective() {
            return Outcome::ok(1);
        }
        let found = {
            let mut h = lock(&self.held);
            h.iter().position(|x| x.sqid == sqid && x.cid == cid).map(|i| h.remove(i))
        };
        match found {
            Some(h) => {
                self.post_held(&h, generic(GenericStatus::AbortRequested));
                Outcome::ok(0)
            }
            None => Outcome::ok(1),
        }
    }

    fn doorbell_buffer_config(&self, sqe: &Sqe) -> Outcome {
        if !self.cfg.doorbell_buffer {
            return Outcome::err(generic(GenericStatus::InvalidOpcode));
        }
        let Some(nvme_spec::DataPointer::Prp { prp1, prp2 }) = sqe.data_pointer() else {
            return Outcome::err(generic(GenericStatus::InvalidField));
        };
        let page = self.page_size() as u64;
        if prp1 == 0 || prp2 == 0 || prp1 % page != 0 || prp2 % page != 0 {
            return Outcome::err(generic(GenericStatus::InvalidField));
        }
        self.dbbuf_shadow.store(prp1, Ordering::Release);
        self.dbbuf_eventidx.store(prp2, Ordering::Release);
        Outcome::ok(0)
    }
}
