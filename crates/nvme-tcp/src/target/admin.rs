//! Admin and Fabrics commands of the target's controllers.

use super::conn::{seq_error, ConnRole, TgtConn};
use super::io::IoState;
use super::{Ctrl, CtrlRegs, Shared, Subsys};
use crate::ctrl::CmdData;
use nvme_spec::command::{AdminCommand, Cns, Command, FabricsCommand, FeatureId, FeatureSelect, LogPageId, NumQueues};
use nvme_spec::fabrics::{ConnectData, ConnectResponse, PropertySize};
use nvme_spec::identify::{encode_ns_list, oncs, IdentifyController, IdentifyNamespace, NsDescriptor};
use nvme_spec::log::{
    adrfam, subtype, AnaGroup, AnaLog, AnaState, DiscoveryLog, DiscoveryLogEntry, FirmwareSlotLog, SmartLog,
};
use nvme_spec::regs::{offset, shst, Cap, Cc, Csts, Vs};
use nvme_spec::status::{command_specific, GenericStatus, Status, StatusCode};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use zerocopy::IntoBytes;

fn generic(g: GenericStatus) -> Status {
    Status::new(StatusCode::Generic(g), true)
}

fn specific(sc: u8) -> Status {
    Status::new(StatusCode::CommandSpecific(sc), true)
}

fn invalid_param(conn: &mut TgtConn, slot: u16, in_data: bool, off: u16) {
    let dw0 = ConnectResponse::InvalidParameter { in_data, offset: off }.to_dword();
    conn.complete(slot, specific(command_specific::FABRICS_CONNECT_INVALID_PARAMETERS), dw0, 0);
}

/// Connect command attribute: the host disables SQ flow control (SQ head
/// pointer reporting), which lets successful reads end with a C2HData PDU
/// carrying the SUCCESS flag instead of a response capsule.
pub(crate) const CATTR_DISABLE_SQ_FLOW: u8 = 1 << 2;

/// The command fields of a Fabrics Connect.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectArgs {
    pub(crate) qid: u16,
    pub(crate) sqsize: u16,
    pub(crate) kato: u32,
    pub(crate) cattr: u8,
}

