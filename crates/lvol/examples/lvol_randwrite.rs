//! 4 KiB random write IOPS on one channel, queue depth 32, over a malloc bdev (so the figure is
//! the volume's own cost per IO): a thin volume whose clusters are all allocated and valid
//! (overwrites), and a fresh thin volume (first writes: each fills the rest of its 16 KiB
//! granule). Best of `reps` runs each. For A/B runs of two builds, interleaved:
//! `cargo run --release -p xbdev-lvol --example lvol_randwrite -- [reps] [seconds]`.

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use lvol::Lvol;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const VOL_MIB: u64 = 512;
const QD: usize = 32;
const IO: u64 = 4096;

/// Random 4 KiB writes (distinct 4 KiB slots per pass when `fresh`) for `secs`: IOPS.
fn run(ch: &mut BdevChannel, secs: f64, seed: u64, limit: u64) -> f64 {
    let bs = ch.block_size() as u64;
    let slots = VOL_MIB * MIB / IO;
    let mut bufs: Vec<DmaBuf> = (0..QD).map(|_| DmaBuf::alloc(IO as usize).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.as_mut_slice().iter_mut().enumerate().for_each(|(k, x)| *x = (k as u8) ^ (i as u8) ^ 0x5a);
    }
    // A permutation of the slots (odd multiplier mod a power of two), so first writes never repeat.
    let mut s = seed;
    let mul = (bdev::rand::next(&mut s) % slots) | 1;
    let mut free: Vec<usize> = (0..QD).collect();
    let (mut issued, mut done) = (0u64, 0u64);
    let t0 = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    loop {
        let stop = t0.elapsed() >= dur || issued >= limit;
        while let Some(slot) = if stop { None } else { free.pop() } {
            let lba = (issued.wrapping_mul(mul) % slots) * IO / bs;
            let io = IoRequest::write(lba, IO / bs, IoVecs::single(bufs[slot].iovec()), slot as u64);
            if ch.submit(&io).is_err() {
                free.push(slot);
                break;
            }
            issued += 1;
        }
        ch.poll(&mut |tag, st| {
            assert_eq!(st, IoStatus::Success, "write failed");
            free.push(tag as usize);
            done += 1;
        });
        if stop && done == issued {
            break;
        }
    }
    done as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let reg = Registry::new();
    let lvol = Lvol::new(&reg);
    let bytes = 2 * VOL_MIB * MIB + 256 * MIB;
    let m = MallocBdev::new(MallocParams { name: "m0".into(), num_blocks: bytes / 512, block_size: 512 }).unwrap();
    reg.register(Arc::new(m)).unwrap();
    lvol.lvs_create("m0", "lvs", MIB).unwrap();
    // Allocated thin volume: written whole once.
    lvol.lvol_create("lvs", "thin", VOL_MIB, true).unwrap();
    let mut ch = reg.open("lvs/thin", true).unwrap().channel().unwrap();
    let mut buf = DmaBuf::alloc(MIB as usize).unwrap();
    buf.as_mut_slice().fill(0x33);
    for c in 0..VOL_MIB {
        ch.submit(&IoRequest::write(c * MIB / 512, MIB / 512, IoVecs::single(buf.iovec()), 0)).unwrap();
        let mut ok = None;
        while ok.is_none() {
            ch.poll(&mut |_, st| ok = Some(st));
        }
        assert_eq!(ok, Some(IoStatus::Success));
    }
    let mut best_over = 0f64;
    for r in 0..reps {
        best_over = best_over.max(run(&mut ch, secs, r as u64 + 1, u64::MAX));
    }
    drop(ch);
    // First writes: a fresh thin volume per run, each 4 KiB slot written once at most.
    let mut best_first = 0f64;
    for r in 0..reps {
        lvol.lvol_create("lvs", "fresh", VOL_MIB, true).unwrap();
        let mut ch = reg.open("lvs/fresh", true).unwrap().channel().unwrap();
        best_first = best_first.max(run(&mut ch, secs, r as u64 + 7, VOL_MIB * MIB / IO / 2));
        drop(ch);
        lvol.lvol_destroy("lvs/fresh").unwrap();
    }
    println!("thin allocated 4k randwrite qd{QD}: {:.0} IOPS (best of {reps})", best_over);
    println!("thin first-write 4k randwrite qd{QD}: {:.0} IOPS (best of {reps})", best_first);
}
