use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::backends::fault::{ErrorRule, FaultBdev, FaultConfig, Trigger};
use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoTypeSet, IoVecs, Registry};
use proptest::prelude::*;

use super::meta::BdevMember;
use super::*;
use crate::offline::OfflineArray;
use crate::superblock::format_uuid;

/// Member size: 4 MiB of data plus 1 MiB of metadata.
const MEMBER_BLOCKS: u64 = 10 * 1024;

pub(super) struct Rig {
    pub(super) reg: Arc<Registry>,
    pub(super) faults: Vec<Arc<FaultBdev>>,
    pub(super) array: Arc<MdArray>,
    pub(super) ch: BdevChannel,
    pub(super) model: Vec<u8>,
    pub(super) bs: u64,
}

pub(super) fn add_member(reg: &Arc<Registry>, i: usize, bs: u32) -> Arc<FaultBdev> {
    let blocks = MEMBER_BLOCKS * 512 / u64::from(bs);
    let m = MallocBdev::new(MallocParams { name: format!("m{i}"), num_blocks: blocks, block_size: bs }).unwrap();
    reg.register(Arc::new(m)).unwrap();
    let f = Arc::new(FaultBdev::new(&format!("f{i}"), reg.open(&format!("m{i}"), true).unwrap()).unwrap());
    reg.register(f.clone()).unwrap();
    f
}

