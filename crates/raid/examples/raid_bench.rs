//! Throughput of RAID bdevs over RAM-disk members, one channel on the
//! calling thread (one core), queue depth 32.
//!
//! `cargo run --release -p xbdev-raid --example raid_bench [seconds] [filter]`
//! (`filter`: only arrays whose name contains it).
//!
//! For each level it prints MB/s of sequential 1 MiB writes and reads and
//! IOPS of random 4 KiB writes and reads; the last line is the same
//! workloads on a single malloc bdev (what the members cost).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use raid::array::{md_create, MdConfig};
use raid::geometry::Level;

const MEMBER_MIB: u64 = 256;
const QD: usize = 32;

fn member(reg: &Arc<Registry>, name: &str) {
    let m = MallocBdev::new(MallocParams { name: name.into(), num_blocks: MEMBER_MIB * 2048, block_size: 512 })
        .expect("malloc member");
    reg.register(Arc::new(m)).expect("register member");
}

/// Runs `QD` IOs at a time of `bytes` each for `secs`; returns (bytes/s, IO/s).
fn run(ch: &mut BdevChannel, write: bool, bytes: u64, random: bool, secs: f64) -> (f64, f64) {
    let bs = u64::from(ch.block_size());
    let blocks = bytes / bs;
    let span = ch.num_blocks() / blocks;
    let mut bufs: Vec<DmaBuf> = (0..QD).map(|_| DmaBuf::zeroed(bytes as usize).expect("buffer")).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.as_mut_slice().fill(i as u8 ^ 0x5a);
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_seq = 0u64;
    let mut pick = || {
        if random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % span
        } else {
            next_seq = (next_seq + 1) % span;
            next_seq
        }
    };
    let mut submit = |ch: &mut BdevChannel, tag: usize, bufs: &mut Vec<DmaBuf>| {
        let at = pick() * blocks;
        let iov = IoVecs::single(bufs[tag].iovec());
        let io = if write {
            IoRequest::write(at, blocks, iov, tag as u64)
        } else {
            IoRequest::read(at, blocks, iov, tag as u64)
        };
        ch.submit(&io).expect("submit");
    };
    for tag in 0..QD {
        submit(ch, tag, &mut bufs);
    }
    let t0 = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut done = 0u64;
    let mut free = Vec::with_capacity(QD);
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

fn report(name: &str, ch: &mut BdevChannel, secs: f64) {
    let (sw, _) = run(ch, true, 1 << 20, false, secs);
    let (sr, _) = run(ch, false, 1 << 20, false, secs);
    let (_, rw) = run(ch, true, 4096, true, secs);
    let (_, rr) = run(ch, false, 4096, true, secs);
    println!("{name:>22} {:>10.0} {:>10.0} {:>12.0} {:>12.0}", sw / 1e6, sr / 1e6, rw, rr);
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let filter = std::env::args().nth(2).unwrap_or_default();
    println!("members: malloc {MEMBER_MIB} MiB each; one channel, QD {QD}, chunk 512 KiB");
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
        if !name.contains(filter.as_str()) {
            continue;
        }
        let reg = Registry::new();
        let names: Vec<String> = (0..disks).map(|d| format!("a{i}m{d}")).collect();
        for n in &names {
            member(&reg, n);
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let cfg = MdConfig { layout, assume_clean: true, ..MdConfig::default() };
        let array = md_create(&reg, "md0", level, &refs, &cfg).expect("create array");
        if name.ends_with("degraded") {
            array.manage(raid::array::ManageCmd::SetFaulty(names[1].clone())).expect("fail a member");
        }
        let mut ch = reg.open("md0", true).expect("open").channel().expect("channel");
        report(name, &mut ch, secs);
        drop(ch);
        array.stop().expect("stop");
    }
    if !filter.is_empty() {
        return;
    }
    let reg = Registry::new();
    member(&reg, "single");
    let mut ch = reg.open("single", true).expect("open").channel().expect("channel");
    report("malloc (one member)", &mut ch, secs);
}
