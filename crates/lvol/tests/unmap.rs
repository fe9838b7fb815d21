//! Unmap and write-zeroes on thin volumes release space: granules covered whole and not read
//! from a parent lose their valid bits, emptied clusters return to the store; reads show
//! zeroes. Parent-backed granules, partial granules and thick volumes get zeroes written.
//! The race test runs writes and unmaps against one volume while another allocates, on a
//! disk whose writes land late, so freed clusters must not be reused under in-flight IO.

mod common;
use common::late::late_disk;
use common::*;

use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoType, IoVecs, Registry};
use lvol::{check, CreateOpts};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn unmap(ch: &mut BdevChannel, ty: IoType, lba: u64, n: u64) {
    assert_eq!(run(ch, IoRequest::no_data(ty, lba, n, 9)), IoStatus::Success, "{ty:?} {lba}+{n}");
}

fn free_clusters(lvol: &lvol::Lvol) -> u64 {
    lvol.stores()[0].free_clusters
}

#[test]
fn unmap_returns_thin_space_and_reads_zeroes() {
    let (reg, lvol, disk) = setup(64 * MIB, 512, MIB);
    let empty = free_clusters(&lvol);
    lvol.lvol_create("lvs", "o", 4, true).unwrap();
    lvol.lvol_create("lvs", "v", 16, true).unwrap();
    let mut oc = chan(&reg, "lvs/o");
    let od = pattern(4 * MIB as usize, 3);
    assert_eq!(write(&mut oc, 0, &od), IoStatus::Success);
    let mut vc = chan(&reg, "lvs/v");
    let vd = pattern(16 * MIB as usize, 4);
    for c in 0..16u64 {
        let r = (c * MIB) as usize..((c + 1) * MIB) as usize;
        assert_eq!(write(&mut vc, c * MIB / 512, &vd[r]), IoStatus::Success);
    }
    let store = lvol.store("lvs").unwrap();
    assert_eq!(store.volume("v").unwrap().allocated_clusters, 16);
    assert_eq!(free_clusters(&lvol), empty - 20);
    // Unaligned: clusters 1 and 2 go, clusters 0 and 3 keep what the range leaves.
    let (a, n) = (MIB / 512 / 2 + 1, 3 * MIB / 512 - 1);
    unmap(&mut vc, IoType::Unmap, a, n);
    assert_eq!(store.volume("v").unwrap().allocated_clusters, 14);
    assert_eq!(free_clusters(&lvol), empty - 18, "two clusters back");
    let mut want = vd.clone();
    want[(a * 512) as usize..((a + n) * 512) as usize].fill(0);
    assert_eq!(read(&mut vc, 0, want.len()), want);
    // Write-zeroes over the rest releases too; one request over the whole volume.
    unmap(&mut vc, IoType::WriteZeroes, 0, 16 * MIB / 512);
    let info = store.info();
    assert_eq!(store.volume("v").unwrap().allocated_clusters, 0);
    assert_eq!((info.free_clusters, info.releasing_clusters), (empty - 4, 0), "all of v's space is back");
    assert!(read(&mut vc, 0, 16 * MIB as usize).iter().all(|&b| b == 0));
    assert_eq!(read(&mut oc, 0, od.len()), od, "the other volume is intact");
    let rep = check(&store).unwrap();
    assert_eq!((rep.mapped_clusters, rep.releasing_clusters), (4, 0));
    // The space is reused: rewrite v completely.
    for c in 0..16u64 {
        let r = (c * MIB) as usize..((c + 1) * MIB) as usize;
        assert_eq!(write(&mut vc, c * MIB / 512, &vd[r]), IoStatus::Success);
    }
    unmap(&mut vc, IoType::Unmap, 0, 8 * MIB / 512);
    assert_eq!(free_clusters(&lvol), empty - 12);
    drop((vc, oc, store));
    let (reg2, l2) = reload(&lvol, &disk);
    assert_eq!(free_clusters(&l2), empty - 12, "released space stays released after a reload");
    let mut vc = chan(&reg2, "lvs/v");
    let got = read(&mut vc, 0, vd.len());
    assert!(got[..8 * MIB as usize].iter().all(|&b| b == 0));
    assert_eq!(&got[8 * MIB as usize..], &vd[8 * MIB as usize..]);
    assert_eq!(read(&mut chan(&reg2, "lvs/o"), 0, od.len()), od);
    check(&l2.store("lvs").unwrap()).unwrap();
}

