//! Poll groups and target connections.

use super::aen::AnaNotices;
use super::bufs::SlotBufs;
use super::io::IoState;
use super::{abort, admin, Ctrl, Shared};
use crate::ctrl::{bad_sgl_status, CmdData, CtrlConfig, CtrlEvent, CtrlQueue};
use nvme_spec::command::{Command, FabricsCommand, QueueType};
use nvme_spec::status::{GenericStatus, Status, StatusCode};
use nvme_spec::{Cqe, Sqe};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a connection is.
pub(crate) enum ConnRole {
    /// Waiting for Connect.
    New,
    /// The admin queue of a controller.
    Admin(Arc<Ctrl>),
    /// An I/O queue.
    Io {
        /// Its controller.
        ctrl: Arc<Ctrl>,
        /// Queue ID.
        qid: u16,
    },
}

/// One accepted connection.
pub(crate) struct TgtConn {
    // Field order matters: the bdev channels (in `io`) are dropped, which
    // answers their IO in flight, before the buffers they point into.
    // Boxed: it is taken out and put back for every command and poll.
    pub(crate) io: Option<Box<IoState>>,
    pub(crate) bufs: SlotBufs,
    pub(crate) stream: TcpStream,
    pub(crate) q: CtrlQueue,
    pub(crate) role: ConnRole,
    pub(crate) listener: usize,
    pub(crate) local: SocketAddr,
    pub(crate) sqes: Vec<Sqe>,
    pub(crate) aers: Vec<u16>,
    /// ANA change notices.
    pub(crate) ana: AnaNotices,
    pub(crate) closed: bool,
    pub(crate) accepted: Instant,
    events: Vec<CtrlEvent>,
}

