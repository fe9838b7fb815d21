//! The xbdev instances of this process, shared by the fio jobs that run in it.
//!
//! In fio's process mode every job has its own process and so its own instance; with
//! `--thread` the jobs of one process share the instance their options describe (equal
//! [`JobSpec::key`]). The first job's `init` starts it.
//!
//! When it stops:
//! - process mode: with the last job's `cleanup` (the job process then leaves with `_exit`,
//!   which runs no library destructor);
//! - thread mode: when fio unloads the engine (its last `dlclose`, after the last job's
//!   `cleanup`) or exits: the shim's library destructor calls [`shutdown_all`]. Later jobs of the
//!   same run (after a `stonewall`) therefore see the data earlier jobs wrote to RAM disks, as
//!   with any other fio target.
//!
//! Either way the reactor threads are joined before the library's code goes away.
//!
//! An instance is tied to the process that started it: after a `fork` the child sees the
//! parent's table but none of its threads, so a table inherited that way is forgotten
//! (leaked, never stopped: its threads do not exist here) and the child starts afresh.

use crate::error::EngineError;
use crate::spec::JobSpec;
use reactor::IdlePolicy;
use std::sync::{Arc, Mutex, MutexGuard};
use xbdev::Xbdev;

struct Entry {
    key: String,
    xb: Arc<Xbdev>,
    jobs: usize,
    /// Keep running without jobs until [`shutdown_all`] (thread mode).
    keep: bool,
    /// The reactors' idle policy, which inline jobs follow too.
    idle: IdlePolicy,
}

struct Table {
    pid: u32,
    entries: Vec<Entry>,
}

static TABLE: Mutex<Table> = Mutex::new(Table { pid: 0, entries: Vec::new() });

fn table() -> MutexGuard<'static, Table> {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if t.pid != pid {
        // Inherited through fork: the reactor threads behind these entries are not in this
        // process, so they can be neither used nor stopped.
        for e in t.entries.drain(..) {
            std::mem::forget(e.xb);
        }
        t.pid = pid;
    }
    t
}

/// A job's reference to its instance; dropping it releases the reference.
pub struct Lease {
    key: String,
    xb: Arc<Xbdev>,
    idle: IdlePolicy,
}

impl Lease {
    /// The instance.
    pub fn xbdev(&self) -> &Xbdev {
        &self.xb
    }

    /// The instance's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The instance's idle policy (config and `xbdev_idle`).
    pub fn idle(&self) -> IdlePolicy {
        self.idle
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let last = {
            let mut t = table();
            match t.entries.iter().position(|e| e.key == self.key && Arc::ptr_eq(&e.xb, &self.xb)) {
                Some(i) => {
                    t.entries[i].jobs -= 1;
                    (t.entries[i].jobs == 0 && !t.entries[i].keep).then(|| t.entries.swap_remove(i))
                }
                None => None,
            }
        };
        if let Some(e) = last {
            log::debug!("last job left xbdev instance {}: stopping it", e.key);
            e.xb.stop();
        }
    }
}

/// Take a reference to the instance `spec` describes, starting it when this process has none.
/// `keep` (fio's thread mode) keeps the instance after its last job, until [`shutdown_all`].
/// `start` creates the instance (the caller blocks signals around it).
pub fn acquire(
    spec: &JobSpec,
    keep: bool,
    start: impl FnOnce(&xbdev::Config) -> Result<Xbdev, xbdev::XbdevError>,
) -> Result<Lease, EngineError> {
    let key = spec.key();
    let mut t = table();
    if let Some(e) = t.entries.iter_mut().find(|e| e.key == key) {
        e.jobs += 1;
        e.keep |= keep;
        return Ok(Lease { key, xb: e.xb.clone(), idle: e.idle });
    }
    let cfg = spec.config()?;
    let idle = cfg.reactor.idle;
    // Starting under the table lock serialises concurrent first jobs of one spec.
    let xb = Arc::new(start(&cfg).map_err(|e| EngineError::Start(Box::new(e)))?);
    t.entries.push(Entry { key: key.clone(), xb: xb.clone(), jobs: 1, keep, idle });
    Ok(Lease { key, xb, idle })
}

/// Stop every instance of this process (the library is being unloaded, or the process exits).
pub fn shutdown_all() {
    let entries: Vec<Entry> = std::mem::take(&mut table().entries);
    for e in entries {
        if e.jobs > 0 {
            log::warn!("stopping xbdev instance {} with {} jobs still attached", e.key, e.jobs);
        }
        e.xb.stop();
    }
}

/// The running instance for `spec` in this process, if any (without taking a reference).
pub fn running(spec: &JobSpec) -> Option<Arc<Xbdev>> {
    let key = spec.key();
    table().entries.iter().find(|e| e.key == key).map(|e| e.xb.clone())
}

/// Number of instances running in this process.
pub fn count() -> usize {
    table().entries.len()
}