#[test]
fn thick_volumes_keep_their_clusters_and_partial_granules_get_zeroes() {
    let (reg, lvol, _disk) = setup(64 * MIB, 512, MIB);
    lvol.lvol_create("lvs", "t", 4, false).unwrap();
    lvol.lvol_create("lvs", "v", 4, true).unwrap();
    let free = free_clusters(&lvol);
    let d = pattern(4 * MIB as usize, 5);
    let mut tc = chan(&reg, "lvs/t");
    write(&mut tc, 0, &d);
    unmap(&mut tc, IoType::Unmap, 0, 4 * MIB / 512);
    assert_eq!(lvol.store("lvs").unwrap().volume("t").unwrap().allocated_clusters, 4);
    assert_eq!(free_clusters(&lvol), free);
    assert!(read(&mut tc, 0, d.len()).iter().all(|&b| b == 0));
    // Granules are 16 KiB here: an unmap inside one granule writes zeroes, keeps the cluster.
    let mut vc = chan(&reg, "lvs/v");
    write(&mut vc, 0, &d[..MIB as usize]);
    unmap(&mut vc, IoType::Unmap, 1, 30);
    assert_eq!(lvol.store("lvs").unwrap().volume("v").unwrap().allocated_clusters, 1);
    let mut want = d[..MIB as usize].to_vec();
    want[512..31 * 512].fill(0);
    assert_eq!(read(&mut vc, 0, want.len()), want);
    check(&lvol.store("lvs").unwrap()).unwrap();
}

#[test]
fn unmap_on_a_clone_reads_zeroes_and_leaves_the_parent_alone() {
    let (reg, lvol, disk) = setup(64 * MIB, 512, MIB);
    lvol.lvol_create("lvs", "v", 4, true).unwrap();
    let d = pattern(4 * MIB as usize, 6);
    write(&mut chan(&reg, "lvs/v"), 0, &d);
    lvol.snapshot_create("lvs/v", "s").unwrap();
    lvol.clone_create("lvs/s", "c").unwrap();
    let store = lvol.store("lvs").unwrap();
    // Grow the clone: past the parent limit (4 MiB) its granules are its own.
    lvol.lvol_resize("lvs/c", 6).unwrap();
    let mut cc = chan(&reg, "lvs/c");
    let own = pattern(3 * MIB as usize, 7);
    assert_eq!(write(&mut cc, 3 * MIB / 512, &own), IoStatus::Success);
    assert_eq!(store.volume("c").unwrap().allocated_clusters, 3);
    let free = free_clusters(&lvol);
    unmap(&mut cc, IoType::Unmap, 0, 6 * MIB / 512);
    assert!(read(&mut cc, 0, 6 * MIB as usize).iter().all(|&b| b == 0), "the clone reads zeroes, not its parent");
    // Clusters 4 and 5 (past the parent limit) are released; 0..4 hold zeroes over the parent.
    let c = store.volume("c").unwrap();
    assert_eq!(c.allocated_clusters, 4);
    assert_eq!(free_clusters(&lvol), free - 1, "one cluster allocated for zeroes, two released");
    let mut sc = reg.open("lvs/s", false).unwrap().channel().unwrap();
    assert_eq!(read(&mut sc, 0, d.len()), d, "the snapshot is untouched");
    assert_eq!(read(&mut chan(&reg, "lvs/v"), 0, d.len()), d, "the origin is untouched");
    // A snapshot refuses unmap.
    let mut sw = reg.open("lvs/s", true).unwrap().channel().unwrap();
    assert_eq!(run(&mut sw, IoRequest::no_data(IoType::Unmap, 0, 8, 1)), IoStatus::Invalid);
    check(&store).unwrap();
    drop((cc, sc, sw, store));
    let (reg2, l2) = reload(&lvol, &disk);
    assert!(read(&mut chan(&reg2, "lvs/c"), 0, 6 * MIB as usize).iter().all(|&b| b == 0));
    check(&l2.store("lvs").unwrap()).unwrap();
}

