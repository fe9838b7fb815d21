//! Concurrent IO that the volume must serialize internally: first writes to different blocks
//! of one granule (each fills the rest of the granule), compressed read-modify-writes of one
//! granule, an unmap racing a compressed write, and writes on a full store while released
//! space waits for other channels. The base disk delays writes so the IO really overlaps.

mod common;
use common::late::{late_disk, LateDisk};
use common::*;

use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoType, IoVecs, Registry};
use lvol::{check, CreateOpts, Lvol};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const BS: u64 = 512;
/// Granule of a store with 1 MiB clusters, in blocks (16 KiB).
const GB: u64 = 32;

/// A store `lvs` with 1 MiB clusters on a disk whose writes land late (`late_disk`'s `only`).
fn late_store(bytes: u64, only: u64) -> (Arc<Registry>, Arc<Lvol>, Arc<LateDisk>) {
    let reg = Registry::new();
    let lvol = Lvol::new(&reg);
    let disk = late_disk(&reg, bytes, only);
    let opts = CreateOpts { cluster_size: MIB, journal_size: 1 << 20, max_volumes: 8 };
    lvol.lvs_create_opts("late", "lvs", &opts).unwrap();
    assert_eq!(lvol.stores()[0].granule_size, GB * BS);
    (reg, lvol, disk)
}

/// Submit every request at once and poll until all completed; each must succeed.
fn run_all(ch: &mut BdevChannel, ios: &[IoRequest]) {
    for io in ios {
        ch.submit(io).unwrap();
    }
    let mut left = ios.len();
    let t0 = Instant::now();
    while left > 0 {
        ch.poll(&mut |tag, st| {
            assert_eq!(st, IoStatus::Success, "io {tag}");
            left -= 1;
        });
        assert!(t0.elapsed() < Duration::from_secs(30), "io stuck");
    }
}

/// Write requests for `pieces` (lba, data), with their buffers (kept alive by the caller).
fn writes(pieces: &[(u64, Vec<u8>)]) -> (Vec<DmaBuf>, Vec<IoRequest>) {
    let mut bufs = Vec::new();
    let mut ios = Vec::new();
    for (k, (lba, d)) in pieces.iter().enumerate() {
        let mut b = DmaBuf::alloc(d.len()).unwrap();
        b.as_mut_slice().copy_from_slice(d);
        ios.push(IoRequest::write(*lba, d.len() as u64 / BS, IoVecs::single(b.iovec()), k as u64));
        bufs.push(b);
    }
    (bufs, ios)
}

/// Cut granule `g` into 2 to 4 disjoint pieces (some blocks may stay unwritten).
fn cut(g: u64, rng: &mut u64) -> Vec<(u64, u64)> {
    let n = 2 + bdev::rand::next(rng) % 3;
    let mut at = g * GB;
    let mut out = Vec::new();
    for k in 0..n {
        let room = (g + 1) * GB - at;
        if room < n - k {
            break;
        }
        let skip = bdev::rand::next(rng) % 2;
        let len = 1 + bdev::rand::next(rng) % (room / (n - k)).max(1);
        if at + skip + len > (g + 1) * GB {
            break;
        }
        out.push((at + skip, len));
        at += skip + len;
    }
    out
}

/// Write, concurrently on one channel, pieces of `granules` first written granules; `want`
/// holds what the volume shows before, and is updated.
fn race_pieces(ch: &mut BdevChannel, granules: std::ops::Range<u64>, want: &mut [u8], rng: &mut u64, seed: u64) {
    let mut pieces = Vec::new();
    for g in granules {
        for (lba, n) in cut(g, rng) {
            let d = pattern((n * BS) as usize, seed ^ (lba << 8));
            want[(lba * BS) as usize..((lba + n) * BS) as usize].copy_from_slice(&d);
            pieces.push((lba, d));
        }
    }
    let (_bufs, ios) = writes(&pieces);
    run_all(ch, &ios);
}

fn first_diff(got: &[u8], want: &[u8]) -> Option<u64> {
    got.chunks(BS as usize).zip(want.chunks(BS as usize)).position(|(a, b)| a != b).map(|k| k as u64)
}

