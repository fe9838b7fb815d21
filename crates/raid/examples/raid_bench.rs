//! Throughput of RAID bdevs over RAM-disk (malloc) members, one channel on
//! the calling thread (one core).
//!
//! `cargo run --release -p xbdev-raid --example raid_bench [seconds] [filter]`
//!
//! Environment: `MEMBER_MIB` (member size, default 256; SPDK's raid tests
//! use 32), `QD` (queue depth, default 32), `MEMCPY=0` (no memcpy
//! baselines, e.g. under a profiler), `BENCH` (`issue`, the default:
//! issue 6's workloads; `legacy`: the 512 KiB-chunk table of every level;
//! `rebuild`: rebuild rate onto a spare; `all`). `filter` keeps only rows
//! whose name contains it.
//!
//! `issue` rows: raid0 x4 (64 KiB strip), raid1 x2, raid5 x4 (64 KiB
//! chunk, healthy and with one member failed), raid6 x4 and x6, raid10
//! n2 x4 and one malloc bdev, each with 4 KiB random writes and 128 KiB
//! sequential writes (raid5 also 192 KiB full-stripe writes and reads;
//! raid6 x4's 128 KiB writes are its full stripes, raid6 x6 also writes
//! 256 KiB full stripes; 4 KiB writes read-modify-write on raid5 x4 and
//! raid6 x6, reconstruct-write on raid6 x4). Every row is followed by
//! memcpy of the same pattern (same block size, one of `QD` source
//! buffers, destinations over the members' total size), and the ratio to
//! it and to the SPDK figure issue 6 quotes (a fixed number from another
//! day, likely taken in cache: SPDK measured in the same run as ours is
//! what `benches/spdk-compare/raid.sh` prints). Members are written
//! over once before timing so no page is touched first while timed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use raid::array::{md_create, ManageCmd, MdArray, MdConfig, MdEvent};
use raid::geometry::Level;

struct Env {
    member_mib: u64,
    qd: usize,
    secs: f64,
    memcpy: bool,
}

fn member(reg: &Arc<Registry>, name: &str, mib: u64) {
    let m = MallocBdev::new(MallocParams { name: name.into(), num_blocks: mib * 2048, block_size: 512 })
        .expect("malloc member");
    reg.register(Arc::new(m)).expect("register member");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Random,
    Sequential,
}

/// Block positions (in units of the IO size) over `span` such units.
struct Picker {
    pattern: Pattern,
    span: u64,
    rng: u64,
    next: u64,
}

impl Picker {
    fn new(pattern: Pattern, span: u64) -> Picker {
        Picker { pattern, span: span.max(1), rng: 0x9e37_79b9_7f4a_7c15, next: 0 }
    }

    fn pick(&mut self) -> u64 {
        match self.pattern {
            Pattern::Random => {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                // Multiply-high instead of a division (cheaper per IO).
                ((u128::from(self.rng) * u128::from(self.span)) >> 64) as u64
            }
            Pattern::Sequential => {
                let at = self.next;
                self.next = (self.next + 1) % self.span;
                at
            }
        }
    }
}

/// Runs `qd` IOs at a time of `bytes` each for `secs`; returns (bytes/s, IO/s).
fn run(ch: &mut BdevChannel, write: bool, bytes: u64, pattern: Pattern, qd: usize, secs: f64) -> (f64, f64) {
    let bs = u64::from(ch.block_size());
    let blocks = bytes / bs;
    let mut pick = Picker::new(pattern, ch.num_blocks() / blocks);
    let mut bufs: Vec<DmaBuf> = (0..qd).map(|_| DmaBuf::zeroed(bytes as usize).expect("buffer")).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.as_mut_slice().fill(i as u8 ^ 0x5a);
    }
    let mut submit = |ch: &mut BdevChannel, tag: usize, bufs: &mut Vec<DmaBuf>| {
        let at = pick.pick() * blocks;
        let iov = IoVecs::single(bufs[tag].iovec());
        let io = if write {
            IoRequest::write(at, blocks, iov, tag as u64)
        } else {
            IoRequest::read(at, blocks, iov, tag as u64)
        };
        ch.submit(&io).expect("submit");
    };
    for tag in 0..qd {
        submit(ch, tag, &mut bufs);
    }
    let t0 = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut done = 0u64;
    let mut free = Vec::with_capacity(qd);
    while t0.elapsed() < deadline {
        ch.poll(&mut |tag, st| {
            assert_eq!(st, IoStatus::Success);
            free.push(tag as usize);
        });
        done += free.len() as u64;
        for tag in free.drain(..) {
            submit(ch, tag, &mut bufs);
        }
    }
    let el = t0.elapsed().as_secs_f64();
    ch.drain(Duration::from_secs(10), &mut |_, _| {});
    (done as f64 * bytes as f64 / el, done as f64 / el)
}

