//! A bdev registered in its own registry with one open channel, for tests
//! that run batches of requests against it.

use bdev::{Bdev, BdevChannel, Desc, IoRequest, IoStatus, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A registered bdev with one channel; unregistered on drop.
pub struct Chan {
    reg: Arc<Registry>,
    name: String,
    ch: Option<BdevChannel>,
    desc: Option<Desc>,
}

impl Chan {
    /// Registers `b` and opens a read-write channel to it.
    pub fn open(b: Arc<dyn Bdev>) -> Self {
        let reg = Registry::new();
        let name = b.info().name.clone();
        reg.register(b).expect("register");
        let desc = reg.open(&name, true).expect("open");
        let ch = desc.channel().expect("channel");
        Self { reg, name, ch: Some(ch), desc: Some(desc) }
    }

    /// Runs `reqs` (re-tagged with their index) and returns their statuses
    /// in order; panics after two minutes.
    pub fn run(&mut self, reqs: &[IoRequest]) -> Vec<IoStatus> {
        let ch = self.ch.as_mut().expect("channel");
        let mut out = vec![None; reqs.len()];
        for (i, r) in reqs.iter().enumerate() {
            let mut r = *r;
            r.tag = i as u64;
            while ch.submit(&r).is_err() {
                ch.poll(&mut |t, s| out[t as usize] = Some(s));
            }
        }
        let t0 = Instant::now();
        while out.iter().any(Option::is_none) {
            ch.poll(&mut |t, s| out[t as usize] = Some(s));
            assert!(t0.elapsed() < Duration::from_secs(120), "io timed out");
        }
        out.into_iter().map(|s| s.expect("completed")).collect()
    }
}

impl Drop for Chan {
    fn drop(&mut self) {
        self.ch = None;
        self.desc = None;
        let _ = self.reg.unregister(&self.name);
    }
}