/// Fabrics Connect on a new connection.
pub(crate) fn connect(conn: &mut TgtConn, shared: &Shared, slot: u16, args: ConnectArgs, data: CmdData) {
    let ConnectArgs { qid, sqsize, kato, cattr } = args;
    let len = match data {
        CmdData::InCapsule(n) => n,
        _ => 0,
    };
    let Some(cd) = conn.bufs.data(slot).filter(|_| len >= 1024).and_then(|b| ConnectData::parse(b).ok()) else {
        conn.complete(slot, generic(GenericStatus::InvalidField), 0, 0);
        return;
    };
    let (Ok(subnqn), Ok(hostnqn)) = (cd.subnqn(), cd.hostnqn()) else {
        invalid_param(conn, slot, true, 256);
        return;
    };
    let Some(sub) = shared.subsystem(subnqn).filter(|s| s.on_listener(conn.listener)).cloned() else {
        invalid_param(conn, slot, true, 256);
        return;
    };
    if !sub.host_allowed(hostnqn) {
        conn.complete(slot, specific(command_specific::FABRICS_CONNECT_INVALID_HOST), 0, 0);
        return;
    }
    let depth = shared.cfg.queue_depth;
    if sqsize == 0 || sqsize >= depth {
        invalid_param(conn, slot, false, 44);
        return;
    }
    let hostnqn = hostnqn.to_string();
    if qid == 0 {
        if cd.cntlid.get() != 0xffff {
            invalid_param(conn, slot, true, 16);
            return;
        }
        let Some(cntlid) = sub.alloc_cntlid() else {
            conn.complete(slot, specific(command_specific::FABRICS_CONTROLLER_BUSY), 0, 0);
            return;
        };
        let ctrl = Arc::new(Ctrl {
            cntlid,
            subsys: sub.clone(),
            hostnqn,
            hostid: cd.hostid,
            regs: Mutex::new(CtrlRegs {
                cc: 0,
                csts: 0,
                kato_ms: if sub.discovery { 0 } else { kato },
                io_queues: shared.cfg.max_io_queues,
                last_contact: Instant::now(),
                aen_config: 0,
                wce: true,
                io_qids: Vec::new(),
                aborts: Vec::new(),
                abort_answers: Vec::new(),
            }),
            dead: AtomicBool::new(false),
            abort_asked: AtomicBool::new(false),
            abort_answered: AtomicBool::new(false),
        });
        sub.ctrls().insert(cntlid, ctrl.clone());
        log::info!("nvmf target: controller {cntlid} of {} for {}", sub.nqn, ctrl.hostnqn);
        conn.role = ConnRole::Admin(ctrl);
        conn.q.set_incapsule_max(crate::host::FABRICS_INCAPSULE);
        conn.complete(slot, Status::SUCCESS, ConnectResponse::Success { cntlid, authreq: 0 }.to_dword(), 0);
        return;
    }
    if sub.discovery {
        conn.complete(slot, specific(command_specific::FABRICS_INVALID_QUEUE_TYPE), 0, 0);
        return;
    }
    let Some(ctrl) = sub.ctrls().get(&cd.cntlid.get()).cloned() else {
        invalid_param(conn, slot, true, 16);
        return;
    };
    if ctrl.hostnqn != hostnqn || ctrl.hostid != cd.hostid {
        invalid_param(conn, slot, true, 512);
        return;
    }
    {
        let mut r = ctrl.regs();
        if Cc(r.cc).en() == 0 || qid > r.io_queues || r.io_qids.contains(&qid) {
            drop(r);
            if qid > ctrl.regs().io_queues {
                invalid_param(conn, slot, false, 42);
            } else {
                conn.complete(slot, seq_error(), 0, 0);
            }
            return;
        }
        r.io_qids.push(qid);
    }
    match IoState::new(&sub, usize::from(depth)) {
        Ok(st) => conn.io = Some(Box::new(st)),
        Err(e) => {
            log::warn!("nvmf target: opening bdev channels: {e}");
            ctrl.regs().io_qids.retain(|q| *q != qid);
            conn.complete(slot, Status::new(StatusCode::Generic(GenericStatus::InternalError), false), 0, 0);
            return;
        }
    }
    if let Err(e) = conn.bufs.use_arena(shared.cfg.max_transfer as usize) {
        log::warn!("nvmf target: no buffer arena for I/O queue {qid}, allocating per command: {e}");
    }
    conn.q.set_incapsule_max(shared.cfg.incapsule);
    conn.q.set_success_flag(cattr & CATTR_DISABLE_SQ_FLOW != 0);
    let cntlid = ctrl.cntlid;
    conn.role = ConnRole::Io { ctrl, qid };
    conn.complete(slot, Status::SUCCESS, ConnectResponse::Success { cntlid, authreq: 0 }.to_dword(), 0);
}

fn cap(shared: &Shared) -> Cap {
    // MQES, CQR, TO = 5 s, NVM command set, 4 KiB pages.
    Cap(0).with_mqes(shared.cfg.queue_depth - 1).with_cqr(1).with_to(10).with_css(1)
}

/// Copies `bytes` into the slot buffer and completes with the host's
/// transfer length (truncating or zero-padding).
fn reply_data(conn: &mut TgtConn, slot: u16, bytes: &[u8], want: u32) {
    let Some(dst) = conn.bufs.ensure(slot, want).and_then(|()| conn.bufs.data_mut(slot)) else {
        conn.complete(slot, Status::new(StatusCode::Generic(GenericStatus::InternalError), false), 0, 0);
        return;
    };
    let n = (want as usize).min(bytes.len()).min(dst.len());
    dst[..n].copy_from_slice(&bytes[..n]);
    if let Some(rest) = dst.get_mut(n..want as usize) {
        rest.fill(0);
    }
    conn.complete(slot, Status::SUCCESS, 0, want);
}

