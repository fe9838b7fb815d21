//! [`MultipathModule`]: the multipath devices of one xbdev instance, their creation from
//! configuration, and auto-assembly through the registry's examine hook.
//!
//! Auto-assembly (like dm-multipath's `find_multipaths`):
//! - a new bdev whose namespace identity matches an existing multipath device joins it as a
//!   path (a reconnected NVMe/TCP path, a new port);
//! - otherwise, once `min_paths` unclaimed bdevs (of the accepted products) report the same
//!   namespace identity, a device `mp-<uuid>` is created over them.
//!
//! Stacked bdevs that share their base's identity (fault, port) claim their base, so a base
//! is never grouped with what is built on it.

use crate::config::{MultipathOptions, MultipathParams, PathParams};
use crate::device::MultipathBdev;
use crate::event::{EventHub, PathEventCallback};
use crate::identity::{self, IdMatch};
use crate::MultipathError;
use bdev::{Bdev, Examiner, NamespaceId, Registry};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Product name of multipath bdevs (never taken as paths by auto-assembly).
pub const PRODUCT: &str = "multipath";

/// Auto-assembly settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoAssemble {
    /// Whether examine creates devices and adds paths at all.
    pub enabled: bool,
    /// Unclaimed bdevs with one identity needed before a device is created (1 wraps every
    /// accepted bdev at once; new paths join existing devices regardless).
    pub min_paths: usize,
    /// Products (`BdevInfo::product`) considered; empty: every product.
    pub products: Vec<String>,
    /// Options of auto-created devices.
    pub options: MultipathOptions,
}

impl Default for AutoAssemble {
    fn default() -> AutoAssemble {
        AutoAssemble { enabled: true, min_paths: 2, products: Vec::new(), options: MultipathOptions::default() }
    }
}

/// A bdev seen by examine that is not (yet) part of a device.
struct Pending {
    name: String,
    ns: NamespaceId,
}

/// The multipath module: owns the devices; install it as an examiner with
/// `registry.add_examiner(module.clone())` for auto-assembly.
pub struct MultipathModule {
    devices: Mutex<Vec<Arc<MultipathBdev>>>,
    auto: Mutex<AutoAssemble>,
    pending: Mutex<Vec<Pending>>,
    events: Arc<EventHub>,
}

impl MultipathModule {
    /// A module with these auto-assembly settings (validated when used).
    pub fn new(auto: AutoAssemble) -> Arc<MultipathModule> {
        Arc::new(MultipathModule {
            devices: Mutex::new(Vec::new()),
            auto: Mutex::new(auto),
            pending: Mutex::new(Vec::new()),
            events: Arc::new(EventHub::default()),
        })
    }

    /// Replace the auto-assembly settings.
    pub fn set_auto_assemble(&self, auto: AutoAssemble) -> Result<(), MultipathError> {
        auto.options.validate()?;
        if auto.min_paths == 0 {
            return Err(MultipathError::param("min_paths", "must be at least 1"));
        }
        *lock(&self.auto) = auto;
        Ok(())
    }

    /// The auto-assembly settings.
    pub fn auto_assemble(&self) -> AutoAssemble {
        lock(&self.auto).clone()
    }

    /// Create a device from configuration (a `multipath_devices` entry) and register it.
    ///
    /// Configuration wins over auto-assembly: an auto-assembled device holding some of the
    /// requested paths is deleted first, provided nobody has it open for writing (a device in
    /// use makes the request fail with the claim error). Its other paths then join the new
    /// device when they are to the same namespace and auto-assembly is on.
    pub fn create(&self, registry: &Registry, params: MultipathParams) -> Result<Arc<MultipathBdev>, MultipathError> {
        params.validate()?;
        let adopted: Vec<Arc<MultipathBdev>> = self
            .devices()
            .into_iter()
            .filter(|d| d.is_auto_assembled() && params.paths.iter().any(|p| d.has_path(&p.bdev)))
            .filter(|d| Self::claimable(registry, d.name()))
            .collect();
        let mut released = Vec::new();
        for d in &adopted {
            released
                .extend(d.paths().into_iter().map(|p| p.name).filter(|n| !params.paths.iter().any(|p| p.bdev == *n)));
            log::info!("multipath {}: auto-assembled device replaced by configuration", d.name());
            self.delete(registry, d.name())?;
        }
        let dev = self.create_inner(registry, &params, true)?;
        for name in released {
            if let Some(b) = registry.lookup(&name) {
                self.examine(registry, &b);
            }
        }
        Ok(dev)
    }

    /// Examine every registered bdev again (after enabling auto-assembly, for instance).
    pub fn rescan(&self, registry: &Registry) {
        for (info, claim) in registry.list_all() {
            if claim.is_some() {
                continue;
            }
            if let Some(b) = registry.lookup(&info.name) {
                self.examine(registry, &b);
            }
        }
    }

