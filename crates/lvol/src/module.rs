//! The lvol module: stores on bdevs of a [`Registry`], each volume registered as a bdev named
//! `lvs/vol` (alias: the volume UUID), the examine hook that loads stores found at start-up,
//! and the seed's API (`lvs_create`, `lvol_create`, `snapshot_create`, ...) by name.

use crate::error::{check_name, LvolError};
use crate::store::{CreateOpts, Store, StoreInfo, VolumeInfo, DEFAULT_CLUSTER_SIZE};
use crate::vchan::VolChannel;
use bdev::{Bdev, BdevError, BdevInfo, IoChannel, IoType, IoTypeSet, Registry};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A volume as a bdev.
pub struct VolumeBdev {
    info: BdevInfo,
    store: Arc<Store>,
    id: u32,
}

impl VolumeBdev {
    fn new(store: Arc<Store>, v: &VolumeInfo) -> VolumeBdev {
        let mut supported = IoTypeSet::of(&[
            IoType::Read,
            IoType::Write,
            IoType::Flush,
            IoType::Reset,
            IoType::WriteZeroes,
            IoType::Unmap,
        ]);
        if v.snapshot {
            supported = supported.without(IoType::Write).without(IoType::WriteZeroes).without(IoType::Unmap);
        }
        let base = store.core().base.info();
        let mut info = BdevInfo::new(&v.path(), "lvol", v.block_size, v.size_bytes / v.block_size as u64, supported);
        info.uuid = v.uuid;
        info.ns_id.uuid = Some(v.uuid);
        info.aliases = vec![v.uuid.to_string()];
        info.required_alignment = base.required_alignment;
        info.volatile_cache = base.volatile_cache;
        // Unmapped blocks read as zeroes: thin volumes release what they own alone, and write
        // zeroes where a parent's data would show through (and on thick volumes).
        info.unmap_zeroes = true;
        VolumeBdev { info, store, id: v.id }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl Bdev for VolumeBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(VolChannel::new(self.store.core().clone(), self.id)?))
    }

    fn config_params(&self) -> Option<String> {
        None
    }
}

struct Loaded {
    store: Arc<Store>,
    base: String,
}

/// The lvol module of one registry.
pub struct Lvol {
    registry: Weak<Registry>,
    stores: Mutex<Vec<Loaded>>,
}

struct Examine(Weak<Lvol>);

impl bdev::Examiner for Examine {
    fn name(&self) -> &str {
        "lvol"
    }

    fn examine(&self, registry: &Registry, bdev: &Arc<dyn Bdev>) {
        let Some(m) = self.0.upgrade() else { return };
        let name = bdev.info().name.clone();
        if m.lock().iter().any(|l| l.base == name) {
            return;
        }
        // Look for a super block with a read-only descriptor first.
        let found = (|| {
            let d = registry.open(&name, false).ok()?;
            let ch = d.channel_with_depth(4).ok()?;
            let mut io = crate::sync_io::SyncIo::new(ch, d.info().max_io_blocks);
            crate::core::Core::read_super(&mut io).ok()
        })();
        if found.is_none() {
            return;
        }
        match m.load_store(&name) {
            Ok(s) => log::info!("lvol: loaded store {} from {name}", s.name()),
            Err(e) => log::warn!("lvol: store on {name} not loaded: {e}"),
        }
    }
}

fn lockm<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Split `lvs/vol`.
pub fn split_path(path: &str) -> Result<(&str, &str), LvolError> {
    match path.split_once('/') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains('/') => Ok((a, b)),
        _ => Err(LvolError::BadPath(path.to_string())),
    }
}

const MIB: u64 = 1 << 20;

