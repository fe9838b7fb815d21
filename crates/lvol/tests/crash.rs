//! Crash consistency, redb style: run a random workload of metadata and data operations on a
//! crash-simulating disk, then for every write point of it build the disk a crash there would
//! leave (durable writes plus a random subset of the others, block by block), load the store,
//! run `check`, and compare every volume with a reference model: the state after the last
//! acknowledged operation, or after the one in flight.

use bdev::{DmaBuf, IoChannel, IoRequest, IoStatus, IoVecs, Registry};
use lvol::crash::{mark, CrashDisk, Event};
use lvol::{check, CreateOpts, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: u64 = 512;
const KEY: [u8; 64] = {
    let mut k = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        k[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
        i += 1;
    }
    k
};

#[derive(Clone, Debug)]
struct MVol {
    data: Vec<u8>,
    known: Vec<bool>,
    snapshot: bool,
}

type Model = BTreeMap<String, MVol>;

/// How a write op puts its data.
#[derive(Clone, Copy, Debug, PartialEq)]
enum How {
    Data,
    /// Write-zeroes (the data is zeroes).
    Zeroes,
    /// Unmap (the data is zeroes: volumes read unmapped blocks as zeroes).
    Unmap,
}

#[derive(Clone)]
enum Op {
    Create {
        name: String,
        bytes: u64,
        thin: bool,
    },
    /// A write (of zeroes through write-zeroes or unmap, as `how` says), then a flush.
    Write {
        vol: String,
        lba: u64,
        data: Vec<u8>,
        how: How,
    },
    Snapshot {
        vol: String,
        snap: String,
    },
    Clone {
        snap: String,
        name: String,
    },
    Resize {
        vol: String,
        bytes: u64,
    },
    Destroy {
        vol: String,
    },
    DestroySnap {
        snap: String,
    },
    Restore {
        snap: String,
        origin: String,
    },
    Rename {
        vol: String,
        to: String,
    },
    Inflate {
        vol: String,
    },
    Decouple {
        vol: String,
    },
    Compress {
        vol: String,
        level: u8,
    },
    Encrypt {
        vol: String,
    },
    Decrypt {
        vol: String,
    },
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Write { vol, lba, data, how } => {
                write!(f, "Write({vol}, lba {lba}, {} blocks, {how:?}, first byte {})", data.len() / 512, data[0])
            }
            Op::Create { name, bytes, thin } => write!(f, "Create({name}, {bytes}, thin {thin})"),
            Op::Snapshot { vol, snap } => write!(f, "Snapshot({vol} -> {snap})"),
            Op::Clone { snap, name } => write!(f, "Clone({snap} -> {name})"),
            Op::Resize { vol, bytes } => write!(f, "Resize({vol}, {bytes})"),
            Op::Destroy { vol } => write!(f, "Destroy({vol})"),
            Op::DestroySnap { snap } => write!(f, "DestroySnap({snap})"),
            Op::Restore { snap, origin } => write!(f, "Restore({snap} -> {origin})"),
            Op::Rename { vol, to } => write!(f, "Rename({vol} -> {to})"),
            Op::Inflate { vol } => write!(f, "Inflate({vol})"),
            Op::Decouple { vol } => write!(f, "Decouple({vol})"),
            Op::Compress { vol, level } => write!(f, "Compress({vol}, {level})"),
            Op::Encrypt { vol } => write!(f, "Encrypt({vol})"),
            Op::Decrypt { vol } => write!(f, "Decrypt({vol})"),
        }
    }
}

fn granule_round(bytes: u64, g: u64) -> u64 {
    bytes.div_ceil(g) * g
}