fn want_len(data: CmdData) -> u32 {
    match data {
        CmdData::FromController(n) => n,
        _ => 0,
    }
}

/// An admin or Fabrics command on an admin queue.
pub(crate) fn execute(conn: &mut TgtConn, shared: &Shared, slot: u16, cmd: Command, data: CmdData) {
    let Some(ctrl) = conn.ctrl().cloned() else {
        conn.complete(slot, seq_error(), 0, 0);
        return;
    };
    ctrl.touch();
    let sub = ctrl.subsys.clone();
    match cmd {
        Command::Fabrics(FabricsCommand::PropertyGet { size, offset: off }) => {
            let r = ctrl.regs();
            let v: u64 = match off {
                offset::CAP => cap(shared).0,
                offset::VS => u64::from(Vs::new(1, if sub.discovery { 3 } else { 4 }, 0).0),
                offset::CC => u64::from(r.cc),
                offset::CSTS => u64::from(r.csts),
                _ => {
                    drop(r);
                    conn.complete(slot, generic(GenericStatus::InvalidField), 0, 0);
                    return;
                }
            };
            drop(r);
            let dw1 = if size == PropertySize::Eight { (v >> 32) as u32 } else { 0 };
            conn.complete_full(slot, Status::SUCCESS, v as u32, dw1, 0);
        }
        Command::Fabrics(FabricsCommand::PropertySet { offset: off, value, .. }) => {
            if off != offset::CC {
                conn.complete(slot, generic(GenericStatus::InvalidField), 0, 0);
                return;
            }
            let mut r = ctrl.regs();
            let old = Cc(r.cc);
            let new = Cc(value as u32);
            let mut csts = Csts(r.csts);
            if new.en() == 1 && old.en() == 0 {
                csts = csts.with_rdy(1);
            } else if new.en() == 0 && old.en() == 1 {
                csts = Csts(0);
            }
            if new.shn() != 0 {
                csts = csts.with_shst(shst::COMPLETE);
            }
            r.cc = new.0;
            r.csts = csts.0;
            drop(r);
            conn.complete(slot, Status::SUCCESS, 0, 0);
        }
        Command::Fabrics(_) => conn.complete(slot, generic(GenericStatus::InvalidOpcode), 0, 0),
        Command::Io(_) => conn.complete(slot, generic(GenericStatus::InvalidOpcode), 0, 0),
        Command::Admin(a) => admin(conn, shared, slot, &ctrl, &sub, a, data),
    }
}