pub(super) fn rig(level: Level, layout: Option<u32>, disks: usize, chunk_kib: u32, bs: u32) -> Rig {
    let reg = Registry::new();
    let faults: Vec<_> = (0..disks).map(|i| add_member(&reg, i, bs)).collect();
    let names: Vec<String> = (0..disks).map(|i| format!("f{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = MdConfig { chunk_kib, layout, assume_clean: true, stripe_cache: 4, ..MdConfig::default() };
    let array = md_create(&reg, "md0", level, &refs, &cfg).unwrap();
    let ch = reg.open("md0", true).unwrap().channel().unwrap();
    let size = (ch.num_blocks() * u64::from(ch.block_size())) as usize;
    Rig { reg, faults, array, ch, model: vec![0; size], bs: u64::from(bs) }
}

pub(super) fn wait(ch: &mut BdevChannel, tags: &[u64]) -> Vec<IoStatus> {
    let mut got: Vec<Option<IoStatus>> = vec![None; tags.len()];
    let t0 = Instant::now();
    while got.iter().any(Option::is_none) {
        ch.poll(&mut |tag, st| {
            if let Some(i) = tags.iter().position(|&t| t == tag) {
                got[i] = Some(st);
            }
        });
        assert!(t0.elapsed() < Duration::from_secs(20), "io did not complete: {got:?}");
    }
    got.into_iter().map(|s| s.unwrap_or(IoStatus::Timeout)).collect()
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Write {
        at: u64,
        blocks: u64,
        seed: u8,
    },
    /// Write-zeroes, or unmap (which reads back as zeroes on an array).
    Zero {
        at: u64,
        blocks: u64,
        unmap: bool,
    },
    Read {
        at: u64,
        blocks: u64,
    },
    Fail {
        member: usize,
    },
}

/// The buffer as 1 to 4 segments (`seed >> 6` more than one), cut at odd
/// byte offsets, so chunks and blocks straddle segments.
fn segments(b: &mut DmaBuf, seed: u8) -> IoVecs {
    let n = 1 + usize::from(seed >> 6);
    let len = b.len();
    let whole = b.iovec();
    let cuts: Vec<usize> = (0..=n).map(|i| if i == n { len } else { (len * i / n).saturating_sub(i * 37) }).collect();
    let mut v = IoVecs::new();
    for w in cuts.windows(2) {
        if w[1] > w[0] {
            assert!(v.push(whole.sub(w[0], w[1] - w[0]).unwrap()));
        }
    }
    v
}

impl Rig {
    pub(super) fn blocks(&self) -> u64 {
        self.model.len() as u64 / self.bs
    }

    /// Runs a batch concurrently (the caller keeps writes disjoint).
    pub(super) fn batch(&mut self, ops: &[Op]) {
        let mut bufs = Vec::new();
        let mut tags = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Write { at, blocks, seed } => {
                    let len = (blocks * self.bs) as usize;
                    let mut b = DmaBuf::alloc(len).unwrap();
                    for (j, x) in b.as_mut_slice().iter_mut().enumerate() {
                        *x = (j as u8).wrapping_mul(seed | 1).wrapping_add(seed ^ (j >> 9) as u8);
                    }
                    let off = (at * self.bs) as usize;
                    self.model[off..off + len].copy_from_slice(b.as_slice());
                    let io = IoRequest::write(at, blocks, segments(&mut b, seed), i as u64);
                    self.ch.submit(&io).unwrap();
                    bufs.push((i, None, b));
                    tags.push(i as u64);
                }
                Op::Zero { at, blocks, unmap } => {
                    let off = (at * self.bs) as usize;
                    self.model[off..off + (blocks * self.bs) as usize].fill(0);
                    let t = if unmap { bdev::IoType::Unmap } else { bdev::IoType::WriteZeroes };
                    self.ch.submit(&IoRequest::no_data(t, at, blocks, i as u64)).unwrap();
                    tags.push(i as u64);
                }
                Op::Read { at, blocks } => {
                    let len = (blocks * self.bs) as usize;
                    let mut b = DmaBuf::zeroed(len).unwrap();
                    let io = IoRequest::read(at, blocks, IoVecs::single(b.iovec()), i as u64);
                    self.ch.submit(&io).unwrap();
                    bufs.push((i, Some(at), b));
                    tags.push(i as u64);
                }
                Op::Fail { member } => {
                    if let Some(f) = self.faults.get(member) {
                        f.configure(FaultConfig {
                            errors: vec![ErrorRule {
                                io_types: IoTypeSet::ALL,
                                status: IoStatus::MediaError,
                                trigger: Trigger::Always,
                                lba_range: None,
                            }],
                            ..FaultConfig::default()
                        });
                    }
                }
            }
        }
        let st = wait(&mut self.ch, &tags);
        assert!(st.iter().all(|s| *s == IoStatus::Success), "{st:?} for {ops:?}");
        for (i, read_at, b) in bufs.iter() {
            if let Some(at) = read_at {
                let off = (*at * self.bs) as usize;
                assert!(b.as_slice() == &self.model[off..off + b.len()], "read {:?} differs", ops[*i]);
            }
        }
    }

    pub(super) fn read_all(&mut self) {
        let total = self.blocks();
        let step = 256u64.min(total);
        let mut at = 0;
        while at < total {
            let n = step.min(total - at);
            self.batch(&[Op::Read { at, blocks: n }]);
            at += n;
        }
    }

    /// Stops the array and checks the members with the offline reader.
    pub(super) fn check_on_disk(self) {
        let Rig { reg, array, ch, model, faults, .. } = self;
        drop(ch);
        array.stop().unwrap();
        drop(array);
        let members: Vec<BdevMember> = (0..faults.len())
            .filter(|&i| faults[i].config().errors.is_empty())
            .map(|i| BdevMember::open(&reg.open(&format!("m{i}"), false).unwrap()).unwrap())
            .collect();
        let asm = OfflineArray::assemble(members).unwrap();
        assert!(asm.plan.clean());
        let mut out = vec![0u8; model.len()];
        asm.array.read(0, &mut out).unwrap();
        assert!(out == model, "on-disk contents differ from the model");
    }
}