/// memcpy of `bytes` between one of `qd` buffers (in turn) and positions
/// of `pattern` over `mem` (into `mem` for writes, out of it for reads);
/// bytes/s.
fn memcpy_rate(mem: &mut [u8], write: bool, bytes: usize, pattern: Pattern, qd: usize, secs: f64) -> f64 {
    let mut bufs: Vec<Vec<u8>> = (0..qd).map(|i| vec![i as u8 ^ 0x5a; bytes]).collect();
    let mut pick = Picker::new(pattern, (mem.len() / bytes) as u64);
    let t0 = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut done = 0u64;
    while t0.elapsed() < deadline {
        for buf in &mut bufs {
            let at = pick.pick() as usize * bytes;
            if write {
                mem[at..at + bytes].copy_from_slice(buf);
            } else {
                buf.copy_from_slice(&mem[at..at + bytes]);
            }
        }
        done += qd as u64;
    }
    std::hint::black_box((&mem, &bufs));
    done as f64 * bytes as f64 / t0.elapsed().as_secs_f64()
}

/// Writes the whole device once (sequential 1 MiB writes).
fn prefault(ch: &mut BdevChannel) {
    let bytes = (1u64 << 20).min(ch.num_blocks() * u64::from(ch.block_size()));
    let blocks = bytes / u64::from(ch.block_size());
    let mut buf = DmaBuf::zeroed(bytes as usize).expect("buffer");
    for at in (0..ch.num_blocks() / blocks).map(|i| i * blocks) {
        ch.submit(&IoRequest::write(at, blocks, IoVecs::single(buf.iovec()), 0)).expect("submit");
        ch.drain(Duration::from_secs(10), &mut |_, st| assert_eq!(st, IoStatus::Success));
    }
}

/// One workload of issue 6.
struct Work {
    name: &'static str,
    write: bool,
    bytes: u64,
    pattern: Pattern,
}

const RANDW4K: Work = Work { name: "4K randwrite", write: true, bytes: 4096, pattern: Pattern::Random };
const SEQW128K: Work = Work { name: "128K seqwrite", write: true, bytes: 128 << 10, pattern: Pattern::Sequential };
const FULLW192K: Work = Work { name: "192K seqwrite", write: true, bytes: 192 << 10, pattern: Pattern::Sequential };
const FULLW256K: Work = Work { name: "256K seqwrite", write: true, bytes: 256 << 10, pattern: Pattern::Sequential };
const RANDR4K: Work = Work { name: "4K randread", write: false, bytes: 4096, pattern: Pattern::Random };
const SEQR128K: Work = Work { name: "128K seqread", write: false, bytes: 128 << 10, pattern: Pattern::Sequential };

/// The SPDK figure issue 6 quotes for (array, workload): IOPS for 4 KiB,
/// GB/s for larger blocks. Not measured here: `benches/spdk-compare/raid.sh`
/// runs SPDK and ours in one run.
fn spdk(array: &str, work: &str) -> Option<f64> {
    Some(match (array, work) {
        ("raid0 x4", "4K randwrite") => 2.93e6,
        ("raid0 x4", "128K seqwrite") => 34.9,
        ("raid1 x2", "4K randwrite") => 1.52e6,
        ("raid1 x2", "128K seqwrite") => 19.2,
        ("raid5 x4", "192K seqwrite") => 19.2,
        _ => return None,
    })
}

fn issue_row(env: &Env, array: &str, ch: &mut BdevChannel, footprint: &mut [u8], w: &Work) {
    let (bps, iops) = run(ch, w.write, w.bytes, w.pattern, env.qd, env.secs);
    let mc = if env.memcpy {
        memcpy_rate(footprint, w.write, w.bytes as usize, w.pattern, env.qd, env.secs.min(1.0))
    } else {
        f64::NAN
    };
    let vs_spdk = match spdk(array, w.name) {
        Some(s) if w.bytes == 4096 => format!("{:>6.2}x of {:.2} M", iops / s, s / 1e6),
        Some(s) => format!("{:>6.2}x of {s:.1} GB/s", bps / 1e9 / s),
        None => String::new(),
    };
    println!(
        "{array:>18} {:>14} {:>9.3} {:>8.2} {:>10.2} {:>7.2}x  {vs_spdk}",
        w.name,
        iops / 1e6,
        bps / 1e9,
        mc / 1e9,
        bps / mc
    );
}