#[test]
fn unmap_on_a_compressed_volume_removes_its_chunks() {
    let (reg, lvol, _disk) = setup(64 * MIB, 512, MIB);
    lvol.lvol_create("lvs", "z", 2, true).unwrap();
    let store = lvol.store("lvs").unwrap();
    store.set_compression("z", 1).unwrap();
    let mut zc = chan(&reg, "lvs/z");
    let d: Vec<u8> = (0..2 * MIB as usize).map(|i| (i / 700) as u8).collect();
    write(&mut zc, 0, &d);
    let before = store.volume("z").unwrap();
    assert!(before.compressed_chunks > 0);
    unmap(&mut zc, IoType::Unmap, 0, 2 * MIB / 512);
    let after = store.volume("z").unwrap();
    assert_eq!((after.compressed_chunks, after.allocated_clusters), (0, 0));
    assert!(read(&mut zc, 0, d.len()).iter().all(|&b| b == 0));
    assert_eq!(check(&store).unwrap().packed_clusters, 0);
}

const BS: u64 = 512;

/// A block that names its volume, place and version, so any block found elsewhere is caught.
fn block(vol: u8, lba: u64, ver: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS as usize];
    b[0] = 0xA5;
    b[1] = vol;
    b[8..16].copy_from_slice(&lba.to_le_bytes());
    b[16..24].copy_from_slice(&ver.to_le_bytes());
    let mut s = lba ^ (ver << 20) ^ ((vol as u64) << 56);
    for x in b[24..].iter_mut() {
        *x = bdev::rand::next(&mut s) as u8;
    }
    b
}

fn blocks(vol: u8, lba: u64, n: u64, ver: u64) -> Vec<u8> {
    (0..n).flat_map(|k| block(vol, lba + k, ver)).collect()
}

/// Each block is zero or a consistent block of `vol` for its own place.
fn verify_a(data: &[u8], lba: u64) -> Result<(), String> {
    for (k, b) in data.chunks(BS as usize).enumerate() {
        if b.iter().all(|&x| x == 0) {
            continue;
        }
        let at = lba + k as u64;
        let ver = u64::from_le_bytes(b[16..24].try_into().unwrap());
        if b != block(1, at, ver).as_slice() {
            return Err(format!("volume a block {at}: foreign or torn data (tag {:#x} vol {})", b[0], b[1]));
        }
    }
    Ok(())
}

fn poll_until(ch: &mut BdevChannel, inflight: &mut usize, want: usize, bad: &mut Vec<String>) {
    let t0 = Instant::now();
    while *inflight > want {
        ch.poll(&mut |tag, st| {
            *inflight -= 1;
            if st != IoStatus::Success {
                bad.push(format!("io {tag}: {st}"));
            }
        });
        assert!(t0.elapsed() < Duration::from_secs(30), "io stuck");
    }
}

