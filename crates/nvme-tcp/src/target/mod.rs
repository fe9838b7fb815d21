//! NVMe/TCP target: exports bdevs as namespaces of NVM subsystems over one
//! or more TCP listeners, with a discovery subsystem and per-subsystem
//! allowed hosts.
//!
//! Connections are served by poll groups ([`PollGroup`]): each owns the
//! connections handed to it, their queue state machines and the bdev
//! channels of their I/O queues. New connections are spread over the poll
//! groups round robin. [`Target::start`] runs poll groups on threads of
//! their own; [`Target::start_on`] runs one as a poller on each given
//! reactor (the data path then never sleeps or changes threads; a reactor
//! that parks when idle is woken by its sockets); [`Target::poll_group`]
//! gives one to drive by hand.
//!
//! Abort ends a command that has not reached the bdev (waiting for its
//! write data, or queued behind a full bdev channel) with Command Abort
//! Requested; commands on the bdev run on ("not aborted").
//!
//! ANA: each listener is a port group with its own ANA state (one ANA
//! group, ID 1, holds every namespace of a subsystem); a controller reports
//! the state of the listener its admin queue came in on, in its ANA log
//! page and through ANA change notices on outstanding Asynchronous Event
//! Requests. I/O through an inaccessible listener fails with the ANA path
//! status. [`Target::set_ana_state`] changes a listener's state at run
//! time.

mod abort;
mod admin;
mod aen;
mod bufs;
mod conn;
mod io;

pub use conn::PollGroup;

use bdev::Bdev;
use nvme_spec::fabrics::DISCOVERY_NQN;
use reactor::{PollStatus, ReactorHandle};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors setting up a target.
#[derive(Debug, Error)]
pub enum TargetError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid target configuration: {0}")]
    Config(String),
    /// A thread could not be started.
    #[error("cannot start poll group thread")]
    Thread(#[source] std::io::Error),
    /// A reactor refused the poll group (it was stopped).
    #[error("cannot start a poll group on reactor {index}")]
    Reactor {
        /// Index of the reactor.
        index: usize,
        /// Why.
        #[source]
        source: reactor::ReactorError,
    },
}

/// An NVM subsystem to export.
#[derive(Clone)]
pub struct SubsystemConfig {
    /// Subsystem NQN.
    pub nqn: String,
    /// Serial number reported by its controllers.
    pub serial: String,
    /// Model number reported by its controllers.
    pub model: String,
    /// Namespaces, NSID = position + 1.
    pub namespaces: Vec<Arc<dyn Bdev>>,
    /// Host NQNs allowed to connect (`None`: any host).
    pub allowed_hosts: Option<Vec<String>>,
    /// Indexes of the listeners it is reachable on (`None`: all).
    pub listeners: Option<Vec<usize>>,
}

impl std::fmt::Debug for SubsystemConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubsystemConfig")
            .field("nqn", &self.nqn)
            .field("namespaces", &self.namespaces.iter().map(|b| b.info().name.clone()).collect::<Vec<_>>())
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

impl SubsystemConfig {
    /// A subsystem open to any host on every listener.
    pub fn new(nqn: &str, namespaces: Vec<Arc<dyn Bdev>>) -> Self {
        Self {
            nqn: nqn.to_string(),
            serial: format!("XB{:018x}", crate::target::hash(nqn) & 0xff_ffff_ffff_ffff),
            model: "xbdev nvme-tcp target".to_string(),
            namespaces,
            allowed_hosts: None,
            listeners: None,
        }
    }
}

/// Target settings.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    /// Addresses to listen on (port 0 picks a free port).
    pub listeners: Vec<SocketAddr>,
    /// Subsystems.
    pub subsystems: Vec<SubsystemConfig>,
    /// Poll group threads started by [`Target::start`].
    pub poll_groups: usize,
    /// Grant header / data digests when hosts ask.
    pub allow_digests: bool,
    /// Commands per queue (MQES + 1).
    pub queue_depth: u16,
    /// Maximum data transfer per command, in bytes (a power of two, at
    /// least 4096): MDTS.
    pub max_transfer: u32,
    /// In-capsule data accepted on I/O queues.
    pub incapsule: u32,
    /// Number of I/O queues per controller.
    pub max_io_queues: u16,
    /// Initial ANA state of each listener (missing entries: optimized).
    pub ana_states: Vec<bdev::AnaState>,
    /// TCP congestion control algorithm of accepted connections (set on
    /// the listeners, which pass it on; e.g. `"reno"`); `None` keeps the
    /// system default.
    pub tcp_congestion: Option<String>,
}

