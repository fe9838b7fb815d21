//! Property test: random IO sequences with injected failures at random points, through the
//! validated channel, against a reference model of the device's bytes.

use bdev::backends::fault::{ErrorRule, FaultBdev, FaultConfig, Trigger};
use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::*;
use proptest::prelude::*;
use std::sync::Arc;

const BLOCKS: u64 = 64;
const BS: usize = 512;

#[derive(Clone, Debug)]
enum Op {
    Write { lba: u64, n: u64, seed: u8, split: usize },
    Read { lba: u64, n: u64 },
    Zero { lba: u64, n: u64 },
    Fail { status: IoStatus, writes_only: bool },
    Heal,
}

fn op() -> impl Strategy<Value = Op> {
    let st = prop_oneof![Just(IoStatus::MediaError), Just(IoStatus::PathError), Just(IoStatus::Timeout)];
    prop_oneof![
        4 => (0..BLOCKS + 4, 0u64..10, any::<u8>(), 0usize..3).prop_map(|(lba, n, seed, split)| Op::Write { lba, n, seed, split }),
        4 => (0..BLOCKS + 4, 0u64..10).prop_map(|(lba, n)| Op::Read { lba, n }),
        1 => (0..BLOCKS, 1u64..8).prop_map(|(lba, n)| Op::Zero { lba, n }),
        1 => (st, any::<bool>()).prop_map(|(status, writes_only)| Op::Fail { status, writes_only }),
        1 => Just(Op::Heal),
    ]
}

fn run(ch: &mut BdevChannel, io: IoRequest) -> IoStatus {
    ch.submit(&io).unwrap();
    let mut got = None;
    while got.is_none() {
        ch.poll(&mut |t, s| {
            assert_eq!(t, io.tag);
            assert!(got.replace(s).is_none());
        });
    }
    got.unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn device_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let reg = Registry::new();
        reg.register(Arc::new(MallocBdev::new(MallocParams { name: "m".into(), num_blocks: BLOCKS, block_size: BS as u32 }).unwrap())).unwrap();
        let fault = Arc::new(FaultBdev::new("f", reg.open("m", true).unwrap()).unwrap());
        reg.register(fault.clone()).unwrap();
        let d = reg.open("f", true).unwrap();
        let mut ch = d.channel().unwrap();
        let mut model = vec![0u8; BLOCKS as usize * BS];
        let mut failing: Option<(IoStatus, bool)> = None;
        for (i, op) in ops.into_iter().enumerate() {
            let tag = i as u64;
            match op {
                Op::Write { lba, n, seed, split } => {
                    let len = n as usize * BS;
                    let mut buf = DmaBuf::alloc(len.max(BS)).unwrap();
                    for (k, b) in buf.as_mut_slice().iter_mut().enumerate() { *b = seed.wrapping_add(k as u8); }
                    let mut iovs = IoVecs::new();
                    if n > 0 {
                        let cut = (split.min(n as usize)) * BS;
                        if cut > 0 { iovs.push(buf.iovec_range(0, cut).unwrap()); }
                        if cut < len { iovs.push(buf.iovec_range(cut, len - cut).unwrap()); }
                    }
                    let st = run(&mut ch, IoRequest::write(lba, n, iovs, tag));
                    let valid = n > 0 && lba + n <= BLOCKS;
                    let want = match (valid, failing) { (false, _) => IoStatus::Invalid, (true, Some((s, _))) => s, (true, None) => IoStatus::Success };
                    prop_assert_eq!(st, want);
                    if st.is_ok() {
                        let o = lba as usize * BS;
                        model[o..o + len].copy_from_slice(&buf.as_slice()[..len]);
                    }
                }
                Op::Read { lba, n } => {
                    let len = n as usize * BS;
                    let mut buf = DmaBuf::zeroed(len.max(BS)).unwrap();
                    let iovs = if n > 0 { IoVecs::single(buf.iovec_range(0, len).unwrap()) } else { IoVecs::new() };
                    let st = run(&mut ch, IoRequest::read(lba, n, iovs, tag));
                    let valid = n > 0 && lba + n <= BLOCKS;
                    let want = match (valid, failing) { (false, _) => IoStatus::Invalid, (true, Some((s, false))) => s, _ => IoStatus::Success };
                    prop_assert_eq!(st, want);
                    if st.is_ok() {
                        let o = lba as usize * BS;
                        prop_assert_eq!(&buf.as_slice()[..len], &model[o..o + len]);
                    }
                }
                Op::Zero { lba, n } => {
                    let st = run(&mut ch, IoRequest::no_data(IoType::WriteZeroes, lba, n, tag));
                    let valid = lba + n <= BLOCKS;
                    let want = match (valid, failing) { (false, _) => IoStatus::Invalid, (true, Some((s, _))) => s, _ => IoStatus::Success };
                    prop_assert_eq!(st, want);
                    if st.is_ok() {
                        model[lba as usize * BS..(lba + n) as usize * BS].fill(0);
                    }
                }
                Op::Fail { status, writes_only } => {
                    let types = if writes_only { IoTypeSet::of(&[IoType::Write, IoType::WriteZeroes]) } else { IoTypeSet::ALL };
                    fault.configure(FaultConfig { errors: vec![ErrorRule { io_types: types, status, trigger: Trigger::Always, lba_range: None }], ..Default::default() });
                    failing = Some((status, writes_only));
                }
                Op::Heal => { fault.configure(FaultConfig::default()); failing = None; }
            }
        }
        let s = reg.stats("f").unwrap();
        prop_assert_eq!(s.in_flight, 0);
    }
}
