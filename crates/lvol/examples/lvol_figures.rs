//! Figures for the lvol issue: write IOPS (raw, thick, thin first write, thin overwrite),
//! copy-on-write cost in a clone, snapshot creation time for 1 GiB and 16 GiB volumes, read
//! latency through a chain of 10 snapshots, compression ratio and throughput, encryption
//! throughput. Run: `cargo run --release -p xbdev-lvol --example lvol_figures -- [dir]`
//! (`dir` holds the aio backing files, default /tmp/lvol-figures; about 20 GiB sparse).

use bdev::backends::aio::{AioBdev, AioParams};
use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use lvol::{CreateOpts, Lvol};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn rng(s: &mut u64) -> u64 {
    bdev::rand::next(s)
}

/// Keep `qd` IOs in flight; `next(i)` gives (write?, lba, blocks) of IO `i`, `None` to stop.
fn drive(
    ch: &mut BdevChannel,
    qd: usize,
    io_bytes: usize,
    fill: u8,
    mut next: impl FnMut(u64) -> Option<(bool, u64)>,
) -> (u64, Duration, Vec<u64>) {
    let bs = ch.block_size() as u64;
    let mut bufs: Vec<DmaBuf> = (0..qd).map(|_| DmaBuf::alloc(io_bytes).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        for (k, x) in b.as_mut_slice().iter_mut().enumerate() {
            *x = if fill == 0 { (k as u8) ^ (i as u8) } else { fill };
        }
    }
    let mut start = vec![Instant::now(); qd];
    let mut lat = Vec::new();
    let mut free: Vec<usize> = (0..qd).collect();
    let mut issued = 0u64;
    let mut done = 0u64;
    let mut exhausted = false;
    let t0 = Instant::now();
    loop {
        while !exhausted {
            let Some(slot) = free.pop() else { break };
            match next(issued) {
                Some((w, lba)) => {
                    let v = IoVecs::single(bufs[slot].iovec());
                    let n = io_bytes as u64 / bs;
                    let io = if w {
                        IoRequest::write(lba, n, v, slot as u64)
                    } else {
                        IoRequest::read(lba, n, v, slot as u64)
                    };
                    start[slot] = Instant::now();
                    if ch.submit(&io).is_err() {
                        free.push(slot);
                        break;
                    }
                    issued += 1;
                }
                None => {
                    free.push(slot);
                    exhausted = true;
                }
            }
        }
        let mut bad = None;
        ch.poll(&mut |tag, st| {
            if st != IoStatus::Success {
                bad = Some(st);
            }
            lat.push(start[tag as usize].elapsed().as_nanos() as u64);
            free.push(tag as usize);
            done += 1;
        });
        if let Some(st) = bad {
            panic!("io failed: {st}");
        }
        if exhausted && done == issued {
            break;
        }
    }
    (done, t0.elapsed(), lat)
}

fn pct(lat: &mut [u64], p: f64) -> f64 {
    lat.sort_unstable();
    lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64 / 1000.0
}

fn aio(reg: &Registry, dir: &str, name: &str, bytes: u64) -> Arc<dyn Bdev> {
    let path = format!("{dir}/{name}.img");
    let _ = std::fs::remove_file(&path);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(bytes).unwrap();
    drop(f);
    let b: Arc<dyn Bdev> = Arc::new(AioBdev::new(AioParams::new(name, &path)).unwrap());
    reg.register(b.clone()).unwrap();
    b
}

fn malloc(reg: &Registry, name: &str, bytes: u64) -> Arc<dyn Bdev> {
    let b: Arc<dyn Bdev> = Arc::new(
        MallocBdev::new(MallocParams { name: name.into(), num_blocks: bytes / 512, block_size: 512 }).unwrap(),
    );
    reg.register(b.clone()).unwrap();
    b
}