impl TargetConfig {
    /// Defaults: one poll group, digests allowed, depth 128, 128 KiB
    /// transfers, 8 KiB in-capsule data, 16 I/O queues, the system's TCP
    /// congestion control.
    pub fn new(listeners: Vec<SocketAddr>, subsystems: Vec<SubsystemConfig>) -> Self {
        Self {
            listeners,
            subsystems,
            poll_groups: 1,
            allow_digests: true,
            queue_depth: 128,
            max_transfer: 128 << 10,
            incapsule: 8192,
            max_io_queues: 16,
            ana_states: Vec::new(),
            tcp_congestion: None,
        }
    }
}

/// The ANA group every namespace of a subsystem belongs to.
pub(crate) const ANA_GROUP: u32 = 1;

/// The raw ANA state value of a block-layer ANA state.
pub(crate) fn ana_raw(s: bdev::AnaState) -> u8 {
    use nvme_spec::log::AnaState as Spec;
    match s {
        bdev::AnaState::Optimized => Spec::Optimized,
        bdev::AnaState::NonOptimized => Spec::NonOptimized,
        bdev::AnaState::Inaccessible => Spec::Inaccessible,
        bdev::AnaState::PersistentLoss => Spec::PersistentLoss,
        bdev::AnaState::Change => Spec::Change,
    }
    .to_raw()
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable serial numbers from NQNs.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Mutable controller state shared by its queues.
#[derive(Debug)]
pub(crate) struct CtrlRegs {
    pub(crate) cc: u32,
    pub(crate) csts: u32,
    pub(crate) kato_ms: u32,
    pub(crate) io_queues: u16,
    pub(crate) last_contact: Instant,
    pub(crate) aen_config: u32,
    pub(crate) wce: bool,
    /// I/O queue IDs connected.
    pub(crate) io_qids: Vec<u16>,
    /// Abort commands waiting for the connection of their I/O queue.
    pub(crate) aborts: Vec<abort::AbortRequest>,
    /// Answers to Abort commands for the admin queue: (admin slot,
    /// completion dword 0).
    pub(crate) abort_answers: Vec<(u16, u32)>,
}

/// One controller (association) of a subsystem.
#[derive(Debug)]
pub(crate) struct Ctrl {
    pub(crate) cntlid: u16,
    pub(crate) subsys: Arc<Subsys>,
    pub(crate) hostnqn: String,
    pub(crate) hostid: [u8; 16],
    pub(crate) regs: Mutex<CtrlRegs>,
    /// Torn down (keep-alive expiry or admin queue gone).
    pub(crate) dead: AtomicBool,
    /// `regs.aborts` is not empty.
    pub(crate) abort_asked: AtomicBool,
    /// `regs.abort_answers` is not empty.
    pub(crate) abort_answered: AtomicBool,
}

impl Ctrl {
    pub(crate) fn regs(&self) -> std::sync::MutexGuard<'_, CtrlRegs> {
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn touch(&self) {
        self.regs().last_contact = Instant::now();
    }
}

/// A subsystem at run time.
pub(crate) struct Subsys {
    pub(crate) nqn: String,
    pub(crate) serial: String,
    pub(crate) model: String,
    pub(crate) namespaces: Vec<Arc<dyn Bdev>>,
    pub(crate) allowed_hosts: Option<Vec<String>>,
    pub(crate) listeners: Option<Vec<usize>>,
    pub(crate) discovery: bool,
    pub(crate) ctrls: Mutex<HashMap<u16, Arc<Ctrl>>>,
    next_cntlid: AtomicU16,
}

impl std::fmt::Debug for Subsys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subsys").field("nqn", &self.nqn).finish()
    }
}

