//! Controller bring-up and the admin queue.

use super::conn::{Connection, SyncData};
use super::{ConnectOpts, InitError};
use crate::host::HostConfig;
use nvme_spec::command::{AdminCommand, Cns, Command, FeatureId, LogPageId, NumQueues};
use nvme_spec::fabrics::{ConnectData, ConnectResponse, FabricsCommand, PropertySize, DISCOVERY_NQN};
use nvme_spec::identify::{parse_ns_list, IdentifyController, IdentifyNamespace, NsDescriptor};
use nvme_spec::log::{DiscoveryLog, DiscoveryLogEntry};
use nvme_spec::regs::{offset, shst, Cap, Cc, Csts, Vs};
use nvme_spec::Cqe;
use std::time::{Duration, Instant};

/// An identified namespace.
#[derive(Clone, Debug)]
pub struct NamespaceData {
    /// Namespace ID.
    pub nsid: u32,
    /// Identify Namespace data.
    pub id: IdentifyNamespace,
    /// Namespace identification descriptors (empty if unsupported).
    pub descriptors: Vec<NsDescriptor>,
}

/// A connected, enabled controller's admin queue.
#[derive(Debug)]
pub struct AdminQueue {
    conn: Connection,
    /// Controller ID.
    pub cntlid: u16,
    /// CAP register.
    pub cap: Cap,
    /// VS register.
    pub vs: Vs,
    timeout: Duration,
}

/// The tag of the outstanding Asynchronous Event Request.
const AER_TAG: u64 = 0x4145_5200;

fn check(what: &'static str, cqe: Cqe) -> Result<Cqe, InitError> {
    let status = cqe.status();
    if status.is_success() {
        Ok(cqe)
    } else {
        Err(InitError::Status { what, status })
    }
}

fn connect_data(opts: &ConnectOpts, subnqn: &str, cntlid: u16) -> Result<ConnectData, InitError> {
    ConnectData::new(opts.host.id, cntlid, subnqn, &opts.host.nqn).map_err(|e| InitError::Controller(e.to_string()))
}

/// Connect attribute: SQ flow control disabled (the host never fills the
/// queue beyond its depth, so it needs no SQ head reports); lets the
/// controller complete successful reads with the last C2HData PDU.
const CATTR_DISABLE_SQ_FLOW: u8 = 1 << 2;

/// Sends Fabrics Connect on `conn` and returns the controller ID.
fn fabrics_connect(
    conn: &mut Connection,
    opts: &ConnectOpts,
    subnqn: &str,
    qid: u16,
    sqsize: u16,
    kato: u32,
    cntlid: u16,
) -> Result<u16, InitError> {
    let data = connect_data(opts, subnqn, cntlid)?;
    let cattr = if qid == 0 { 0 } else { CATTR_DISABLE_SQ_FLOW };
    let cmd = FabricsCommand::Connect { recfmt: 0, qid, sqsize, cattr, kato };
    let cqe = conn.exec(
        Command::Fabrics(cmd).to_sqe(0),
        SyncData::To(zerocopy::IntoBytes::as_bytes(&data)),
        opts.admin_timeout,
    )?;
    match ConnectResponse::from_cqe(&cqe) {
        Some(ConnectResponse::Success { cntlid, .. }) => Ok(cntlid),
        Some(ConnectResponse::InvalidParameter { in_data, offset }) => Err(InitError::Controller(format!(
            "connect rejected: invalid parameter at {} offset {offset}",
            if in_data { "data" } else { "command" }
        ))),
        None => Err(InitError::Status { what: "connect", status: cqe.status() }),
    }
}

impl AdminQueue {
    /// Connects the admin queue to `subnqn` at `opts.addr`, then enables the
    /// controller (CC.EN, CSTS.RDY within CAP.TO).
    pub fn connect(opts: &ConnectOpts, subnqn: &str) -> Result<Self, InitError> {
        let cfg = HostConfig {
            depth: 32,
            hdgst: opts.hdgst,
            ddgst: opts.ddgst,
            incapsule_max: 8192,
            stage_len: 16 << 10,
            ..HostConfig::default()
        };
        let mut conn = Connection::open(opts.addr, cfg, opts.admin_timeout, opts.tcp_congestion.as_deref())?;
        let kato = if subnqn == DISCOVERY_NQN { 0 } else { opts.kato_ms };
        let cntlid = fabrics_connect(&mut conn, opts, subnqn, 0, 31, kato, 0xffff)?;
        let mut a = Self { conn, cntlid, cap: Cap(0), vs: Vs(0), timeout: opts.admin_timeout };
        a.cap = Cap(a.property_get(offset::CAP, PropertySize::Eight)?);
        a.vs = Vs(a.property_get(offset::VS, PropertySize::Four)? as u32);
        a.enable()?;
        Ok(a)
    }