fn create(
    reg: &Arc<Registry>,
    tag: &str,
    level: Level,
    disks: usize,
    layout: Option<u32>,
    chunk_kib: u32,
    mib: u64,
) -> (Arc<MdArray>, Vec<String>) {
    let names: Vec<String> = (0..disks).map(|d| format!("{tag}m{d}")).collect();
    for n in &names {
        member(reg, n, mib);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = MdConfig { layout, assume_clean: true, chunk_kib, ..MdConfig::default() };
    let array = md_create(reg, &format!("{tag}md"), level, &refs, &cfg).expect("create array");
    (array, names)
}

/// Level, members and layout of an array to build (`None`: one malloc bdev).
type ArraySpec = (Level, usize, Option<u32>);

fn issue(env: &Env, filter: &str) {
    println!(
        "issue 6 workloads: malloc members {} MiB, one channel, QD {}, 64 KiB chunk; memcpy: same block size, between {} buffers and the members' total size",
        env.member_mib, env.qd, env.qd
    );
    println!(
        "{:>18} {:>14} {:>9} {:>8} {:>10} {:>8}  vs issue's SPDK",
        "array", "workload", "M IOPS", "GB/s", "memcpy GB/s", "/memcpy"
    );
    let rows: [(&str, Option<ArraySpec>, &[Work]); 8] = [
        ("malloc", None, &[RANDW4K, SEQW128K, RANDR4K, SEQR128K]),
        ("raid0 x4", Some((Level::Raid0, 4, None)), &[RANDW4K, SEQW128K]),
        ("raid1 x2", Some((Level::Raid1, 2, None)), &[RANDW4K, SEQW128K]),
        ("raid5 x4", Some((Level::Raid5, 4, Some(2))), &[RANDW4K, SEQW128K, FULLW192K, RANDR4K, SEQR128K]),
        ("raid5 x4 degraded", Some((Level::Raid5, 4, Some(2))), &[RANDR4K, SEQR128K, RANDW4K, FULLW192K]),
        ("raid6 x4", Some((Level::Raid6, 4, Some(2))), &[RANDW4K, SEQW128K]),
        ("raid6 x6", Some((Level::Raid6, 6, Some(2))), &[RANDW4K, SEQW128K, FULLW256K]),
        ("raid10 n2 x4", Some((Level::Raid10, 4, Some(0x102))), &[RANDW4K, SEQW128K]),
    ];
    for (i, (name, level, works)) in rows.into_iter().enumerate() {
        let works: Vec<&Work> = works.iter().filter(|w| format!("{name} {}", w.name).contains(filter)).collect();
        if works.is_empty() {
            continue;
        }
        let reg = Registry::new();
        let tag = format!("i{i}");
        let (array, disks) = match level {
            None => {
                member(&reg, &tag, env.member_mib);
                (None, 1)
            }
            Some((level, disks, layout)) => {
                let (a, names) = create(&reg, &tag, level, disks, layout, 64, env.member_mib);
                if name.ends_with("degraded") {
                    a.manage(ManageCmd::SetFaulty(names[1].clone())).expect("fail a member");
                }
                (Some(a), disks)
            }
        };
        let bdev = array.as_ref().map_or(tag.clone(), |a| a.name().to_string());
        let mut ch = reg.open(&bdev, true).expect("open").channel().expect("channel");
        prefault(&mut ch);
        // The same kind of memory as the members' (transparent hugepages).
        let mut footprint = DmaBuf::zeroed(disks * (env.member_mib << 20) as usize).expect("memcpy footprint");
        footprint.as_mut_slice().fill(0x33);
        for w in works {
            issue_row(env, name, &mut ch, footprint.as_mut_slice(), w);
        }
        drop(ch);
        if let Some(a) = array {
            a.stop().expect("stop");
        }
    }
}

fn legacy_report(env: &Env, name: &str, ch: &mut BdevChannel) {
    let (sw, _) = run(ch, true, 1 << 20, Pattern::Sequential, env.qd, env.secs);
    let (sr, _) = run(ch, false, 1 << 20, Pattern::Sequential, env.qd, env.secs);
    let (_, rw) = run(ch, true, 4096, Pattern::Random, env.qd, env.secs);
    let (_, rr) = run(ch, false, 4096, Pattern::Random, env.qd, env.secs);
    println!("{name:>22} {:>10.0} {:>10.0} {:>12.0} {:>12.0}", sw / 1e6, sr / 1e6, rw, rr);
}

fn legacy(env: &Env, filter: &str) {
    println!("members: malloc {} MiB each; one channel, QD {}, chunk 512 KiB", env.member_mib, env.qd);
    println!("{:>22} {:>10} {:>10} {:>12} {:>12}", "array", "seqW MB/s", "seqR MB/s", "randW 4K/s", "randR 4K/s");
    let levels: [(&str, Level, usize, Option<u32>); 6] = [
        ("raid0 x4", Level::Raid0, 4, None),
        ("raid1 x2", Level::Raid1, 2, None),
        ("raid10 n2 x4", Level::Raid10, 4, Some(0x102)),
        ("raid5 x4", Level::Raid5, 4, Some(2)),
        ("raid6 x6", Level::Raid6, 6, Some(2)),
        ("raid5 x4 degraded", Level::Raid5, 4, Some(2)),
    ];
    for (i, (name, level, disks, layout)) in levels.into_iter().enumerate() {
        if !name.contains(filter) {
            continue;
        }
        let reg = Registry::new();
        let (array, names) = create(&reg, &format!("a{i}"), level, disks, layout, 0, env.member_mib);
        if name.ends_with("degraded") {
            array.manage(ManageCmd::SetFaulty(names[1].clone())).expect("fail a member");
        }
        let mut ch = reg.open(array.name(), true).expect("open").channel().expect("channel");
        legacy_report(env, name, &mut ch);
        drop(ch);
        array.stop().expect("stop");
    }
    if !"malloc (one member)".contains(filter) {
        return;
    }
    let reg = Registry::new();
    member(&reg, "single", env.member_mib);
    let mut ch = reg.open("single", true).expect("open").channel().expect("channel");
    legacy_report(env, "malloc (one member)", &mut ch);
}

/// Fails member 1, adds a spare and times its recovery, with or without
/// 4 KiB random writes on the array meanwhile.
fn rebuild_one(env: &Env, name: &str, level: Level, disks: usize, layout: Option<u32>, load: bool) {
    let reg = Registry::new();
    let tag = format!("r{}{}", disks, u8::from(load));
    let (array, names) = create(&reg, &tag, level, disks, layout, 64, env.member_mib);
    let spare = format!("{tag}spare");
    member(&reg, &spare, env.member_mib);
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    array.monitor(Arc::new(move |ev| {
        if matches!(ev, MdEvent::RecoveryFinished { .. }) {
            f.store(true, Ordering::Release);
        }
    }));
    let mut ch = reg.open(array.name(), true).expect("open").channel().expect("channel");
    prefault(&mut ch);
    array.manage(ManageCmd::SetFaulty(names[1].clone())).expect("fail a member");
    array.manage(ManageCmd::RemoveDisk(names[1].clone())).expect("remove it");
    let t0 = Instant::now();
    array.manage(ManageCmd::AddDisk(spare)).expect("add the spare");
    let mut ios = 0.0;
    let mut io_secs = 0.0;
    // With a load, at least one slice of IO even when the rebuild is quick.
    while !finished.load(Ordering::Acquire) || (load && io_secs == 0.0) {
        if load {
            let (_, iops) = run(&mut ch, true, 4096, Pattern::Random, env.qd, 0.01);
            ios += iops * 0.01;
            io_secs += 0.01;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "recovery did not finish");
    }
    let el = t0.elapsed().as_secs_f64();
    let bytes = array.detail().disks.iter().map(|d| d.size_kib).max().unwrap_or(0) as f64 * 1024.0;
    let io =
        if load { format!("; array 4K randwrite meanwhile {:.3} M IOPS", ios / io_secs / 1e6) } else { String::new() };
    println!(
        "{name:>10} {:>10}: {:.0} MiB rebuilt in {el:.2} s = {:.0} MB/s{io}",
        if load { "with IO" } else { "idle" },
        bytes / 1048576.0,
        bytes / el / 1e6
    );
    drop(ch);
    array.stop().expect("stop");
}

fn rebuild(env: &Env, filter: &str) {
    println!(
        "rebuild onto a spare: malloc members {} MiB, 64 KiB chunk, QD {} for the concurrent IO",
        env.member_mib, env.qd
    );
    for (name, level, disks, layout) in [("raid1 x2", Level::Raid1, 2, None), ("raid5 x4", Level::Raid5, 4, Some(2))] {
        if !name.contains(filter) {
            continue;
        }
        for load in [false, true] {
            rebuild_one(env, name, level, disks, layout, load);
        }
    }
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let filter = std::env::args().nth(2).unwrap_or_default();
    let var = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let env =
        Env { member_mib: var("MEMBER_MIB", 256), qd: var("QD", 32) as usize, secs, memcpy: var("MEMCPY", 1) != 0 };
    let mode = std::env::var("BENCH").unwrap_or_else(|_| "issue".into());
    if matches!(mode.as_str(), "issue" | "all") {
        issue(&env, &filter);
    }
    if matches!(mode.as_str(), "legacy" | "all") {
        legacy(&env, &filter);
    }
    if matches!(mode.as_str(), "rebuild" | "all") {
        rebuild(&env, &filter);
    }
}