fn admin(
    conn: &mut TgtConn,
    shared: &Shared,
    slot: u16,
    ctrl: &Arc<Ctrl>,
    sub: &Arc<Subsys>,
    cmd: AdminCommand,
    data: CmdData,
) {
    let want = want_len(data);
    match cmd {
        AdminCommand::Identify { cns, nsid, .. } => {
            let nn = sub.namespaces.len() as u32;
            let ns_of = |nsid: u32| sub.namespaces.get((nsid as usize).checked_sub(1)?);
            let page: Vec<u8> = match cns {
                Cns::Controller => identify_controller(shared, ctrl, sub).as_bytes().to_vec(),
                Cns::Namespace => match ns_of(nsid) {
                    Some(b) => identify_namespace(b.as_ref(), !sub.discovery).as_bytes().to_vec(),
                    None if nsid != 0 && nsid <= nn => vec![0; 4096],
                    None => {
                        conn.complete(slot, generic(GenericStatus::InvalidNamespaceOrFormat), 0, 0);
                        return;
                    }
                },
                Cns::ActiveNamespaceList => {
                    if nsid >= 0xffff_fffe {
                        conn.complete(slot, generic(GenericStatus::InvalidNamespaceOrFormat), 0, 0);
                        return;
                    }
                    let ids: Vec<u32> = (1..=nn).filter(|&n| n > nsid).collect();
                    encode_ns_list(&ids).to_vec()
                }
                Cns::NamespaceDescriptorList => match ns_of(nsid) {
                    Some(b) => {
                        let mut v = Vec::with_capacity(4096);
                        for d in ns_descriptors(b.as_ref()) {
                            d.encode(&mut v);
                        }
                        v.resize(4096, 0);
                        v
                    }
                    None => {
                        conn.complete(slot, generic(GenericStatus::InvalidNamespaceOrFormat), 0, 0);
                        return;
                    }
                },
                _ => {
                    conn.complete(slot, generic(GenericStatus::InvalidField), 0, 0);
                    return;
                }
            };
            reply_data(conn, slot, &page, want);
        }
        AdminCommand::GetLogPage { lid, offset: off, rae, .. } => {
            let page: Vec<u8> = match lid {
                LogPageId::ERROR => vec![0; 64],
                LogPageId::SMART => {
                    let mut s = SmartLog::zeroed();
                    s.temperature = 300.into();
                    s.avail_spare = 100;
                    s.spare_thresh = 10;
                    s.as_bytes().to_vec()
                }
                LogPageId::FIRMWARE_SLOT => {
                    let mut f: FirmwareSlotLog = zerocopy::FromZeros::new_zeroed();
                    f.afi = 1;
                    f.frs[0] = *b"xbdev   ";
                    f.as_bytes().to_vec()
                }
                LogPageId::DISCOVERY if sub.discovery => discovery_log(shared, conn, &ctrl.hostnqn),
                LogPageId::ANA if !sub.discovery => {
                    // Loaded before the page is built: the page reports
                    // at least the changes up to this count.
                    let chgcnt = shared.ana_chgcnt.load(Ordering::Acquire);
                    let enabled = ctrl.regs().aen_config & AEC_ANA_CHANGE != 0;
                    conn.ana.log_read(chgcnt, enabled, rae);
                    ana_log(shared, conn.listener, sub)
                }
                _ => {
                    conn.complete(slot, specific(command_specific::INVALID_LOG_PAGE), 0, 0);
                    return;
                }
            };
            let start = usize::try_from(off).unwrap_or(usize::MAX);
            if start > page.len() {
                conn.complete(slot, generic(GenericStatus::InvalidField), 0, 0);
                return;
            }
            reply_data(conn, slot, &page[start..], want);
        }
        AdminCommand::SetFeatures { fid, cdw11, .. } => {
            let mut r = ctrl.regs();
            let dw0 = match fid {
                FeatureId::NUMBER_OF_QUEUES => {
                    let nq = NumQueues::from_dword(cdw11);
                    if nq.nsqr == 0xffff || nq.ncqr == 0xffff {
                        drop(r);
                        conn.complete(slot, generic(GenericStatus::InvalidField), 0, 0);
                        return;
                    }
                    let n = nq.nsqr.min(nq.ncqr).saturating_add(1).min(shared.cfg.max_io_queues);
                    r.io_queues = n;
                    NumQueues { nsqr: n - 1, ncqr: n - 1 }.to_dword()
                }
                FeatureId::KEEP_ALIVE_TIMER => {
                    r.kato_ms = cdw11;
                    0
                }
                FeatureId::ASYNC_EVENT_CONFIG => {
                    r.aen_config = cdw11;
                    0
                }
                FeatureId::VOLATILE_WRITE_CACHE => {
                    r.wce = cdw11 & 1 != 0;
                    0
                }
                FeatureId::ARBITRATION
                | FeatureId::POWER_MANAGEMENT
                | FeatureId::TEMPERATURE_THRESHOLD
                | FeatureId::ERROR_RECOVERY
                | FeatureId::INTERRUPT_COALESCING
                | FeatureId::HOST_IDENTIFIER => 0,
                _ => {
                    drop(r);
                    conn.complete(slot, generic(GenericStatus::InvalidField), 0, 0);
                    return;
                }
            };
            drop(r);
            conn.complete(slot, Status::SUCCESS, dw0, 0);
        }
        AdminCommand::GetFeatures { fid, sel, .. } => {
            let r = ctrl.regs();
            let dw0 = match fid {
                _ if sel == FeatureSelect::SupportedCapabilities => 0,
                FeatureId::NUMBER_OF_QUEUES => {
                    let n = r.io_queues.max(1) - 1;
                    NumQueues { nsqr: n, ncqr: n }.to_dword()
                }
                FeatureId::KEEP_ALIVE_TIMER => r.kato_ms,
                FeatureId::ASYNC_EVENT_CONFIG => r.aen_config,
                FeatureId::VOLATILE_WRITE_CACHE => u32::from(r.wce),
                FeatureId::ARBITRATION
                | FeatureId::POWER_MANAGEMENT
                | FeatureId::TEMPERATURE_THRESHOLD
                | FeatureId::ERROR_RECOVERY
                | FeatureId::INTERRUPT_COALESCING => 0,
                _ => {
                    drop(r);
                    conn.complete(slot, generic(GenericStatus::InvalidField), 0, 0);
                    return;
                }
            };
            drop(r);
            conn.complete(slot, Status::SUCCESS, dw0, 0);
        }
        AdminCommand::KeepAlive => conn.complete(slot, Status::SUCCESS, 0, 0),
        AdminCommand::AsyncEventRequest => {
            // Held until an event (ANA change notice) or the controller goes away.
            if conn.aers.len() >= 4 {
                conn.complete(slot, specific(command_specific::AER_LIMIT_EXCEEDED), 0, 0);
            } else {
                conn.aers.push(slot);
            }
        }
        AdminCommand::Abort { sqid, cid } => super::abort::request(conn, ctrl, slot, sqid, cid),
        _ => conn.complete(slot, generic(GenericStatus::InvalidOpcode), 0, 0),
    }
}

