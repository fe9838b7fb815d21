//! Client queues: how application threads reach the reactors.
//!
//! Each application thread (for the synchronous API) and each [`crate::IoQueue`] owns one
//! [`Ring`]: a bounded lock-free request queue to one reactor and a completion queue back,
//! each cache-line padded. The reactor side ([`Server`], one poller per reactor) takes
//! requests in batches, submits them to that reactor's channel for the handle (created on
//! first use, no lock shared with other reactors), and pushes completions back, waking the
//! client only if it parked.

use crate::instance::HandleTable;
use bdev::{BdevChannel, IoRequest, IoStatus};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use reactor::PollStatus;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// A request from a client to a reactor.
#[derive(Copy, Clone, Debug)]
pub(crate) struct ClientReq {
    pub handle: u32,
    pub generation: u32,
    pub io: IoRequest,
}

/// A completion from a reactor to a client.
#[derive(Copy, Clone, Debug)]
pub(crate) struct ClientCpl {
    pub tag: u64,
    pub status: IoStatus,
}

/// One client's pair of queues to one reactor.
pub(crate) struct Ring {
    pub req: CachePadded<ArrayQueue<ClientReq>>,
    pub cpl: CachePadded<ArrayQueue<ClientCpl>>,
    parked: CachePadded<AtomicBool>,
    client: Thread,
    pub closed: AtomicBool,
}

impl Ring {
    pub fn new(depth: usize) -> Arc<Ring> {
        Arc::new(Ring {
            req: CachePadded::new(ArrayQueue::new(depth)),
            cpl: CachePadded::new(ArrayQueue::new(depth)),
            parked: CachePadded::new(AtomicBool::new(false)),
            client: std::thread::current(),
            closed: AtomicBool::new(false),
        })
    }

    /// Reactor side: deliver a completion and wake the client if it sleeps.
    #[inline]
    fn complete(&self, c: ClientCpl) {
        if self.cpl.push(c).is_err() {
            // Cannot happen: clients keep at most `depth` requests in flight.
            log::error!("client completion queue overflow; completion {c:?} dropped");
        }
        if self.parked.load(Ordering::SeqCst) {
            self.client.unpark();
        }
    }

    /// Client side: wait until a completion is available or `timeout` passes.
    /// Spins briefly, then parks.
    pub fn wait(&self, timeout: Duration) -> bool {
        if !self.cpl.is_empty() {
            return true;
        }
        let t0 = Instant::now();
        for i in 0..20_000u32 {
            if !self.cpl.is_empty() {
                return true;
            }
            if i & 255 == 255 && t0.elapsed() >= timeout {
                return false;
            }
            std::hint::spin_loop();
        }
        loop {
            self.parked.store(true, Ordering::SeqCst);
            if !self.cpl.is_empty() {
                self.parked.store(false, Ordering::SeqCst);
                return true;
            }
            let left = timeout.saturating_sub(t0.elapsed());
            if left.is_zero() {
                self.parked.store(false, Ordering::SeqCst);
                return false;
            }
            std::thread::park_timeout(left.min(Duration::from_millis(100)));
            self.parked.store(false, Ordering::SeqCst);
            if !self.cpl.is_empty() {
                return true;
            }
        }
    }
}

#[derive(Copy, Clone)]
struct Pending {
    ring: u32,
    tag: u64,
}

/// The per-reactor poller serving client rings.
pub(crate) struct Server {
    table: Arc<HandleTable>,
    rings: Vec<Arc<Ring>>,
    /// Channel per handle slot, with the handle generation it was opened for.
    channels: Vec<Option<(u32, BdevChannel)>>,
    active: Vec<u32>,
    pending: Vec<Pending>,
    free: Vec<u32>,
    backlog: VecDeque<(u32, ClientReq)>,
}

const PENDING_MAX: usize = 1 << 16;
const BATCH: usize = 256;

