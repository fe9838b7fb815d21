//! Test rig: N paths to one RAM-disk namespace (malloc → port per path → fault bdev per path)
//! under a multipath bdev, and helpers to run IO through it.
#![allow(dead_code)]

use bdev::backends::fault::{ErrorRule, FaultBdev, FaultConfig, Trigger};
use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::backends::port::PortBdev;
use bdev::*;
use multipath::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Rig {
    pub reg: Arc<Registry>,
    pub module: Arc<MultipathModule>,
    pub ports: Vec<Arc<PortBdev>>,
    pub faults: Vec<Arc<FaultBdev>>,
    pub dev: Arc<MultipathBdev>,
    pub desc: Desc,
    pub events: Arc<Mutex<Vec<PathEvent>>>,
}

pub const BS: u32 = 512;

/// Options suited to tests: fast probing and ANA checks, long no-path timeout.
pub fn test_options(policy: Policy) -> MultipathOptions {
    MultipathOptions {
        policy,
        probe_interval: Duration::from_millis(2),
        ana_check_interval: Duration::from_millis(1),
        stats_reset_interval: Duration::from_secs(3600),
        no_path_timeout: Some(Duration::from_secs(20)),
        ..Default::default()
    }
}

/// Build `n` paths (`path0..`) over one malloc of `blocks` blocks, and `mp0` over them.
pub fn rig(n: usize, blocks: u64, options: MultipathOptions) -> Rig {
    rig_with(n, blocks, options, |_| PathParams::new(""))
}

pub fn rig_with(n: usize, blocks: u64, options: MultipathOptions, path: impl Fn(usize) -> PathParams) -> Rig {
    let reg = Registry::new();
    let m = MallocBdev::new(MallocParams { name: "m".into(), num_blocks: blocks, block_size: BS }).unwrap();
    reg.register(Arc::new(m)).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("port{i}")).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let ports = PortBdev::create(reg.open("m", true).unwrap(), &refs).unwrap();
    let mut faults = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        reg.register(p.clone()).unwrap();
        let f = Arc::new(FaultBdev::new(&format!("path{i}"), reg.open(&names[i], true).unwrap()).unwrap());
        reg.register(f.clone()).unwrap();
        faults.push(f);
    }
    let module = MultipathModule::new(AutoAssemble::default());
    let paths = (0..n)
        .map(|i| {
            let mut p = path(i);
            p.bdev = format!("path{i}");
            p
        })
        .collect();
    let dev = module.create(&reg, MultipathParams { name: Some("mp0".into()), paths, options }).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    dev.subscribe(Arc::new(move |e: &PathEvent| ev.lock().unwrap().push(e.clone())));
    let desc = reg.open("mp0", true).unwrap();
    Rig { reg, module, ports, faults, dev, desc, events }
}

impl Rig {
    pub fn channel(&self) -> BdevChannel {
        self.desc.channel().unwrap()
    }

    pub fn stats(&self, i: usize) -> PathStats {
        self.dev.path(&format!("path{i}")).unwrap().stats
    }

    pub fn state(&self, i: usize) -> PathState {
        self.dev.path(&format!("path{i}")).unwrap().state
    }

    /// Successful IOs per path.
    pub fn ios(&self) -> Vec<u64> {
        (0..self.faults.len()).map(|i| self.stats(i).ios()).collect()
    }

    /// Fail every IO of path `i` with `status` (or clear the rules with `None`).
    pub fn fail_path(&self, i: usize, status: Option<IoStatus>) {
        self.faults[i].update(|c| {
            c.errors = status
                .map(|s| {
                    vec![ErrorRule { io_types: IoTypeSet::ALL, status: s, trigger: Trigger::Always, lba_range: None }]
                })
                .unwrap_or_default()
        });
    }

    pub fn delay(&self, i: usize, us: u64) {
        self.faults[i].update(|c| c.delay_us = us);
    }

    pub fn events(&self) -> Vec<PathEvent> {
        self.events.lock().unwrap().clone()
    }
}

pub fn fault_default() -> FaultConfig {
    FaultConfig::default()
}

/// Submit one request and poll until it completes.
pub fn run(ch: &mut BdevChannel, io: IoRequest) -> IoStatus {
    ch.submit(&io).unwrap();
    let mut got = None;
    let t0 = Instant::now();
    while got.is_none() {
        ch.poll(&mut |tag, st| {
            assert_eq!(tag, io.tag, "unexpected completion");
            assert!(got.is_none(), "completed twice");
            got = Some(st);
        });
        assert!(t0.elapsed() < Duration::from_secs(30), "io did not complete");
    }
    got.unwrap()
}

/// Poll for `d`, expecting no completion.
pub fn pump(ch: &mut BdevChannel, d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        ch.poll(&mut |t, s| panic!("unexpected completion {t} {s}"));
    }
}

/// Poll until `cond` holds (or panic after `limit`).
pub fn poll_until(ch: &mut BdevChannel, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        ch.poll(&mut |t, s| panic!("unexpected completion {t} {s}"));
        assert!(t0.elapsed() < limit, "condition not reached within {limit:?}");
    }
    t0.elapsed()
}

/// A buffer filled with a pattern derived from `seed`.
pub fn pattern(len: usize, seed: u64) -> DmaBuf {
    let mut b = DmaBuf::alloc(len).unwrap();
    let mut s = seed;
    for chunk in b.as_mut_slice().chunks_mut(8) {
        let v = bdev::rand::next(&mut s).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    b
}

/// The index of the path whose successful IO count grew while `f` ran (exactly one must).
pub fn which_path(rig: &Rig, f: impl FnOnce()) -> usize {
    let before = rig.ios();
    f();
    let after = rig.ios();
    let grew: Vec<usize> = (0..before.len()).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(grew.len(), 1, "before {before:?} after {after:?}");
    grew[0]
}

pub fn read1(ch: &mut BdevChannel, buf: &mut DmaBuf, lba: u64) -> IoStatus {
    run(ch, IoRequest::read(lba, 1, IoVecs::single(buf.iovec_range(0, BS as usize).unwrap()), lba))
}