    fn enable(&mut self) -> Result<(), InitError> {
        let cc = Cc(self.property_get(offset::CC, PropertySize::Four)? as u32);
        if cc.en() == 1 {
            return Ok(());
        }
        self.property_set(offset::CC, PropertySize::Four, u64::from(Cc::enable_default().0))?;
        let limit = Duration::from_millis(self.cap.timeout_ms().max(500));
        let t0 = Instant::now();
        loop {
            let csts = Csts(self.property_get(offset::CSTS, PropertySize::Four)? as u32);
            if csts.cfs() == 1 {
                return Err(InitError::Controller("controller fatal status while enabling".into()));
            }
            if csts.rdy() == 1 {
                return Ok(());
            }
            if t0.elapsed() > limit {
                return Err(InitError::Timeout("CSTS.RDY"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs an admin command.
    pub fn exec(&mut self, what: &'static str, cmd: Command, data: SyncData<'_>) -> Result<Cqe, InitError> {
        let cqe = self.conn.exec(cmd.to_sqe(0), data, self.timeout)?;
        check(what, cqe)
    }

    /// Property Get.
    pub fn property_get(&mut self, offset: u32, size: PropertySize) -> Result<u64, InitError> {
        let c =
            self.exec("property get", Command::Fabrics(FabricsCommand::PropertyGet { size, offset }), SyncData::None)?;
        Ok(match size {
            PropertySize::Four => u64::from(c.dw0.get()),
            PropertySize::Eight => c.result64(),
        })
    }

    /// Property Set.
    pub fn property_set(&mut self, offset: u32, size: PropertySize, value: u64) -> Result<(), InitError> {
        self.exec("property set", Command::Fabrics(FabricsCommand::PropertySet { size, offset, value }), SyncData::None)
            .map(|_| ())
    }

    /// Identify Controller.
    pub fn identify_controller(&mut self) -> Result<IdentifyController, InitError> {
        let mut buf = [0u8; 4096];
        self.exec(
            "identify controller",
            Command::Admin(AdminCommand::identify(Cns::Controller, 0)),
            SyncData::From(&mut buf),
        )?;
        IdentifyController::parse(&buf).map_err(|e| InitError::Controller(e.to_string()))
    }

    /// Active namespace IDs.
    pub fn active_namespaces(&mut self) -> Result<Vec<u32>, InitError> {
        let mut out = Vec::new();
        let mut from = 0u32;
        loop {
            let mut buf = [0u8; 4096];
            self.exec(
                "identify active namespace list",
                Command::Admin(AdminCommand::identify(Cns::ActiveNamespaceList, from)),
                SyncData::From(&mut buf),
            )?;
            let list = parse_ns_list(&buf);
            let full = list.len() == 1024;
            match list.last() {
                Some(&last) if full && last < 0xffff_fffe => from = last,
                _ => {
                    out.extend(list);
                    return Ok(out);
                }
            }
            out.extend(list);
        }
    }

    /// Identify Namespace plus its identification descriptors.
    pub fn identify_namespace(&mut self, nsid: u32) -> Result<NamespaceData, InitError> {
        let mut buf = [0u8; 4096];
        self.exec(
            "identify namespace",
            Command::Admin(AdminCommand::identify(Cns::Namespace, nsid)),
            SyncData::From(&mut buf),
        )?;
        let id = IdentifyNamespace::parse(&buf).map_err(|e| InitError::Controller(e.to_string()))?;
        let mut dbuf = [0u8; 4096];
        let descriptors = match self.exec(
            "identify namespace descriptors",
            Command::Admin(AdminCommand::identify(Cns::NamespaceDescriptorList, nsid)),
            SyncData::From(&mut dbuf),
        ) {
            Ok(_) => NsDescriptor::parse_list(&dbuf).map_err(|e| InitError::Controller(e.to_string()))?,
            Err(InitError::Status { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(NamespaceData { nsid, id, descriptors })
    }

    /// Set Features Number of Queues; returns the number of I/O queue pairs
    /// granted.
    pub fn set_num_queues(&mut self, want: u16) -> Result<u16, InitError> {
        let n = want.max(1) - 1;
        let c = self.exec(
            "set features number of queues",
            Command::Admin(AdminCommand::set_num_queues(NumQueues { nsqr: n, ncqr: n })),
            SyncData::None,
        )?;
        let got = NumQueues::from_dword(c.dw0.get());
        Ok(got.nsqr.min(got.ncqr).saturating_add(1).min(want.max(1)))
    }

    /// Enables the asynchronous events in `aen_config` (Set Features
    /// Asynchronous Event Configuration) and keeps an Asynchronous Event
    /// Request outstanding; events are collected with
    /// [`AdminQueue::take_async_events`].
    pub fn enable_async_events(&mut self, aen_config: u32) -> Result<(), InitError> {
        let set = AdminCommand::SetFeatures {
            nsid: 0,
            fid: FeatureId::ASYNC_EVENT_CONFIG,
            save: false,
            cdw11: aen_config,
            cdw12_15: [0; 4],
        };
        self.exec("set features async event configuration", Command::Admin(set), SyncData::None)?;
        self.conn.submit_async(Command::Admin(AdminCommand::AsyncEventRequest).to_sqe(0), AER_TAG)?;
        Ok(())
    }

    /// Polls without blocking and returns completion dword 0 of each
    /// asynchronous event that arrived (type in bits 2:0, information in
    /// 15:8, log page in 23:16), re-arming the request after each.
    pub fn take_async_events(&mut self) -> Result<Vec<u32>, InitError> {
        let mut events = Vec::new();
        for (tag, cqe) in self.conn.poll_async()? {
            if tag != AER_TAG {
                continue;
            }
            if !cqe.status().is_success() {
                // Refused (e.g. request limit exceeded): not re-armed.
                log::warn!("asynchronous event request failed: {}", cqe.status());
                continue;
            }
            events.push(cqe.dw0.get());
            self.conn.submit_async(Command::Admin(AdminCommand::AsyncEventRequest).to_sqe(0), AER_TAG)?;
        }
        Ok(events)
    }

    /// Keep Alive.
    pub fn keep_alive(&mut self) -> Result<(), InitError> {
        self.exec("keep alive", Command::Admin(AdminCommand::KeepAlive), SyncData::None).map(|_| ())
    }

    /// Get Log Page into `buf` (its length rounded down to dwords).
    pub fn get_log_page(&mut self, lid: LogPageId, nsid: u32, offset: u64, buf: &mut [u8]) -> Result<(), InitError> {
        let len = (buf.len() / 4 * 4) as u32;
        if len == 0 {
            return Err(InitError::Invalid("log page buffer shorter than 4 bytes"));
        }
        let buf = buf.get_mut(..len as usize).unwrap_or(&mut []);
        self.exec(
            "get log page",
            Command::Admin(AdminCommand::get_log_page(lid, nsid, len, offset)),
            SyncData::From(buf),
        )
        .map(|_| ())
    }

    /// Get Features (current value, dword 0 of the completion).
    pub fn get_feature(&mut self, fid: FeatureId) -> Result<u32, InitError> {
        let cmd = AdminCommand::GetFeatures { nsid: 0, fid, sel: nvme_spec::command::FeatureSelect::Current, cdw11: 0 };
        Ok(self.exec("get features", Command::Admin(cmd), SyncData::None)?.dw0.get())
    }

    /// Normal shutdown: CC.SHN = 1, wait for CSTS.SHST complete, close.
    pub fn shutdown(mut self) -> Result<(), InitError> {
        let cc = Cc(self.property_get(offset::CC, PropertySize::Four)? as u32);
        self.property_set(offset::CC, PropertySize::Four, u64::from(cc.with_shn(1).0))?;
        let t0 = Instant::now();
        while t0.elapsed() < self.timeout {
            let csts = Csts(self.property_get(offset::CSTS, PropertySize::Four)? as u32);
            if csts.shst() == shst::COMPLETE {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.conn.close();
        Ok(())
    }

    /// Closes the connection without shutdown.
    pub fn close(self) {
        self.conn.close();
    }
}

/// Connects I/O queue `qid` of controller `cntlid` with `depth` entries;
/// `incapsule` is the in-capsule data limit (IOCCSZ * 16 - 64).
pub fn connect_io_queue(
    opts: &ConnectOpts,
    cntlid: u16,
    qid: u16,
    depth: u16,
    incapsule: u32,
) -> Result<Connection, InitError> {
    if qid == 0 || depth < 2 {
        return Err(InitError::Invalid("io queue id must be non-zero and depth at least 2"));
    }
    let cfg =
        HostConfig { depth, hdgst: opts.hdgst, ddgst: opts.ddgst, incapsule_max: incapsule, ..HostConfig::default() };
    let mut conn = Connection::open(opts.addr, cfg, opts.admin_timeout, opts.tcp_congestion.as_deref())?;
    let got = fabrics_connect(&mut conn, opts, &opts.subnqn, qid, depth - 1, 0, cntlid)?;
    if got != cntlid {
        return Err(InitError::Controller(format!("io queue connect answered controller {got}, expected {cntlid}")));
    }
    Ok(conn)
}

/// Connects to the discovery controller at `opts.addr` and reads the whole
/// discovery log page.
pub fn discover(opts: &ConnectOpts) -> Result<Vec<DiscoveryLogEntry>, InitError> {
    let mut a = AdminQueue::connect(opts, DISCOVERY_NQN)?;
    let mut result = Err(InitError::Controller("discovery log kept changing".into()));
    for _ in 0..5 {
        let mut hdr = [0u8; 1024];
        a.get_log_page(LogPageId::DISCOVERY, 0, 0, &mut hdr)?;
        let h = DiscoveryLog::parse(&hdr).map_err(|e| InitError::Controller(e.to_string()))?;
        let n = usize::try_from(h.numrec).unwrap_or(usize::MAX).min(1024);
        let mut all = vec![0u8; 1024 * (n + 1)];
        a.get_log_page(LogPageId::DISCOVERY, 0, 0, &mut all)?;
        let log = DiscoveryLog::parse(&all).map_err(|e| InitError::Controller(e.to_string()))?;
        if log.genctr == h.genctr {
            result = Ok(log.entries);
            break;
        }
    }
    a.close();
    result
}