impl Server {
    pub fn new(table: Arc<HandleTable>) -> Server {
        Server {
            table,
            rings: Vec::new(),
            channels: Vec::new(),
            active: Vec::new(),
            pending: vec![Pending { ring: 0, tag: 0 }; PENDING_MAX],
            free: (0..PENDING_MAX as u32).rev().collect(),
            backlog: VecDeque::with_capacity(1024),
        }
    }

    pub fn add_ring(&mut self, r: Arc<Ring>) {
        self.rings.push(r);
    }

    /// Drop this reactor's channel for a handle slot, answering its in-flight IO first.
    pub fn close_handle(&mut self, slot: u32) {
        if let Some(Some((_, mut ch))) = self.channels.get_mut(slot as usize).map(Option::take) {
            let Server { rings, pending, free, .. } = self;
            ch.drain(Duration::from_secs(30), &mut |tag, status| {
                let p = pending[tag as usize];
                free.push(tag as u32);
                if let Some(r) = rings.get(p.ring as usize) {
                    r.complete(ClientCpl { tag: p.tag, status });
                }
            });
            self.active.retain(|&s| s != slot);
        }
    }

    fn channel_for(&mut self, handle: u32, generation: u32) -> Result<&mut BdevChannel, IoStatus> {
        let idx = handle as usize;
        if self.channels.len() <= idx {
            self.channels.resize_with(idx + 1, || None);
        }
        let stale = matches!(&self.channels[idx], Some((g, _)) if *g != generation);
        if stale {
            self.close_handle(handle);
        }
        if self.channels[idx].is_none() {
            let ch = self.table.open_channel(handle, generation).ok_or(IoStatus::Invalid)?;
            self.channels[idx] = Some((generation, ch));
            self.active.push(handle);
        }
        match &mut self.channels[idx] {
            Some((_, ch)) => Ok(ch),
            None => Err(IoStatus::Invalid),
        }
    }

    fn dispatch(&mut self, ring: u32, r: ClientReq) -> bool {
        let Some(slot) = self.free.pop() else { return false };
        let mut io = r.io;
        io.tag = slot as u64;
        let ch = match self.channel_for(r.handle, r.generation) {
            Ok(ch) => ch,
            Err(status) => {
                self.free.push(slot);
                if let Some(rg) = self.rings.get(ring as usize) {
                    rg.complete(ClientCpl { tag: r.io.tag, status });
                }
                return true;
            }
        };
        if ch.submit(&io).is_err() {
            self.free.push(slot);
            return false;
        }
        self.pending[slot as usize] = Pending { ring, tag: r.io.tag };
        true
    }

    /// One pass: take requests, submit, reap completions.
    pub fn poll(&mut self) -> PollStatus {
        let mut busy = false;
        while let Some((ring, r)) = self.backlog.pop_front() {
            if !self.dispatch(ring, r) {
                self.backlog.push_front((ring, r));
                break;
            }
            busy = true;
        }
        if self.backlog.is_empty() {
            for i in 0..self.rings.len() {
                for _ in 0..BATCH {
                    let Some(r) = self.rings[i].req.pop() else { break };
                    busy = true;
                    if !self.dispatch(i as u32, r) {
                        self.backlog.push_back((i as u32, r));
                        break;
                    }
                }
            }
        }
        let Server { channels, active, rings, pending, free, .. } = self;
        for &h in active.iter() {
            if let Some(Some((_, ch))) = channels.get_mut(h as usize) {
                let n = ch.poll(&mut |tag, status| {
                    let p = pending[tag as usize];
                    free.push(tag as u32);
                    if let Some(r) = rings.get(p.ring as usize) {
                        r.complete(ClientCpl { tag: p.tag, status });
                    }
                });
                if n > 0 || ch.in_flight() > 0 {
                    busy = true;
                }
            }
        }
        if !busy {
            self.rings.retain(|r| !r.closed.load(Ordering::Acquire) || !r.req.is_empty());
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let slots: Vec<u32> = self.active.clone();
        for s in slots {
            self.close_handle(s);
        }
    }
}