impl Lvol {
    /// The module for `registry`, with its examine hook installed (stores on bdevs already
    /// registered and on every bdev registered later are loaded).
    pub fn new(registry: &Arc<Registry>) -> Arc<Lvol> {
        let m = Arc::new(Lvol { registry: Arc::downgrade(registry), stores: Mutex::new(Vec::new()) });
        registry.add_examiner(Arc::new(Examine(Arc::downgrade(&m))));
        m
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Loaded>> {
        lockm(&self.stores)
    }

    fn registry(&self) -> Result<Arc<Registry>, LvolError> {
        self.registry.upgrade().ok_or_else(|| LvolError::StoreNotFound("(registry dropped)".into()))
    }

    /// A store by name or UUID.
    pub fn store(&self, name_or_uuid: &str) -> Result<Arc<Store>, LvolError> {
        let uuid = bdev::Uuid::parse(name_or_uuid);
        self.lock()
            .iter()
            .find(|l| l.store.name() == name_or_uuid || Some(l.store.uuid()) == uuid)
            .map(|l| l.store.clone())
            .ok_or_else(|| LvolError::StoreNotFound(name_or_uuid.to_string()))
    }

    /// Descriptions of the loaded stores.
    pub fn stores(&self) -> Vec<StoreInfo> {
        self.lock().iter().map(|l| l.store.info()).collect()
    }

    fn load_store(&self, base: &str) -> Result<Arc<Store>, LvolError> {
        let reg = self.registry()?;
        let d = reg.open(base, true)?;
        let store = Store::load(d)?;
        if let Err(e) = self.adopt(&reg, base, store.clone()) {
            let _ = store.close(false);
            return Err(e);
        }
        Ok(store)
    }

    fn adopt(&self, reg: &Arc<Registry>, base: &str, store: Arc<Store>) -> Result<(), LvolError> {
        {
            let mut g = self.lock();
            if g.iter().any(|l| l.store.name() == store.name()) {
                return Err(LvolError::Duplicate { kind: "lvol store", name: store.name().to_string() });
            }
            store.core().base.claim(&format!("lvol:{}", store.name()))?;
            g.push(Loaded { store: store.clone(), base: base.to_string() });
        }
        for v in store.volumes() {
            self.register_volume(reg, &store, &v.name);
        }
        Ok(())
    }

    fn register_volume(&self, reg: &Arc<Registry>, store: &Arc<Store>, name: &str) {
        let Ok(v) = store.volume(name) else { return };
        if !store.readable(name) || reg.lookup(&v.path()).is_some() {
            return;
        }
        if let Err(e) = reg.register(Arc::new(VolumeBdev::new(store.clone(), &v))) {
            log::warn!("lvol: cannot register {}: {e}", v.path());
        }
    }

    fn unregister_volume(&self, reg: &Arc<Registry>, path: &str) -> Result<(), LvolError> {
        if let Some((_, Some(by))) = reg.list_all().into_iter().find(|(i, _)| i.name == path) {
            return Err(LvolError::Claimed { name: path.to_string(), by });
        }
        match reg.unregister(path) {
            Ok(_) | Err(BdevError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `lvs_create`: format `bdev` as store `name` with `cluster_size` bytes per cluster
    /// (0: 4 MiB; else a power of two, at least 4 KiB).
    pub fn lvs_create(&self, bdev: &str, name: &str, cluster_size: u64) -> Result<StoreInfo, LvolError> {
        let cs = if cluster_size == 0 { DEFAULT_CLUSTER_SIZE } else { cluster_size };
        self.lvs_create_opts(bdev, name, &CreateOpts { cluster_size: cs, ..CreateOpts::default() })
    }

    /// `lvs_create` with every option.
    pub fn lvs_create_opts(&self, bdev: &str, name: &str, opts: &CreateOpts) -> Result<StoreInfo, LvolError> {
        check_name(name)?;
        if self.store(name).is_ok() {
            return Err(LvolError::Duplicate { kind: "lvol store", name: name.to_string() });
        }
        let reg = self.registry()?;
        let d = reg.open(bdev, true)?;
        d.claim(&format!("lvol:{name}"))?;
        let store = Store::create(d, name, opts)?;
        self.adopt(&reg, bdev, store.clone())?;
        Ok(store.info())
    }

    /// Close a store cleanly (final checkpoint) and forget it; its volumes are unregistered.
    pub fn lvs_unload(&self, name: &str) -> Result<(), LvolError> {
        self.drop_store(name, false)
    }

    /// `lvs_destroy`: unregister every volume, erase the store and release the bdev.
    pub fn lvs_destroy(&self, name: &str) -> Result<(), LvolError> {
        self.drop_store(name, true)
    }

    fn drop_store(&self, name: &str, wipe: bool) -> Result<(), LvolError> {
        let store = self.store(name)?;
        let reg = self.registry()?;
        let vols = store.volumes();
        for v in vols.iter().rev() {
            if let Some((_, Some(by))) = reg.list_all().into_iter().find(|(i, _)| i.name == v.path()) {
                return Err(LvolError::Claimed { name: v.path(), by });
            }
        }
        for v in vols.iter().rev() {
            self.unregister_volume(&reg, &v.path())?;
        }
        if wipe {
            store.wipe()?;
        } else {
            store.close(true)?;
        }
        self.lock().retain(|l| l.store.name() != name);
        Ok(())
    }

    /// Resolve `lvs/vol`.
    pub fn resolve(&self, path: &str) -> Result<(Arc<Store>, String), LvolError> {
        let (lvs, vol) = split_path(path)?;
        let s = self.store(lvs)?;
        s.volume(vol)?;
        Ok((s, vol.to_string()))
    }

    /// `lvol_create`: a volume of `size_mb` MiB in store `lvs`, thin or thick.
    pub fn lvol_create(&self, lvs: &str, name: &str, size_mb: u64, thin: bool) -> Result<VolumeInfo, LvolError> {
        self.lvol_create_bytes(lvs, name, size_mb.saturating_mul(MIB), thin)
    }

    /// `lvol_create` with a size in bytes (rounded up to whole granules).
    pub fn lvol_create_bytes(&self, lvs: &str, name: &str, bytes: u64, thin: bool) -> Result<VolumeInfo, LvolError> {
        let s = self.store(lvs)?;
        let v = s.create_volume(name, bytes, thin)?;
        self.register_volume(&self.registry()?, &s, name);
        Ok(v)
    }

    /// `lvol_destroy`: destroy `lvs/vol` (refused for snapshots with dependents).
    pub fn lvol_destroy(&self, path: &str) -> Result<(), LvolError> {
        let (s, vol) = self.resolve(path)?;
        let v = s.volume(&vol)?;
        if !v.children.is_empty() {
            return Err(LvolError::HasDependents { name: path.to_string(), children: v.children });
        }
        self.unregister_volume(&self.registry()?, path)?;
        if let Err(e) = s.destroy_volume(&vol) {
            self.register_volume(&self.registry()?, &s, &vol);
            return Err(e);
        }
        Ok(())
    }

    /// Re-register a volume's bdev after its size or name changed.
    fn reregister(&self, s: &Arc<Store>, old_path: &str, new_name: &str) -> Result<(), LvolError> {
        let reg = self.registry()?;
        self.unregister_volume(&reg, old_path)?;
        self.register_volume(&reg, s, new_name);
        Ok(())
    }

    /// `lvol_resize`: to `new_size_mb` MiB. The bdev is re-registered with its new size (open
    /// descriptors get a remove event and reopen).
    pub fn lvol_resize(&self, path: &str, new_size_mb: u64) -> Result<VolumeInfo, LvolError> {
        self.lvol_resize_bytes(path, new_size_mb.saturating_mul(MIB))
    }

    /// `lvol_resize` in bytes.
    pub fn lvol_resize_bytes(&self, path: &str, bytes: u64) -> Result<VolumeInfo, LvolError> {
        let (s, vol) = self.resolve(path)?;
        let reg = self.registry()?;
        self.unregister_volume(&reg, path)?;
        let r = s.resize(&vol, bytes);
        self.register_volume(&reg, &s, &vol);
        r
    }

    /// `lvol_rename`.
    pub fn lvol_rename(&self, path: &str, new_name: &str) -> Result<VolumeInfo, LvolError> {
        let (s, vol) = self.resolve(path)?;
        let v = s.rename(&vol, new_name)?;
        self.reregister(&s, path, new_name)?;
        Ok(v)
    }

    /// `snapshot_create`: snapshot `lvs/vol` as `lvs/name`.
    pub fn snapshot_create(&self, path: &str, name: &str) -> Result<VolumeInfo, LvolError> {
        let (s, vol) = self.resolve(path)?;
        let v = s.snapshot(&vol, name)?;
        self.register_volume(&self.registry()?, &s, name);
        Ok(v)
    }

    /// `clone_create`: a writable clone `lvs/name` of snapshot `lvs/snap`.
    pub fn clone_create(&self, snap_path: &str, name: &str) -> Result<VolumeInfo, LvolError> {
        let (s, snap) = self.resolve(snap_path)?;
        let v = s.clone_volume(&snap, name)?;
        self.register_volume(&self.registry()?, &s, name);
        Ok(v)
    }

    /// `snapshot_restore`: revert the snapshot's origin volume to the snapshot.
    pub fn snapshot_restore(&self, snap_path: &str) -> Result<VolumeInfo, LvolError> {
        let (s, snap) = self.resolve(snap_path)?;
        let origin = s.volume(&snap)?.origin.ok_or_else(|| LvolError::NoOrigin(snap_path.to_string()))?;
        let opath = format!("{}/{}", s.name(), origin);
        let reg = self.registry()?;
        self.unregister_volume(&reg, &opath)?;
        let r = s.restore(&snap);
        self.register_volume(&reg, &s, &origin);
        r
    }

    /// `snapshot_destroy`: delete a snapshot without dependents, merge it into its only
    /// dependent, or refuse when several depend on it.
    pub fn snapshot_destroy(&self, snap_path: &str) -> Result<(), LvolError> {
        let (s, snap) = self.resolve(snap_path)?;
        let v = s.volume(&snap)?;
        if !v.snapshot {
            return Err(LvolError::NotSnapshot(snap_path.to_string()));
        }
        if v.children.len() > 1 {
            return Err(LvolError::HasDependents { name: snap_path.to_string(), children: v.children });
        }
        self.unregister_volume(&self.registry()?, snap_path)?;
        if let Err(e) = s.destroy_snapshot(&snap) {
            self.register_volume(&self.registry()?, &s, &snap);
            return Err(e);
        }
        Ok(())
    }

    /// Inflate `lvs/vol`: allocate all its clusters and cut it loose from its parents.
    pub fn lvol_inflate(&self, path: &str) -> Result<VolumeInfo, LvolError> {
        let (s, vol) = self.resolve(path)?;
        s.inflate(&vol)
    }

    /// Decouple `lvs/vol` from its parent (it then depends on the grandparent).
    pub fn lvol_decouple_parent(&self, path: &str) -> Result<VolumeInfo, LvolError> {
        let (s, vol) = self.resolve(path)?;
        s.decouple_parent(&vol)
    }

    /// `compression_enable`: compress new writes of `lvs/vol` (level 1..=9).
    pub fn compression_enable(&self, path: &str, level: u8) -> Result<VolumeInfo, LvolError> {
        if level == 0 {
            return Err(LvolError::InvalidParam { param: "compression level", reason: "must be 1..=9".into() });
        }
        let (s, vol) = self.resolve(path)?;
        s.set_compression(&vol, level)
    }

    /// `compression_disable`.
    pub fn compression_disable(&self, path: &str) -> Result<VolumeInfo, LvolError> {
        let (s, vol) = self.resolve(path)?;
        s.set_compression(&vol, 0)
    }

    /// `encryption_enable`: encrypt `lvs/vol` with a 64-byte AES-XTS-256 key, or unlock it
    /// (and every volume of the store sharing the key) after a restart.
    pub fn encryption_enable(&self, path: &str, key: &[u8]) -> Result<VolumeInfo, LvolError> {
        let (s, vol) = self.resolve(path)?;
        let v = s.enable_encryption(&vol, key)?;
        let unlocked = s.unlock(key)?;
        let reg = self.registry()?;
        for name in std::iter::once(vol.clone()).chain(unlocked) {
            self.register_volume(&reg, &s, &name);
        }
        for other in s.volumes() {
            self.register_volume(&reg, &s, &other.name);
        }
        Ok(v)
    }

    /// `encryption_disable`.
    pub fn encryption_disable(&self, path: &str) -> Result<VolumeInfo, LvolError> {
        let (s, vol) = self.resolve(path)?;
        s.disable_encryption(&vol)
    }
}

/// One `lvol_stores` entry (seed 8.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Store name.
    pub name: String,
    /// Base bdev.
    pub base_bdev: String,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// [`Store::set_no_space_timeout`] in milliseconds (`None`: the default, 60 s).
    pub no_space_timeout_ms: Option<u64>,
}

/// One `lvol_volumes` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeConfig {
    /// Volume name.
    pub name: String,
    /// Store name.
    pub lvs_name: String,
    /// Size in MiB (rounded up).
    pub size_mb: u64,
    /// Thin provisioned.
    pub thin_provision: bool,
    /// Compression level (0: off).
    pub compression_level: u8,
    /// Key reference when encrypted (never the key).
    pub key_ref: Option<String>,
}

/// One `snapshots` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// `lvs/vol` the snapshot was taken of.
    pub source_vol: String,
    /// Snapshot name.
    pub name: String,
}

/// One `clones` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneConfig {
    /// `lvs/snap` the clone was made from.
    pub source_snap: String,
    /// Clone name.
    pub name: String,
}