#[test]
fn first_writes_to_one_granule_from_one_channel_all_persist() {
    let (reg, lvol, _) = late_store(32 * MIB, 0);
    lvol.lvol_create("lvs", "v", 8, true).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let mut want = vec![0u8; (8 * MIB) as usize];
    let mut rng = 11;
    // 16 granules at a time, each cut in pieces, all in flight together.
    for round in 0..16u64 {
        race_pieces(&mut ch, round * 16..round * 16 + 16, &mut want, &mut rng, round);
    }
    let got = read(&mut ch, 0, want.len());
    assert_eq!(first_diff(&got, &want), None, "a first write was lost (block shown)");
    assert_eq!(check(&lvol.store("lvs").unwrap()).unwrap().claimed_granules, 0);
}

#[test]
fn first_writes_to_one_granule_from_two_threads_all_persist() {
    let (reg, lvol, _) = late_store(32 * MIB, 0);
    lvol.lvol_create("lvs", "v", 4, true).unwrap();
    let granules = 4 * MIB / BS / GB;
    let go = Arc::new(Barrier::new(2));
    // Thread t writes half t of every granule (as one or two pieces), 8 granules per batch,
    // both threads on the same batch at once.
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let (reg, go) = (reg.clone(), go.clone());
            std::thread::spawn(move || {
                let mut ch = chan(&reg, "lvs/v");
                let mut rng = 3 + t;
                for batch in 0..granules / 8 {
                    let mut pieces = Vec::new();
                    for g in batch * 8..batch * 8 + 8 {
                        let half = g * GB + t * GB / 2;
                        let split = 1 + bdev::rand::next(&mut rng) % (GB / 2 - 1);
                        for (lba, n) in [(half, split), (half + split, GB / 2 - split)] {
                            pieces.push((lba, pattern((n * BS) as usize, lba * 7 + 1)));
                        }
                    }
                    let (_bufs, ios) = writes(&pieces);
                    go.wait();
                    run_all(&mut ch, &ios);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut want = vec![0u8; (4 * MIB) as usize];
    // Rebuild the expected image with the same random splits.
    for t in 0..2u64 {
        let mut rng = 3 + t;
        for g in 0..granules {
            let half = g * GB + t * GB / 2;
            let split = 1 + bdev::rand::next(&mut rng) % (GB / 2 - 1);
            for (lba, n) in [(half, split), (half + split, GB / 2 - split)] {
                let d = pattern((n * BS) as usize, lba * 7 + 1);
                want[(lba * BS) as usize..((lba + n) * BS) as usize].copy_from_slice(&d);
            }
        }
    }
    let got = read(&mut chan(&reg, "lvs/v"), 0, want.len());
    assert_eq!(first_diff(&got, &want), None, "a first write was lost (block shown)");
    assert_eq!(check(&lvol.store("lvs").unwrap()).unwrap().claimed_granules, 0);
}

#[test]
fn first_writes_to_one_granule_of_a_clone_fill_from_the_parent_and_all_persist() {
    let (reg, lvol, _) = late_store(32 * MIB, 0);
    lvol.lvol_create("lvs", "v", 4, true).unwrap();
    let base = pattern((4 * MIB) as usize, 99);
    let (_b, ios) =
        writes(&[(0, base[..(2 * MIB) as usize].to_vec()), (2 * MIB / BS, base[(2 * MIB) as usize..].to_vec())]);
    run_all(&mut chan(&reg, "lvs/v"), &ios);
    lvol.snapshot_create("lvs/v", "s").unwrap();
    lvol.clone_create("lvs/s", "c").unwrap();
    let mut ch = chan(&reg, "lvs/c");
    let mut want = base.clone();
    let mut rng = 17;
    for round in 0..8u64 {
        race_pieces(&mut ch, round * 16..round * 16 + 16, &mut want, &mut rng, 100 + round);
    }
    let got = read(&mut ch, 0, want.len());
    assert_eq!(first_diff(&got, &want), None, "a first write into the clone was lost (block shown)");
    assert_eq!(read(&mut chan(&reg, "lvs/v"), 0, base.len()), base, "the origin is untouched");
    assert_eq!(check(&lvol.store("lvs").unwrap()).unwrap().claimed_granules, 0);
}

#[test]
fn compressed_writes_to_one_granule_all_persist() {
    let (reg, lvol, _) = late_store(32 * MIB, 0);
    lvol.lvol_create("lvs", "z", 4, true).unwrap();
    let store = lvol.store("lvs").unwrap();
    store.set_compression("z", 1).unwrap();
    let mut ch = chan(&reg, "lvs/z");
    let mut want = vec![0u8; (4 * MIB) as usize];
    let mut rng = 23;
    // Fresh granules, then the same granules again (rewriting existing chunks).
    for round in 0..16u64 {
        let g0 = (round % 8) * 16;
        race_pieces(&mut ch, g0..g0 + 16, &mut want, &mut rng, 200 + round);
    }
    let got = read(&mut ch, 0, want.len());
    assert_eq!(first_diff(&got, &want), None, "a compressed write was lost (block shown)");
    assert!(store.volume("z").unwrap().compressed_chunks > 0);
    assert_eq!(check(&store).unwrap().claimed_granules, 0);
}

#[test]
fn an_unmap_racing_a_compressed_write_ends_as_one_of_the_two_orders() {
    // Writes of a whole granule (a raw chunk: the data does not compress) land 30 ms late.
    let (reg, lvol, _) = late_store(32 * MIB, GB);
    lvol.lvol_create("lvs", "z", 1, true).unwrap();
    let store = lvol.store("lvs").unwrap();
    store.set_compression("z", 1).unwrap();
    let mut ch = chan(&reg, "lvs/z");
    let n = 16u64;
    let old = pattern((n * GB * BS) as usize, 5);
    let (_b, ios) = writes(
        &(0..n)
            .map(|g| (g * GB, old[(g * GB * BS) as usize..((g + 1) * GB * BS) as usize].to_vec()))
            .collect::<Vec<_>>(),
    );
    run_all(&mut ch, &ios);
    // In each granule: a write of a few blocks (its chunk write is late), then, once it read
    // the old chunk, an unmap of the whole granule.
    let pieces: Vec<(u64, Vec<u8>)> = (0..n).map(|g| (g * GB + 4, pattern(8 * BS as usize, 50 + g))).collect();
    let (_b, ios) = writes(&pieces);
    for io in &ios {
        ch.submit(io).unwrap();
    }
    let mut done = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(10) {
        ch.poll(&mut |_, st| {
            assert_eq!(st, IoStatus::Success);
            done += 1;
        });
    }
    // (Normally none completed yet; a descheduled test thread only makes the race rarer.)
    let unmaps: Vec<IoRequest> = (0..n).map(|g| IoRequest::no_data(IoType::Unmap, g * GB, GB, 100 + g)).collect();
    for io in &unmaps {
        ch.submit(io).unwrap();
    }
    let t0 = Instant::now();
    while done < 2 * n {
        ch.poll(&mut |tag, st| {
            assert_eq!(st, IoStatus::Success, "io {tag}");
            done += 1;
        });
        assert!(t0.elapsed() < Duration::from_secs(30), "io stuck");
    }
    let got = read(&mut ch, 0, (n * GB * BS) as usize);
    let (mut unmap_last, mut write_last) = (0, 0);
    for (g, (lba, d)) in pieces.iter().enumerate() {
        let gran = &got[(g as u64 * GB * BS) as usize..((g as u64 + 1) * GB * BS) as usize];
        let mut after = vec![0u8; (GB * BS) as usize];
        let at = ((lba - g as u64 * GB) * BS) as usize;
        after[at..at + d.len()].copy_from_slice(d);
        if gran.iter().all(|&b| b == 0) {
            unmap_last += 1;
        } else if gran == after.as_slice() {
            write_last += 1;
        } else {
            panic!("granule {g}: neither order (old data survived the unmap)");
        }
    }
    eprintln!("{unmap_last} granules unmapped last, {write_last} written last");
    assert_eq!(check(&store).unwrap().claimed_granules, 0);
}

#[test]
fn a_write_on_a_full_store_waits_for_space_in_grace_instead_of_failing() {
    // Writes of 7 blocks land 30 ms late.
    let (reg, lvol, _) = late_store(24 * MIB, 7);
    lvol.lvol_create("lvs", "a", 1, true).unwrap();
    lvol.lvol_create("lvs", "b", 64, true).unwrap();
    lvol.lvol_create("lvs", "c", 1, true).unwrap();
    let store = lvol.store("lvs").unwrap();
    let cb = MIB / BS;
    let (mut ac, mut bc, mut cc) = (chan(&reg, "lvs/a"), chan(&reg, "lvs/b"), chan(&reg, "lvs/c"));
    let whole = pattern(MIB as usize, 1);
    assert_eq!(write(&mut ac, 0, &whole), IoStatus::Success);
    assert_eq!(write(&mut cc, 0, &whole), IoStatus::Success);
    let mut next = 0;
    while write(&mut bc, next * cb, &whole) == IoStatus::Success {
        next += 1;
    }
    assert_eq!(store.info().free_clusters, 0, "full; nothing pending: that write failed with NoSpace");
    for round in 0..4u64 {
        // c has a write in flight (late) when a releases its cluster: the space waits in
        // grace until c's write completes.
        let mut buf = DmaBuf::alloc(7 * BS as usize).unwrap();
        buf.as_mut_slice().copy_from_slice(&pattern(7 * BS as usize, 3));
        cc.submit(&IoRequest::write(0, 7, IoVecs::single(buf.iovec()), 1)).unwrap();
        assert_eq!(run(&mut ac, IoRequest::no_data(IoType::Unmap, 0, cb, 2)), IoStatus::Success);
        // b writes a new cluster on the full store: it waits, then succeeds.
        let mut bb = DmaBuf::alloc(MIB as usize).unwrap();
        bb.as_mut_slice().copy_from_slice(&whole);
        bc.submit(&IoRequest::write(next * cb, cb, IoVecs::single(bb.iovec()), 3)).unwrap();
        let mut order = Vec::new();
        let t0 = Instant::now();
        while order.len() < 2 {
            bc.poll(&mut |tag, st| order.push((tag, st)));
            cc.poll(&mut |tag, st| order.push((tag, st)));
            assert!(t0.elapsed() < Duration::from_secs(30), "io stuck: {order:?}");
        }
        assert_eq!(order, [(1, IoStatus::Success), (3, IoStatus::Success)], "round {round}: b waited for c's write");
        assert_eq!(read(&mut bc, next * cb, whole.len()), whole);
        // Nothing pending now: a write needing a cluster fails at once.
        assert_eq!(write(&mut ac, 0, &whole), IoStatus::NoSpace);
        // Give b's cluster back to a for the next round.
        assert_eq!(run(&mut bc, IoRequest::no_data(IoType::Unmap, next * cb, cb, 4)), IoStatus::Success);
        assert_eq!(write(&mut ac, 0, &whole), IoStatus::Success);
    }
    assert_eq!(check(&store).unwrap().claimed_granules, 0);
}

#[test]
fn a_flush_makes_a_write_into_a_granule_another_write_just_made_valid_durable() {
    // Journal transactions (4 KiB) land 30 ms late: records stay applied but not durable.
    let (reg, lvol, disk) = late_store(32 * MIB, 4096 / BS);
    lvol.lvol_create("lvs", "v", 1, true).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    // A first-writes blocks 0..4 of granule 0; B writes blocks 16..20 of it: B waits for A's
    // claim, then overwrites the granule A made valid and completes before A's record is
    // durable. A flush after B must make B's data durable: it waits for A's record.
    let (a, b) = (pattern(4 * BS as usize, 1), pattern(4 * BS as usize, 2));
    let (_bufs, ios) = writes(&[(0, a.clone()), (16, b.clone())]);
    for io in &ios {
        ch.submit(io).unwrap();
    }
    let t0 = Instant::now();
    let mut b_done = false;
    while !b_done {
        ch.poll(&mut |tag, st| {
            assert_eq!(st, IoStatus::Success);
            b_done |= tag == 1;
        });
        assert!(t0.elapsed() < Duration::from_secs(30), "io stuck");
    }
    ch.submit(&IoRequest::no_data(IoType::Flush, 0, 0, 7)).unwrap();
    let mut flushed = false;
    while !flushed {
        ch.poll(&mut |tag, st| {
            assert_eq!(st, IoStatus::Success);
            flushed |= tag == 7;
        });
        assert!(t0.elapsed() < Duration::from_secs(30), "io stuck");
    }
    // Crash now: load the store from what the disk holds.
    let img = disk.image();
    let reg2 = Registry::new();
    let l2 = Lvol::new(&reg2);
    let copy = malloc("copy", img.len() as u64, BS as u32);
    let mut cc = copy.open_channel().unwrap();
    let mut buf = DmaBuf::alloc(img.len()).unwrap();
    buf.as_mut_slice().copy_from_slice(&img);
    let n = img.len() as u64 / BS;
    cc.submit(&IoRequest::write(0, n, IoVecs::single(buf.iovec()), 0)).unwrap();
    let mut st = None;
    while st.is_none() {
        cc.poll(&mut |_, s| st = Some(s));
    }
    assert_eq!(st, Some(IoStatus::Success));
    reg2.register(copy).unwrap();
    let got = read(&mut chan(&reg2, "lvs/v"), 16, b.len());
    assert!(got == b, "the flushed write is lost after a crash");
    check(&l2.store("lvs").unwrap()).unwrap();
    drop(ch);
}