pub(super) fn levels() -> Vec<(Level, Option<u32>, usize)> {
    vec![
        (Level::Linear, None, 3),
        (Level::Raid0, None, 3),
        (Level::Raid1, None, 3),
        (Level::Raid4, None, 4),
        (Level::Raid5, Some(0), 4),
        (Level::Raid5, Some(2), 5),
        (Level::Raid5, Some(3), 3),
        (Level::Raid6, Some(2), 5),
        (Level::Raid6, Some(0), 6),
        (Level::Raid10, Some(0x102), 4),
        (Level::Raid10, Some(0x102), 3),
        (Level::Raid10, Some(0x201), 4),
        (Level::Raid10, Some(0x10201), 4),
    ]
}

#[test]
fn every_level_reads_back_what_it_wrote() {
    for (level, layout, disks) in levels() {
        let mut r = rig(level, layout, disks, 16, 512);
        let total = r.blocks();
        r.batch(&[
            Op::Write { at: 0, blocks: 1, seed: 1 },
            Op::Write { at: 7, blocks: 100, seed: 2 },
            Op::Write { at: 200, blocks: 257, seed: 3 },
            Op::Write { at: total - 33, blocks: 33, seed: 4 },
        ]);
        r.batch(&[Op::Write { at: 0, blocks: 512, seed: 5 }]);
        r.read_all();
        r.check_on_disk();
    }
}

#[test]
fn degraded_levels_survive_member_failures() {
    for (level, layout, disks) in levels() {
        if level.redundancy() == 0 {
            continue;
        }
        let mut r = rig(level, layout, disks, 16, 512);
        r.batch(&[Op::Write { at: 3, blocks: 700, seed: 9 }]);
        r.batch(&[Op::Fail { member: 1 }]);
        // Reads that hit the failed member fail it and reconstruct; a
        // write reaches every copy.
        r.read_all();
        r.batch(&[Op::Write { at: 0, blocks: 64, seed: 10 }]);
        assert_eq!(r.array.sh.slot(1).map(|s| s.state()), Some(SlotState::Faulty), "{level}");
        r.batch(&[Op::Write { at: 100, blocks: 333, seed: 11 }, Op::Write { at: 600, blocks: 5, seed: 12 }]);
        if level == Level::Raid6 {
            r.batch(&[Op::Fail { member: 3 }]);
            r.read_all();
            r.batch(&[Op::Write { at: 1, blocks: 900, seed: 13 }]);
        }
        r.read_all();
        let d = r.array.detail();
        assert!(d.degraded);
        assert!(d.failed_disks >= 1, "{d:?}");
        r.check_on_disk();
    }
}

#[test]
fn four_k_members() {
    for (level, layout, disks) in [(Level::Raid5, Some(2), 4), (Level::Raid1, None, 2), (Level::Raid10, Some(0x102), 4)]
    {
        let mut r = rig(level, layout, disks, 64, 4096);
        assert_eq!(r.ch.block_size(), 4096);
        r.batch(&[Op::Write { at: 1, blocks: 40, seed: 3 }, Op::Write { at: 50, blocks: 3, seed: 4 }]);
        r.read_all();
        r.check_on_disk();
    }
}