impl TgtConn {
    fn new(stream: TcpStream, listener: usize, shared: &Shared) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let depth = shared.cfg.queue_depth;
        let q = CtrlQueue::new(CtrlConfig {
            depth,
            allow_hdgst: shared.cfg.allow_digests,
            allow_ddgst: shared.cfg.allow_digests,
            cpda: 0,
            maxh2cdata: shared.cfg.max_transfer.max(4096),
            incapsule_max: shared.cfg.incapsule.max(crate::host::FABRICS_INCAPSULE),
            max_c2h_pdu: shared.cfg.max_transfer.max(4096),
            stage_len: 64 << 10,
        });
        Ok(Self {
            io: None,
            bufs: SlotBufs::new(usize::from(depth)),
            stream,
            q,
            role: ConnRole::New,
            listener,
            local,
            sqes: vec![Sqe::new(0, 0); usize::from(depth)],
            aers: Vec::new(),
            ana: AnaNotices::new(shared.ana_chgcnt.load(Ordering::Acquire)),
            closed: false,
            accepted: Instant::now(),
            events: Vec::with_capacity(usize::from(depth)),
        })
    }

    pub(crate) fn ctrl(&self) -> Option<&Arc<Ctrl>> {
        match &self.role {
            ConnRole::New => None,
            ConnRole::Admin(c) | ConnRole::Io { ctrl: c, .. } => Some(c),
        }
    }

    /// Completes the command in `slot`.
    pub(crate) fn complete(&mut self, slot: u16, status: Status, dw0: u32, data_len: u32) {
        self.complete_full(slot, status, dw0, 0, data_len);
    }

    /// Completes the command in `slot` with both result dwords.
    pub(crate) fn complete_full(&mut self, slot: u16, status: Status, dw0: u32, dw1: u32, data_len: u32) {
        let mut cqe = Cqe::new(0, status);
        cqe.dw0 = dw0.into();
        cqe.dw1 = dw1.into();
        if let Err(e) = self.q.complete(slot, cqe, data_len) {
            log::warn!("nvmf target: completing slot {slot}: {e}");
            self.closed = true;
        }
    }

    fn queue_type(&self) -> QueueType {
        match self.role {
            ConnRole::Io { .. } => QueueType::Io,
            _ => QueueType::Admin,
        }
    }

    /// One pass over the connection; returns whether anything happened.
    fn poll(&mut self, shared: &Shared) -> bool {
        let mut work = false;
        let mut events = std::mem::take(&mut self.events);
        match self.q.poll_receive(&mut self.stream, &mut self.bufs, &mut |e| events.push(e)) {
            Ok(n) => work |= n > 0,
            Err(e) => {
                log::debug!("nvmf target: connection from listener {}: {e}", self.listener);
                self.closed = true;
            }
        }
        for ev in events.drain(..) {
            work = true;
            self.on_event(ev, shared);
        }
        self.events = events;
        if let Some(mut io) = self.io.take() {
            work |= io.poll(self);
            if let ConnRole::Io { ctrl, qid } = &self.role {
                if ctrl.abort_asked.load(Ordering::Acquire) {
                    let (ctrl, qid) = (ctrl.clone(), *qid);
                    work |= abort::serve(self, &mut io, &ctrl, qid);
                }
            }
            self.io = Some(io);
        }
        if let ConnRole::Admin(c) = &self.role {
            if c.abort_answered.load(Ordering::Acquire) {
                let c = c.clone();
                work |= abort::answer(self, &c);
            }
        }
        if self.q.wants_transmit() {
            let mut released = 0usize;
            match self.q.transmit(&mut self.stream, &self.bufs, &mut |_| released += 1) {
                Ok(n) => work |= n > 0,
                Err(e) => {
                    log::debug!("nvmf target: transmit: {e}");
                    self.closed = true;
                }
            }
        }
        // Controller liveness: keep-alive expiry on the admin queue, and
        // I/O queues of dead controllers.
        match &self.role {
            ConnRole::Admin(c) => {
                let r = c.regs();
                let kato = Duration::from_millis(u64::from(r.kato_ms));
                let aen = r.aen_config;
                if !kato.is_zero() && r.last_contact.elapsed() > kato * 2 {
                    log::warn!("nvmf target: controller {} keep-alive expired", c.cntlid);
                    drop(r);
                    self.closed = true;
                } else {
                    drop(r);
                    work |= self.ana_event(shared, aen);
                }
            }
            ConnRole::Io { ctrl, .. } if ctrl.dead.load(Ordering::Acquire) => self.closed = true,
            ConnRole::New if self.accepted.elapsed() > Duration::from_secs(30) => self.closed = true,
            _ => {}
        }
        work
    }

    /// Completes an outstanding Asynchronous Event Request with an ANA
    /// change notice when an ANA change event waits (see [`AnaNotices`]).
    fn ana_event(&mut self, shared: &Shared, aen_config: u32) -> bool {
        let now = shared.ana_chgcnt.load(Ordering::Acquire);
        let enabled = aen_config & admin::AEC_ANA_CHANGE != 0;
        if !self.ana.take(now, enabled, !self.aers.is_empty()) {
            return false;
        }
        let slot = self.aers.remove(0);
        self.complete(slot, Status::SUCCESS, admin::AEN_ANA_CHANGE, 0);
        true
    }

    fn on_event(&mut self, ev: CtrlEvent, shared: &Shared) {
        match ev {
            CtrlEvent::Command { slot, sqe, data } => {
                if let Some(s) = self.sqes.get_mut(usize::from(slot)) {
                    *s = sqe;
                }
                if data == CmdData::BadSgl {
                    self.complete(slot, bad_sgl_status(), 0, 0);
                    return;
                }
                if let CmdData::ToController(_) = data {
                    // Fetch the data first; the command runs on DataReady.
                    if let Err(e) = self.q.request_data(slot) {
                        log::warn!("nvmf target: r2t: {e}");
                        self.closed = true;
                    }
                    return;
                }
                self.execute(slot, sqe, data, shared);
            }
            CtrlEvent::DataReady { slot } => {
                let sqe = self.sqes.get(usize::from(slot)).copied().unwrap_or(Sqe::new(0, 0));
                let len = self.bufs.len(slot);
                self.execute(slot, sqe, CmdData::InCapsule(len), shared);
            }
        }
    }

    /// Runs a command whose data (if any) has arrived.
    fn execute(&mut self, slot: u16, sqe: Sqe, data: CmdData, shared: &Shared) {
        let cmd = match Command::parse(&sqe, self.queue_type()) {
            Ok(c) => c,
            Err(e) => {
                self.complete(slot, e.status(), 0, 0);
                return;
            }
        };
        match (&self.role, cmd) {
            (ConnRole::New, Command::Fabrics(FabricsCommand::Connect { qid, sqsize, kato, cattr, .. })) => {
                admin::connect(self, shared, slot, admin::ConnectArgs { qid, sqsize, kato, cattr }, data);
            }
            (ConnRole::New, _) => self.complete(slot, seq_error(), 0, 0),
            (_, Command::Fabrics(FabricsCommand::Connect { .. })) => self.complete(slot, seq_error(), 0, 0),
            (ConnRole::Io { .. }, Command::Fabrics(FabricsCommand::Disconnect { .. })) => {
                self.complete(slot, Status::SUCCESS, 0, 0);
            }
            (ConnRole::Io { .. }, Command::Io(io)) => {
                if let Some(mut st) = self.io.take() {
                    let ana = shared.ana_state(self.listener);
                    st.submit(self, slot, io, data, ana);
                    self.io = Some(st);
                } else {
                    self.complete(slot, seq_error(), 0, 0);
                }
            }
            (ConnRole::Admin(_), cmd) => admin::execute(self, shared, slot, cmd, data),
            (ConnRole::Io { .. }, _) => {
                self.complete(slot, Status::new(StatusCode::Generic(GenericStatus::InvalidOpcode), true), 0, 0);
            }
        }
    }

    fn teardown(&mut self) {
        // A termination request queued after a protocol error goes out
        // first (the buffers a partly written PDU reads are still here).
        for _ in 0..64 {
            match self.q.transmit_termination(&mut self.stream, &self.bufs) {
                Ok(false) => std::thread::yield_now(),
                Ok(true) | Err(_) => break,
            }
        }
        self.io = None;
        if let ConnRole::Io { ctrl, qid } = &self.role {
            abort::queue_gone(ctrl, *qid);
        }
        if let ConnRole::Admin(c) = &self.role {
            c.dead.store(true, Ordering::Release);
            c.subsys.ctrls().remove(&c.cntlid);
            log::info!("nvmf target: controller {} of {} gone", c.cntlid, c.subsys.nqn);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

pub(crate) fn seq_error() -> Status {
    Status::new(StatusCode::Generic(GenericStatus::CommandSequenceError), true)
}

/// Connections accepted by one poll group and handed to another.
#[derive(Default)]
pub(crate) struct Inbox {
    pending: AtomicBool,
    conns: Mutex<Vec<(TcpStream, usize)>>,
    /// The reactor serving the group, woken when a connection arrives.
    waker: std::sync::OnceLock<reactor::ReactorHandle>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("pending", &self.pending).finish()
    }
}

impl Inbox {
    fn push(&self, s: TcpStream, listener: usize) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).push((s, listener));
        self.pending.store(true, Ordering::Release);
        if let Some(h) = self.waker.get() {
            h.notify();
        }
    }
}

