//! Property test: random IO through two channels of a three-path device while paths are
//! killed (link down with IO in flight, injected path errors, ANA inaccessible, stalls) and
//! restored at random points, checked against a reference model of the namespace:
//! - every IO is answered exactly once, and with success (IO waits while no path is usable
//!   and the no-path timeout is far away, so no error may ever reach the caller);
//! - reads return what the model holds; at the end the whole device equals the model.

mod common;

use bdev::*;
use common::*;
use multipath::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BLOCKS: u64 = 256;
const PATHS: usize = 3;
const MAX_IN_FLIGHT: usize = 24;

#[derive(Clone, Copy, Debug)]
enum Kill {
    LinkDown,
    Inject(IoStatus),
    AnaInaccessible,
    Stall,
}

#[derive(Clone, Debug)]
enum Op {
    Write { ch: usize, lba: u64, len: u64, seed: u64 },
    Read { ch: usize, lba: u64, len: u64 },
    Kill { path: usize, how: Kill },
    Restore { path: usize },
    Poll { ch: usize, n: usize },
    Policy(Policy),
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        (1u32..4).prop_map(|n| Policy::RoundRobin { ios_per_path: n }),
        Just(Policy::Random),
        Just(Policy::Weighted),
        (1u64..64).prop_map(|r| Policy::Hash { region_blocks: r }),
        Just(Policy::ServiceTime),
        Just(Policy::AverageRate),
        Just(Policy::QueueLength),
        Just(Policy::HistoricalServiceTime),
    ]
}

fn kill() -> impl Strategy<Value = Kill> {
    prop_oneof![
        3 => Just(Kill::LinkDown),
        1 => Just(Kill::Inject(IoStatus::PathError)),
        1 => Just(Kill::Inject(IoStatus::Timeout)),
        1 => Just(Kill::Inject(IoStatus::Aborted)),
        1 => Just(Kill::AnaInaccessible),
        1 => Just(Kill::Stall),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0..BLOCKS - 1).prop_flat_map(|lba| (Just(lba), 1..=(BLOCKS - lba).min(16)));
    prop_oneof![
        6 => (0..2usize, range.clone(), any::<u64>()).prop_map(|(ch, (lba, len), seed)| Op::Write { ch, lba, len, seed }),
        6 => (0..2usize, range).prop_map(|(ch, (lba, len))| Op::Read { ch, lba, len }),
        2 => (0..PATHS, kill()).prop_map(|(path, how)| Op::Kill { path, how }),
        2 => (0..PATHS).prop_map(|path| Op::Restore { path }),
        3 => (0..2usize, 1..30usize).prop_map(|(ch, n)| Op::Poll { ch, n }),
        1 => policy().prop_map(Op::Policy),
    ]
}

struct Pending {
    write: bool,
    lba: u64,
    len: u64,
    buf: DmaBuf,
}

struct Harness {
    rig: Rig,
    chans: Vec<BdevChannel>,
    model: Vec<u8>,
    pending: HashMap<u64, Pending>,
    next_tag: u64,
}

impl Harness {
    fn complete(&mut self, tag: u64, st: IoStatus) -> Result<(), TestCaseError> {
        let p = self.pending.remove(&tag).ok_or_else(|| TestCaseError::fail(format!("tag {tag} answered twice")))?;
        prop_assert_eq!(
            st,
            IoStatus::Success,
            "io {} ({} lba {} len {})",
            tag,
            if p.write { "write" } else { "read" },
            p.lba,
            p.len
        );
        let (a, b) = ((p.lba * BS as u64) as usize, ((p.lba + p.len) * BS as u64) as usize);
        if p.write {
            self.model[a..b].copy_from_slice(p.buf.as_slice());
        } else {
            prop_assert!(
                p.buf.as_slice() == &self.model[a..b],
                "read {} lba {} len {} differs from model",
                tag,
                p.lba,
                p.len
            );
        }
        Ok(())
    }

    fn poll(&mut self, ch: usize) -> Result<usize, TestCaseError> {
        let mut got = Vec::new();
        let n = self.chans[ch].poll(&mut |t, s| got.push((t, s)));
        for (t, s) in got {
            self.complete(t, s)?;
        }
        Ok(n)
    }