/// The lvol sections of a saved configuration. Stores found by examine already hold their
/// volumes, snapshots and clones; these sections describe them for `save_config`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LvolConfig {
    /// `lvol_stores`.
    pub lvol_stores: Vec<StoreConfig>,
    /// `lvol_volumes` (volumes that are neither snapshots nor clones).
    pub lvol_volumes: Vec<VolumeConfig>,
    /// `snapshots`.
    pub snapshots: Vec<SnapshotConfig>,
    /// `clones` (writable volumes whose parent is a snapshot and that are not a snapshot's origin).
    pub clones: Vec<CloneConfig>,
}

impl Lvol {
    /// The lvol sections describing every loaded store.
    pub fn save_config(&self) -> LvolConfig {
        let mut c = LvolConfig::default();
        let stores: Vec<(Arc<Store>, String)> = self.lock().iter().map(|l| (l.store.clone(), l.base.clone())).collect();
        for (s, base) in stores {
            let info = s.info();
            c.lvol_stores.push(StoreConfig {
                name: info.name.clone(),
                base_bdev: base,
                cluster_size: info.cluster_size,
                no_space_timeout_ms: Some(u64::try_from(s.no_space_timeout().as_millis()).unwrap_or(u64::MAX))
                    .filter(|&ms| ms != crate::core::NO_SPACE_TIMEOUT_MS),
            });
            let vols = s.volumes();
            for v in &vols {
                if v.snapshot {
                    let src = v.origin.clone().unwrap_or_default();
                    c.snapshots
                        .push(SnapshotConfig { source_vol: format!("{}/{}", info.name, src), name: v.name.clone() });
                    continue;
                }
                let is_origin = vols.iter().any(|s2| s2.snapshot && s2.origin.as_deref() == Some(&v.name));
                match &v.parent {
                    Some(p) if !is_origin => {
                        c.clones.push(CloneConfig { source_snap: format!("{}/{p}", info.name), name: v.name.clone() })
                    }
                    _ => c.lvol_volumes.push(VolumeConfig {
                        name: v.name.clone(),
                        lvs_name: info.name.clone(),
                        size_mb: v.size_bytes.div_ceil(MIB),
                        thin_provision: v.thin,
                        compression_level: v.compression_level,
                        key_ref: v.key_ref.clone(),
                    }),
                }
            }
        }
        c
    }
}
