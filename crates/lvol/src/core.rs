//! The running store: metadata state under one mutex, the journal and checkpoint writer (a
//! metadata thread per store with its own base channel), durability waits, and the freeze
//! gate that control operations use to quiesce IO.
//!
//! Commit protocol: a record is applied in memory and queued under the mutex, in groups that
//! are always journaled together. The metadata thread writes queued groups as one transaction:
//! `flush` (only when a record points at data written just before it: valid bits, chunks,
//! remaps, pre-zeroed thick clusters; that data becomes durable first), `write transaction`,
//! `flush`, then publishes `durable`. Space a record frees is reused only once the record is
//! durable. When half the journal is used, the thread writes a checkpoint of the whole state to
//! the inactive checkpoint area, flushes, and then points the super block at it.

use crate::codec::Cipher;
use crate::format::{
    round_up, CkptHeader, FormatError, Layout, Reader, SuperBlock, TxnHeader, Writer, CKPT_MAGIC, MD_BLOCK, SB_MAGIC,
    TXN_CRC_AT, TXN_MAGIC, VERSION,
};
use crate::record::Record;
use crate::state::{ApplyError, Freed, MdState};
use crate::sync_io::{SyncIo, SyncIoError};
use crate::view::{build_views, Geo, View};
use bdev::Desc;
use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Errors of the metadata engine.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Base device IO failed.
    #[error("metadata io")]
    Io(#[from] SyncIoError),
    /// On-disk bytes are invalid.
    #[error("metadata is corrupt")]
    Format(#[from] FormatError),
    /// A record could not be applied.
    #[error("metadata record")]
    Apply(#[from] ApplyError),
    /// No valid super block.
    #[error("no lvol store on this bdev ({0})")]
    NotAStore(String),
    /// The checkpoint does not fit its area (should not happen: areas are sized for the worst case).
    #[error("checkpoint of {len} bytes exceeds its area of {cap} bytes")]
    CheckpointTooLarge {
        /// Bytes needed.
        len: u64,
        /// Capacity.
        cap: u64,
    },
    /// The metadata writer failed earlier; the store accepts no more changes.
    #[error("the store's metadata writer failed; reload the store")]
    Failed,
    /// IO did not drain for a freeze.
    #[error("IO on the store's volumes did not drain within {0:?} (is the calling thread holding a channel with IO in flight?)")]
    Busy(Duration),
    /// Buffer or channel setup.
    #[error("{0}")]
    Setup(String),
}

/// Granule claims the map holds without growing (more concurrent first writes allocate once).
const CLAIMS: usize = 4096;

/// Per-channel count of IOs in progress, read by freezes, and the channel's reuse epoch.
#[derive(Default)]
pub struct Gate {
    /// IOs admitted and not completed.
    pub busy: AtomicU64,
    /// While `busy > 0`: no IO of the channel in progress was admitted before this epoch of
    /// [`Core::epoch`] (published by the channel at the end of each submit and poll; never
    /// larger than the epoch of an IO in progress).
    pub oldest: AtomicU64,
}

struct Pending {
    seq: u64,
    bytes: Vec<u8>,
    group_end: bool,
    /// The record points at data written just before it: flush before journaling it.
    data_dep: bool,
}

/// Whether a record makes data written before it reachable (so that data must be durable
/// before the record is).
fn data_dependent(r: &Record) -> bool {
    match r {
        Record::SetValid { .. } | Record::ChunkWrite { .. } | Record::Remap { .. } => true,
        Record::AllocRuns { valid, .. } => *valid != 0,
        _ => false,
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct JournalPos {
    head: u64,
    tail: u64,
    used: u64,
}

/// Everything under the metadata mutex.
pub struct Md {
    /// The state.
    pub st: MdState,
    pending: Vec<Pending>,
    /// Space freed by records not yet durable: (record sequence number, space).
    quarantine: Vec<(u64, Freed)>,
    /// Space freed by durable records, waiting for IO that may still use it: (epoch, space).
    grace: Vec<(u64, Freed)>,
    /// Granules being written by a first write or a compressed rewrite, by (volume id,
    /// logical cluster): one bit per granule. Another write of those granules (or a release)
    /// waits until the claim is dropped, when the writer's record is applied.
    pub claims: HashMap<(u32, u64), u64>,
    /// IO views by volume id.
    pub views: HashMap<u32, Arc<View>>,
    /// Loaded keys by volume id.
    pub keys: HashMap<u32, Arc<Cipher>>,
    jr: JournalPos,
    sb: SuperBlock,
}

impl Md {
    /// Rebuild IO views (after a structural change or a key change).
    pub fn rebuild_views(&mut self) {
        self.views = build_views(&self.st, &self.keys);
    }

    /// Space freed by records and not yet reusable: waiting for its record to be durable, or
    /// for IO that looked up the old mapping to finish.
    pub fn pending_frees(&self) -> Vec<Freed> {
        self.quarantine.iter().chain(self.grace.iter()).map(|x| x.1).collect()
    }

    /// Whether freed space is on its way back to the allocator (an allocation that fails now
    /// may succeed later).
    pub fn space_pending(&self) -> bool {
        !self.quarantine.is_empty() || !self.grace.is_empty()
    }
}

/// A running store's shared core.
pub struct Core {
    /// Store name.
    pub name: String,
    /// Store UUID.
    pub uuid: [u8; 16],
    /// Geometry.
    pub layout: Layout,
    /// Geometry in blocks.
    pub geo: Geo,
    /// Metadata.
    pub md: Mutex<Md>,
    /// Bumped at each change of views; channels refresh when it moves.
    pub gen: AtomicU64,
    /// Reuse epoch: bumped when freed space becomes durable. Every IO is stamped with the
    /// epoch at its admission; space freed at epoch `e` is reused once no IO admitted before
    /// `e` is in progress (see [`Core::reclaim`]).
    pub epoch: AtomicU64,
    /// Bumped whenever a granule claim is dropped ([`Md::claims`]): writes waiting for a
    /// claimed granule retry when it moves.
    pub claim_gen: AtomicU64,
    /// New IO waits while set.
    pub frozen: AtomicBool,
    gates: Mutex<Vec<Weak<Gate>>>,
    /// Last durable record.
    pub durable: AtomicU64,
    /// Last applied record (durable or not): a flush waits until it is durable, since IO
    /// completed before the flush may rely on it (a write into a granule another write just
    /// made valid).
    pub applied: AtomicU64,
    kick: Mutex<bool>,
    kick_cv: Condvar,
    dur_lock: Mutex<()>,
    dur_cv: Condvar,
    /// The metadata writer failed.
    pub failed: AtomicBool,
    /// The base bdev (claimed).
    pub base: Desc,
    /// Serializes control operations.
    pub ctl: Mutex<()>,
    shutdown: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    jwriter: Mutex<()>,
    /// The base zeroes ranges itself (write-zeroes supported).
    pub device_zeroes: bool,
    /// Checkpoints written since load (for tests and statistics).
    pub checkpoints: AtomicU64,
    /// Journal transactions written since load.
    pub txns: AtomicU64,
    /// Records journaled since load.
    pub txn_records: AtomicU64,
    /// How long a write that found the store full waits for freed space still on its way
    /// back (journal durability, channels moving past its reuse epoch) before it fails with
    /// `NoSpace`, in milliseconds (as dm-thin's `no_space_timeout`).
    pub no_space_timeout_ms: AtomicU64,
}

/// Default of [`Core::no_space_timeout_ms`]: dm-thin's default `no_space_timeout`.
pub const NO_SPACE_TIMEOUT_MS: u64 = 60_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Options of a new store.
#[derive(Clone, Debug)]
pub struct FormatOpts {
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Journal bytes (0: default, proportional to the store).
    pub journal_size: u64,
    /// Most volumes.
    pub max_volumes: u32,
}

fn open_io(base: &Desc) -> Result<SyncIo, CoreError> {
    let ch = base.channel_with_depth(64).map_err(|e| CoreError::Setup(format!("base channel: {e}")))?;
    Ok(SyncIo::new(ch, base.info().max_io_blocks))
}

fn encode_ckpt(st: &MdState, uuid: &[u8; 16]) -> Vec<u8> {
    let mut w = Writer::default();
    let recs = st.checkpoint_records();
    for r in &recs {
        r.encode(&mut w);
    }
    let mut h = CkptHeader::new_zeroed();
    h.magic = CKPT_MAGIC;
    h.version = U32::new(VERSION);
    h.nrecords = U32::new(recs.len() as u32);
    h.store_uuid = *uuid;
    h.seq = U64::new(st.seq);
    h.body_len = U64::new(w.buf.len() as u64);
    h.next_id = U32::new(st.next_id);
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&w.buf);
    out.resize(round_up(out.len() as u64, MD_BLOCK) as usize, 0);
    out
}

fn encode_txn(uuid: &[u8; 16], first_seq: u64, nrecords: u32, body: &[u8]) -> Vec<u8> {
    let mut h = TxnHeader::new_zeroed();
    h.magic = TXN_MAGIC;
    h.version = U16::new(VERSION as u16);
    h.store_uuid = *uuid;
    h.first_seq = U64::new(first_seq);
    h.nrecords = U32::new(nrecords);
    h.body_len = U32::new(body.len() as u32);
    let total = round_up((core::mem::size_of::<TxnHeader>() + body.len()) as u64, MD_BLOCK);
    h.total_len = U32::new(total as u32);
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(body);
    let crc = crate::format::crc_with_hole(&out, TXN_CRC_AT);
    out[TXN_CRC_AT..TXN_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(total as usize, 0);
    out
}

/// A parsed, verified transaction.
struct Txn {
    first_seq: u64,
    total_len: u64,
    records: Vec<Record>,
}

fn read_txn(io: &mut SyncIo, l: &Layout, uuid: &[u8; 16], pos: u64, expect: u64) -> Option<Txn> {
    if pos + MD_BLOCK > l.journal_size {
        return None;
    }
    let first = io.read(l.journal_offset + pos, MD_BLOCK).ok()?;
    let h = TxnHeader::read_from_bytes(first.get(..64)?).ok()?;
    if h.magic != TXN_MAGIC || h.version.get() as u32 != VERSION || &h.store_uuid != uuid {
        return None;
    }
    let total = h.total_len.get() as u64;
    let body_len = h.body_len.get() as u64;
    if h.first_seq.get() != expect
        || !total.is_multiple_of(MD_BLOCK)
        || total < MD_BLOCK
        || pos + total > l.journal_size
        || 64 + body_len > total
    {
        return None;
    }
    let all = if total > MD_BLOCK {
        let mut a = first;
        a.extend_from_slice(&io.read(l.journal_offset + pos + MD_BLOCK, total - MD_BLOCK).ok()?);
        a
    } else {
        first
    };
    let signed = all.get(..(64 + body_len) as usize)?;
    if crate::format::crc_with_hole(signed, TXN_CRC_AT) != h.crc.get() {
        return None;
    }
    let mut r = Reader::new(signed.get(64..)?, "journal transaction");
    // Every record takes at least its header: a count the body cannot hold is damage (and
    // must not size an allocation).
    let n = h.nrecords.get() as usize;
    if n > r.remaining() / crate::record::RECORD_HEADER_BYTES {
        return None;
    }
    let mut records = Vec::with_capacity(n);
    for _ in 0..h.nrecords.get() {
        records.push(Record::decode(&mut r).ok()?);
    }
    (r.remaining() == 0).then_some(Txn { first_seq: expect, total_len: total, records })
}

impl Core {
    /// Write a new, empty store on `base` and start it.
    pub fn format(base: Desc, name: &str, opts: &FormatOpts) -> Result<Arc<Core>, CoreError> {
        let info = base.info().clone();
        let bs = info.block_size;
        if bs > MD_BLOCK as u32 {
            return Err(CoreError::Setup(format!("block size {bs} is larger than {MD_BLOCK}")));
        }
        let layout = Layout::compute(info.size_bytes(), bs, opts.cluster_size, opts.journal_size, opts.max_volumes)
            .ok_or_else(|| CoreError::Setup(format!("bdev of {} bytes is too small for a store", info.size_bytes())))?;
        let uuid = bdev::Uuid::random().0;
        let st = MdState::new(layout);
        let ckpt = encode_ckpt(&st, &uuid);
        let mut sb = SuperBlock::new_zeroed();
        sb.magic = SB_MAGIC;
        sb.version = U32::new(VERSION);
        sb.generation = U64::new(1);
        sb.uuid = uuid;
        let nb = name.as_bytes();
        sb.name_len = U16::new(nb.len().min(63) as u16);
        sb.name[..nb.len().min(63)].copy_from_slice(&nb[..nb.len().min(63)]);
        sb.block_size = U32::new(bs);
        sb.granule_size = U32::new(layout.granule_size as u32);
        sb.cluster_size = U64::new(layout.cluster_size);
        sb.total_clusters = U64::new(layout.total_clusters);
        sb.base_blocks = U64::new(info.num_blocks);
        sb.data_offset = U64::new(layout.data_offset);
        sb.journal_offset = U64::new(layout.journal_offset);
        sb.journal_size = U64::new(layout.journal_size);
        sb.ckpt_offset = [U64::new(layout.ckpt_offset[0]), U64::new(layout.ckpt_offset[1])];
        sb.ckpt_capacity = U64::new(layout.ckpt_capacity);
        sb.active_ckpt = U32::new(0);
        sb.ckpt_crc = U32::new(crc32c::crc32c(&ckpt));
        sb.ckpt_len = U64::new(ckpt.len() as u64);
        sb.ckpt_seq = U64::new(0);
        sb.journal_tail = U64::new(0);
        sb.max_volumes = U32::new(layout.max_volumes);
        sb.packed_limit = U64::new(layout.packed_limit);
        let mut io = open_io(&base)?;
        io.write(layout.ckpt_offset[0], &ckpt)?;
        io.write(layout.journal_offset, &vec![0u8; MD_BLOCK as usize])?;
        io.flush()?;
        io.write(MD_BLOCK, &vec![0u8; MD_BLOCK as usize])?;
        io.write(0, &sb.to_block())?;
        io.flush()?;
        drop(io);
        Ok(Core::start(base, name.to_string(), uuid, st, sb, JournalPos::default()))
    }

    /// Read the super blocks of `base`: the valid one with the highest generation.
    pub fn read_super(io: &mut SyncIo) -> Result<SuperBlock, CoreError> {
        let b = io.read(0, 2 * MD_BLOCK)?;
        let a = SuperBlock::parse(&b[..MD_BLOCK as usize]);
        let c = SuperBlock::parse(&b[MD_BLOCK as usize..]);
        match (a, c) {
            (Ok(x), Ok(y)) => Ok(if y.generation.get() > x.generation.get() { y } else { x }),
            (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
            (Err(e), Err(_)) => Err(CoreError::NotAStore(e.to_string())),
        }
    }

    /// Load the store on `base`: checkpoint, then journal replay; start it.
    pub fn load(base: Desc) -> Result<Arc<Core>, CoreError> {
        let mut io = open_io(&base)?;
        let sb = Core::read_super(&mut io)?;
        let layout = Layout::from_super(&sb, base.info().size_bytes())?;
        if layout.block_size != base.info().block_size {
            return Err(CoreError::Setup(format!(
                "store was made with {} byte blocks, bdev has {}",
                layout.block_size,
                base.info().block_size
            )));
        }
        let name = sb.name()?;
        let uuid = sb.uuid;
        // Checkpoint.
        let off = layout.ckpt_offset[sb.active_ckpt.get() as usize % 2];
        let len = sb.ckpt_len.get();
        if len < MD_BLOCK || len % MD_BLOCK != 0 {
            return Err(FormatError::BadValue { what: "checkpoint length", value: len }.into());
        }
        let ck = io.read(off, len)?;
        let computed = crc32c::crc32c(&ck);
        if computed != sb.ckpt_crc.get() {
            return Err(FormatError::BadCrc { what: "checkpoint", stored: sb.ckpt_crc.get(), computed }.into());
        }
        let h = CkptHeader::read_from_bytes(&ck[..core::mem::size_of::<CkptHeader>()])
            .map_err(|_| FormatError::Truncated { what: "checkpoint", at: 0, need: 72 })?;
        if h.magic != CKPT_MAGIC || h.store_uuid != uuid || h.seq.get() != sb.ckpt_seq.get() {
            return Err(FormatError::BadMagic("checkpoint").into());
        }
        let body_end = (core::mem::size_of::<CkptHeader>() as u64).checked_add(h.body_len.get());
        let body = body_end
            .and_then(|e| ck.get(core::mem::size_of::<CkptHeader>()..e as usize))
            .ok_or(FormatError::Truncated { what: "checkpoint body", at: 72, need: h.body_len.get() as usize })?;
        let mut st = MdState::new(layout);
        let mut r = Reader::new(body, "checkpoint");
        for _ in 0..h.nrecords.get() {
            let rec = Record::decode(&mut r)?;
            st.apply(&rec)?;
        }
        st.next_id = st.next_id.max(h.next_id.get());
        st.seq = h.seq.get();
        // Journal replay.
        let mut jr = JournalPos { head: sb.journal_tail.get(), tail: sb.journal_tail.get(), used: 0 };
        loop {
            let expect = st.seq + 1;
            let (txn, skipped) = match read_txn(&mut io, &layout, &uuid, jr.head, expect) {
                Some(t) => (t, 0),
                None if jr.head != 0 => match read_txn(&mut io, &layout, &uuid, 0, expect) {
                    Some(t) => (t, layout.journal_size - jr.head),
                    None => break,
                },
                None => break,
            };
            if jr.used + skipped + txn.total_len > layout.journal_size {
                break;
            }
            if skipped > 0 {
                jr.head = 0;
            }
            for (i, rec) in txn.records.iter().enumerate() {
                let fx = st.apply(rec)?;
                for f in fx.freed {
                    st.release(f);
                }
                st.seq = txn.first_seq + i as u64;
            }
            jr.used += skipped + txn.total_len;
            jr.head = (jr.head + txn.total_len) % layout.journal_size;
        }
        drop(io);
        Ok(Core::start(base, name, uuid, st, sb, jr))
    }

    fn start(base: Desc, name: String, uuid: [u8; 16], st: MdState, sb: SuperBlock, jr: JournalPos) -> Arc<Core> {
        let layout = st.layout;
        let geo = Geo::of(&st);
        let seq = st.seq;
        let device_zeroes = base.info().supported.contains(bdev::IoType::WriteZeroes);
        let mut md = Md {
            st,
            pending: Vec::new(),
            quarantine: Vec::new(),
            grace: Vec::new(),
            claims: HashMap::with_capacity(CLAIMS),
            views: HashMap::new(),
            keys: HashMap::new(),
            jr,
            sb,
        };
        md.rebuild_views();
        let core = Arc::new(Core {
            name,
            uuid,
            layout,
            geo,
            md: Mutex::new(md),
            gen: AtomicU64::new(1),
            epoch: AtomicU64::new(1),
            claim_gen: AtomicU64::new(0),
            frozen: AtomicBool::new(false),
            gates: Mutex::new(Vec::new()),
            durable: AtomicU64::new(seq),
            applied: AtomicU64::new(seq),
            kick: Mutex::new(false),
            kick_cv: Condvar::new(),
            dur_lock: Mutex::new(()),
            dur_cv: Condvar::new(),
            failed: AtomicBool::new(false),
            base,
            ctl: Mutex::new(()),
            shutdown: AtomicBool::new(false),
            thread: Mutex::new(None),
            jwriter: Mutex::new(()),
            device_zeroes,
            checkpoints: AtomicU64::new(0),
            txns: AtomicU64::new(0),
            txn_records: AtomicU64::new(0),
            no_space_timeout_ms: AtomicU64::new(NO_SPACE_TIMEOUT_MS),
        });
        let weak = Arc::downgrade(&core);
        let h = std::thread::Builder::new().name(format!("lvs-md-{}", core.name)).spawn(move || md_main(weak));
        match h {
            Ok(h) => *lock(&core.thread) = Some(h),
            Err(e) => {
                log::error!("cannot start metadata thread: {e}");
                core.failed.store(true, Ordering::SeqCst);
            }
        }
        core
    }

    /// Lock the metadata.
    pub fn lock_md(&self) -> MutexGuard<'_, Md> {
        lock(&self.md)
    }

    /// Apply `recs` as one group (journaled in one transaction) and queue them. Returns the
    /// sequence number of the last record; wait for it with [`Core::wait_durable`].
    pub fn commit(&self, md: &mut Md, recs: &[Record]) -> Result<u64, CoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(CoreError::Failed);
        }
        let mut structural = false;
        let n = recs.len();
        for (i, rec) in recs.iter().enumerate() {
            let fx = md.st.apply(rec);
            let fx = match fx {
                Ok(fx) => fx,
                Err(e) => {
                    if let Some(p) = md.pending.last_mut() {
                        p.group_end = true;
                    }
                    if structural {
                        md.rebuild_views();
                        self.gen.fetch_add(1, Ordering::AcqRel);
                    }
                    self.applied.store(md.st.seq, Ordering::Release);
                    return Err(e.into());
                }
            };
            md.st.seq += 1;
            let seq = md.st.seq;
            structural |= fx.structural;
            for f in fx.freed {
                md.quarantine.push((seq, f));
            }
            let mut w = Writer::default();
            rec.encode(&mut w);
            md.pending.push(Pending { seq, bytes: w.buf, group_end: i + 1 == n, data_dep: data_dependent(rec) });
        }
        if structural {
            md.rebuild_views();
            self.gen.fetch_add(1, Ordering::AcqRel);
        }
        self.applied.store(md.st.seq, Ordering::Release);
        Ok(md.st.seq)
    }

    /// Hand space in grace back to the allocator once no IO that may have looked up the old
    /// mapping is in progress: space tagged with epoch `e` is reusable when every channel is
    /// idle or has published an oldest admission epoch of at least `e`.
    ///
    /// Why this is enough: a channel marks itself busy (SeqCst store, SeqCst fence) before it
    /// loads the epoch and looks up any map. Here the epoch was bumped after the map change,
    /// then a SeqCst fence, then each gate is read. Either this read sees the channel busy
    /// (and its published oldest epoch is at most that of its IO), or the channel's fence comes
    /// after ours and its lookups see the changed maps.
    pub fn reclaim(&self, md: &mut Md) {
        if md.grace.is_empty() {
            return;
        }
        fence(Ordering::SeqCst);
        let mut safe = u64::MAX;
        for g in lock(&self.gates).iter().filter_map(|w| w.upgrade()) {
            if g.busy.load(Ordering::SeqCst) > 0 {
                safe = safe.min(g.oldest.load(Ordering::SeqCst));
            }
        }
        let mut keep = Vec::new();
        for (e, f) in std::mem::take(&mut md.grace) {
            if e <= safe {
                md.st.release(f);
            } else {
                keep.push((e, f));
            }
        }
        md.grace = keep;
    }

    /// Wake the metadata thread.
    pub fn kick(&self) {
        let mut k = lock(&self.kick);
        *k = true;
        self.kick_cv.notify_one();
    }

    /// Block until record `seq` is durable.
    pub fn wait_durable(&self, seq: u64) -> Result<(), CoreError> {
        self.kick();
        let mut g = lock(&self.dur_lock);
        while self.durable.load(Ordering::Acquire) < seq {
            if self.failed.load(Ordering::Acquire) {
                return Err(CoreError::Failed);
            }
            g = self.dur_cv.wait_timeout(g, Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0;
        }
        Ok(())
    }

    /// Commit a group and wait for it to be durable.
    pub fn commit_sync(&self, recs: &[Record]) -> Result<u64, CoreError> {
        let seq = {
            let mut md = self.lock_md();
            self.commit(&mut md, recs)?
        };
        self.wait_durable(seq)?;
        Ok(seq)
    }

    /// Register an IO channel's gate.
    pub fn add_gate(&self) -> Arc<Gate> {
        let g = Arc::new(Gate::default());
        let mut gs = lock(&self.gates);
        gs.retain(|w| w.strong_count() > 0);
        gs.push(Arc::downgrade(&g));
        g
    }

    /// Stop new IO on every volume of the store and wait until none is in progress.
    pub fn freeze(&self, timeout: Duration) -> Result<Frozen<'_>, CoreError> {
        self.frozen.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let t0 = Instant::now();
        loop {
            let busy = lock(&self.gates).iter().filter_map(|w| w.upgrade()).any(|g| g.busy.load(Ordering::SeqCst) > 0);
            if !busy {
                return Ok(Frozen { core: self });
            }
            if t0.elapsed() > timeout {
                self.frozen.store(false, Ordering::SeqCst);
                return Err(CoreError::Busy(timeout));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Stop the metadata thread, then (when `checkpoint`) write what is queued and a final
    /// checkpoint so the next load replays nothing (clean unload).
    pub fn close(&self, checkpoint: bool) -> Result<(), CoreError> {
        self.shutdown.store(true, Ordering::SeqCst);
        self.kick();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
        if checkpoint && !self.failed.load(Ordering::Acquire) {
            let mut io = open_io(&self.base)?;
            self.flush_pending(&mut io)?;
            let _w = lock(self.writer_lock());
            self.checkpoint(&mut io)?;
        }
        self.failed.store(true, Ordering::SeqCst);
        let _g = lock(&self.dur_lock);
        self.dur_cv.notify_all();
        Ok(())
    }

    fn fail(&self, e: &CoreError) {
        log::error!("lvol store {}: metadata writer failed: {e}", self.name);
        self.failed.store(true, Ordering::SeqCst);
        let _g = lock(&self.dur_lock);
        self.dur_cv.notify_all();
    }

    /// Records up to `seq` are durable: what they freed waits for IO that may still use it
    /// (grace), the durability waiters wake.
    fn publish(&self, md: &mut Md, seq: u64) {
        let mut keep = Vec::new();
        let mut epoch = None;
        for (s, f) in std::mem::take(&mut md.quarantine) {
            if s <= seq {
                // One new epoch for everything made durable here: the maps no longer point at
                // this space (they changed when the record was applied, before now).
                let e = *epoch.get_or_insert_with(|| self.epoch.fetch_add(1, Ordering::SeqCst) + 1);
                md.grace.push((e, f));
            } else {
                keep.push((s, f));
            }
        }
        md.quarantine = keep;
        self.reclaim(md);
        if self.durable.load(Ordering::Acquire) < seq {
            self.durable.store(seq, Ordering::Release);
        }
        let _g = lock(&self.dur_lock);
        self.dur_cv.notify_all();
    }

    /// Write queued groups (one transaction at a time) until none is queued. The caller is the
    /// only journal writer (the metadata thread, or `close` after it stopped taking work).
    fn flush_pending(&self, io: &mut SyncIo) -> Result<(), CoreError> {
        let _w = lock(self.writer_lock());
        loop {
            let l = &self.layout;
            let plan = {
                let md = self.lock_md();
                if md.pending.is_empty() {
                    None
                } else {
                    let limit = (l.journal_size / 4) as usize;
                    let mut body = Vec::new();
                    let mut dep = false;
                    let mut n = 0;
                    let mut last = 0;
                    let first = md.pending[0].seq;
                    for p in &md.pending {
                        if !body.is_empty() && body.len() + p.bytes.len() > limit && md.pending[n - 1].group_end {
                            break;
                        }
                        body.extend_from_slice(&p.bytes);
                        dep |= p.data_dep;
                        n += 1;
                        last = p.seq;
                        if body.len() > limit && p.group_end {
                            break;
                        }
                    }
                    while n < md.pending.len() && !md.pending[n - 1].group_end {
                        body.extend_from_slice(&md.pending[n].bytes);
                        dep |= md.pending[n].data_dep;
                        last = md.pending[n].seq;
                        n += 1;
                    }
                    let txn = encode_txn(&self.uuid, first, n as u32, &body);
                    let len = txn.len() as u64;
                    let place = if len > l.journal_size / 2 { None } else { place(md.jr, len, l.journal_size) };
                    Some((txn, n, last, place, dep))
                }
            };
            let Some((txn, n, last, place, dep)) = plan else { return Ok(()) };
            let Some((at, skipped)) = place else {
                // No room (or too large): a checkpoint covers everything queued.
                self.checkpoint(io)?;
                continue;
            };
            if dep {
                io.flush()?;
            }
            io.write(self.layout.journal_offset + at, &txn)?;
            io.flush()?;
            self.txns.fetch_add(1, Ordering::Relaxed);
            self.txn_records.fetch_add(n as u64, Ordering::Relaxed);
            let mut md = self.lock_md();
            md.pending.drain(..n);
            md.jr.head = (at + txn.len() as u64) % self.layout.journal_size;
            md.jr.used += skipped + txn.len() as u64;
            self.publish(&mut md, last);
        }
    }

    fn writer_lock(&self) -> &Mutex<()> {
        &self.jwriter
    }

    /// Write a checkpoint of the current state and point the super block at it.
    pub fn checkpoint(&self, io: &mut SyncIo) -> Result<(), CoreError> {
        let (ckpt, seq, sb_old) = {
            let mut md = self.lock_md();
            let ck = encode_ckpt(&md.st, &self.uuid);
            md.pending.clear();
            (ck, md.st.seq, md.sb.clone())
        };
        let len = ckpt.len() as u64;
        if len > self.layout.ckpt_capacity {
            return Err(CoreError::CheckpointTooLarge { len, cap: self.layout.ckpt_capacity });
        }
        let target = 1 - (sb_old.active_ckpt.get() % 2);
        io.flush()?;
        io.write(self.layout.ckpt_offset[target as usize], &ckpt)?;
        io.flush()?;
        let head = self.lock_md().jr.head;
        let mut sb = sb_old.clone();
        let gen = sb.generation.get() + 1;
        sb.generation = U64::new(gen);
        sb.active_ckpt = U32::new(target);
        sb.ckpt_crc = U32::new(crc32c::crc32c(&ckpt));
        sb.ckpt_len = U64::new(len);
        sb.ckpt_seq = U64::new(seq);
        sb.journal_tail = U64::new(head);
        io.write((gen % 2) * MD_BLOCK, &sb.to_block())?;
        io.flush()?;
        let mut md = self.lock_md();
        md.sb = sb;
        md.jr.tail = head;
        md.jr.used = 0;
        self.publish(&mut md, seq);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn md_step(&self, io: &mut SyncIo) -> Result<(), CoreError> {
        self.flush_pending(io)?;
        let over = {
            let md = self.lock_md();
            md.jr.used > self.layout.journal_size / 2
        };
        if over {
            let _w = lock(self.writer_lock());
            self.checkpoint(io)?;
        }
        Ok(())
    }

    /// Journal bytes in use (for tests).
    pub fn journal_used(&self) -> u64 {
        self.lock_md().jr.used
    }
}

/// Where a transaction of `len` bytes goes: `(offset, bytes skipped at the end)`.
fn place(jr: JournalPos, len: u64, size: u64) -> Option<(u64, u64)> {
    let (head, tail) = (jr.head, jr.tail);
    if jr.used == 0 {
        if head + len <= size {
            Some((head, 0))
        } else {
            (len <= size).then_some((0, size - head))
        }
    } else if head > tail {
        if head + len <= size {
            Some((head, 0))
        } else {
            (len <= tail).then_some((0, size - head))
        }
    } else {
        (head + len <= tail).then_some((head, 0))
    }
}

/// A frozen store; IO resumes when dropped.
pub struct Frozen<'a> {
    core: &'a Core,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.core.frozen.store(false, Ordering::SeqCst);
    }
}

fn md_main(weak: Weak<Core>) {
    let mut io = {
        let Some(core) = weak.upgrade() else { return };
        match open_io(&core.base) {
            Ok(io) => io,
            Err(e) => {
                core.fail(&e);
                return;
            }
        }
    };
    loop {
        let Some(core) = weak.upgrade() else { return };
        if core.shutdown.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut k = lock(&core.kick);
            if !*k {
                k = core.kick_cv.wait_timeout(k, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
            }
            *k = false;
        }
        if core.shutdown.load(Ordering::SeqCst) {
            return;
        }
        if core.failed.load(Ordering::Acquire) {
            continue;
        }
        if let Err(e) = core.md_step(&mut io) {
            core.fail(&e);
        }
        // Space in grace becomes reusable as channels move past it.
        let mut md = core.lock_md();
        core.reclaim(&mut md);
    }
}