impl Subsys {
    fn new(c: &SubsystemConfig, discovery: bool) -> Self {
        Self {
            nqn: c.nqn.clone(),
            serial: c.serial.clone(),
            model: c.model.clone(),
            namespaces: c.namespaces.clone(),
            allowed_hosts: c.allowed_hosts.clone(),
            listeners: c.listeners.clone(),
            discovery,
            ctrls: Mutex::new(HashMap::new()),
            next_cntlid: AtomicU16::new(1),
        }
    }

    pub(crate) fn host_allowed(&self, hostnqn: &str) -> bool {
        self.allowed_hosts.as_ref().is_none_or(|h| h.iter().any(|x| x == hostnqn))
    }

    pub(crate) fn on_listener(&self, idx: usize) -> bool {
        self.listeners.as_ref().is_none_or(|l| l.contains(&idx))
    }

    pub(crate) fn ctrls(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Arc<Ctrl>>> {
        self.ctrls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new controller ID not in use.
    pub(crate) fn alloc_cntlid(&self) -> Option<u16> {
        let ctrls = self.ctrls();
        for _ in 0..0xffef {
            let id = self.next_cntlid.fetch_add(1, Ordering::Relaxed);
            let id = (id % 0xffef).max(1);
            if !ctrls.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }
}

/// Everything the poll groups share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: TargetConfigRt,
    pub(crate) listeners: Vec<TcpListener>,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) subsystems: Vec<Arc<Subsys>>,
    pub(crate) stop: AtomicBool,
    /// Discovery log generation counter.
    pub(crate) genctr: u64,
    /// Inboxes of the live poll groups (new connections are handed out
    /// round robin).
    pub(crate) inboxes: Mutex<Vec<Arc<conn::Inbox>>>,
    /// Round-robin position for the next accepted connection.
    pub(crate) accept_turn: AtomicUsize,
    /// Poll groups running on reactors that have not finished yet.
    pub(crate) reactor_groups: AtomicUsize,
    /// ANA state (raw value) of each listener's port group.
    pub(crate) ana: Vec<AtomicU8>,
    /// ANA change count (bumped by every state change).
    pub(crate) ana_chgcnt: AtomicU64,
}

/// The run-time part of the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TargetConfigRt {
    pub(crate) allow_digests: bool,
    pub(crate) queue_depth: u16,
    pub(crate) max_transfer: u32,
    pub(crate) incapsule: u32,
    pub(crate) max_io_queues: u16,
}

impl Shared {
    pub(crate) fn subsystem(&self, nqn: &str) -> Option<&Arc<Subsys>> {
        self.subsystems.iter().find(|s| s.nqn == nqn)
    }

    /// The raw ANA state of listener `i`'s port group.
    pub(crate) fn ana_state(&self, i: usize) -> u8 {
        self.ana.get(i).map_or(1, |a| a.load(Ordering::Acquire))
    }
}

/// A running target.
#[derive(Debug)]
pub struct Target {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Reactors running poll groups (woken to notice a stop).
    reactors: Vec<ReactorHandle>,
}