fn identify_controller(shared: &Shared, ctrl: &Ctrl, sub: &Subsys) -> IdentifyController {
    let mut c = IdentifyController::zeroed();
    let _ = c.set_strings(&sub.serial, &sub.model, env!("CARGO_PKG_VERSION"));
    let _ = c.set_subnqn(&sub.nqn);
    c.cmic = 0x02; // more than one controller may connect
    if !sub.discovery {
        // ANA reporting: one group, its state per listener (port group).
        c.cmic |= 0x08;
        c.anatt = 10;
        // Optimized, non-optimized, inaccessible, persistent loss and
        // change states reported; group IDs do not change while attached.
        c.anacap = 0x1f | 0x40;
        c.anagrpmax = super::ANA_GROUP.into();
        c.nanagrpid = super::ANA_GROUP.into();
        // Asynchronous events: ANA change notices (OAES bit 11).
        c.oaes = (1u32 << 11).into();
    }
    c.mdts = (shared.cfg.max_transfer / 4096).trailing_zeros() as u8;
    c.cntlid = ctrl.cntlid.into();
    c.ver = Vs::new(1, if sub.discovery { 3 } else { 4 }, 0).0.into();
    c.cntrltype = if sub.discovery { 2 } else { 1 };
    c.acl = 3;
    c.aerl = 3;
    c.frmw = 0x03;
    c.lpa = 0x04;
    c.kas = 10.into();
    c.sqes = 0x66;
    c.cqes = 0x44;
    c.maxcmd = shared.cfg.queue_depth.into();
    c.nn = (sub.namespaces.len() as u32).into();
    if c.cmic & 0x08 != 0 {
        // A host using ANA requires 0 < MNAN <= NN (Linux refuses the
        // controller otherwise).
        c.mnan = c.nn;
    }
    let all =
        |t: bdev::IoType| !sub.namespaces.is_empty() && sub.namespaces.iter().all(|b| b.info().supported.contains(t));
    let mut o = 0u16;
    if all(bdev::IoType::Unmap) {
        o |= oncs::DATASET_MANAGEMENT;
    }
    if all(bdev::IoType::WriteZeroes) {
        o |= oncs::WRITE_ZEROES;
    }
    c.oncs = o.into();
    c.vwc = u8::from(sub.namespaces.iter().any(|b| b.info().volatile_cache));
    // SGLs supported, offsets in data block descriptors (in-capsule data).
    c.sgls = (1u32 | (1 << 20)).into();
    c.ioccsz = ((64 + shared.cfg.incapsule) / 16).into();
    c.iorcsz = 1.into();
    c.msdbd = 1;
    c
}