    fn conflicts(&self, write: bool, lba: u64, len: u64) -> bool {
        self.pending.values().any(|p| (write || p.write) && p.lba < lba + len && lba < p.lba + p.len)
    }

    fn submit(&mut self, ch: usize, write: bool, lba: u64, len: u64, seed: u64) -> Result<(), TestCaseError> {
        if self.pending.len() >= MAX_IN_FLIGHT || self.conflicts(write, lba, len) {
            return Ok(());
        }
        let bytes = (len * BS as u64) as usize;
        let mut buf = if write { pattern(bytes, seed) } else { DmaBuf::zeroed(bytes).unwrap() };
        let tag = self.next_tag;
        self.next_tag += 1;
        let v = IoVecs::single(buf.iovec());
        let io = if write { IoRequest::write(lba, len, v, tag) } else { IoRequest::read(lba, len, v, tag) };
        if self.chans[ch].submit(&io).is_ok() {
            self.pending.insert(tag, Pending { write, lba, len, buf });
        }
        Ok(())
    }

    fn kill(&self, path: usize, how: Kill) {
        match how {
            Kill::LinkDown => self.rig.ports[path].set_link(false),
            Kill::Inject(s) => self.rig.fail_path(path, Some(s)),
            Kill::AnaInaccessible => self.rig.ports[path].set_ana_state(Some(AnaState::Inaccessible)),
            Kill::Stall => self.rig.faults[path].update(|c| c.stall = true),
        }
    }

    fn restore(&self, path: usize) {
        self.rig.ports[path].set_link(true);
        self.rig.ports[path].set_ana_state(None);
        self.rig.faults[path].update(|c| {
            c.errors.clear();
            c.stall = false;
        });
    }
}

fn run_case(ops: Vec<Op>, first: Policy, delays: Vec<u64>) -> Result<(), TestCaseError> {
    let mut o = test_options(first);
    o.probe_interval = Duration::from_millis(1);
    o.no_path_timeout = Some(Duration::from_secs(60));
    o.stats_reset_interval = Duration::from_millis(5);
    let rig = rig(PATHS, BLOCKS, o);
    for (i, d) in delays.iter().enumerate() {
        rig.delay(i, *d);
    }
    let chans = vec![rig.channel(), rig.channel()];
    let mut h =
        Harness { rig, chans, model: vec![0; (BLOCKS * BS as u64) as usize], pending: HashMap::new(), next_tag: 1 };
    for op in ops {
        match op {
            Op::Write { ch, lba, len, seed } => h.submit(ch, true, lba, len, seed)?,
            Op::Read { ch, lba, len } => h.submit(ch, false, lba, len, 0)?,
            Op::Kill { path, how } => h.kill(path, how),
            Op::Restore { path } => h.restore(path),
            Op::Poll { ch, n } => {
                for _ in 0..n {
                    h.poll(ch)?;
                }
            }
            Op::Policy(p) => h.rig.dev.set_policy(p).unwrap(),
        }
    }
    for p in 0..PATHS {
        h.restore(p);
    }
    let t0 = Instant::now();
    while !h.pending.is_empty() {
        h.poll(0)?;
        h.poll(1)?;
        prop_assert!(t0.elapsed() < Duration::from_secs(20), "{} IOs never answered", h.pending.len());
    }
    for _ in 0..100 {
        prop_assert_eq!(h.poll(0)? + h.poll(1)?, 0, "answer after the last IO");
    }
    // The whole device equals the model.
    for p in 0..PATHS {
        h.rig.delay(p, 0);
    }
    for lba in (0..BLOCKS).step_by(16) {
        h.submit(0, false, lba, 16, 0)?;
        let t0 = Instant::now();
        while !h.pending.is_empty() {
            h.poll(0)?;
            prop_assert!(t0.elapsed() < Duration::from_secs(20), "verify read never answered");
        }
    }
    for p in 0..PATHS {
        let s = h.rig.stats(p);
        prop_assert_eq!((s.in_flight, s.in_flight_bytes), (0, 0), "path {} counters", p);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_io_survives_random_path_failures(
        ops in prop::collection::vec(op(), 1..120),
        first in policy(),
        delays in prop::collection::vec(0u64..300, PATHS),
    ) {
        run_case(ops, first, delays)?;
    }
}