fn iops(n: u64, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

fn rand_writes(ch: &mut BdevChannel, span_blocks: u64, count: u64, seed: u64) -> f64 {
    let bpi = 4096 / ch.block_size() as u64;
    let mut s = seed;
    let (n, t, _) = drive(ch, 32, 4096, 0, |i| (i < count).then(|| (true, (rng(&mut s) % (span_blocks / bpi)) * bpi)));
    iops(n, t)
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn write_iops(dir: &str) {
    section("4 KiB random writes, QD32, one thread");
    for backend in ["malloc", "aio"] {
        for cluster in [4 * MIB, 256 << 10] {
            let reg = Registry::new();
            let lv = Lvol::new(&reg);
            let dev = 2 * GIB;
            let raw = if backend == "malloc" { malloc(&reg, "raw", dev) } else { aio(&reg, dir, "raw", dev) };
            let vol_size = 512 * MIB;
            let span = vol_size / 512;
            let mut rc = reg.open(&raw.info().name, true).unwrap().channel().unwrap();
            // Precondition: write the whole device once (no holes or unwritten extents in the
            // file, no first-touch page faults in the RAM disk).
            drive(&mut rc, 8, MIB as usize, 0, |i| (i < dev / MIB).then(|| (true, i * 2048)));
            let raw_iops = rand_writes(&mut rc, span, 100_000, 1);
            drop(rc);
            lv.lvs_create_opts("raw", "lvs", &CreateOpts { cluster_size: cluster, ..CreateOpts::default() }).unwrap();
            let g = lv.stores()[0].granule_size;
            lv.lvol_create("lvs", "thick", vol_size / MIB, false).unwrap();
            let mut ch = reg.open("lvs/thick", true).unwrap().channel().unwrap();
            // The thick volume's clusters were zeroed with write-zeroes: write them once.
            drive(&mut ch, 8, MIB as usize, 0, |i| (i < vol_size / MIB).then(|| (true, i * 2048)));
            let thick = rand_writes(&mut ch, span, 100_000, 2);
            drop(ch);
            lv.lvol_create("lvs", "thin", vol_size / MIB, true).unwrap();
            let mut ch = reg.open("lvs/thin", true).unwrap().channel().unwrap();
            // First writes: one 4 KiB write at the start of distinct, never written granules.
            let ngran = vol_size / g;
            let first_n = ngran.min(if backend == "malloc" { 65536 } else { 4096 });
            let mut order: Vec<u64> = (0..ngran).collect();
            let mut s = 7;
            for i in (1..order.len()).rev() {
                order.swap(i, (rng(&mut s) % (i as u64 + 1)) as usize);
            }
            let gblk = g / 512;
            let before = lv.stores()[0].clone();
            let (n, t, _) = drive(&mut ch, 32, 4096, 0, |i| (i < first_n).then(|| (true, order[i as usize] * gblk)));
            let first = iops(n, t);
            let after = lv.stores()[0].clone();
            let txns = after.journal_txns - before.journal_txns;
            let recs = after.journal_records - before.journal_records;
            // Overwrites of the granules just written.
            let mut s = 9;
            let (n, t, _) = drive(&mut ch, 32, 4096, 0, |i| {
                (i < 100_000).then(|| (true, order[(rng(&mut s) % first_n) as usize] * gblk))
            });
            let over = iops(n, t);
            println!(
                "{backend:>6} cluster {:>5} KiB (granule {:>3} KiB): raw {:>8.0}  thick {:>8.0}  thin first-write {:>8.0} ({:.1} records/txn)  thin overwrite {:>8.0} IOPS",
                cluster >> 10,
                g >> 10,
                raw_iops,
                thick,
                first,
                recs as f64 / txns.max(1) as f64,
                over
            );
            drop(ch);
            lv.lvs_destroy("lvs").unwrap();
        }
    }
}

fn cow_cost(dir: &str) {
    section("copy-on-write in a clone of a fully written snapshot: 4 KiB random first writes, QD32 (aio)");
    for cluster in [4 * MIB, 256 << 10] {
        let reg = Registry::new();
        let lv = Lvol::new(&reg);
        aio(&reg, dir, "cow", 2 * GIB);
        lv.lvs_create_opts("cow", "lvs", &CreateOpts { cluster_size: cluster, ..CreateOpts::default() }).unwrap();
        let g = lv.stores()[0].granule_size;
        let size = 256 * MIB;
        lv.lvol_create("lvs", "v", size / MIB, true).unwrap();
        let mut ch = reg.open("lvs/v", true).unwrap().channel().unwrap();
        let (_, _, _) = drive(&mut ch, 8, MIB as usize, 0, |i| (i < size / MIB).then(|| (true, i * (MIB / 512))));
        drop(ch);
        lv.snapshot_create("lvs/v", "s").unwrap();
        lv.clone_create("lvs/s", "c").unwrap();
        let before = reg.stats("cow").unwrap();
        let mut ch = reg.open("lvs/c", true).unwrap().channel().unwrap();
        let ngran = size / g;
        let count = ngran.min(2048);
        let mut order: Vec<u64> = (0..ngran).collect();
        let mut s = 3;
        for i in (1..order.len()).rev() {
            order.swap(i, (rng(&mut s) % (i as u64 + 1)) as usize);
        }
        let (n, t, _) = drive(&mut ch, 32, 4096, 0, |i| (i < count).then(|| (true, order[i as usize] * (g / 512))));
        let after = reg.stats("cow").unwrap();
        let wbytes = after.bytes_of(bdev::IoType::Write) - before.bytes_of(bdev::IoType::Write);
        let rbytes = after.bytes_of(bdev::IoType::Read) - before.bytes_of(bdev::IoType::Read);
        println!(
            "cluster {:>5} KiB, granule {:>3} KiB: {:>8.0} IOPS; per 4 KiB write the base device read {:>6.1} KiB and wrote {:>6.1} KiB (data + fill + journal); a whole-cluster copy would move {} KiB",
            cluster >> 10,
            g >> 10,
            iops(n, t),
            rbytes as f64 / n as f64 / 1024.0,
            wbytes as f64 / n as f64 / 1024.0,
            cluster >> 10
        );
        drop(ch);
        lv.lvs_destroy("lvs").unwrap();
    }
}

fn snapshot_time(dir: &str) {
    section("snapshot creation time (aio file, 4 MiB clusters)");
    let reg = Registry::new();
    let lv = Lvol::new(&reg);
    aio(&reg, dir, "snap", 20 * GIB);
    lv.lvs_create("snap", "lvs", 4 * MIB).unwrap();
    // 1 GiB written for real, sequentially; 16 GiB thick (every cluster allocated and every
    // granule valid: the same metadata as a fully written volume).
    lv.lvol_create("lvs", "g1", 1024, true).unwrap();
    let mut ch = reg.open("lvs/g1", true).unwrap().channel().unwrap();
    let t = Instant::now();
    drive(&mut ch, 8, MIB as usize, 0, |i| (i < 1024).then(|| (true, i * 2048)));
    println!("filled 1 GiB in {:?}", t.elapsed());
    let t = Instant::now();
    lv.lvol_create("lvs", "g16", 16 * 1024, false).unwrap();
    println!("created thick 16 GiB volume in {:?}", t.elapsed());
    drop(ch);
    for name in ["g1", "g16"] {
        let mut times = Vec::new();
        for k in 0..7 {
            let t = Instant::now();
            lv.snapshot_create(&format!("lvs/{name}"), &format!("{name}_s{k}")).unwrap();
            times.push(t.elapsed());
        }
        let info = lv.store("lvs").unwrap().volume(&format!("{name}_s0")).unwrap();
        println!(
            "{name}: {} clusters owned by the first snapshot; snapshot_create times {:?}",
            info.allocated_clusters, times
        );
        times.sort();
        println!("{name}: median {:?}, min {:?}, max {:?} (7 runs)", times[3], times[0], times[6]);
    }
    lv.lvs_destroy("lvs").unwrap();
}

fn chain_latency(dir: &str) {
    section("4 KiB random read latency, QD1, through a chain of 10 snapshots");
    for backend in ["malloc", "aio"] {
        let reg = Registry::new();
        let lv = Lvol::new(&reg);
        let bname = if backend == "malloc" {
            malloc(&reg, "chain", 2 * GIB).info().name.clone()
        } else {
            aio(&reg, dir, "chain", 2 * GIB).info().name.clone()
        };
        lv.lvs_create(&bname, "lvs", MIB).unwrap();
        let size = 256 * MIB;
        lv.lvol_create("lvs", "v", size / MIB, true).unwrap();
        let mut ch = reg.open("lvs/v", true).unwrap().channel().unwrap();
        drive(&mut ch, 8, MIB as usize, 0, |i| (i < size / MIB).then(|| (true, i * 2048)));
        let mut s = 1;
        let mut lat_of = |ch: &mut BdevChannel| {
            let (_, _, mut lat) =
                drive(ch, 1, 4096, 0, |i| (i < 20_000).then(|| (false, (rng(&mut s) % (size / 4096)) * 8)));
            (pct(&mut lat, 0.5), pct(&mut lat, 0.99))
        };
        let flat = lat_of(&mut ch);
        drop(ch);
        for k in 0..10 {
            lv.snapshot_create("lvs/v", &format!("s{k}")).unwrap();
            // A few writes per level, so every level owns something.
            let mut c = reg.open("lvs/v", true).unwrap().channel().unwrap();
            drive(&mut c, 1, 4096, 0, |i| (i < 16).then(|| (true, i * 8192 + k)));
        }
        let mut ch = reg.open("lvs/v", false).unwrap().channel().unwrap();
        let deep = lat_of(&mut ch);
        let mut rc = reg.open(&bname, false).unwrap().channel().unwrap();
        let raw = lat_of(&mut rc);
        println!(
            "{backend:>6}: raw p50 {:.1} us p99 {:.1} us | volume, no snapshots p50 {:.1} p99 {:.1} | top of 10-snapshot chain p50 {:.1} p99 {:.1}",
            raw.0, raw.1, flat.0, flat.1, deep.0, deep.1
        );
        drop((ch, rc));
        lv.lvs_destroy("lvs").unwrap();
    }
}

fn compression(dir: &str) {
    section("compression (lz4_flex, 4 MiB clusters = 64 KiB chunks), 256 MiB of text-like data, 64 KiB writes QD8");
    for backend in ["malloc", "aio"] {
        let reg = Registry::new();
        let lv = Lvol::new(&reg);
        let bname = if backend == "malloc" {
            malloc(&reg, "zb", 2 * GIB).info().name.clone()
        } else {
            aio(&reg, dir, "zb", 2 * GIB).info().name.clone()
        };
        lv.lvs_create(&bname, "lvs", 4 * MIB).unwrap();
        let size = 256 * MIB;
        lv.lvol_create("lvs", "plain", size / MIB, true).unwrap();
        lv.lvol_create("lvs", "z", size / MIB, true).unwrap();
        lv.compression_enable("lvs/z", 1).unwrap();
        // Pseudo-text: random words from a small vocabulary (compresses about 2-3x).
        const WORDS: [&str; 24] = [
            "the",
            "volume",
            "store",
            "cluster",
            "granule",
            "snapshot",
            "clone",
            "journal",
            "flush",
            "block",
            "device",
            "write",
            "read",
            "metadata",
            "checkpoint",
            "thin",
            "thick",
            "data",
            "of",
            "and",
            "to",
            "in",
            "2024",
            "0x7f3a",
        ];
        let mut st = 11u64;
        let mut text = Vec::with_capacity(65536 + 16);
        while text.len() < 65536 {
            text.extend_from_slice(WORDS[(rng(&mut st) % 24) as usize].as_bytes());
            text.push(if rng(&mut st).is_multiple_of(9) { b'\n' } else { b' ' });
        }
        text.truncate(65536);
        let run = |vol: &str| {
            let mut ch = reg.open(vol, true).unwrap().channel().unwrap();
            let bs = ch.block_size() as u64;
            let mut res = [0f64; 3];
            for (k, r) in res.iter_mut().take(2).enumerate() {
                let (n, t, _) = drive_data(&mut ch, 8, &text, |i| (i < size / 65536).then(|| (true, i * 65536 / bs)));
                let _ = k;
                *r = n as f64 * 65536.0 / t.as_secs_f64() / MIB as f64;
            }
            let (n, t, _) = drive(&mut ch, 8, 65536, 0, |i| (i < size / 65536).then(|| (false, i * 65536 / bs)));
            res[2] = n as f64 * 65536.0 / t.as_secs_f64() / MIB as f64;
            res
        };
        let [pw1, pw2, pr] = run("lvs/plain");
        let [zw1, zw2, zr] = run("lvs/z");
        let v = lv.store("lvs").unwrap().volume("z").unwrap();
        println!(
            "{backend:>6}: uncompressed first write {pw1:.0} MiB/s, overwrite {pw2:.0}, read {pr:.0} | compressed first write {zw1:.0} MiB/s, overwrite {zw2:.0}, read {zr:.0}; ratio {:.2} ({} MiB stored for {} MiB)",
            v.compression_ratio(),
            v.compressed_stored_bytes / MIB,
            v.compressed_logical_bytes / MIB
        );
        lv.lvs_destroy("lvs").unwrap();
    }
}

fn drive_data(
    ch: &mut BdevChannel,
    qd: usize,
    data: &[u8],
    mut next: impl FnMut(u64) -> Option<(bool, u64)>,
) -> (u64, Duration, Vec<u64>) {
    let bs = ch.block_size() as u64;
    let mut bufs: Vec<DmaBuf> = (0..qd).map(|_| DmaBuf::alloc(data.len()).unwrap()).collect();
    for b in bufs.iter_mut() {
        b.as_mut_slice().copy_from_slice(data);
    }
    let mut free: Vec<usize> = (0..qd).collect();
    let (mut issued, mut done, mut exhausted) = (0u64, 0u64, false);
    let t0 = Instant::now();
    loop {
        while !exhausted {
            let Some(slot) = free.pop() else { break };
            match next(issued) {
                Some((_, lba)) => {
                    let io =
                        IoRequest::write(lba, data.len() as u64 / bs, IoVecs::single(bufs[slot].iovec()), slot as u64);
                    if ch.submit(&io).is_err() {
                        free.push(slot);
                        break;
                    }
                    issued += 1;
                }
                None => {
                    free.push(slot);
                    exhausted = true;
                }
            }
        }
        ch.poll(&mut |tag, st| {
            assert_eq!(st, IoStatus::Success);
            free.push(tag as usize);
            done += 1;
        });
        if exhausted && done == issued {
            break;
        }
    }
    (done, t0.elapsed(), Vec::new())
}

fn encryption(dir: &str) {
    section("encryption (AES-XTS-256) vs the raw bdev, aio file");
    let reg = Registry::new();
    let lv = Lvol::new(&reg);
    let raw = aio(&reg, dir, "eb", 4 * GIB);
    let size = GIB;
    let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(29).wrapping_add(3)).collect();
    let seq = |ch: &mut BdevChannel, w: bool| {
        let bs = ch.block_size() as u64;
        let (n, t, _) = drive(ch, 8, 128 << 10, 0, |i| (i < size / (128 << 10)).then(|| (w, i * (128 << 10) / bs)));
        n as f64 * 128.0 / 1024.0 / t.as_secs_f64()
    };
    // Every target is written once before measuring (a sparse or fallocated file reads holes
    // without touching the device).
    let mut rc = reg.open(&raw.info().name, true).unwrap().channel().unwrap();
    seq(&mut rc, true);
    let (rw, rr, riops) = (seq(&mut rc, true), seq(&mut rc, false), rand_writes(&mut rc, size / 512, 100_000, 5));
    drop(rc);
    lv.lvs_create("eb", "lvs", 4 * MIB).unwrap();
    lv.lvol_create("lvs", "plain", size / MIB, false).unwrap();
    lv.lvol_create("lvs", "enc", size / MIB, false).unwrap();
    lv.encryption_enable("lvs/enc", &key).unwrap();
    let mut pc = reg.open("lvs/plain", true).unwrap().channel().unwrap();
    seq(&mut pc, true);
    let (pw, pr, piops) = (seq(&mut pc, true), seq(&mut pc, false), rand_writes(&mut pc, size / 512, 100_000, 5));
    let mut ec = reg.open("lvs/enc", true).unwrap().channel().unwrap();
    seq(&mut ec, true);
    let (ew, er, eiops) = (seq(&mut ec, true), seq(&mut ec, false), rand_writes(&mut ec, size / 512, 100_000, 5));
    println!("128 KiB sequential, QD8 (MiB/s): raw write {rw:.0} read {rr:.0} | thick volume write {pw:.0} read {pr:.0} | encrypted volume write {ew:.0} read {er:.0}");
    println!("4 KiB random write QD32 (IOPS): raw {riops:.0} | thick volume {piops:.0} | encrypted volume {eiops:.0}");
    let c = lvol::codec::Cipher::new(&key).unwrap();
    // 16 MiB, touched before timing; best of three passes each.
    let mut b = vec![0x5au8; 16 * MIB as usize];
    let mib = b.len() as f64 / MIB as f64;
    let best = |f: &mut dyn FnMut(&mut [u8]), b: &mut [u8]| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f(b);
                mib / t.elapsed().as_secs_f64()
            })
            .fold(0.0, f64::max)
    };
    let ours = best(&mut |b| c.encrypt(b, 4096, 0), &mut b);
    // The same work through `xts-mode` alone (one AES block per call), in the same run.
    use aes::cipher::KeyInit;
    let k = |r: std::ops::Range<usize>| aes::Aes256::new_from_slice(&key[r]).unwrap();
    let xts = xts_mode::Xts128::new(k(0..32), k(32..64));
    let reference = best(&mut |b| xts.encrypt_area(b, 4096, 0, xts_mode::get_tweak_default), &mut b);
    println!(
        "AES-XTS-256 alone on one core, 4 KiB units: {ours:.0} MiB/s (xts-mode per block: {reference:.0} MiB/s, {:.1}x)",
        ours / reference
    );
    drop((pc, ec));
    lv.lvs_destroy("lvs").unwrap();
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/lvol-figures".into());
    std::fs::create_dir_all(&dir).unwrap();
    let only = std::env::args().nth(2);
    let want = |s: &str| only.as_deref().is_none_or(|o| o == s);
    if want("iops") {
        write_iops(&dir);
    }
    if want("cow") {
        cow_cost(&dir);
    }
    if want("snapshot") {
        snapshot_time(&dir);
    }
    if want("chain") {
        chain_latency(&dir);
    }
    if want("compression") {
        compression(&dir);
    }
    if want("encryption") {
        encryption(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
