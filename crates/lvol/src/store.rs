//! A logical volume store: the control plane over one base bdev. Every operation here is
//! atomic and durable when it returns (one journal transaction, or a sequence of atomic steps
//! that leaves the volume readable at every point, for data-moving operations).

use crate::codec::Cipher;
use crate::core::{Core, CoreError, FormatOpts};
use crate::ctl_io::{owns, read_chunk, read_visible, write_granule};
use crate::error::{check_name, LvolError};
use crate::format::SECTOR;
use crate::record::{ChunkLoc, KeyRef, Record, VolDesc, ENT_ENC, VOL_THIN};
use crate::state::ent_pc;
use crate::sync_io::SyncIo;
use crate::vchan::VolChannel;
use bdev::Desc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a control operation waits for IO to drain.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cluster size.
pub const DEFAULT_CLUSTER_SIZE: u64 = 4 << 20;

/// Parameters of a new store.
#[derive(Clone, Debug)]
pub struct CreateOpts {
    /// Cluster size in bytes (power of two, 4 KiB to 1 GiB).
    pub cluster_size: u64,
    /// Journal size in bytes (0: proportional to the store, 1 MiB to 256 MiB).
    pub journal_size: u64,
    /// Most volumes (snapshots included).
    pub max_volumes: u32,
}

impl Default for CreateOpts {
    fn default() -> Self {
        CreateOpts { cluster_size: DEFAULT_CLUSTER_SIZE, journal_size: 0, max_volumes: 1024 }
    }
}

/// Description of a store.
#[derive(Clone, Debug)]
pub struct StoreInfo {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: bdev::Uuid,
    /// Base bdev name.
    pub base_bdev: String,
    /// Block size.
    pub block_size: u32,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Granule (copy-on-write and valid-bit unit) in bytes.
    pub granule_size: u64,
    /// Data clusters.
    pub total_clusters: u64,
    /// Clusters free for allocation.
    pub free_clusters: u64,
    /// Clusters freed (by unmap, shrink, delete...) and not yet free for allocation: waiting
    /// for their record to be durable or for IO that may still use them to finish.
    pub releasing_clusters: u64,
    /// Clusters holding packed (compressed) data.
    pub packed_clusters: u64,
    /// Journal bytes.
    pub journal_size: u64,
    /// Checkpoints written since load.
    pub checkpoints: u64,
    /// Journal transactions written since load.
    pub journal_txns: u64,
    /// Records journaled since load (records per transaction shows group commit at work).
    pub journal_records: u64,
}