/// Apply a successful op (or a write that failed: its blocks become unknown).
fn apply(m: &mut Model, op: &Op, ok: bool, g: u64) {
    match op {
        Op::Write { vol, lba, data, .. } => {
            let Some(v) = m.get_mut(vol) else { return };
            let off = (*lba * BS) as usize;
            let nb = data.len() / BS as usize;
            if ok {
                v.data[off..off + data.len()].copy_from_slice(data);
            }
            for b in 0..nb {
                v.known[*lba as usize + b] = ok;
            }
        }
        _ if !ok => {}
        Op::Create { name, bytes, .. } => {
            let n = granule_round(*bytes, g) as usize;
            m.insert(name.clone(), MVol { data: vec![0; n], known: vec![true; n / BS as usize], snapshot: false });
        }
        Op::Snapshot { vol, snap } => {
            if let Some(v) = m.get(vol).cloned() {
                m.insert(snap.clone(), MVol { snapshot: true, ..v });
            }
        }
        Op::Clone { snap, name } => {
            if let Some(v) = m.get(snap).cloned() {
                m.insert(name.clone(), MVol { snapshot: false, ..v });
            }
        }
        Op::Resize { vol, bytes } => {
            let n = granule_round(*bytes, g) as usize;
            if let Some(v) = m.get_mut(vol) {
                v.data.resize(n, 0);
                v.known.resize(n / BS as usize, true);
            }
        }
        Op::Destroy { vol } => {
            m.remove(vol);
        }
        Op::DestroySnap { snap } => {
            m.remove(snap);
        }
        Op::Restore { snap, origin } => {
            if let Some(s) = m.get(snap).cloned() {
                m.insert(origin.clone(), MVol { snapshot: false, ..s });
            }
        }
        Op::Rename { vol, to } => {
            if let Some(v) = m.remove(vol) {
                m.insert(to.clone(), v);
            }
        }
        Op::Inflate { .. } | Op::Decouple { .. } | Op::Compress { .. } | Op::Encrypt { .. } | Op::Decrypt { .. } => {}
    }
}

fn sync_io(ch: &mut dyn IoChannel, io: IoRequest) -> IoStatus {
    ch.submit(&io).expect("queue");
    let mut got = None;
    let t0 = Instant::now();
    while got.is_none() {
        ch.poll(&mut |_, st| got = Some(st));
        if got.is_none() {
            assert!(t0.elapsed() < Duration::from_secs(20), "io stuck");
            std::thread::yield_now();
        }
    }
    got.unwrap_or(IoStatus::Aborted)
}

fn read_volume(store: &Store, name: &str, bytes: usize) -> Result<Vec<u8>, String> {
    let mut ch = store.channel(name).map_err(|e| format!("channel {name}: {e}"))?;
    let mut out = vec![0u8; bytes];
    let chunk = 65536usize;
    let mut buf = DmaBuf::alloc(chunk).map_err(|e| e.to_string())?;
    let mut off = 0;
    while off < bytes {
        let n = chunk.min(bytes - off);
        let v = buf.iovec_range(0, n).ok_or("iov")?;
        let st = sync_io(&mut ch, IoRequest::read(off as u64 / BS, n as u64 / BS, IoVecs::single(v), 0));
        if st != IoStatus::Success {
            return Err(format!("read {name} at {off}: {st}"));
        }
        out[off..off + n].copy_from_slice(&buf.as_slice()[..n]);
        off += n;
    }
    Ok(out)
}