    fn create_inner(
        &self,
        registry: &Registry,
        params: &MultipathParams,
        configured: bool,
    ) -> Result<Arc<MultipathBdev>, MultipathError> {
        if let Some(n) = &params.name {
            if self.get(n).is_some() {
                return Err(MultipathError::Exists(n.clone()));
            }
        }
        let dev = MultipathBdev::create(registry, params, configured, Some(self.events.clone()))?;
        let mut devs = lock(&self.devices);
        devs.retain(|d| !d.is_shut());
        devs.push(dev.clone());
        drop(devs);
        lock(&self.pending).retain(|p| !params.paths.iter().any(|q| q.bdev == p.name));
        Ok(dev)
    }

    /// Unregister and delete a device; its paths are released (and shown again).
    pub fn delete(&self, registry: &Registry, name: &str) -> Result<(), MultipathError> {
        let dev = self.get(name).ok_or_else(|| MultipathError::NotFound(name.to_string()))?;
        lock(&self.devices).retain(|d| !Arc::ptr_eq(d, &dev));
        registry
            .unregister(dev.name())
            .map_err(|source| MultipathError::Registry { name: name.to_string(), source })?;
        Ok(())
    }

    /// A device by name.
    pub fn get(&self, name: &str) -> Option<Arc<MultipathBdev>> {
        lock(&self.devices).iter().find(|d| d.name() == name && !d.is_shut()).cloned()
    }

    /// Every device.
    pub fn devices(&self) -> Vec<Arc<MultipathBdev>> {
        lock(&self.devices).iter().filter(|d| !d.is_shut()).cloned().collect()
    }

    /// Call `cb` for every path event of every device (present and future).
    pub fn subscribe(&self, cb: PathEventCallback) -> u64 {
        self.events.subscribe(cb)
    }

    /// Stop calling a module-wide subscriber.
    pub fn unsubscribe(&self, id: u64) -> bool {
        self.events.unsubscribe(id)
    }

    /// Whether a bdev's name can be opened for writing and claimed now (nobody holds it).
    fn claimable(registry: &Registry, name: &str) -> bool {
        registry.open(name, true).is_ok_and(|d| d.claim("multipath:probe").is_ok())
    }
}

impl Examiner for MultipathModule {
    fn name(&self) -> &str {
        PRODUCT
    }

    fn examine(&self, registry: &Registry, bdev: &Arc<dyn Bdev>) {
        let info = bdev.info();
        if info.product == PRODUCT || !identity::has_identity(&info.ns_id) {
            return;
        }
        let auto = self.auto_assemble();
        if !auto.enabled || (!auto.products.is_empty() && !auto.products.contains(&info.product)) {
            return;
        }
        // A path of an existing device.
        let existing = self.devices().into_iter().find(|d| d.matches(&info.ns_id));
        if let Some(dev) = existing {
            match dev.add_path(registry, PathParams::new(&info.name)) {
                Ok(()) => log::info!("multipath {}: path {} joined", dev.name(), info.name),
                Err(e) => log::warn!("multipath {}: {e}", dev.name()),
            }
            return;
        }
        // A new group once enough unclaimed bdevs share the identity.
        let mut group: Vec<String> = {
            let mut pending = lock(&self.pending);
            pending.retain(|p| registry.lookup(&p.name).is_some_and(|b| b.info().ns_id == p.ns));
            pending.retain(|p| p.name != info.name);
            let names = pending
                .iter()
                .filter(|p| identity::compare(&p.ns, &info.ns_id) == IdMatch::Same)
                .map(|p| p.name.clone());
            names.collect()
        };
        group.retain(|n| Self::claimable(registry, n));
        if group.len() + 1 < auto.min_paths.max(1) || !Self::claimable(registry, &info.name) {
            lock(&self.pending).push(Pending { name: info.name.clone(), ns: info.ns_id });
            return;
        }
        group.push(info.name.clone());
        let params = MultipathParams {
            name: None,
            paths: group.iter().map(|n| PathParams::new(n)).collect(),
            options: auto.options.clone(),
        };
        match self.create_inner(registry, &params, false) {
            Ok(dev) => log::info!("multipath {}: assembled from {}", dev.name(), group.join(", ")),
            Err(e) => {
                // Another thread may have assembled the device from the same paths meanwhile.
                if let Some(dev) = self.devices().into_iter().find(|d| d.matches(&info.ns_id)) {
                    if !dev.has_path(&info.name) && dev.add_path(registry, PathParams::new(&info.name)).is_ok() {
                        log::info!("multipath {}: path {} joined", dev.name(), info.name);
                        return;
                    }
                }
                log::warn!("multipath: cannot assemble {}: {e}", group.join(", "));
                lock(&self.pending).push(Pending { name: info.name.clone(), ns: info.ns_id });
            }
        }
    }
}