/// Description of a volume.
#[derive(Clone, Debug)]
pub struct VolumeInfo {
    /// Store name.
    pub lvs: String,
    /// Volume name.
    pub name: String,
    /// Id in the store.
    pub id: u32,
    /// UUID.
    pub uuid: bdev::Uuid,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Block size.
    pub block_size: u32,
    /// Thin provisioned.
    pub thin: bool,
    /// A snapshot (read-only).
    pub snapshot: bool,
    /// Parent snapshot's name.
    pub parent: Option<String>,
    /// Volumes whose parent this is.
    pub children: Vec<String>,
    /// For a snapshot: the volume it was taken of.
    pub origin: Option<String>,
    /// Clusters this volume owns.
    pub allocated_clusters: u64,
    /// Compression level of new writes (0 off).
    pub compression_level: u8,
    /// Compressed chunks held.
    pub compressed_chunks: u64,
    /// Bytes those chunks stand for.
    pub compressed_logical_bytes: u64,
    /// Bytes they take in the store.
    pub compressed_stored_bytes: u64,
    /// Encrypted.
    pub encrypted: bool,
    /// Encrypted and the key is not loaded.
    pub locked: bool,
    /// Key reference (hex of nonce and check value), never the key.
    pub key_ref: Option<String>,
    /// Extended attributes.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl VolumeInfo {
    /// `lvs/name`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.lvs, self.name)
    }

    /// Compression ratio of the compressed chunks (logical / stored), 1.0 when none.
    pub fn compression_ratio(&self) -> f64 {
        if self.compressed_stored_bytes == 0 {
            1.0
        } else {
            self.compressed_logical_bytes as f64 / self.compressed_stored_bytes as f64
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A loaded store.
pub struct Store {
    core: Arc<Core>,
}

impl Store {
    /// Format `base` (opened read-write and claimed by the caller) as a new store.
    pub fn create(base: Desc, name: &str, opts: &CreateOpts) -> Result<Arc<Store>, LvolError> {
        check_name(name)?;
        let cluster_size = opts.cluster_size;
        if !cluster_size.is_power_of_two() || !(4096..=(1 << 30)).contains(&cluster_size) {
            return Err(LvolError::InvalidParam {
                param: "cluster_size",
                reason: format!("{cluster_size} is not a power of two between 4 KiB and 1 GiB"),
            });
        }
        if opts.max_volumes == 0 || opts.max_volumes > 65536 {
            return Err(LvolError::InvalidParam {
                param: "max_volumes",
                reason: format!("{} is not in 1..=65536", opts.max_volumes),
            });
        }
        let f = FormatOpts { cluster_size, journal_size: opts.journal_size, max_volumes: opts.max_volumes };
        let core = Core::format(base, name, &f)?;
        Ok(Arc::new(Store { core }))
    }

    /// Load the store on `base`.
    pub fn load(base: Desc) -> Result<Arc<Store>, LvolError> {
        Ok(Arc::new(Store { core: Core::load(base)? }))
    }

    /// The engine (for tests and the volume bdevs).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// UUID.
    pub fn uuid(&self) -> bdev::Uuid {
        bdev::Uuid(self.core.uuid)
    }

    /// How long a write that finds the store full waits for freed space still on its way
    /// back (unmapped clusters waiting for their release to be durable and for every channel
    /// to move past IO that may still use them) before it fails with `NoSpace`; as dm-thin's
    /// `no_space_timeout`, 60 s by default. Zero fails such writes at once. Writes that find
    /// no space and none on its way fail at once whatever this says.
    pub fn set_no_space_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.core.no_space_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// The current no-space timeout ([`Store::set_no_space_timeout`]).
    pub fn no_space_timeout(&self) -> Duration {
        Duration::from_millis(self.core.no_space_timeout_ms.load(Ordering::Relaxed))
    }

    /// Description.
    pub fn info(&self) -> StoreInfo {
        let mut md = self.core.lock_md();
        self.core.reclaim(&mut md);
        let l = &self.core.layout;
        let releasing = md.pending_frees().iter().filter(|f| matches!(f, crate::state::Freed::Cluster(_))).count();
        StoreInfo {
            name: self.core.name.clone(),
            uuid: self.uuid(),
            base_bdev: self.core.base.info().name.clone(),
            block_size: l.block_size,
            cluster_size: l.cluster_size,
            granule_size: l.granule_size,
            total_clusters: l.total_clusters,
            free_clusters: l.total_clusters - md.st.inuse.count(),
            releasing_clusters: releasing as u64,
            packed_clusters: md.st.packed.len() as u64,
            journal_size: l.journal_size,
            checkpoints: self.core.checkpoints.load(std::sync::atomic::Ordering::Relaxed),
            journal_txns: self.core.txns.load(std::sync::atomic::Ordering::Relaxed),
            journal_records: self.core.txn_records.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn io(&self) -> Result<SyncIo, LvolError> {
        let ch = self.core.base.channel_with_depth(64)?;
        Ok(SyncIo::new(ch, self.core.base.info().max_io_blocks))
    }

    fn not_found(&self, name: &str) -> LvolError {
        LvolError::VolumeNotFound { lvs: self.core.name.clone(), name: name.to_string() }
    }

    fn desc(&self, name: &str) -> Result<VolDesc, LvolError> {
        let md = self.core.lock_md();
        md.st.by_name(name).map(|v| v.desc.clone()).ok_or_else(|| self.not_found(name))
    }

    fn vol_info(&self, md: &crate::core::Md, d: &VolDesc) -> VolumeInfo {
        let name_of = |id: u32| md.st.vols.get(&id).map(|v| v.desc.name.clone());
        let (sectors, chunks) = md.st.owned_sectors(d.id);
        let g = self.core.layout.granule_size;
        VolumeInfo {
            lvs: self.core.name.clone(),
            name: d.name.clone(),
            id: d.id,
            uuid: bdev::Uuid(d.uuid),
            size_bytes: d.size_blocks * self.core.geo.bs,
            block_size: self.core.layout.block_size,
            thin: d.flags & VOL_THIN != 0,
            snapshot: d.is_snapshot(),
            parent: if d.parent == 0 { None } else { name_of(d.parent) },
            children: md.st.children(d.id).into_iter().filter_map(name_of).collect(),
            origin: if d.is_snapshot() && d.origin != 0 { name_of(d.origin) } else { None },
            allocated_clusters: md.st.owned_clusters(d.id),
            compression_level: d.comp_level,
            compressed_chunks: chunks,
            compressed_logical_bytes: chunks * g,
            compressed_stored_bytes: sectors * SECTOR,
            encrypted: d.enc.is_some(),
            locked: d.enc.is_some() && !md.keys.contains_key(&d.id),
            key_ref: d.enc.map(|k| format!("kcv:{}:{}", hex(&k.nonce), hex(&k.check))),
            xattrs: d.xattrs.clone(),
        }
    }

    /// Every volume (snapshots included), parents first.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let md = self.core.lock_md();
        let mut v: Vec<VolumeInfo> = md.st.vols.values().map(|v| self.vol_info(&md, &v.desc)).collect();
        v.sort_by_key(|x| x.id);
        v
    }

    /// One volume.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, LvolError> {
        let md = self.core.lock_md();
        let v = md.st.by_name(name).ok_or_else(|| self.not_found(name))?;
        Ok(self.vol_info(&md, &v.desc))
    }

    /// An IO channel to a volume (what its bdev's `open_channel` returns).
    pub fn channel(&self, name: &str) -> Result<VolChannel, LvolError> {
        let d = self.desc(name)?;
        Ok(VolChannel::new(self.core.clone(), d.id)?)
    }

    /// Round a byte size to whole granules, in blocks.
    fn size_blocks(&self, bytes: u64) -> Result<u64, LvolError> {
        let g = self.core.layout.granule_size;
        if bytes == 0 {
            return Err(LvolError::InvalidParam { param: "size", reason: "must be larger than 0".into() });
        }
        let max = self.core.layout.total_clusters * self.core.layout.cluster_size * 64;
        if bytes > max {
            return Err(LvolError::InvalidParam {
                param: "size",
                reason: format!("{bytes} bytes is more than 64 times the store's capacity"),
            });
        }
        Ok(bytes.div_ceil(g) * g / self.core.geo.bs)
    }

    fn new_desc(&self, id: u32, name: &str, size_blocks: u64, flags: u32) -> VolDesc {
        VolDesc::new(id, bdev::Uuid::random().0, name, flags, size_blocks)
    }

    fn check_new_name(&self, md: &crate::core::Md, name: &str) -> Result<u32, LvolError> {
        check_name(name)?;
        if md.st.by_name(name).is_some() {
            return Err(LvolError::Duplicate { kind: "volume", name: name.to_string() });
        }
        if md.st.vols.len() >= self.core.layout.max_volumes as usize {
            return Err(LvolError::TooManyVolumes(self.core.name.clone()));
        }
        Ok(md.st.next_id)
    }

    /// Allocate and zero clusters for logical clusters `[from_lc, to_lc)` of a volume of
    /// `size_blocks`; returns the records mapping them (fully valid within the size).
    fn thick_records(&self, id: u32, from_lc: u64, to_lc: u64, size_blocks: u64) -> Result<Vec<Record>, LvolError> {
        let n = to_lc - from_lc;
        if n == 0 {
            return Ok(Vec::new());
        }
        let geo = self.core.geo;
        let runs = {
            let mut md = self.core.lock_md();
            self.core.reclaim(&mut md);
            let free = self.core.layout.total_clusters - md.st.inuse.count();
            md.st.reserve_clusters(n).ok_or(LvolError::NoSpace { lvs: self.core.name.clone(), need: n, free })?
        };
        let zero = (|| {
            let mut io = self.io()?;
            for &(pc, cnt) in &runs {
                let off = self.core.layout.cluster_offset(pc);
                io.write_zeroes(off, cnt as u64 * self.core.layout.cluster_size, self.core.device_zeroes)
                    .map_err(CoreError::from)?;
            }
            Ok::<(), LvolError>(())
        })();
        if let Err(e) = zero {
            self.core.lock_md().st.unreserve_clusters(&runs);
            return Err(e);
        }
        let gpc = geo.gpc;
        let full = if gpc == 64 { u64::MAX } else { (1u64 << gpc) - 1 };
        let last_g = (size_blocks / geo.gb) % gpc; // granules used in the last cluster (0 = all)
        let last_mask = if last_g == 0 { full } else { (1u64 << last_g) - 1 };
        let mut recs = Vec::new();
        let mut lc = from_lc;
        let mut body: Vec<(u64, u32)> = Vec::new();
        let mut last: Option<(u64, u32)> = None;
        for &(pc, cnt) in &runs {
            for c in pc..pc + cnt as u64 {
                if lc + 1 == to_lc {
                    last = Some((c, 1));
                } else {
                    match body.last_mut() {
                        Some((s, k)) if *s + *k as u64 == c => *k += 1,
                        _ => body.push((c, 1)),
                    }
                }
                lc += 1;
            }
        }
        if !body.is_empty() {
            recs.push(Record::AllocRuns { id, first_lc: from_lc, flags: 0, valid: full, runs: body });
        }
        if let Some(r) = last {
            recs.push(Record::AllocRuns { id, first_lc: to_lc - 1, flags: 0, valid: last_mask, runs: vec![r] });
        }
        Ok(recs)
    }

    fn commit(&self, recs: &[Record]) -> Result<u64, LvolError> {
        Ok(self.core.commit_sync(recs)?)
    }

    /// Create a volume of `size_bytes` (rounded up to whole granules), thin or thick.
    pub fn create_volume(&self, name: &str, size_bytes: u64, thin: bool) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let size = self.size_blocks(size_bytes)?;
        let id = self.check_new_name(&self.core.lock_md(), name)?;
        let flags = if thin { VOL_THIN } else { 0 };
        let mut recs = vec![Record::CreateVolume(self.new_desc(id, name, size, flags))];
        if !thin {
            let n = size.div_ceil(self.core.geo.cb);
            recs.extend(self.thick_records(id, 0, n, size)?);
        }
        if let Err(e) = self.commit(&recs) {
            if let Some(Record::AllocRuns { .. }) = recs.get(1) {
                let mut md = self.core.lock_md();
                for r in &recs[1..] {
                    if let Record::AllocRuns { runs, .. } = r {
                        md.st.unreserve_clusters(runs);
                    }
                }
            }
            return Err(e);
        }
        self.volume(name)
    }

    /// Destroy a volume. A snapshot with dependents is refused (see [`Store::destroy_snapshot`]).
    pub fn destroy_volume(&self, name: &str) -> Result<(), LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let d = self.desc(name)?;
        let children = self.children_names(d.id);
        if !children.is_empty() {
            return Err(LvolError::HasDependents { name: name.to_string(), children });
        }
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        self.commit(&[Record::DeleteVolume { id: d.id }])?;
        let mut md = self.core.lock_md();
        md.keys.remove(&d.id);
        md.rebuild_views();
        Ok(())
    }

    fn children_names(&self, id: u32) -> Vec<String> {
        let md = self.core.lock_md();
        md.st.children(id).into_iter().filter_map(|c| md.st.vols.get(&c).map(|v| v.desc.name.clone())).collect()
    }

    /// Resize a volume (grow or shrink; shrinking frees clusters past the new end).
    pub fn resize(&self, name: &str, size_bytes: u64) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let d = self.desc(name)?;
        if d.is_snapshot() {
            return Err(LvolError::IsSnapshot(name.to_string()));
        }
        let size = self.size_blocks(size_bytes)?;
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        let mut recs = vec![Record::Resize { id: d.id, size_blocks: size }];
        if d.flags & VOL_THIN == 0 && size > d.size_blocks {
            let cb = self.core.geo.cb;
            recs.extend(self.thick_records(d.id, d.size_blocks.div_ceil(cb), size.div_ceil(cb), size)?);
        }
        self.commit(&recs)?;
        drop(_f);
        self.volume(name)
    }

    /// Rename a volume.
    pub fn rename(&self, name: &str, new_name: &str) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let d = self.desc(name)?;
        check_name(new_name)?;
        if self.core.lock_md().st.by_name(new_name).is_some() {
            return Err(LvolError::Duplicate { kind: "volume", name: new_name.to_string() });
        }
        self.commit(&[Record::Rename { id: d.id, name: new_name.to_string() }])?;
        self.volume(new_name)
    }

    /// Set (`Some`) or remove (`None`) an extended attribute.
    pub fn set_xattr(&self, name: &str, key: &str, value: Option<&[u8]>) -> Result<(), LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let d = self.desc(name)?;
        check_name(key)?;
        let mut x = d.xattrs.clone();
        x.retain(|(k, _)| k != key);
        if let Some(v) = value {
            x.push((key.to_string(), v.to_vec()));
        }
        let total: usize = x.iter().map(|(k, v)| k.len() + v.len()).sum();
        if x.len() > crate::format::MAX_XATTRS || total > crate::format::MAX_XATTR_BYTES {
            return Err(LvolError::InvalidParam {
                param: "xattr",
                reason: format!(
                    "at most {} attributes of {} bytes in all",
                    crate::format::MAX_XATTRS,
                    crate::format::MAX_XATTR_BYTES
                ),
            });
        }
        self.commit(&[Record::SetXattr { id: d.id, key: key.to_string(), value: value.map(|v| v.to_vec()) }])?;
        Ok(())
    }

    /// Snapshot a volume: O(1), the volume keeps serving IO as a clone of the new snapshot.
    pub fn snapshot(&self, vol: &str, snap_name: &str) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let d = self.desc(vol)?;
        if d.is_snapshot() {
            return Err(LvolError::IsSnapshot(vol.to_string()));
        }
        let id = self.check_new_name(&self.core.lock_md(), snap_name)?;
        let snap = self.new_desc(id, snap_name, d.size_blocks, 0);
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        let seq = {
            let mut md = self.core.lock_md();
            let seq = self.core.commit(&mut md, &[Record::Snapshot { origin: d.id, snap }])?;
            if let Some(k) = md.keys.get(&d.id).cloned() {
                md.keys.insert(id, k);
                md.rebuild_views();
            }
            seq
        };
        self.core.wait_durable(seq)?;
        drop(_f);
        self.volume(snap_name)
    }

    /// A writable clone of a snapshot.
    pub fn clone_volume(&self, snap: &str, clone_name: &str) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.desc(snap)?;
        if !s.is_snapshot() {
            return Err(LvolError::NotSnapshot(snap.to_string()));
        }
        let id = self.check_new_name(&self.core.lock_md(), clone_name)?;
        let mut d = self.new_desc(id, clone_name, s.size_blocks, VOL_THIN);
        d.parent = s.id;
        d.parent_limit = s.size_blocks;
        d.comp_level = s.comp_level;
        d.enc = s.enc;
        let seq = {
            let mut md = self.core.lock_md();
            let seq = self.core.commit(&mut md, &[Record::CreateVolume(d)])?;
            if let Some(k) = md.keys.get(&s.id).cloned() {
                md.keys.insert(id, k);
                md.rebuild_views();
            }
            seq
        };
        self.core.wait_durable(seq)?;
        self.volume(clone_name)
    }

    /// Revert the snapshot's origin volume to the snapshot's contents (its own data is dropped).
    pub fn restore(&self, snap: &str) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.desc(snap)?;
        if !s.is_snapshot() {
            return Err(LvolError::NotSnapshot(snap.to_string()));
        }
        let origin = {
            let md = self.core.lock_md();
            md.st.vols.get(&s.origin).filter(|v| !v.desc.is_snapshot()).map(|v| v.desc.name.clone())
        };
        let origin = origin.ok_or_else(|| LvolError::NoOrigin(snap.to_string()))?;
        let o = self.desc(&origin)?;
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        self.commit(&[Record::Restore { id: o.id, snap: s.id }])?;
        drop(_f);
        self.volume(&origin)
    }

    /// Destroy a snapshot: without dependents it is deleted; with exactly one dependent it is
    /// merged into it (the dependent takes over what it still reads from the snapshot); with
    /// more it is refused.
    pub fn destroy_snapshot(&self, snap: &str) -> Result<(), LvolError> {
        let s = self.desc(snap)?;
        if !s.is_snapshot() {
            return Err(LvolError::NotSnapshot(snap.to_string()));
        }
        let children = self.children_names(s.id);
        match children.len() {
            0 => self.destroy_volume(snap),
            1 => self.merge_into_child(&s, &children[0]),
            _ => Err(LvolError::HasDependents { name: snap.to_string(), children }),
        }
    }

    fn merge_into_child(&self, s: &VolDesc, child: &str) -> Result<(), LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.desc(child)?;
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        let (sv, cv) = {
            let md = self.core.lock_md();
            let get = |id| md.views.get(&id).cloned().ok_or_else(|| self.not_found(&s.name));
            (get(s.id)?, get(c.id)?)
        };
        if s.enc.is_some() && sv.key.is_none() || c.enc.is_some() && cv.key.is_none() {
            return Err(LvolError::Locked(if sv.key.is_none() { s.name.clone() } else { c.name.clone() }));
        }
        let compatible = s.enc == c.enc;
        let geo = self.core.geo;
        let limit_g = c.parent_limit / geo.gb;
        let mut io = self.io()?;
        let mut last = 0;
        for g in 0..limit_g.min(s.size_blocks / geo.gb) {
            if !owns(&self.core, &sv, g) || owns(&self.core, &cv, g) {
                continue;
            }
            let lc = g / geo.gpc;
            let moves = compatible
                && if sv.ext.chunk(g) != 0 {
                    true
                } else {
                    cv.ext.ent(lc) == 0
                        && cv.ext.valid(lc) == 0
                        && (lc + 1) * geo.gpc <= limit_g
                        && (0..geo.gpc).all(|b| cv.ext.chunk(lc * geo.gpc + b) == 0)
                };
            if moves {
                continue;
            }
            let data = read_visible(&self.core, &mut io, &sv, g * geo.gb, geo.gb)?;
            last = write_granule(&self.core, &mut io, c.id, g, &data)?;
        }
        self.core.wait_durable(last)?;
        self.commit(&[Record::MergeDelete { snap: s.id, child: c.id }])?;
        let mut md = self.core.lock_md();
        md.keys.remove(&s.id);
        md.rebuild_views();
        Ok(())
    }

    /// Allocate every cluster of a volume (copying what it reads from its parents) and cut it
    /// loose from its parent.
    pub fn inflate(&self, name: &str) -> Result<VolumeInfo, LvolError> {
        self.copy_up(name, true)
    }

    /// Copy what a volume reads from its parent snapshot into its own clusters and make the
    /// parent's parent its parent.
    pub fn decouple_parent(&self, name: &str) -> Result<VolumeInfo, LvolError> {
        self.copy_up(name, false)
    }

    fn copy_up(&self, name: &str, all: bool) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let d = self.desc(name)?;
        if d.is_snapshot() {
            return Err(LvolError::IsSnapshot(name.to_string()));
        }
        if d.parent == 0 && !all {
            return Err(LvolError::NoParent(name.to_string()));
        }
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        let v = self.core.lock_md().views.get(&d.id).cloned().ok_or_else(|| self.not_found(name))?;
        let geo = self.core.geo;
        let mut io = self.io()?;
        let mut last = 0;
        let ngran = if all { d.size_blocks / geo.gb } else { d.parent_limit / geo.gb };
        for g in 0..ngran {
            if owns(&self.core, &v, g) {
                continue;
            }
            if !all {
                // Only what the direct parent itself holds.
                let Some(p) = v.parent.as_deref() else { break };
                if !owns(&self.core, p, g) {
                    continue;
                }
            }
            let data = read_visible(&self.core, &mut io, &v, g * geo.gb, geo.gb)?;
            last = write_granule(&self.core, &mut io, d.id, g, &data)?;
        }
        self.core.wait_durable(last)?;
        let (parent, limit) = if all {
            (0, 0)
        } else {
            let md = self.core.lock_md();
            let p = md.st.vols.get(&d.parent).map(|p| (p.desc.parent, p.desc.parent_limit)).unwrap_or((0, 0));
            (p.0, d.parent_limit.min(p.1))
        };
        self.commit(&[Record::SetParent { id: d.id, parent, parent_limit: limit }])?;
        drop(_f);
        self.volume(name)
    }

    /// Compress new writes at `level` (1..=9; lz4_flex has a single level, every level selects
    /// it), or stop compressing with 0. Data already stored stays as it is and reads back.
    pub fn set_compression(&self, name: &str, level: u8) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        if level > 9 {
            return Err(LvolError::InvalidParam {
                param: "compression level",
                reason: format!("{level} is not in 0..=9"),
            });
        }
        let d = self.desc(name)?;
        if d.is_snapshot() {
            return Err(LvolError::IsSnapshot(name.to_string()));
        }
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        self.commit(&[Record::SetCodec { id: d.id, comp_level: level, enc: d.enc }])?;
        drop(_f);
        self.volume(name)
    }

    /// Load a key for every locked volume whose key reference it matches. Returns their names.
    pub fn unlock(&self, key: &[u8]) -> Result<Vec<String>, LvolError> {
        let c = Arc::new(Cipher::new(key).ok_or(LvolError::BadKey(crate::codec::KEY_LEN))?);
        let mut md = self.core.lock_md();
        let ids: Vec<(u32, String)> = md
            .st
            .vols
            .values()
            .filter(|v| v.desc.enc.is_some_and(|r| c.matches(&r)) && !md.keys.contains_key(&v.desc.id))
            .map(|v| (v.desc.id, v.desc.name.clone()))
            .collect();
        for (id, _) in &ids {
            md.keys.insert(*id, c.clone());
        }
        if !ids.is_empty() {
            md.rebuild_views();
            self.core.gen.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(ids.into_iter().map(|x| x.1).collect())
    }

    /// Encrypt a volume with AES-XTS-256 under `key` (64 bytes), converting the data it owns;
    /// on an encrypted, locked volume, unlock it (and finish a conversion a crash interrupted).
    /// The key is kept in memory only; the store records a key check value.
    pub fn enable_encryption(&self, name: &str, key: &[u8]) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let c = Arc::new(Cipher::new(key).ok_or(LvolError::BadKey(crate::codec::KEY_LEN))?);
        let d = self.desc(name)?;
        let kref: KeyRef = match d.enc {
            Some(r) if !c.matches(&r) => return Err(LvolError::WrongKey(name.to_string())),
            Some(r) => r,
            None => c.key_ref(),
        };
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        {
            let mut md = self.core.lock_md();
            md.keys.insert(d.id, c.clone());
            md.rebuild_views();
        }
        if d.enc.is_none() {
            self.commit(&[Record::SetCodec { id: d.id, comp_level: d.comp_level, enc: Some(kref) }])?;
        }
        self.convert(d.id, true)?;
        drop(_f);
        self.volume(name)
    }

    /// Decrypt a volume's data and stop encrypting (the key must be loaded).
    pub fn disable_encryption(&self, name: &str) -> Result<VolumeInfo, LvolError> {
        let _c = self.core.ctl.lock().unwrap_or_else(|e| e.into_inner());
        let d = self.desc(name)?;
        if d.enc.is_none() {
            return self.volume(name);
        }
        if !self.core.lock_md().keys.contains_key(&d.id) {
            return Err(LvolError::Locked(name.to_string()));
        }
        let _f = self.core.freeze(FREEZE_TIMEOUT)?;
        self.convert(d.id, false)?;
        self.commit(&[Record::SetCodec { id: d.id, comp_level: d.comp_level, enc: None }])?;
        let mut md = self.core.lock_md();
        md.keys.remove(&d.id);
        md.rebuild_views();
        Ok(()).and_then(|_| {
            drop(md);
            drop(_f);
            self.volume(name)
        })
    }

    /// Rewrite every cluster and chunk the volume owns so its encryption matches `enc`.
    fn convert(&self, id: u32, enc: bool) -> Result<(), LvolError> {
        let view = self.core.lock_md().views.get(&id).cloned().ok_or_else(|| self.not_found("?"))?;
        let key = view.key.clone();
        let geo = self.core.geo;
        let mut io = self.io()?;
        for lc in 0..view.ext.nclusters() {
            let e = view.ext.ent(lc);
            let Some(pc) = ent_pc(e) else { continue };
            if (e & ENT_ENC != 0) == enc {
                continue;
            }
            let k = key.as_deref().ok_or_else(|| LvolError::Locked(format!("volume {id}")))?;
            let off = self.core.layout.cluster_offset(pc);
            let valid = view.ext.valid(lc);
            let gbytes = geo.gb * geo.bs;
            // Only valid granules carry data; the others are never read.
            let mut data = vec![0u8; geo.cluster_size as usize];
            for b in 0..geo.gpc {
                if valid & (1 << b) == 0 {
                    continue;
                }
                let r = (b * gbytes) as usize..((b + 1) * gbytes) as usize;
                let mut d = io.read(off + b * gbytes, gbytes).map_err(CoreError::from)?;
                let first = (lc * geo.cb + b * geo.gb) as u128;
                if enc {
                    k.encrypt(&mut d, geo.bs as usize, first);
                } else {
                    k.decrypt(&mut d, geo.bs as usize, first);
                }
                data[r].copy_from_slice(&d);
            }
            let runs = {
                let mut md = self.core.lock_md();
                let free = self.core.layout.total_clusters - md.st.inuse.count();
                md.st.reserve_clusters(1).ok_or(LvolError::NoSpace { lvs: self.core.name.clone(), need: 1, free })?
            };
            let npc = runs[0].0;
            for b in 0..geo.gpc {
                if valid & (1 << b) != 0 {
                    let r = (b * gbytes) as usize..((b + 1) * gbytes) as usize;
                    io.write(self.core.layout.cluster_offset(npc) + b * gbytes, &data[r]).map_err(CoreError::from)?;
                }
            }
            let rec =
                Record::Remap { id, lc, pc: npc, flags: if enc { ENT_ENC } else { 0 }, valid: view.ext.valid(lc) };
            if let Err(e) = self.commit(&[rec]) {
                self.core.lock_md().st.unreserve_clusters(&runs);
                return Err(e);
            }
            // The old copy is released; wipe it so no plaintext (or stale ciphertext) remains.
            io.write_zeroes(off, geo.cluster_size, self.core.device_zeroes).map_err(CoreError::from)?;
        }
        for g in 0..view.ext.chunks.len() as u64 {
            let Some(loc) = ChunkLoc::decode(view.ext.chunk(g)) else { continue };
            if loc.enc == enc {
                continue;
            }
            let k = key.as_deref().ok_or_else(|| LvolError::Locked(format!("volume {id}")))?;
            let mut sect =
                io.read(self.core.layout.sector_offset(loc.sector), loc.nsect * SECTOR).map_err(CoreError::from)?;
            if enc {
                k.encrypt(&mut sect, SECTOR as usize, crate::codec::chunk_tweak(g, 0));
            } else {
                k.decrypt(&mut sect, SECTOR as usize, crate::codec::chunk_tweak(g, 0));
            }
            let sector = self.core.lock_md().st.reserve_sectors(loc.nsect);
            let Some(sector) = sector else {
                // No packed space: move the granule to a regular cluster instead.
                let plain = read_chunk(&self.core, &mut io, key.as_deref(), g, loc)?;
                let seq = write_granule(&self.core, &mut io, id, g, &plain)?;
                self.core.wait_durable(seq)?;
                continue;
            };
            io.write(self.core.layout.sector_offset(sector), &sect).map_err(CoreError::from)?;
            let nl = ChunkLoc { sector, nsect: loc.nsect, raw: loc.raw, enc };
            self.commit(&[Record::ChunkWrite { id, chunk: g, entry: nl.encode() }])?;
            io.write_zeroes(self.core.layout.sector_offset(loc.sector), loc.nsect * SECTOR, self.core.device_zeroes)
                .map_err(CoreError::from)?;
        }
        Ok(())
    }

    /// Whether a volume and every volume it reads from can be read (no locked key).
    pub fn readable(&self, name: &str) -> bool {
        let md = self.core.lock_md();
        md.st.by_name(name).and_then(|v| md.views.get(&v.desc.id)).is_some_and(|v| crate::view::chain_unlocked(v))
    }

    /// Stop the store: write a final checkpoint (when `clean`) and stop its metadata thread.
    pub fn close(&self, clean: bool) -> Result<(), LvolError> {
        Ok(self.core.close(clean)?)
    }

    /// Erase the store's super blocks (after closing it) so it is not found again.
    pub fn wipe(&self) -> Result<(), LvolError> {
        self.core.close(false)?;
        let mut io = self.io()?;
        io.write(0, &vec![0u8; 2 * crate::format::MD_BLOCK as usize]).map_err(CoreError::from)?;
        io.flush().map_err(CoreError::from)?;
        Ok(())
    }
}
