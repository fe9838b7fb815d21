//! The registry of bdevs: register/unregister, lookup by name or alias, open descriptors with
//! exclusive write claims, hot-remove events, and examine hooks.

use crate::bdev::{Bdev, BdevInfo};
use crate::channel::{BdevChannel, DEFAULT_CHANNEL_DEPTH};
use crate::stats::{BdevStats, StatsSnapshot};
use crate::BdevError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// An event delivered to open descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BdevEvent {
    /// The bdev was hot-removed: new IO fails with `PathError`; close the descriptor.
    Remove {
        /// Name of the removed bdev.
        name: String,
    },
}

/// Callback for [`BdevEvent`]s; runs on the thread that caused the event.
pub type EventCallback = Box<dyn Fn(&BdevEvent) + Send + Sync>;

/// A module that looks at every newly registered bdev (RAID and lvol auto-assemble from it).
pub trait Examiner: Send + Sync {
    /// Module name.
    fn name(&self) -> &str;
    /// Inspect a bdev. Runs without registry locks held: it may open, claim and register.
    fn examine(&self, registry: &Registry, bdev: &Arc<dyn Bdev>);
}

struct DescState {
    id: u64,
    write: bool,
    events: Option<EventCallback>,
}

struct Entry {
    bdev: Arc<dyn Bdev>,
    stats: Arc<BdevStats>,
    removed: Arc<AtomicBool>,
    descs: Vec<Arc<DescState>>,
    claim: Option<(u64, String)>,
    hidden: bool,
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    examiners: Vec<Arc<dyn Examiner>>,
}

impl Inner {
    fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| {
            let i = e.bdev.info();
            i.name == name || i.aliases.iter().any(|a| a == name)
        })
    }
}

/// The set of bdevs of one xbdev instance.
#[derive(Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    next_desc: AtomicU64,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Add a bdev, then let every examiner look at it.
    pub fn register(&self, bdev: Arc<dyn Bdev>) -> Result<(), BdevError> {
        let examiners = {
            let mut g = lock(&self.inner);
            let info = bdev.info();
            for n in std::iter::once(&info.name).chain(info.aliases.iter()) {
                if g.find(n).is_some() {
                    return Err(BdevError::Exists(n.clone()));
                }
            }
            g.entries.push(Entry {
                bdev: bdev.clone(),
                stats: Arc::new(BdevStats::default()),
                removed: Arc::new(AtomicBool::new(false)),
                descs: Vec::new(),
                claim: None,
                hidden: false,
            });
            g.examiners.clone()
        };
        log::debug!("registered bdev {}", bdev.info().name);
        for ex in examiners {
            ex.examine(self, &bdev);
        }
        Ok(())
    }

    /// Remove a bdev (hot-remove): open descriptors get [`BdevEvent::Remove`], their channels
    /// fail new IO with `PathError`, and the backend's `shutdown` runs.
    pub fn unregister(&self, name: &str) -> Result<Arc<dyn Bdev>, BdevError> {
        let (entry, callbacks) = {
            let mut g = lock(&self.inner);
            let i = g.find(name).ok_or_else(|| BdevError::NotFound(name.to_string()))?;
            let e = g.entries.remove(i);
            e.removed.store(true, Ordering::SeqCst);
            let cbs: Vec<Arc<DescState>> = e.descs.clone();
            (e, cbs)
        };
        let ev = BdevEvent::Remove { name: entry.bdev.info().name.clone() };
        for d in callbacks {
            if let Some(cb) = &d.events {
                cb(&ev);
            }
        }
        entry.bdev.shutdown();
        log::debug!("unregistered bdev {}", entry.bdev.info().name);
        Ok(entry.bdev)
    }

    /// Add an examiner; it sees every bdev registered so far at once, then each new one.
    pub fn add_examiner(&self, ex: Arc<dyn Examiner>) {
        let existing: Vec<Arc<dyn Bdev>> = {
            let mut g = lock(&self.inner);
            g.examiners.push(ex.clone());
            g.entries.iter().map(|e| e.bdev.clone()).collect()
        };
        for b in existing {
            ex.examine(self, &b);
        }
    }

    /// Find a bdev by name or alias.
    pub fn lookup(&self, name: &str) -> Option<Arc<dyn Bdev>> {
        let g = lock(&self.inner);
        g.find(name).map(|i| g.entries[i].bdev.clone())
    }

    /// Descriptions of the bdevs users see (claimed multipath members are hidden).
    pub fn list(&self) -> Vec<BdevInfo> {
        lock(&self.inner).entries.iter().filter(|e| !e.hidden).map(|e| e.bdev.info().clone()).collect()
    }

    /// Descriptions of every bdev, hidden ones included, with the claim holder.
    pub fn list_all(&self) -> Vec<(BdevInfo, Option<String>)> {
        lock(&self.inner)
            .entries
            .iter()
            .map(|e| (e.bdev.info().clone(), e.claim.as_ref().map(|c| c.1.clone())))
            .collect()
    }

    /// Statistics of a bdev.
    pub fn stats(&self, name: &str) -> Result<StatsSnapshot, BdevError> {
        let g = lock(&self.inner);
        let i = g.find(name).ok_or_else(|| BdevError::NotFound(name.to_string()))?;
        Ok(g.entries[i].stats.snapshot())
    }

    /// Open a bdev for reading (`write == false`) or reading and writing.
    pub fn open(&self, name: &str, write: bool) -> Result<Desc, BdevError> {
        self.open_with_events(name, write, None)
    }

    /// Open with a callback for [`BdevEvent`]s.
    pub fn open_with_events(&self, name: &str, write: bool, events: Option<EventCallback>) -> Result<Desc, BdevError> {
        let mut g = lock(&self.inner);
        let i = g.find(name).ok_or_else(|| BdevError::NotFound(name.to_string()))?;
        let e = &mut g.entries[i];
        if write {
            if let Some((_, by)) = &e.claim {
                return Err(BdevError::Claimed { name: e.bdev.info().name.clone(), by: by.clone() });
            }
        }
        let id = self.next_desc.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(DescState { id, write, events });
        e.descs.push(state.clone());
        Ok(Desc {
            registry: Arc::downgrade(&self.inner),
            state,
            bdev: e.bdev.clone(),
            stats: e.stats.clone(),
            removed: e.removed.clone(),
        })
    }
}