impl Target {
    /// Binds the listeners and prepares the subsystems without starting
    /// threads; drive it with [`Target::poll_group`]s.
    pub fn new(cfg: TargetConfig) -> Result<Self, TargetError> {
        if cfg.listeners.is_empty() {
            return Err(TargetError::Config("no listener".into()));
        }
        if !cfg.max_transfer.is_power_of_two() || cfg.max_transfer < 4096 {
            return Err(TargetError::Config(format!(
                "max_transfer {} is not a power of two >= 4096",
                cfg.max_transfer
            )));
        }
        if cfg.queue_depth < 2 {
            return Err(TargetError::Config("queue depth below 2".into()));
        }
        let mut names = std::collections::HashSet::new();
        for s in &cfg.subsystems {
            if s.nqn.len() > nvme_spec::fabrics::NQN_MAX_LEN || s.nqn.is_empty() || s.nqn == DISCOVERY_NQN {
                return Err(TargetError::Config(format!("bad subsystem nqn '{}'", s.nqn)));
            }
            if !names.insert(s.nqn.clone()) {
                return Err(TargetError::Config(format!("duplicate subsystem '{}'", s.nqn)));
            }
            if s.namespaces.len() > 1024 {
                return Err(TargetError::Config(format!("subsystem '{}' has more than 1024 namespaces", s.nqn)));
            }
        }
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for a in &cfg.listeners {
            let l = TcpListener::bind(a).map_err(|e| TargetError::Listen { addr: *a, source: e })?;
            l.set_nonblocking(true).map_err(|e| TargetError::Listen { addr: *a, source: e })?;
            if let Some(cc) = &cfg.tcp_congestion {
                crate::ffi::set_congestion(&l, cc).map_err(|e| TargetError::Listen { addr: *a, source: e })?;
            }
            addrs.push(l.local_addr().map_err(|e| TargetError::Listen { addr: *a, source: e })?);
            listeners.push(l);
        }
        let mut subsystems: Vec<Arc<Subsys>> = cfg.subsystems.iter().map(|s| Arc::new(Subsys::new(s, false))).collect();
        let disc = SubsystemConfig {
            nqn: DISCOVERY_NQN.to_string(),
            serial: "XBDISCOVERY".into(),
            model: "xbdev discovery".into(),
            namespaces: Vec::new(),
            allowed_hosts: None,
            listeners: None,
        };
        subsystems.push(Arc::new(Subsys::new(&disc, true)));
        let rt = TargetConfigRt {
            allow_digests: cfg.allow_digests,
            queue_depth: cfg.queue_depth,
            max_transfer: cfg.max_transfer,
            incapsule: cfg.incapsule,
            max_io_queues: cfg.max_io_queues.max(1),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                cfg: rt,
                listeners,
                subsystems,
                stop: AtomicBool::new(false),
                genctr: 1,
                inboxes: Mutex::new(Vec::new()),
                accept_turn: AtomicUsize::new(0),
                reactor_groups: AtomicUsize::new(0),
                ana: (0..addrs.len())
                    .map(|i| {
                        AtomicU8::new(ana_raw(cfg.ana_states.get(i).copied().unwrap_or(bdev::AnaState::Optimized)))
                    })
                    .collect(),
                ana_chgcnt: AtomicU64::new(1),
                addrs,
            }),
            threads: Vec::new(),
            reactors: Vec::new(),
        })
    }

    /// Binds the listeners and starts `cfg.poll_groups` threads.
    pub fn start(cfg: TargetConfig) -> Result<Self, TargetError> {
        let n = cfg.poll_groups.max(1);
        let mut t = Self::new(cfg)?;
        for i in 0..n {
            let shared = t.shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("nvmf-tgt-{i}"))
                .spawn(move || {
                    let mut pg = PollGroup::new(shared.clone());
                    // Spin while there is work and for a while after it
                    // (yielding the core to others), then nap in short
                    // steps, growing while the group stays idle.
                    let mut last_work = Instant::now();
                    while !shared.stop.load(Ordering::Acquire) {
                        if pg.poll() {
                            last_work = Instant::now();
                            continue;
                        }
                        let idle = last_work.elapsed();
                        if idle < THREAD_SPIN {
                            std::thread::yield_now();
                        } else {
                            std::thread::sleep(if idle < Duration::from_millis(100) {
                                Duration::from_micros(50)
                            } else {
                                Duration::from_micros(500)
                            });
                        }
                    }
                    pg.shutdown();
                })
                .map_err(TargetError::Thread)?;
            t.threads.push(h);
        }
        Ok(t)
    }

    /// Binds the listeners and runs one poll group as a poller on each of
    /// `reactors` (`cfg.poll_groups` is ignored). The pollers end, closing
    /// their connections on their own reactor, when the target is stopped
    /// or dropped; stop it from a thread that is not one of these reactors.
    pub fn start_on(cfg: TargetConfig, reactors: &[ReactorHandle]) -> Result<Self, TargetError> {
        if reactors.is_empty() {
            return Err(TargetError::Config("no reactor to run poll groups on".into()));
        }
        let mut t = Self::new(cfg)?;
        t.reactors = reactors.to_vec();
        for h in reactors {
            let shared = t.shared.clone();
            shared.reactor_groups.fetch_add(1, Ordering::AcqRel);
            // Created here so a message the reactor drops unrun (it was
            // stopped) still counts the group as finished.
            let done = GroupDone(shared.clone());
            let handle = h.clone();
            let sent = h.send(move |ctx| {
                let me = std::rc::Rc::new(std::cell::Cell::new(None));
                let me2 = me.clone();
                let pg = PollGroup::new(shared.clone());
                pg.set_waker(handle);
                let mut group = Some((pg, done));
                // Sockets watched while the reactor is parked, and the
                // group generation they were taken at.
                let mut watched: Vec<reactor::FdWatch> = Vec::new();
                let mut watched_gen = u64::MAX;
                let id = ctx.add_poller("nvmf-target", move |ctx| {
                    let Some((pg, _)) = group.as_mut() else { return PollStatus::Idle };
                    if shared.stop.load(Ordering::Acquire) {
                        for w in watched.drain(..) {
                            ctx.unwatch_fd(w);
                        }
                        // Dropping the group closes its connections and
                        // then reports it finished.
                        group = None;
                        if let Some(id) = me2.get() {
                            ctx.remove(id);
                        }
                        return PollStatus::Idle;
                    }
                    // Busy while commands are in flight, so an adaptive
                    // reactor does not park with IO outstanding.
                    let busy = pg.poll() || pg.commands_in_flight();
                    // A parked reactor wakes when a socket becomes readable.
                    if pg.generation() != watched_gen {
                        for w in watched.drain(..) {
                            ctx.unwatch_fd(w);
                        }
                        pg.for_each_fd(&mut |fd| watched.push(ctx.watch_fd(&fd)));
                        watched_gen = pg.generation();
                    }
                    if busy {
                        PollStatus::Busy
                    } else {
                        PollStatus::Idle
                    }
                });
                me.set(Some(id));
            });
            if let Err(e) = sent {
                return Err(TargetError::Reactor { index: h.index(), source: e });
            }
        }
        Ok(t)
    }

    /// A poll group to run on the caller's thread (e.g. a reactor poller).
    pub fn poll_group(&self) -> PollGroup {
        PollGroup::new(self.shared.clone())
    }

    /// The bound listener addresses, in configuration order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// Sets the ANA state of listener `listener`'s port group (index in
    /// configuration order). Controllers behind it report the new state in
    /// their ANA log page, complete an outstanding Asynchronous Event
    /// Request with an ANA change notice (when the host enabled those), and
    /// fail I/O with the matching ANA status while the state is not
    /// optimized or non-optimized.
    pub fn set_ana_state(&self, listener: usize, state: bdev::AnaState) -> Result<(), TargetError> {
        let cell =
            self.shared.ana.get(listener).ok_or_else(|| TargetError::Config(format!("no listener {listener}")))?;
        if cell.swap(ana_raw(state), Ordering::AcqRel) != ana_raw(state) {
            self.shared.ana_chgcnt.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// The ANA state of listener `listener`'s port group.
    pub fn ana_state(&self, listener: usize) -> Option<bdev::AnaState> {
        use nvme_spec::log::AnaState as Spec;
        Some(match Spec::from_raw(self.shared.ana.get(listener)?.load(Ordering::Acquire)) {
            Spec::Optimized => bdev::AnaState::Optimized,
            Spec::NonOptimized => bdev::AnaState::NonOptimized,
            Spec::Inaccessible => bdev::AnaState::Inaccessible,
            Spec::PersistentLoss => bdev::AnaState::PersistentLoss,
            Spec::Change | Spec::Reserved(_) => bdev::AnaState::Change,
        })
    }

    /// Stops the poll groups (connections are closed).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Poll groups on reactors notice the flag on their next pass.
        for h in &self.reactors {
            h.notify();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.reactor_groups.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            if reactor::Ctx::current_index().is_some() {
                // On a reactor: waiting could block the group we wait for.
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.halt();
    }
}

/// How long a poll group thread spins (yielding) after its last work
/// before it naps.
const THREAD_SPIN: Duration = Duration::from_millis(2);

/// Counts a reactor poll group as finished when dropped.
struct GroupDone(Arc<Shared>);

impl Drop for GroupDone {
    fn drop(&mut self) {
        self.0.reactor_groups.fetch_sub(1, Ordering::AcqRel);
    }
}
