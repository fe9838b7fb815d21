//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use bdev::IoStatus;
use fio_xbdev::{Job, JobSpec};
use std::time::Duration;

/// A job spec over two malloc devices (m0: 4 KiB blocks, m1: 512 B) in IO path `mode`.
pub fn spec(dir: &std::path::Path, mode: &str) -> JobSpec {
    let p = dir.join("xb.json");
    std::fs::write(
        &p,
        r#"{"reactor": {"cores": [0], "pin": false},
            "base_devices": [
              {"method": "malloc", "params": {"name": "m0", "num_blocks": 256, "block_size": 4096}},
              {"method": "malloc", "params": {"name": "m1", "num_blocks": 2048, "block_size": 512}}]}"#,
    )
    .unwrap();
    JobSpec::from_options(p.to_str(), None, None).unwrap().with_mode(Some(mode)).unwrap()
}

/// Starts an xbdev instance (the start hook jobs are given).
pub fn start(cfg: &xbdev::Config) -> Result<xbdev::Xbdev, xbdev::XbdevError> {
    xbdev::Xbdev::start(cfg)
}

/// Reap exactly `n` completions, returning (user, status) pairs.
pub fn reap(job: &mut Job, n: usize) -> Vec<(u64, IoStatus)> {
    let mut out = Vec::new();
    while out.len() < n {
        let got = job.getevents(1, n - out.len(), Some(Duration::from_secs(10)));
        assert!(got > 0, "no completion within 10 s");
        for i in 0..got {
            out.push(job.event(i).unwrap());
        }
    }
    out
}