/// An open bdev. Closing (dropping) it releases its claim.
pub struct Desc {
    registry: Weak<Mutex<Inner>>,
    state: Arc<DescState>,
    bdev: Arc<dyn Bdev>,
    stats: Arc<BdevStats>,
    removed: Arc<AtomicBool>,
}

impl Desc {
    /// The bdev.
    pub fn bdev(&self) -> &Arc<dyn Bdev> {
        &self.bdev
    }

    /// Its description.
    pub fn info(&self) -> &BdevInfo {
        self.bdev.info()
    }

    /// Whether the descriptor may write.
    pub fn writable(&self) -> bool {
        self.state.write
    }

    /// Whether the bdev was hot-removed.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Statistics of the bdev.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// A channel for the calling thread, with the default depth.
    pub fn channel(&self) -> Result<BdevChannel, BdevError> {
        self.channel_with_depth(DEFAULT_CHANNEL_DEPTH)
    }

    /// A channel for the calling thread holding at most `depth` requests in flight.
    pub fn channel_with_depth(&self, depth: usize) -> Result<BdevChannel, BdevError> {
        if self.is_removed() {
            return Err(BdevError::Removed(self.info().name.clone()));
        }
        let inner = self.bdev.open_channel()?;
        Ok(BdevChannel::new(
            inner,
            self.bdev.info(),
            self.state.write,
            self.stats.new_channel(),
            self.removed.clone(),
            depth,
        ))
    }

    fn with_entry<R>(&self, f: impl FnOnce(&mut Entry) -> Result<R, BdevError>) -> Result<R, BdevError> {
        let reg = self.registry.upgrade().ok_or_else(|| BdevError::Removed(self.info().name.clone()))?;
        let mut g = lock(&reg);
        let e = g
            .entries
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.removed, &self.removed))
            .ok_or_else(|| BdevError::Removed(self.info().name.clone()))?;
        f(e)
    }

    /// Take the exclusive write claim for module `by` (e.g. `raid:md0`): afterwards nobody else
    /// can open the bdev for writing. Fails while another descriptor has it open for writing.
    pub fn claim(&self, by: &str) -> Result<(), BdevError> {
        let id = self.state.id;
        let write = self.state.write;
        self.with_entry(|e| {
            let name = e.bdev.info().name.clone();
            if !write {
                return Err(BdevError::ReadOnlyDescriptor(name));
            }
            match &e.claim {
                Some((holder, _)) if *holder == id => return Ok(()),
                Some((_, other)) => return Err(BdevError::Claimed { name, by: other.clone() }),
                None => {}
            }
            let writers = e.descs.iter().filter(|d| d.write && d.id != id).count();
            if writers > 0 {
                return Err(BdevError::OpenWriters { name, writers });
            }
            e.claim = Some((id, by.to_string()));
            Ok(())
        })
    }

    /// Hide (or show) the bdev in [`Registry::list`]; for claimed members users should not see.
    pub fn set_hidden(&self, hidden: bool) -> Result<(), BdevError> {
        self.with_entry(|e| {
            e.hidden = hidden;
            Ok(())
        })
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        let id = self.state.id;
        if let Some(reg) = self.registry.upgrade() {
            let mut g = lock(&reg);
            if let Some(e) = g.entries.iter_mut().find(|e| Arc::ptr_eq(&e.removed, &self.removed)) {
                e.descs.retain(|d| d.id != id);
                if matches!(&e.claim, Some((holder, _)) if *holder == id) {
                    e.claim = None;
                    e.hidden = false;
                }
            }
        }
    }
}

impl std::fmt::Debug for Desc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Desc({}, write={})", self.info().name, self.state.write)
    }
}