/// Compare the store with a model; `fresh` is an in-flight write whose blocks may be new.
fn compare(store: &Store, m: &Model, fresh: Option<(&str, u64, &[u8])>) -> Result<(), String> {
    let vols = store.volumes();
    let names: Vec<&str> = vols.iter().map(|v| v.name.as_str()).collect();
    let want: Vec<&str> = m.keys().map(|s| s.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    if sorted != want {
        return Err(format!("volumes {sorted:?}, model {want:?}"));
    }
    for v in &vols {
        let mv = &m[&v.name];
        if v.size_bytes as usize != mv.data.len() || v.snapshot != mv.snapshot {
            return Err(format!(
                "{}: size {} snapshot {}, model {} {}",
                v.name,
                v.size_bytes,
                v.snapshot,
                mv.data.len(),
                mv.snapshot
            ));
        }
        let got = read_volume(store, &v.name, mv.data.len())?;
        let bs = BS as usize;
        for b in 0..mv.known.len() {
            if !mv.known[b] {
                continue;
            }
            let (g, w) = (&got[b * bs..(b + 1) * bs], &mv.data[b * bs..(b + 1) * bs]);
            if g == w {
                continue;
            }
            if let Some((fv, lba, data)) = fresh {
                let lba = lba as usize;
                if fv == v.name
                    && b >= lba
                    && b < lba + data.len() / bs
                    && g == &data[(b - lba) * bs..(b - lba + 1) * bs]
                {
                    continue;
                }
            }
            return Err(format!(
                "{}: block {b} differs: got {:?}.. want {:?}.. (zero: {})",
                v.name,
                &g[..8],
                &w[..8],
                g.iter().all(|&x| x == 0)
            ));
        }
    }
    Ok(())
}

fn timing(s: String) {
    if std::env::var("CRASH_TIMING").is_ok() {
        eprintln!("{s}");
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        bdev::rand::next(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn pick<'a>(&mut self, v: &'a [String]) -> Option<&'a String> {
        if v.is_empty() {
            None
        } else {
            v.get(self.below(v.len() as u64) as usize)
        }
    }
}

fn gen_op(r: &mut Rng, m: &Model, store: &Store, n: &mut u32, prefix: &str) -> Option<Op> {
    let writable: Vec<String> = m.iter().filter(|(_, v)| !v.snapshot).map(|(k, _)| k.clone()).collect();
    let snaps: Vec<String> = m.iter().filter(|(_, v)| v.snapshot).map(|(k, _)| k.clone()).collect();
    let mut fresh = || {
        *n += 1;
        format!("{prefix}{n}")
    };
    let k = r.below(100);
    Some(match k {
        0..=7 => {
            if m.len() >= 8 {
                return None;
            }
            Op::Create { name: fresh(), bytes: (1 + r.below(8)) * 8192 - r.below(2) * 512, thin: r.below(4) != 0 }
        }
        8..=54 => {
            let vol = r.pick(&writable)?.clone();
            let size = m[&vol].data.len() as u64;
            let how = match r.below(10) {
                0 => How::Zeroes,
                1 | 2 => How::Unmap,
                _ => How::Data,
            };
            let nb = 1 + r.below(24);
            // Zeroing ops: now and then the whole volume (its cluster goes back to the store).
            let nb = if how != How::Data && r.below(3) == 0 { size / BS } else { nb.min(size / BS) };
            let lba = r.below(size / BS - nb + 1);
            let mut data = vec![0u8; (nb * BS) as usize];
            let compressible = r.below(2) == 0;
            for (i, x) in data.iter_mut().enumerate() {
                *x = if how != How::Data {
                    0
                } else if compressible {
                    (i / 64) as u8 ^ (lba as u8)
                } else {
                    r.next() as u8
                };
            }
            Op::Write { vol, lba, data, how }
        }
        55..=61 => {
            if m.len() >= 8 {
                return None;
            }
            Op::Snapshot { vol: r.pick(&writable)?.clone(), snap: fresh() }
        }
        62..=65 => {
            if m.len() >= 8 {
                return None;
            }
            Op::Clone { snap: r.pick(&snaps)?.clone(), name: fresh() }
        }
        66..=70 => Op::Resize { vol: r.pick(&writable)?.clone(), bytes: (1 + r.below(8)) * 8192 },
        71..=75 => Op::Destroy { vol: r.pick(&writable)?.clone() },
        76..=80 => Op::DestroySnap { snap: r.pick(&snaps)?.clone() },
        81..=83 => {
            let snap = r.pick(&snaps)?.clone();
            let origin = store.volume(&snap).ok()?.origin?;
            Op::Restore { snap, origin }
        }
        84..=85 => Op::Rename { vol: r.pick(&writable)?.clone(), to: fresh() },
        86..=87 => Op::Inflate { vol: r.pick(&writable)?.clone() },
        88..=89 => Op::Decouple { vol: r.pick(&writable)?.clone() },
        90..=95 => Op::Compress { vol: r.pick(&writable)?.clone(), level: if r.below(2) == 0 { 0 } else { 1 } },
        96 => {
            // Small volumes only: AES-XTS in an unoptimized test build is slow.
            let small: Vec<String> = writable.iter().filter(|v| m[*v].data.len() <= 32768).cloned().collect();
            Op::Encrypt { vol: r.pick(&small)?.clone() }
        }
        _ => Op::Decrypt { vol: r.pick(&writable)?.clone() },
    })
}

fn exec(store: &Store, op: &Op) -> bool {
    match op {
        Op::Create { name, bytes, thin } => store.create_volume(name, *bytes, *thin).is_ok(),
        Op::Write { vol, lba, data, how } => {
            let Ok(mut ch) = store.channel(vol) else { return false };
            let mut b = DmaBuf::alloc(data.len()).unwrap();
            b.as_mut_slice().copy_from_slice(data);
            let n = data.len() as u64 / BS;
            let req = match how {
                How::Zeroes => IoRequest::no_data(bdev::IoType::WriteZeroes, *lba, n, 0),
                How::Unmap => IoRequest::no_data(bdev::IoType::Unmap, *lba, n, 0),
                How::Data => IoRequest::write(*lba, n, IoVecs::single(b.iovec()), 0),
            };
            let st = sync_io(&mut ch, req);
            // A write is durable once a flush after it completes: the op is write + flush.
            st == IoStatus::Success
                && sync_io(&mut ch, IoRequest::no_data(bdev::IoType::Flush, 0, 0, 1)) == IoStatus::Success
        }
        Op::Snapshot { vol, snap } => store.snapshot(vol, snap).is_ok(),
        Op::Clone { snap, name } => store.clone_volume(snap, name).is_ok(),
        Op::Resize { vol, bytes } => store.resize(vol, *bytes).is_ok(),
        Op::Destroy { vol } => store.destroy_volume(vol).is_ok(),
        Op::DestroySnap { snap } => store.destroy_snapshot(snap).is_ok(),
        Op::Restore { snap, .. } => store.restore(snap).is_ok(),
        Op::Rename { vol, to } => store.rename(vol, to).is_ok(),
        Op::Inflate { vol } => store.inflate(vol).is_ok(),
        Op::Decouple { vol } => store.decouple_parent(vol).is_ok(),
        Op::Compress { vol, level } => store.set_compression(vol, *level).is_ok(),
        Op::Encrypt { vol } => store.enable_encryption(vol, &KEY).is_ok(),
        Op::Decrypt { vol } => store.disable_encryption(vol).is_ok(),
    }
}

struct Outcome {
    ops: usize,
    crash_points: usize,
    images: usize,
    checkpoints: u64,
    /// Crash images recovered, worked on and crashed again at every write point.
    second: usize,
}

/// Run `nops` random operations, marking their start and end in the disk's log.
#[allow(clippy::too_many_arguments)]
fn run_ops(
    store: &Store,
    log: &std::sync::Mutex<lvol::crash::CrashLog>,
    model: &mut Model,
    r: &mut Rng,
    names: &mut u32,
    prefix: &str,
    nops: usize,
    g: u64,
) -> Vec<(Op, bool)> {
    let mut ops: Vec<(Op, bool)> = Vec::new();
    while ops.len() < nops {
        let Some(op) = gen_op(r, model, store, names, prefix) else { continue };
        let i = ops.len() as u64;
        mark(log, i << 1);
        let ok = exec(store, &op);
        mark(log, (i << 1) | 1);
        apply(model, &op, ok, g);
        ops.push((op, ok));
    }
    ops
}

/// Verify the crash image of every write point of `l`. `start` is the model before the first
/// op; `on_image` sees each verified image and the contents found in it.
fn verify_log(
    l: &lvol::crash::CrashLog,
    ops: &[(Op, bool)],
    start: &Model,
    g: u64,
    seed: u64,
    every: usize,
    mut on_image: impl FnMut(usize, &[u8], &Model),
) -> (usize, usize) {
    let durable = l.durable_at();
    // For each flush completion, the writes it made durable.
    let mut made_durable: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (w, &d) in durable.iter().enumerate() {
        if d != usize::MAX {
            made_durable.entry(d).or_default().push(w);
        }
    }
    let mut rng = seed ^ 0x5555;
    let mut done = 0usize; // ops acknowledged before the crash point
    let mut started = 0usize; // ops started before the crash point
    let mut m_done = start.clone();
    let mut dur_img = l.base.clone(); // writes durable by the current point, applied
    let mut volatile: Vec<usize> = Vec::new(); // writes submitted, not yet durable
    let mut points = 0;
    let mut images = 0;
    let put = |img: &mut [u8], e: &Event| {
        if let Event::Write { lba, data } = e {
            let off = (*lba * BS) as usize;
            img[off..off + data.len()].copy_from_slice(data);
        }
    };
    for p in 0..l.events.len() {
        match &l.events[p] {
            Event::Mark(v) => {
                let i = (v >> 1) as usize;
                if v & 1 == 0 {
                    started = i + 1;
                } else {
                    let (op, ok) = &ops[i];
                    apply(&mut m_done, op, *ok, g);
                    done = i + 1;
                }
                continue;
            }
            Event::FlushDone(_) => {
                if let Some(ws) = made_durable.get(&p) {
                    // Durable writes land in submission order.
                    let mut ws = ws.clone();
                    ws.sort_unstable();
                    for w in ws {
                        put(&mut dur_img, &l.events[w]);
                        volatile.retain(|&x| x != w);
                    }
                }
                continue;
            }
            Event::Write { .. } => volatile.push(p),
            _ => continue,
        }
        points += 1;
        let mut img = dur_img.clone();
        // Volatile writes: each block kept with probability 1/2, in log order.
        for &w in &volatile {
            if let Event::Write { lba, data } = &l.events[w] {
                let off = (*lba * BS) as usize;
                for (k, blk) in data.chunks(BS as usize).enumerate() {
                    if bdev::rand::next(&mut rng) & 1 == 0 {
                        img[off + k * BS as usize..off + (k + 1) * BS as usize].copy_from_slice(blk);
                    }
                }
            }
        }
        images += 1;
        let inflight = (started > done).then(|| &ops[done]);
        let want = every != 0 && images % every == 0;
        let keep = if want { img.clone() } else { Vec::new() };
        match verify_image(img, &m_done, inflight, g, want) {
            Ok(Some(found)) => on_image(p, &keep, &found),
            Ok(None) => {}
            Err(e) => {
                for (i, o) in ops.iter().enumerate().take(done + 1) {
                    eprintln!("op {i}: {:?} ok={}", o.0, o.1);
                }
                panic!("seed {seed} crash after event {p} (ops done {done}, in flight {inflight:?}): {e}")
            }
        }
    }
    (points, images)
}

fn new_store_on_crash_disk(image: Option<Vec<u8>>) -> (Arc<CrashDisk>, Arc<Registry>, Arc<Store>) {
    let fresh = image.is_none();
    let disk = Arc::new(CrashDisk::new("crash0", BS as u32, image.unwrap_or_else(|| vec![0u8; 8 << 20])).unwrap());
    let reg = Registry::new();
    reg.register(disk.clone()).unwrap();
    let desc = reg.open("crash0", true).unwrap();
    let store = if fresh {
        let opts = CreateOpts { cluster_size: 512 << 10, journal_size: 64 << 10, max_volumes: 16 };
        Store::create(desc, "lvs", &opts).unwrap()
    } else {
        let s = Store::load(desc).unwrap();
        s.unlock(&KEY).unwrap();
        s
    };
    // The workload starts from the disk as it is now.
    let log = disk.log();
    let mut l = log.lock().unwrap();
    l.base = l.current.clone();
    l.events.clear();
    drop(l);
    (disk, reg, store)
}

fn run_workload(seed: u64, nops: usize, second_every: usize) -> Outcome {
    let (disk, _reg, store) = new_store_on_crash_disk(None);
    let log = disk.log();
    let g = store.info().granule_size;
    let t_work = Instant::now();
    let mut r = Rng(seed);
    let mut model = Model::new();
    let mut names = 0;
    let ops = run_ops(&store, &log, &mut model, &mut r, &mut names, "v", nops, g);
    let checkpoints = store.info().checkpoints;
    timing(format!("workload done in {:?}", t_work.elapsed()));
    // Sanity: the live store matches the model.
    compare(&store, &model, None).expect("live store differs from the model");
    check(&store).expect("live store fails check");
    store.close(false).unwrap();
    let l = log.lock().unwrap();
    let mut second = 0usize;
    let mut second_images = 0usize;
    let (points, images) = verify_log(&l, &ops, &Model::new(), g, seed, second_every, |p, img, found| {
        // Crash again: recover from this image, keep working, crash at every write point.
        second += 1;
        let (d2, _r2, s2) = new_store_on_crash_disk(Some(img.to_vec()));
        let log2 = d2.log();
        let mut m2 = found.clone();
        let mut r2 = Rng(seed ^ (p as u64) << 8);
        let mut n2 = 0;
        let ops2 = run_ops(&s2, &log2, &mut m2, &mut r2, &mut n2, "w", 20, g);
        compare(&s2, &m2, None).expect("second run differs from the model");
        s2.close(false).unwrap();
        let l2 = log2.lock().unwrap();
        let (_, im2) = verify_log(&l2, &ops2, found, g, seed ^ p as u64, 0, |_, _, _| {});
        second_images += im2;
    });
    timing(format!("verification done at {:?}", t_work.elapsed()));
    Outcome { ops: ops.len(), crash_points: points, images: images + second_images, checkpoints, second }
}

/// Load a crash image, check it, compare it with the model before (and after) the op in
/// flight; returns the volumes' contents as found (with the model's known-block masks).
fn verify_image(
    img: Vec<u8>,
    m_done: &Model,
    inflight: Option<&(Op, bool)>,
    g: u64,
    want_found: bool,
) -> Result<Option<Model>, String> {
    let disk = Arc::new(CrashDisk::plain("img", BS as u32, img).map_err(|e| e.to_string())?);
    let reg = Registry::new();
    reg.register(disk).map_err(|e| e.to_string())?;
    let desc = reg.open("img", true).map_err(|e| e.to_string())?;
    let store = Store::load(desc)
        .map_err(|e| format!("load failed: {e} ({:?})", std::error::Error::source(&e).map(|s| s.to_string())))?;
    let res = (|| {
        store.unlock(&KEY).map_err(|e| e.to_string())?;
        check(&store).map_err(|e| e.to_string())?;
        let matched = match inflight {
            Some((Op::Write { vol, lba, data, .. }, _)) => {
                compare(&store, m_done, Some((vol, *lba, data))).map(|_| m_done.clone())
            }
            Some((op, ok)) => compare(&store, m_done, None).map(|_| m_done.clone()).or_else(|e1| {
                let mut next = m_done.clone();
                apply(&mut next, op, *ok, g);
                compare(&store, &next, None)
                    .map(|_| next)
                    .map_err(|e2| format!("neither before ({e1}) nor after ({e2})"))
            }),
            None => compare(&store, m_done, None).map(|_| m_done.clone()),
        }?;
        if !want_found {
            return Ok(None);
        }
        let mut found = Model::new();
        for (name, mv) in matched {
            let data = read_volume(&store, &name, mv.data.len())?;
            found.insert(name, MVol { data, ..mv });
        }
        Ok(Some(found))
    })();
    let _ = store.close(false);
    res
}

#[test]
fn crash_at_every_write_point_of_a_random_workload() {
    let t0 = Instant::now();
    let mut total = 0;
    // LVOL_CRASH_SEEDS=n runs seeds 1..=n (default 3); LVOL_CRASH_OPS sets the ops per seed.
    let seeds: u64 = std::env::var("LVOL_CRASH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let nops: usize = std::env::var("LVOL_CRASH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(240);
    for seed in 1..=seeds {
        let o = run_workload(seed, nops, if seed % 4 == 1 { 50 } else { 0 });
        eprintln!(
            "seed {seed}: {} ops, {} write points, {} crash images ({} recovered and crashed again), {} checkpoints",
            o.ops, o.crash_points, o.images, o.second, o.checkpoints
        );
        total += o.images;
    }
    eprintln!("{total} crash images verified in {:?}", t0.elapsed());
    assert!(total >= 1000, "only {total} crash points");
}