/// How often a poll group looks for new connections.
const ACCEPT_PERIOD_NS: u64 = 1_000_000;

/// A set of connections served by one thread.
pub struct PollGroup {
    shared: Arc<Shared>,
    conns: Vec<TgtConn>,
    inbox: Arc<Inbox>,
    next_accept: u64,
    accept_period: u64,
    /// Changes whenever a connection is added or closed.
    generation: u64,
}

impl std::fmt::Debug for PollGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollGroup").field("connections", &self.conns.len()).finish()
    }
}

impl PollGroup {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let inbox = Arc::new(Inbox::default());
        shared.inboxes.lock().unwrap_or_else(|e| e.into_inner()).push(inbox.clone());
        let accept_period = bdev::clock::ns_to_ticks(ACCEPT_PERIOD_NS).max(1);
        Self { shared, conns: Vec::new(), inbox, next_accept: 0, accept_period, generation: 0 }
    }

    /// Has `h` woken when another group hands this one a connection (the
    /// reactor the group runs on).
    pub(crate) fn set_waker(&self, h: reactor::ReactorHandle) {
        let _ = self.inbox.waker.set(h);
    }

    /// A number that changes whenever the group's set of sockets does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Calls `f` with every socket the group reads: the listeners and the
    /// connections (to wake a parked reactor when one becomes readable;
    /// valid until [`PollGroup::generation`] changes).
    pub fn for_each_fd(&self, f: &mut dyn FnMut(std::os::fd::RawFd)) {
        use std::os::fd::AsRawFd;
        for l in &self.shared.listeners {
            f(l.as_raw_fd());
        }
        for c in &self.conns {
            f(c.stream.as_raw_fd());
        }
    }

    /// Number of connections served.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether any connection has commands in flight (not counting
    /// Asynchronous Event Requests, which wait for events).
    pub fn commands_in_flight(&self) -> bool {
        self.conns.iter().any(|c| c.q.outstanding() > c.aers.len())
    }

    fn adopt(&mut self, s: TcpStream, listener: usize) {
        let peer = s.peer_addr().ok();
        match TgtConn::new(s, listener, &self.shared) {
            Ok(c) => {
                log::debug!("nvmf target: connection from {peer:?} on listener {listener}");
                self.conns.push(c);
                self.generation += 1;
            }
            Err(e) => log::warn!("nvmf target: accepting {peer:?}: {e}"),
        }
    }

    /// Accepts pending connections, keeping those whose round-robin turn
    /// is this group's and handing the others over.
    fn accept(&mut self) -> bool {
        let mut work = false;
        for i in 0..self.shared.listeners.len() {
            while let Some(Ok((s, _))) = self.shared.listeners.get(i).map(|l| l.accept()) {
                work = true;
                let target = {
                    let inboxes = self.shared.inboxes.lock().unwrap_or_else(|e| e.into_inner());
                    let turn = self.shared.accept_turn.fetch_add(1, Ordering::Relaxed);
                    inboxes.get(turn % inboxes.len().max(1)).filter(|b| !Arc::ptr_eq(b, &self.inbox)).cloned()
                };
                match target {
                    Some(b) => b.push(s, i),
                    None => self.adopt(s, i),
                }
            }
        }
        work
    }

    /// Accepts new connections and serves the existing ones once. Returns
    /// whether any work was done.
    pub fn poll(&mut self) -> bool {
        let mut work = false;
        let now = bdev::clock::ticks();
        if now >= self.next_accept {
            self.next_accept = now + self.accept_period;
            work |= self.accept();
        }
        if self.inbox.pending.load(Ordering::Acquire) {
            let handed = {
                let mut q = self.inbox.conns.lock().unwrap_or_else(|e| e.into_inner());
                self.inbox.pending.store(false, Ordering::Release);
                std::mem::take(&mut *q)
            };
            for (s, l) in handed {
                self.adopt(s, l);
                work = true;
            }
        }
        let Self { shared, conns, .. } = self;
        for c in conns.iter_mut() {
            work |= c.poll(shared);
        }
        let mut i = 0;
        while i < self.conns.len() {
            if self.conns[i].closed {
                let mut c = self.conns.swap_remove(i);
                c.teardown();
                self.generation += 1;
                work = true;
            } else {
                i += 1;
            }
        }
        work
    }

    /// Closes every connection.
    pub fn shutdown(&mut self) {
        for mut c in self.conns.drain(..) {
            c.teardown();
        }
    }
}

impl Drop for PollGroup {
    fn drop(&mut self) {
        self.shared.inboxes.lock().unwrap_or_else(|e| e.into_inner()).retain(|b| !Arc::ptr_eq(b, &self.inbox));
        // Connections handed to this group and not adopted yet are closed.
        self.inbox.conns.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.shutdown();
    }
}