#[test]
fn writes_and_unmaps_racing_never_corrupt_another_volume() {
    let reg = Registry::new();
    let lvol = lvol::Lvol::new(&reg);
    let late: Arc<dyn bdev::Bdev> = late_disk(&reg, 6 * MIB, 0);
    // 64 KiB clusters (4 KiB granules): 91 clusters, 57 of them in use at most: a freed
    // cluster is handed out again soon.
    let opts = CreateOpts { cluster_size: 64 << 10, journal_size: 256 << 10, max_volumes: 8 };
    lvol.lvs_create_opts("late", "lvs", &opts).unwrap();
    let store = lvol.store("lvs").unwrap();
    let cb = (64 << 10) / BS;
    assert_eq!(store.info().total_clusters, 91);
    lvol.lvol_create("lvs", "a", 32 * cb * BS / MIB, true).unwrap();
    lvol.lvol_create("lvs", "b", 128 * cb * BS / MIB, true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (reg, stop) = (reg.clone(), stop.clone());
        std::thread::spawn(move || {
            // Volume a: up to 16 writes and unmaps in flight, overlapping on purpose.
            let mut ch = chan(&reg, "lvs/a");
            let mut bufs: Vec<DmaBuf> = (0..16).map(|_| DmaBuf::alloc((cb * BS) as usize).unwrap()).collect();
            let mut rng = 5u64;
            let (mut inflight, mut ver, mut bad) = (0usize, 0u64, Vec::new());
            let mut slot = 0;
            while !stop.load(Ordering::Relaxed) {
                poll_until(&mut ch, &mut inflight, 15, &mut bad);
                let r = bdev::rand::next(&mut rng);
                let lc = r % 32;
                ver += 1;
                let io = match r >> 8 & 3 {
                    0 => IoRequest::no_data(IoType::Unmap, lc * cb, cb * (1 + (r >> 12) % 2).min(32 - lc), ver),
                    1 => IoRequest::no_data(IoType::Unmap, lc * cb + (r >> 16) % cb, 1 + (r >> 24) % (2 * cb), ver),
                    _ => {
                        let n = 1 + (r >> 12) % cb;
                        let lba = lc * cb + (r >> 24) % (cb - n + 1);
                        let b = &mut bufs[slot];
                        slot = (slot + 1) % 16;
                        b.as_mut_slice()[..(n * BS) as usize].copy_from_slice(&blocks(1, lba, n, ver));
                        IoRequest::write(lba, n, IoVecs::single(b.iovec_range(0, (n * BS) as usize).unwrap()), ver)
                    }
                };
                let io = if io.offset_blocks + io.num_blocks > 32 * cb {
                    IoRequest::no_data(IoType::Unmap, io.offset_blocks, 32 * cb - io.offset_blocks, ver)
                } else {
                    io
                };
                ch.submit(&io).unwrap();
                inflight += 1;
            }
            poll_until(&mut ch, &mut inflight, 0, &mut bad);
            (ver, bad)
        })
    };
    // Volume b: write whole clusters (allocating), verify them while they live, unmap them.
    let mut bc = chan(&reg, "lvs/b");
    let t0 = Instant::now();
    let mut live: VecDeque<(u64, u64)> = VecDeque::new();
    let mut k = 0u64;
    let mut checked = 0;
    while t0.elapsed() < Duration::from_secs(2) || k < 100 {
        let lc = k % 128;
        let d = blocks(2, lc * cb, cb, k);
        assert_eq!(write(&mut bc, lc * cb, &d), IoStatus::Success, "write b cluster {lc}");
        live.push_back((lc, k));
        if live.len() > 24 {
            let (olc, ok) = live.pop_front().unwrap();
            assert!(
                read(&mut bc, olc * cb, (cb * BS) as usize) == blocks(2, olc * cb, cb, ok),
                "b cluster {olc} corrupted"
            );
            checked += 1;
            unmap(&mut bc, IoType::Unmap, olc * cb, cb);
        }
        k += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (ios, bad) = racer.join().unwrap();
    assert!(bad.is_empty(), "failed IO on volume a: {bad:?}");
    for (lc, v) in &live {
        assert!(read(&mut bc, lc * cb, (cb * BS) as usize) == blocks(2, lc * cb, cb, *v), "b cluster {lc} corrupted");
    }
    let mut ac = chan(&reg, "lvs/a");
    let a_data = read(&mut ac, 0, (32 * cb * BS) as usize);
    verify_a(&a_data, 0).unwrap();
    let rep = check(&store).unwrap();
    eprintln!("{ios} IOs on a, {k} clusters written on b ({checked} verified before unmap), {rep:?}");
    drop((ac, bc, store));
    let (reg2, l2) = reload(&lvol, &late);
    check(&l2.store("lvs").unwrap()).unwrap();
    let mut bc = chan(&reg2, "lvs/b");
    for (lc, v) in &live {
        assert!(
            read(&mut bc, lc * cb, (cb * BS) as usize) == blocks(2, lc * cb, cb, *v),
            "b cluster {lc} after reload"
        );
    }
    assert!(read(&mut chan(&reg2, "lvs/a"), 0, a_data.len()) == a_data, "volume a after reload");
}

/// Poll `ch` until the IO tagged `tag` completes; other completions go to `seen`.
fn wait_tag(ch: &mut BdevChannel, tag: u64, seen: &mut Vec<(u64, IoStatus)>) -> IoStatus {
    let t0 = Instant::now();
    loop {
        if let Some(i) = seen.iter().position(|x| x.0 == tag) {
            return seen.swap_remove(i).1;
        }
        ch.poll(&mut |t, st| seen.push((t, st)));
        assert!(t0.elapsed() < Duration::from_secs(30), "io {tag} stuck");
    }
}

/// A store on a disk whose writes of 7 blocks land 30 ms late, 91 clusters of 64 KiB: volume
/// a holds one cluster (written with `blocks(1, 0, cb, 0)`), thin volume b all the others, so
/// a cluster a releases is the only one b can get; b's first unallocated cluster is `spare`.
struct FullStore {
    _reg: Arc<Registry>,
    _lvol: Arc<lvol::Lvol>,
    store: Arc<lvol::Store>,
    ac: BdevChannel,
    bc: BdevChannel,
    spare: u64,
    /// Blocks per cluster.
    cb: u64,
}

fn full_store() -> FullStore {
    let reg = Registry::new();
    let lvol = lvol::Lvol::new(&reg);
    late_disk(&reg, 6 * MIB, 7);
    let opts = CreateOpts { cluster_size: 64 << 10, journal_size: 256 << 10, max_volumes: 8 };
    lvol.lvs_create_opts("late", "lvs", &opts).unwrap();
    let store = lvol.store("lvs").unwrap();
    let cb = (64 << 10) / BS;
    lvol.lvol_create("lvs", "a", 1, true).unwrap();
    lvol.lvol_create("lvs", "b", 6, true).unwrap();
    let mut ac = chan(&reg, "lvs/a");
    let mut bc = chan(&reg, "lvs/b");
    assert_eq!(write(&mut ac, 0, &blocks(1, 0, cb, 0)), IoStatus::Success);
    let mut spare = None;
    for lc in 0..96 {
        match write(&mut bc, lc * cb, &blocks(2, lc * cb, cb, 0)) {
            IoStatus::Success => {}
            IoStatus::NoSpace => {
                spare = Some(lc);
                break;
            }
            st => panic!("b write {lc}: {st}"),
        }
    }
    let spare = spare.expect("the store fills up");
    assert_eq!(store.info().free_clusters, 0);
    FullStore { _reg: reg, _lvol: lvol, store, ac, bc, spare, cb }
}

#[test]
fn a_released_cluster_is_not_reused_while_a_write_to_it_is_in_flight() {
    let FullStore { _lvol, store, mut ac, mut bc, spare, cb, .. } = full_store();
    let whole_a = blocks(1, 0, cb, 0);
    let mut seen = Vec::new();
    let mut waited = 0;
    for round in 1..=12u64 {
        // An overwrite of a's cluster, in flight (late), then an unmap releasing that cluster.
        let mut buf = DmaBuf::alloc(7 * BS as usize).unwrap();
        buf.as_mut_slice().copy_from_slice(&blocks(1, 3, 7, round));
        ac.submit(&IoRequest::write(3, 7, IoVecs::single(buf.iovec()), 1)).unwrap();
        ac.submit(&IoRequest::no_data(IoType::Unmap, 0, cb, 2)).unwrap();
        assert_eq!(wait_tag(&mut ac, 2, &mut seen), IoStatus::Success);
        // b takes the released cluster as soon as the store lets it: its write waits (the
        // store is full, the space is in grace) until a's late write completed.
        let data = blocks(2, spare * cb, cb, round);
        let mut bbuf = DmaBuf::alloc(data.len()).unwrap();
        bbuf.as_mut_slice().copy_from_slice(&data);
        bc.submit(&IoRequest::write(spare * cb, cb, IoVecs::single(bbuf.iovec()), 3)).unwrap();
        let mut b_done = None;
        let t0 = Instant::now();
        while b_done.is_none() {
            bc.poll(&mut |_, st| b_done = Some(st));
            if b_done.is_none() {
                ac.poll(&mut |t, st| seen.push((t, st)));
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "released space never came back");
        }
        assert_eq!(b_done, Some(IoStatus::Success), "b write");
        if seen.iter().any(|x| x.0 == 1) {
            waited += 1;
        }
        assert_eq!(wait_tag(&mut ac, 1, &mut seen), IoStatus::Success);
        let got = read(&mut bc, spare * cb, data.len());
        assert!(got == data, "round {round}: b's new cluster was overwritten by a's late write");
        // Give the cluster back to a for the next round.
        unmap(&mut bc, IoType::Unmap, spare * cb, cb);
        assert_eq!(write(&mut ac, 0, &whole_a), IoStatus::Success);
    }
    assert_eq!(waited, 12, "b's write completed only after a's late write, every round");
    assert!(read(&mut ac, 0, whole_a.len()) == whole_a);
    let rep = check(&store).unwrap();
    assert_eq!(rep.free_clusters, 0);
}

/// A write that finds the store full waits for space on its way back, but not forever: when
/// a channel holds that space by never completing its IO (never polled), the write fails with
/// `NoSpace` after the store's no-space timeout; once the channel moves on, space is back.
#[test]
fn a_write_waiting_for_space_held_by_a_stalled_channel_fails_after_the_timeout() {
    let FullStore { _lvol, store, mut ac, mut bc, spare, cb, .. } = full_store();
    assert_eq!(store.no_space_timeout(), Duration::from_secs(60));
    store.set_no_space_timeout(Duration::from_millis(300));
    // a: a late write in flight, then an unmap releasing its cluster; a is not polled after
    // the unmap completes, so its late write keeps the released cluster in grace.
    let mut seen = Vec::new();
    let mut buf = DmaBuf::alloc(7 * BS as usize).unwrap();
    buf.as_mut_slice().copy_from_slice(&blocks(1, 3, 7, 1));
    ac.submit(&IoRequest::write(3, 7, IoVecs::single(buf.iovec()), 1)).unwrap();
    ac.submit(&IoRequest::no_data(IoType::Unmap, 0, cb, 2)).unwrap();
    assert_eq!(wait_tag(&mut ac, 2, &mut seen), IoStatus::Success);
    let data = blocks(2, spare * cb, cb, 1);
    let mut bbuf = DmaBuf::alloc(data.len()).unwrap();
    bbuf.as_mut_slice().copy_from_slice(&data);
    let t0 = Instant::now();
    bc.submit(&IoRequest::write(spare * cb, cb, IoVecs::single(bbuf.iovec()), 3)).unwrap();
    let mut b_done = None;
    while b_done.is_none() {
        bc.poll(&mut |_, st| b_done = Some(st));
        assert!(t0.elapsed() < Duration::from_secs(20), "the waiting write never ended");
    }
    let waited = t0.elapsed();
    assert_eq!(b_done, Some(IoStatus::NoSpace));
    assert!(waited >= Duration::from_millis(300), "failed before the timeout: {waited:?}");
    // a moves on: its late write completes and the released cluster comes back.
    assert_eq!(wait_tag(&mut ac, 1, &mut seen), IoStatus::Success);
    assert_eq!(write(&mut bc, spare * cb, &data), IoStatus::Success);
    assert!(read(&mut bc, spare * cb, data.len()) == data);
    assert_eq!(check(&store).unwrap().free_clusters, 0);
}
