//! Path events and their subscribers.

use bdev::{AnaState, IoStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What happened to a path.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PathEventKind {
    /// The path joined the device.
    Added,
    /// The path left the device (hot-removed or removed by request).
    Removed,
    /// The path failed: an IO on it ended with this status (`Timeout` for a stall).
    Failed(IoStatus),
    /// A probe read succeeded: the path carries IO again.
    Restored,
    /// The path reports a new ANA state.
    AnaChanged(Option<AnaState>),
}

/// An event about one path of one multipath bdev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathEvent {
    /// The multipath bdev.
    pub device: String,
    /// The path bdev.
    pub path: String,
    /// What happened.
    pub kind: PathEventKind,
}

/// A subscriber. It runs on the thread that noticed the event (often a reactor polling the
/// multipath channel), so it must be quick and must not block.
pub type PathEventCallback = Arc<dyn Fn(&PathEvent) + Send + Sync>;

/// A list of subscribers.
#[derive(Default)]
pub(crate) struct EventHub {
    subs: Mutex<Vec<(u64, PathEventCallback)>>,
    next: AtomicU64,
}

impl EventHub {
    pub(crate) fn subscribe(&self, cb: PathEventCallback) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).push((id, cb));
        id
    }

    pub(crate) fn unsubscribe(&self, id: u64) -> bool {
        let mut g = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let before = g.len();
        g.retain(|(i, _)| *i != id);
        g.len() != before
    }

    /// Call every subscriber (outside the lock, so a subscriber may (un)subscribe).
    pub(crate) fn emit(&self, ev: &PathEvent) {
        let subs: Vec<PathEventCallback> =
            self.subs.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, cb)| cb.clone()).collect();
        for cb in subs {
            cb(ev);
        }
    }
}
