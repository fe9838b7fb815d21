//! The state one multipath bdev shares between its control API and all its channels: the
//! member paths, the options, the shared deadlines of periodic work, and event subscribers.
//!
//! Channels never lock on the IO path: they compare `generation` with the one they last saw
//! (one atomic load) and take the locks only when membership or options changed.

use crate::config::{MultipathOptions, PathParams, MAX_PATHS};
use crate::event::{EventHub, PathEvent, PathEventKind};
use crate::identity::{self, IdMatch};
use crate::path::{Path, PathInfo, PathState};
use crate::MultipathError;
use bdev::{BdevInfo, NamespaceId, Registry};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shared state of one multipath bdev.
pub(crate) struct Group {
    /// The multipath bdev's description (geometry fixed at creation).
    pub(crate) info: BdevInfo,
    /// Namespace identity, grown as paths with more identifiers join.
    identity: Mutex<NamespaceId>,
    paths: Mutex<Vec<Arc<Path>>>,
    options: Mutex<MultipathOptions>,
    /// Bumped whenever `paths` or `options` change.
    pub(crate) generation: AtomicU64,
    /// Tick deadlines of group-wide periodic work, claimed by whichever channel passes first.
    pub(crate) next_stats_reset: AtomicU64,
    pub(crate) next_ana_check: AtomicU64,
    /// Set when the multipath bdev is unregistered.
    pub(crate) shut: AtomicBool,
    /// Created from explicit configuration (reported by `config_params`).
    pub(crate) configured: bool,
    events: EventHub,
    module_events: Option<Arc<EventHub>>,
}

