//! Write-zeroes and unmap on every level, over members that take them and
//! over members that do not (zeroes are then written), with a random model.

use std::sync::Arc;

use bdev::backends::fault::FaultBdev;
use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, BdevError, BdevInfo, IoChannel, IoType, IoTypeSet, Registry};
use proptest::prelude::*;

use super::tests::{levels, rig, Op, Rig};
use super::*;

/// A bdev passing IO to another one but declaring only reads, writes and
/// flushes, like a device without write-zeroes or discard.
struct Plain {
    info: BdevInfo,
    inner: Arc<dyn Bdev>,
}

impl Bdev for Plain {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        self.inner.open_channel()
    }
}

fn plain_rig(level: Level, layout: Option<u32>, disks: usize) -> Rig {
    let reg = Registry::new();
    let mut faults = Vec::new();
    for i in 0..disks {
        let m = MallocBdev::new(MallocParams { name: format!("m{i}"), num_blocks: 10 * 1024, block_size: 512 });
        let m: Arc<dyn Bdev> = Arc::new(m.unwrap());
        reg.register(m.clone()).unwrap();
        let mut info = m.info().clone();
        info.name = format!("p{i}");
        info.supported = IoTypeSet::of(&[IoType::Read, IoType::Write, IoType::Flush]);
        info.unmap_zeroes = false;
        reg.register(Arc::new(Plain { info, inner: m })).unwrap();
        let f = Arc::new(FaultBdev::new(&format!("f{i}"), reg.open(&format!("p{i}"), true).unwrap()).unwrap());
        reg.register(f.clone()).unwrap();
        faults.push(f);
    }
    let names: Vec<String> = (0..disks).map(|i| format!("f{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = MdConfig { chunk_kib: 16, layout, assume_clean: true, stripe_cache: 4, ..MdConfig::default() };
    let array = md_create(&reg, "md0", level, &refs, &cfg).unwrap();
    let ch = reg.open("md0", true).unwrap().channel().unwrap();
    let size = (ch.num_blocks() * u64::from(ch.block_size())) as usize;
    Rig { reg, faults, array, ch, model: vec![0; size], bs: 512 }
}

#[test]
fn arrays_declare_zeroing_unmap() {
    let r = rig(Level::Raid5, Some(2), 4, 16, 512);
    let info = r.array.bdev().info().clone();
    assert!(info.supported.contains(IoType::WriteZeroes) && info.supported.contains(IoType::Unmap));
    assert!(info.unmap_zeroes);
}

#[test]
fn zeroing_large_ranges_on_every_level() {
    for plain in [false, true] {
        for (level, layout, disks) in levels() {
            let mut r = if plain { plain_rig(level, layout, disks) } else { rig(level, layout, disks, 16, 512) };
            let total = r.blocks();
            r.batch(&[Op::Write { at: 0, blocks: total, seed: 11 }]);
            // Full stripes and partial ones at both ends, and the whole array.
            r.batch(&[Op::Zero { at: 3, blocks: total / 2, unmap: false }]);
            r.batch(&[Op::Zero { at: total / 2 + 7, blocks: total / 3, unmap: true }]);
            r.read_all();
            r.batch(&[Op::Write { at: 100, blocks: 500, seed: 12 }]);
            r.batch(&[Op::Zero { at: 0, blocks: total, unmap: true }]);
            r.batch(&[Op::Write { at: 1000, blocks: 77, seed: 13 }]);
            r.read_all();
            r.check_on_disk();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Writes, write-zeroes and unmaps against a model, over members
    /// without zeroing support, with a member failure on redundant levels;
    /// then every member combination the offline reader assembles agrees.
    #[test]
    fn model_with_zeroing_over_plain_members(
        level in 0usize..13,
        ops in proptest::collection::vec((0u8..4, any::<u64>(), 1u64..400, any::<u8>()), 1..12),
        fail_at in 0usize..12,
    ) {
        let (level, layout, disks) = levels()[level];
        let mut r = plain_rig(level, layout, disks);
        let total = r.blocks();
        for (i, &(kind, at, len, seed)) in ops.iter().enumerate() {
            if i == fail_at && level.redundancy() > 0 {
                r.batch(&[Op::Fail { member: disks - 1 }]);
            }
            let blocks = len.min(total);
            let at = at % (total - blocks + 1);
            let op = match kind {
                0 => Op::Read { at, blocks },
                1 => Op::Write { at, blocks, seed },
                k => Op::Zero { at, blocks, unmap: k == 3 },
            };
            r.batch(&[op]);
        }
        r.read_all();
        r.check_on_disk();
    }
}
