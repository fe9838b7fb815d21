//! `port`: several bdevs over one base bdev, each a port (path) to the same namespace, like the
//! ports of a multi-ported NVMe subsystem.
//!
//! Every port reads and writes the base's blocks and reports the base's namespace identity,
//! so multipath groups them as paths to one namespace. Each port has its own link state and
//! ANA state, changeable at run time from any thread:
//! - link down: new IO fails with `PathError`, and IO that was in flight when the link went
//!   down completes with `PathError` too (like a dropped connection: a write may or may not
//!   have reached the medium);
//! - ANA inaccessible, persistent loss or change: new IO fails with `PathError` (what an NVMe
//!   path reports as an ANA error), and [`Bdev::ana_state`] reports the state.
//!
//! The base is opened once and claimed as `port:<base>`; all ports share that descriptor.
//! Stack a [`super::fault::FaultBdev`] on a port for delays, stalls and error rules per path.

use super::DoneQueue;
use crate::bdev::{AnaState, Bdev, BdevInfo, IoChannel, Uuid};
use crate::channel::BdevChannel;
use crate::io::{IoRequest, IoStatus, QueueFull};
use crate::registry::Desc;
use crate::BdevError;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// Run-time state of one port, shared by its channels.
struct PortState {
    link_up: AtomicBool,
    /// 0 = none reported, else `ana_to_u8`.
    ana: AtomicU8,
}

fn ana_to_u8(s: Option<AnaState>) -> u8 {
    match s {
        None => 0,
        Some(AnaState::Optimized) => 1,
        Some(AnaState::NonOptimized) => 2,
        Some(AnaState::Inaccessible) => 3,
        Some(AnaState::PersistentLoss) => 4,
        Some(AnaState::Change) => 5,
    }
}

fn ana_from_u8(v: u8) -> Option<AnaState> {
    match v {
        1 => Some(AnaState::Optimized),
        2 => Some(AnaState::NonOptimized),
        3 => Some(AnaState::Inaccessible),
        4 => Some(AnaState::PersistentLoss),
        5 => Some(AnaState::Change),
        _ => None,
    }
}

impl PortState {
    /// Whether new IO may pass.
    #[inline]
    fn passes(&self) -> bool {
        self.link_up.load(Ordering::Acquire) && matches!(self.ana.load(Ordering::Acquire), 0..=2)
    }
}

/// One port over a shared base bdev.
pub struct PortBdev {
    info: BdevInfo,
    base: Arc<Desc>,
    state: Arc<PortState>,
}

impl PortBdev {
    /// Open ports named `names` over `base` (a read-write descriptor, claimed here as
    /// `port:<base>`). Register the returned bdevs to make them visible.
    pub fn create(base: Desc, names: &[&str]) -> Result<Vec<Arc<PortBdev>>, BdevError> {
        if names.is_empty() {
            return Err(BdevError::param("names", "at least one port is needed"));
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(BdevError::param("names", "a port name must not be empty"));
            }
            if names[..i].contains(n) {
                return Err(BdevError::param("names", format!("port name '{n}' is given twice")));
            }
        }
        base.claim(&format!("port:{}", base.info().name))?;
        let base = Arc::new(base);
        Ok(names.iter().map(|n| Arc::new(PortBdev::over(n, base.clone()))).collect())
    }

    fn over(name: &str, base: Arc<Desc>) -> PortBdev {
        let mut info = base.info().clone();
        info.name = name.to_string();
        info.aliases = Vec::new();
        info.uuid = Uuid::random();
        info.product = "port".into();
        PortBdev { info, base, state: Arc::new(PortState { link_up: AtomicBool::new(true), ana: AtomicU8::new(0) }) }
    }

    /// Another port over the same base (e.g. a path that appears later).
    pub fn sibling(&self, name: &str) -> Result<PortBdev, BdevError> {
        if name.is_empty() {
            return Err(BdevError::param("name", "must not be empty"));
        }
        Ok(PortBdev::over(name, self.base.clone()))
    }

    /// Bring the link up or down (see the module documentation).
    pub fn set_link(&self, up: bool) {
        self.state.link_up.store(up, Ordering::Release);
    }

    /// Whether the link is up.
    pub fn link_up(&self) -> bool {
        self.state.link_up.load(Ordering::Acquire)
    }

    /// Set the ANA state this port reports (`None`: report none).
    pub fn set_ana_state(&self, state: Option<AnaState>) {
        self.state.ana.store(ana_to_u8(state), Ordering::Release);
    }

    /// The base bdev's name.
    pub fn base_name(&self) -> &str {
        &self.base.info().name
    }
}

struct PortChannel {
    base: BdevChannel,
    state: Arc<PortState>,
    refused: DoneQueue,
}

impl Bdev for PortBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        let base = self.base.channel()?;
        let depth = base.depth();
        Ok(Box::new(PortChannel { base, state: self.state.clone(), refused: DoneQueue::new(depth) }))
    }

    fn ana_state(&self) -> Option<AnaState> {
        ana_from_u8(self.state.ana.load(Ordering::Acquire))
    }
}

impl IoChannel for PortChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        if !self.state.passes() {
            if self.refused.is_full() {
                return Err(QueueFull);
            }
            self.refused.push(io.tag, IoStatus::PathError);
            return Ok(());
        }
        self.base.submit(io)
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let mut n = self.refused.drain(done);
        let up = self.state.link_up.load(Ordering::Acquire);
        n += self.base.poll(&mut |tag, st| done(tag, if up { st } else { IoStatus::PathError }));
        n
    }

    fn in_flight(&self) -> usize {
        self.base.in_flight() + self.refused.len()
    }
}