impl Group {
    pub(crate) fn new(
        info: BdevInfo,
        options: MultipathOptions,
        configured: bool,
        module_events: Option<Arc<EventHub>>,
    ) -> Group {
        Group {
            identity: Mutex::new(info.ns_id),
            info,
            paths: Mutex::new(Vec::new()),
            options: Mutex::new(options),
            generation: AtomicU64::new(1),
            next_stats_reset: AtomicU64::new(0),
            next_ana_check: AtomicU64::new(0),
            shut: AtomicBool::new(false),
            configured,
            events: EventHub::default(),
            module_events,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.info.name
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn identity(&self) -> NamespaceId {
        *lock(&self.identity)
    }

    pub(crate) fn options(&self) -> MultipathOptions {
        lock(&self.options).clone()
    }

    pub(crate) fn set_options(&self, o: MultipathOptions) -> Result<(), MultipathError> {
        o.validate()?;
        // The windows hold samples of one kind and size: start afresh when either changes.
        let window_changed = {
            let mut g = lock(&self.options);
            let changed =
                g.window_ios != o.window_ios || std::mem::discriminant(&g.policy) != std::mem::discriminant(&o.policy);
            *g = o;
            changed
        };
        if window_changed {
            for p in self.paths() {
                p.reset_windows();
            }
        }
        self.bump();
        Ok(())
    }

    pub(crate) fn update_options(&self, f: impl FnOnce(&mut MultipathOptions)) -> Result<(), MultipathError> {
        let mut o = self.options();
        f(&mut o);
        self.set_options(o)
    }

    /// The member paths.
    pub(crate) fn paths(&self) -> Vec<Arc<Path>> {
        lock(&self.paths).clone()
    }

    /// Paths and options together, as a channel refresh needs them.
    pub(crate) fn snapshot(&self) -> (Vec<Arc<Path>>, MultipathOptions) {
        let paths = lock(&self.paths).clone();
        (paths, self.options())
    }

    pub(crate) fn find(&self, name: &str) -> Option<Arc<Path>> {
        lock(&self.paths).iter().find(|p| p.name == name).cloned()
    }

    pub(crate) fn emit(&self, path: &str, kind: PathEventKind) {
        let ev = PathEvent { device: self.info.name.clone(), path: path.to_string(), kind };
        match kind {
            PathEventKind::Failed(st) => log::warn!("multipath {}: path {} failed ({st})", ev.device, ev.path),
            PathEventKind::Restored => log::info!("multipath {}: path {} restored", ev.device, ev.path),
            _ => log::info!("multipath {}: path {} {:?}", ev.device, ev.path, kind),
        }
        self.events.emit(&ev);
        if let Some(m) = &self.module_events {
            m.emit(&ev);
        }
    }

    pub(crate) fn subscribe(&self, cb: crate::PathEventCallback) -> u64 {
        self.events.subscribe(cb)
    }

    pub(crate) fn unsubscribe(&self, id: u64) -> bool {
        self.events.unsubscribe(id)
    }

    /// Check that `info` (a candidate path bdev) fits this group.
    pub(crate) fn check_fits(&self, info: &BdevInfo) -> Result<(), MultipathError> {
        let mismatch = |reason: String| MultipathError::Mismatch {
            device: self.info.name.clone(),
            path: info.name.clone(),
            reason,
        };
        check_identity(&self.identity(), info).map_err(mismatch)?;
        let g = &self.info;
        if info.block_size != g.block_size {
            return Err(mismatch(format!("block size {} differs from {}", info.block_size, g.block_size)));
        }
        if info.num_blocks != g.num_blocks {
            return Err(mismatch(format!("size of {} blocks differs from {}", info.num_blocks, g.num_blocks)));
        }
        if info.required_alignment > g.required_alignment {
            return Err(mismatch(format!(
                "needs buffer alignment {} but the device promised {}",
                info.required_alignment, g.required_alignment
            )));
        }
        if info.max_io_blocks != 0 && (g.max_io_blocks == 0 || info.max_io_blocks < g.max_io_blocks) {
            return Err(mismatch(format!(
                "takes at most {} blocks per IO but the device promised {}",
                info.max_io_blocks, g.max_io_blocks
            )));
        }
        if let Some(t) = g.supported.iter().find(|t| !info.supported.contains(*t)) {
            return Err(mismatch(format!("does not support {} IO", t.name())));
        }
        Ok(())
    }

    /// Open, claim, hide and add the path bdev `p.bdev`.
    pub(crate) fn add_path(self: &Arc<Self>, registry: &Registry, p: &PathParams) -> Result<(), MultipathError> {
        let open_err = |source| MultipathError::Open { path: p.bdev.clone(), source };
        if self.shut.load(Ordering::Acquire) {
            return Err(MultipathError::NotFound(self.info.name.clone()));
        }
        let bdev = registry.lookup(&p.bdev).ok_or_else(|| open_err(bdev::BdevError::NotFound(p.bdev.clone())))?;
        let info = bdev.info();
        // The configured name may be an alias: members are known by their real name.
        let name = info.name.clone();
        if info.name == self.info.name {
            return Err(MultipathError::param("paths", "a multipath bdev cannot be its own path"));
        }
        if self.find(&name).is_some() {
            return Err(MultipathError::AlreadyMember { device: self.info.name.clone(), path: name });
        }
        if lock(&self.paths).len() >= MAX_PATHS {
            return Err(MultipathError::TooManyPaths { device: self.info.name.clone(), max: MAX_PATHS });
        }
        self.check_fits(info)?;
        let weak: Weak<Group> = Arc::downgrade(self);
        let removed_name = name.clone();
        let desc = registry
            .open_with_events(
                &name,
                true,
                Some(Box::new(move |ev| {
                    let bdev::BdevEvent::Remove { .. } = ev;
                    if let Some(g) = weak.upgrade() {
                        let _ = g.remove_path(&removed_name);
                    }
                })),
            )
            .map_err(open_err)?;
        desc.claim(&format!("multipath:{}", self.info.name)).map_err(open_err)?;
        desc.set_hidden(true).map_err(open_err)?;
        let path = Arc::new(Path::new(&name, desc, p.group, p.weight));
        {
            let mut paths = lock(&self.paths);
            if paths.iter().any(|q| q.name == name) {
                return Err(MultipathError::AlreadyMember { device: self.info.name.clone(), path: name });
            }
            if paths.len() >= MAX_PATHS {
                return Err(MultipathError::TooManyPaths { device: self.info.name.clone(), max: MAX_PATHS });
            }
            paths.push(path);
            let mut id = lock(&self.identity);
            *id = identity::merge(&id, &info.ns_id);
        }
        self.bump();
        self.emit(&name, PathEventKind::Added);
        Ok(())
    }

    /// Take a path out of the group. Channels stop using it at once and drop their channel to
    /// it when its IO has been answered; the claim goes with the last reference.
    pub(crate) fn remove_path(&self, name: &str) -> Result<(), MultipathError> {
        let removed = {
            let mut paths = lock(&self.paths);
            let i = paths
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| MultipathError::NotMember { device: self.info.name.clone(), path: name.to_string() })?;
            paths.remove(i)
        };
        removed.mark_removed();
        self.bump();
        self.emit(name, PathEventKind::Removed);
        Ok(())
    }

    /// Remove every path (device deletion).
    pub(crate) fn shutdown(&self) {
        self.shut.store(true, Ordering::Release);
        let paths = std::mem::take(&mut *lock(&self.paths));
        for p in &paths {
            p.mark_removed();
        }
        self.bump();
    }

    /// Reports of every path; the usable paths of the best tier are active.
    pub(crate) fn path_infos(&self) -> Vec<PathInfo> {
        let paths = self.paths();
        let best = paths.iter().filter(|p| p.usable()).map(|p| p.tier()).min();
        paths
            .iter()
            .map(|p| {
                let state = match p.health_state() {
                    PathState::Active if Some(p.tier()) != best => PathState::Passive,
                    s => s,
                };
                p.info(state)
            })
            .collect()
    }
}

/// Whether a bdev's identity is the group's namespace (`Err` says why not).
pub(crate) fn check_identity(group: &NamespaceId, info: &BdevInfo) -> Result<(), String> {
    if !identity::has_identity(&info.ns_id) {
        return Err("it reports no namespace identity".into());
    }
    match identity::compare(group, &info.ns_id) {
        IdMatch::Same => Ok(()),
        IdMatch::Unrelated => Err(format!(
            "namespace identity ({}) shares no identifier with the device's ({})",
            identity::describe(&info.ns_id),
            identity::describe(group)
        )),
        IdMatch::Conflict(field) => Err(format!(
            "namespace {field} differs: path has {}, device has {}",
            identity::describe(&info.ns_id),
            identity::describe(group)
        )),
    }
}