#[test]
fn hot_spare_rebuild_restores_redundancy() {
    for (level, layout, disks) in [
        (Level::Raid1, None, 2),
        (Level::Raid5, Some(2), 4),
        (Level::Raid6, Some(2), 5),
        (Level::Raid10, Some(0x102), 4),
    ] {
        let mut r = rig(level, layout, disks, 16, 512);
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        r.array.monitor(Arc::new(move |e: &MdEvent| ev.lock().unwrap().push(e.clone())));
        let global = Arc::new(Mutex::new(Vec::new()));
        let g = global.clone();
        md_monitor_all(Arc::new(move |name: &str, e: &MdEvent| g.lock().unwrap().push((name.to_string(), e.clone()))));
        r.batch(&[Op::Write { at: 0, blocks: r.blocks(), seed: 21 }]);
        let spare = add_member(&r.reg, disks, 512);
        r.array.manage(ManageCmd::AddSpare(format!("f{disks}"))).unwrap();
        assert_eq!(r.array.detail().spare_disks, 1);
        r.batch(&[Op::Fail { member: 0 }]);
        r.read_all();
        // Recovery runs in the background while IO continues.
        let t0 = Instant::now();
        loop {
            r.batch(&[Op::Write { at: 17, blocks: 9, seed: 22 }, Op::Read { at: 300, blocks: 64 }]);
            let d = r.array.detail();
            if d.state == ArrayState::Degraded && d.active_disks == disks - 1 && t0.elapsed() > Duration::from_secs(1) {
                panic!("{level}: spare not activated: {d:?}");
            }
            if d.active_disks == disks && d.resync_status == "idle" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{level}: recovery did not finish: {d:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let d = r.array.detail();
        assert_eq!(d.state, ArrayState::Active, "{d:?}");
        assert!(d.disks.iter().any(|x| x.name == format!("f{disks}") && x.state == DiskState::Active));
        // The control thread reports the end right after switching states.
        let t0 = Instant::now();
        let ev = loop {
            let ev = events.lock().unwrap().clone();
            if ev.iter().any(|e| matches!(e, MdEvent::RecoveryFinished { slot: 0 })) {
                break ev;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{ev:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(ev.iter().any(|e| matches!(e, MdEvent::DeviceFailed { slot: 0, .. })), "{ev:?}");
        assert!(global.lock().unwrap().iter().any(|(n, e)| n == "md0" && matches!(e, MdEvent::SpareActivated { .. })));
        // The rebuilt member now carries data: lose another one.
        r.batch(&[Op::Fail { member: 1 }]);
        r.read_all();
        r.faults.push(spare);
        r.check_on_disk();
    }
}

#[test]
fn manage_commands() {
    let mut r = rig(Level::Raid5, Some(2), 4, 16, 512);
    r.batch(&[Op::Write { at: 0, blocks: 64, seed: 1 }]);
    r.array.manage(ManageCmd::SetReadonly).unwrap();
    let mut b = DmaBuf::zeroed(512).unwrap();
    r.ch.submit(&IoRequest::write(0, 1, IoVecs::single(b.iovec()), 99)).unwrap();
    assert_eq!(wait(&mut r.ch, &[99]), vec![IoStatus::Invalid]);
    assert_eq!(r.array.detail().state, ArrayState::Readonly);
    r.array.manage(ManageCmd::SetReadwrite).unwrap();
    r.batch(&[Op::Write { at: 1, blocks: 1, seed: 2 }]);
    assert!(matches!(r.array.manage(ManageCmd::RemoveDisk("f1".into())), Err(MdError::Busy(_))));
    assert!(matches!(r.array.manage(ManageCmd::SetFaulty("nope".into())), Err(MdError::NoSuchDevice(_))));
    r.array.manage(ManageCmd::SetFaulty("f1".into())).unwrap();
    // A second failure would stop a raid5: refused.
    assert!(matches!(r.array.manage(ManageCmd::SetFaulty("f2".into())), Err(MdError::Busy(_))));
    r.read_all();
    // Wait for the control thread to record the failure.
    let t0 = Instant::now();
    while r.array.detail().failed_disks == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    r.array.manage(ManageCmd::RemoveDisk("f1".into())).unwrap();
    let d = r.array.detail();
    assert!(d.disks.iter().any(|x| x.state == DiskState::Removed), "{d:?}");
    // Re-add it: it is rebuilt into the empty slot.
    r.array.manage(ManageCmd::SetSyncSpeed(100_000)).unwrap();
    r.array.manage(ManageCmd::AddDisk("f1".into())).unwrap();
    let t0 = Instant::now();
    while r.array.detail().active_disks < 4 {
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", r.array.detail());
        std::thread::sleep(Duration::from_millis(5));
    }
    r.read_all();
    r.check_on_disk();
}

#[test]
fn assemble_from_bdevs_after_stop() {
    let mut r = rig(Level::Raid6, Some(2), 5, 16, 512);
    r.batch(&[Op::Write { at: 5, blocks: 999, seed: 7 }]);
    let uuid = r.array.detail().uuid;
    let Rig { reg, array, ch, model, .. } = r;
    drop(ch);
    array.stop().unwrap();
    assert!(reg.lookup("md0").is_none());
    drop(array);
    let ex = md_examine(&reg, "f2").unwrap();
    assert_eq!(format_uuid(&ex.superblock.set_uuid), uuid);
    assert!(ex.superblock.is_clean());
    // Degraded without run_degraded: assembled, not started.
    let a = md_assemble(&reg, "md1", &["f0", "f1", "f3", "f4"], &AssembleOptions::default()).unwrap();
    assert!(!a.is_running());
    drop(a);
    let a = md_assemble(&reg, "md1", &["f4", "f3", "f2", "f1", "f0"], &AssembleOptions::default()).unwrap();
    assert!(a.is_running());
    let mut ch = reg.open("md1", true).unwrap().channel().unwrap();
    let mut b = DmaBuf::zeroed(model.len()).unwrap();
    ch.submit(&IoRequest::read(0, model.len() as u64 / 512, IoVecs::single(b.iovec()), 1)).unwrap();
    assert_eq!(wait(&mut ch, &[1]), vec![IoStatus::Success]);
    assert!(b.as_slice() == &model[..]);
    drop(ch);
    a.stop().unwrap();
}

#[test]
fn resync_makes_parity_consistent() {
    let reg = Registry::new();
    for i in 0..4 {
        add_member(&reg, i, 512);
    }
    // Garbage on the members before creation.
    for i in 0..4 {
        let d = reg.open(&format!("f{i}"), true).unwrap();
        let mut io = super::meta::SyncIo::open(&d).unwrap();
        let junk: Vec<u8> = (0..1 << 20).map(|j: usize| (j * 7 + i) as u8).collect();
        io.write_at(2 << 20, &junk).unwrap();
    }
    let cfg = MdConfig { chunk_kib: 16, ..MdConfig::default() };
    let array = md_create(&reg, "md0", Level::Raid5, &["f0", "f1", "f2", "f3"], &cfg).unwrap();
    let t0 = Instant::now();
    while array.detail().resync_status != "idle" {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    array.stop().unwrap();
    drop(array);
    // Every member, including the parity, must now agree: lose any one
    // member and read the same bytes.
    let read = |skip: Option<usize>| {
        let members: Vec<BdevMember> = (0..4)
            .filter(|&i| Some(i) != skip)
            .map(|i| BdevMember::open(&reg.open(&format!("m{i}"), false).unwrap()).unwrap())
            .collect();
        let asm = OfflineArray::assemble(members).unwrap();
        let mut out = vec![0u8; asm.array.sectors() as usize * 512];
        asm.array.read(0, &mut out).unwrap();
        out
    };
    let full = read(None);
    for skip in 0..4 {
        assert!(read(Some(skip)) == full, "member {skip}");
    }
}

#[derive(Debug, Clone)]
struct Case {
    level: usize,
    batches: Vec<Vec<(u8, u64, u64, u8)>>,
    fail: Vec<(usize, usize)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..13,
        proptest::collection::vec(
            proptest::collection::vec((0u8..5, any::<u64>(), 1u64..300, any::<u8>()), 1..6),
            1..8,
        ),
        proptest::collection::vec((0usize..8, 0usize..6), 0..3),
    )
        .prop_map(|(level, batches, fail)| Case { level, batches, fail })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random concurrent reads and writes with member failures, against a
    /// flat reference model, then an on-disk check with the offline reader.
    #[test]
    fn model_with_failures(c in case()) {
        let (level, layout, disks) = levels()[c.level];
        let mut r = rig(level, layout, disks, 16, 512);
        let total = r.blocks();
        let mut failed = Vec::new();
        for (bi, batch) in c.batches.iter().enumerate() {
            // Fail members at chosen batches, while the array can still run.
            for &(at_batch, m) in &c.fail {
                let m = m % disks;
                if at_batch == bi && !failed.contains(&m) {
                    let mut present = r.array.sh.in_sync();
                    for &f in failed.iter().chain([m].iter()) {
                        present[f] = false;
                    }
                    if crate::assemble::can_run(&r.array.sh.geometry, &present) {
                        failed.push(m);
                        r.batch(&[Op::Fail { member: m }]);
                    }
                }
            }
            // Disjoint ranges within a batch.
            let mut ops = Vec::new();
            let mut used: Vec<(u64, u64)> = Vec::new();
            for &(kind, at, len, seed) in batch {
                let blocks = len.min(total);
                let at = at % (total - blocks + 1);
                if used.iter().any(|&(a, b)| at < b && a < at + blocks) {
                    continue;
                }
                used.push((at, at + blocks));
                ops.push(match kind {
                    0 => Op::Read { at, blocks },
                    3 | 4 => Op::Zero { at, blocks, unmap: kind == 4 },
                    _ => Op::Write { at, blocks, seed },
                });
            }
            r.batch(&ops);
        }
        r.read_all();
        r.check_on_disk();
    }
}

#[test]
fn examiner_assembles_when_all_members_appear() {
    let mut r = rig(Level::Raid5, Some(2), 4, 16, 512);
    r.batch(&[Op::Write { at: 0, blocks: 333, seed: 5 }]);
    let Rig { reg, array, ch, model, .. } = r;
    drop(ch);
    array.stop().unwrap();
    drop(array);
    // Take the members away, then let them reappear one by one.
    let bdevs: Vec<_> = (0..4).map(|i| reg.unregister(&format!("f{i}")).unwrap()).collect();
    let ex = MdExaminer::new(&reg);
    reg.add_examiner(ex.clone());
    for (i, b) in bdevs.into_iter().enumerate() {
        assert!(reg.lookup("md0").is_none(), "started after {i} members");
        reg.register(b).unwrap();
    }
    assert!(reg.lookup("md0").is_some());
    assert_eq!(ex.arrays().len(), 1);
    let mut ch = reg.open("md0", false).unwrap().channel().unwrap();
    let mut b = DmaBuf::zeroed(333 * 512).unwrap();
    ch.submit(&IoRequest::read(0, 333, IoVecs::single(b.iovec()), 1)).unwrap();
    assert_eq!(wait(&mut ch, &[1]), vec![IoStatus::Success]);
    assert!(b.as_slice() == &model[..333 * 512]);
    drop(ch);
    ex.arrays()[0].stop().unwrap();
}

#[test]
fn write_modes_follow_the_cost() {
    // raid5 over 5 members, 16 KiB chunks (32 sectors), 4 data chunks.
    let mut r = rig(Level::Raid5, Some(2), 5, 16, 512);
    r.batch(&[Op::Write { at: 0, blocks: 1, seed: 1 }]);
    assert_eq!(r.array.stripe_stats(), StripeStats { rmw: 1, ..StripeStats::default() });
    // Three of four chunks over the same rows: reconstruct-write is cheaper.
    r.batch(&[Op::Write { at: 32, blocks: 96, seed: 2 }]);
    assert_eq!(r.array.stripe_stats().rcw, 1);
    // A whole stripe: no reads at all.
    r.batch(&[Op::Write { at: 128, blocks: 128, seed: 3 }]);
    assert_eq!(r.array.stripe_stats().full, 1);
    // raid5 over 4 members: one block reads two blocks either way; the
    // tie goes to read-modify-write.
    let mut r4 = rig(Level::Raid5, Some(2), 4, 16, 512);
    r4.batch(&[Op::Write { at: 3, blocks: 1, seed: 6 }]);
    assert_eq!(r4.array.stripe_stats(), StripeStats { rmw: 1, ..StripeStats::default() });
    r4.check_on_disk();
    // Degraded: a write whose old data sits on the failed member.
    r.batch(&[Op::Fail { member: 0 }]);
    r.read_all();
    let before = r.array.stripe_stats();
    assert!(before.degraded_reads > 0);
    r.batch(&[Op::Write { at: 256 + 1, blocks: 1, seed: 4 }, Op::Write { at: 0, blocks: 1, seed: 5 }]);
    let after = r.array.stripe_stats();
    assert!(after.reconstruct + after.rcw + after.rmw > before.reconstruct + before.rcw + before.rmw);
    r.read_all();
    r.check_on_disk();
}

/// Saved params are JSON whatever the names hold (`{:?}` wrote `\u{1}`,
/// which made the saved config drop the array).
#[test]
fn saved_params_escape_names_as_json() {
    let reg = Registry::new();
    for name in ["q\"1", "c\u{1}2"] {
        let m =
            MallocBdev::new(MallocParams { name: name.into(), num_blocks: MEMBER_BLOCKS, block_size: 512 }).unwrap();
        reg.register(Arc::new(m)).unwrap();
    }
    let a = md_create_raid1(&reg, "r\\1", &["q\"1", "c\u{1}2"]).unwrap();
    assert_eq!(
        a.bdev().config_params().unwrap(),
        r#"{"name":"r\\1","level":"raid1","members":["q\"1","c\u00012"],"chunk_kib":0,"layout":0}"#
    );
    md_stop(&a).unwrap();
}

#[test]
fn shortcut_constructors() {
    let reg = Registry::new();
    for i in 0..4 {
        add_member(&reg, i, 512);
    }
    let a = md_create_raid10(&reg, "r10", &["f0", "f1", "f2", "f3"], 64).unwrap();
    let d = md_detail(&a);
    assert_eq!((d.level, d.chunk_kib, d.raid_disks), (Level::Raid10, 64, 4));
    assert_eq!(
        a.bdev().config_params().unwrap(),
        r#"{"name":"r10","level":"raid10","members":["f0","f1","f2","f3"],"chunk_kib":64,"layout":258}"#
    );
    md_manage(&a, ManageCmd::SetSyncSpeed(1000)).unwrap();
    md_stop(&a).unwrap();
    assert_eq!(md_detail(&a).state, ArrayState::Clean);
    let a = md_create_linear(&reg, "lin", &["f0", "f1"]).unwrap();
    assert_eq!(md_detail(&a).size_kib, 2 * (MEMBER_BLOCKS / 2 - 1024));
    md_stop(&a).unwrap();
}

/// Two reactors' channels writing different chunks of the same stripes at
/// once: the stripe locks keep parity consistent (checked by reading the
/// array with each member missing in turn).
#[test]
fn concurrent_channels_keep_parity_consistent() {
    for (level, disks) in [(Level::Raid5, 4), (Level::Raid6, 5)] {
        let r = rig(level, Some(2), disks, 16, 512);
        let Rig { reg, array, ch, .. } = r;
        drop(ch);
        let chunk = 32u64; // sectors
        let data = (disks - level.redundancy()) as u64;
        let stripes = 40u64;
        let run = |parity: u64| {
            let reg = reg.clone();
            std::thread::spawn(move || {
                let mut ch = reg.open("md0", true).unwrap().channel().unwrap();
                let mut model = vec![0u8; (stripes * data * chunk * 512) as usize];
                let mut x = 0x1234_5678u64 ^ parity;
                for round in 0..400u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // A chunk of this thread's parity class, a few blocks in it.
                    let stripe = x % stripes;
                    let k = ((x >> 8) % (data / 2 + data % 2)) * 2 + parity;
                    if k >= data {
                        continue;
                    }
                    let off = (x >> 16) % chunk;
                    let n = 1 + (x >> 24) % (chunk - off);
                    let lba = (stripe * data + k) * chunk + off;
                    let mut b = DmaBuf::alloc((n * 512) as usize).unwrap();
                    b.as_mut_slice().fill((round as u8) ^ (parity as u8 * 0x80) | 1);
                    let s = (lba * 512) as usize;
                    model[s..s + b.len()].copy_from_slice(b.as_slice());
                    ch.submit(&IoRequest::write(lba, n, IoVecs::single(b.iovec()), round)).unwrap();
                    assert_eq!(wait(&mut ch, &[round]), vec![IoStatus::Success]);
                }
                model
            })
        };
        let a = run(0);
        let b = run(1);
        let (ma, mb) = (a.join().unwrap(), b.join().unwrap());
        // Merge: each chunk belongs to one thread.
        let mut model = ma.clone();
        for c in 0..(model.len() / (chunk as usize * 512)) {
            if c as u64 % data % 2 == 1 {
                let s = c * chunk as usize * 512;
                let e = s + chunk as usize * 512;
                model[s..e].copy_from_slice(&mb[s..e]);
            }
        }
        array.stop().unwrap();
        drop(array);
        for skip in 0..disks {
            let members: Vec<BdevMember> = (0..disks)
                .filter(|&i| i != skip)
                .map(|i| BdevMember::open(&reg.open(&format!("m{i}"), false).unwrap()).unwrap())
                .collect();
            let asm = OfflineArray::assemble(members).unwrap();
            let mut out = vec![0u8; model.len()];
            asm.array.read(0, &mut out).unwrap();
            assert!(out == model, "{level}: contents without member {skip} differ");
        }
    }
}

/// Mirrored reads spread over the copies: the least busy copy, ties
/// round-robin.
#[test]
fn raid1_reads_are_balanced() {
    let mut r = rig(Level::Raid1, None, 2, 0, 512);
    let before: Vec<u64> = (0..2).map(|i| r.reg.stats(&format!("f{i}")).unwrap().ops_of(bdev::IoType::Read)).collect();
    let ops: Vec<Op> = (0..32).map(|i| Op::Read { at: i * 8, blocks: 8 }).collect();
    r.batch(&ops);
    let reads: Vec<u64> =
        (0..2).map(|i| r.reg.stats(&format!("f{i}")).unwrap().ops_of(bdev::IoType::Read) - before[i]).collect();
    assert_eq!(reads.iter().sum::<u64>(), 32);
    assert!(reads.iter().all(|&n| n >= 8), "unbalanced: {reads:?}");
}

#[test]
fn a_mirrored_write_takes_the_free_regions_in_a_row_and_waits_for_the_rest() {
    let mut r = rig(Level::Raid1, None, 2, 16, 512);
    let w = r.array.sh.window_sectors;
    // Region 2 is busy (as under a recovery window): a write over
    // regions 0..4 issues regions 0 and 1 and waits for the rest.
    assert!(r.array.sh.locks.try_lock(2));
    let blocks = 4 * w;
    let mut b = DmaBuf::alloc((blocks * 512) as usize).unwrap();
    b.as_mut_slice().iter_mut().enumerate().for_each(|(i, x)| *x = (i % 251) as u8);
    r.ch.submit(&IoRequest::write(0, blocks, IoVecs::single(b.iovec()), 77)).unwrap();
    let t0 = Instant::now();
    let mut got = None;
    while t0.elapsed() < Duration::from_millis(50) {
        r.ch.poll(&mut |tag, st| got = Some((tag, st)));
    }
    assert_eq!(got, None, "completed while a region it covers was locked");
    // The first piece (regions 0 and 1) completed and released them.
    assert!(r.array.sh.locks.try_lock(0));
    r.array.sh.locks.unlock(0);
    r.array.sh.locks.unlock(2);
    assert_eq!(wait(&mut r.ch, &[77]), vec![IoStatus::Success]);
    r.model[..(blocks * 512) as usize].copy_from_slice(b.as_slice());
    r.read_all();
    r.check_on_disk();
}