fn identify_namespace(b: &dyn bdev::Bdev, ana: bool) -> IdentifyNamespace {
    let info = b.info();
    let mut n = IdentifyNamespace::zeroed();
    if ana {
        n.anagrpid = super::ANA_GROUP.into();
    }
    n.set_simple(info.num_blocks, info.block_size.trailing_zeros() as u8);
    n.nmic = 1;
    if info.unmap_zeroes {
        n.dlfeat = 0x01 | 0x08;
    }
    let (nguid, eui64) = ns_ids(b);
    n.nguid = nguid;
    n.eui64 = eui64.unwrap_or([0; 8]);
    n
}

/// NGUID (the bdev's, or its UUID) and EUI-64 of a namespace.
fn ns_ids(b: &dyn bdev::Bdev) -> ([u8; 16], Option<[u8; 8]>) {
    let info = b.info();
    (info.ns_id.nguid.unwrap_or(info.uuid.0), info.ns_id.eui64)
}

fn ns_descriptors(b: &dyn bdev::Bdev) -> Vec<NsDescriptor> {
    let info = b.info();
    let (nguid, eui64) = ns_ids(b);
    let mut v = Vec::new();
    if let Some(e) = eui64 {
        v.push(NsDescriptor::Eui64(e));
    }
    v.push(NsDescriptor::Nguid(nguid));
    v.push(NsDescriptor::Uuid(info.ns_id.uuid.unwrap_or(info.uuid).0));
    v.push(NsDescriptor::Csi(0));
    v
}

/// The ANA log page a controller behind listener `listener` reports: one
/// group holding every namespace of the subsystem.
fn ana_log(shared: &Shared, listener: usize, sub: &Subsys) -> Vec<u8> {
    let chgcnt = shared.ana_chgcnt.load(Ordering::Acquire);
    AnaLog {
        chgcnt,
        groups: vec![AnaGroup {
            grpid: super::ANA_GROUP,
            chgcnt,
            state: AnaState::from_raw(shared.ana_state(listener)),
            nsids: (1..=sub.namespaces.len() as u32).collect(),
        }],
    }
    .encode()
}

/// Asynchronous event: a notice (type 2) of an ANA change (info 3), read
/// log page 0x0C.
pub(crate) const AEN_ANA_CHANGE: u32 = 2 | (3 << 8) | (0x0c << 16);

/// Asynchronous event configuration bit enabling ANA change notices.
pub(crate) const AEC_ANA_CHANGE: u32 = 1 << 11;

fn discovery_log(shared: &Shared, conn: &TgtConn, hostnqn: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    for (i, addr) in shared.addrs.iter().enumerate() {
        // A wildcard listener advertises the address this host reached.
        let ip: IpAddr = if addr.ip().is_unspecified() { conn.local.ip() } else { addr.ip() };
        let fam = if ip.is_ipv4() { adrfam::IPV4 } else { adrfam::IPV6 };
        let port = addr.port().to_string();
        for s in &shared.subsystems {
            if !s.on_listener(i) || (!s.discovery && !s.host_allowed(hostnqn)) {
                continue;
            }
            let st = if s.discovery { subtype::CURRENT_DISCOVERY } else { subtype::NVME };
            if let Some(e) = DiscoveryLogEntry::tcp(st, fam, &ip.to_string(), &port, &s.nqn, i as u16) {
                entries.push(e);
            }
        }
    }
    DiscoveryLog { genctr: shared.genctr, numrec: entries.len() as u64, entries }.encode()
}
