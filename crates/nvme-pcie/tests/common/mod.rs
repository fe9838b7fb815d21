//! Shared helpers for the emulator-backed driver tests.
#![allow(dead_code)]

use std::time::Duration;

use nvme_pcie::emu::{EmuConfig, EmuHandle, EmuNamespace, Emulator};
use nvme_pcie::{Controller, ControllerConfig, DmaBuffer, IoError, IoQueuePair};

pub fn emu(cfg: EmuConfig) -> (Emulator, EmuHandle) {
    let e = Emulator::new("emu0", cfg);
    let h = e.handle();
    (e, h)
}

pub fn attach(cfg: EmuConfig) -> (Controller<Emulator>, EmuHandle) {
    attach_with(cfg, ControllerConfig::default())
}

pub fn attach_with(cfg: EmuConfig, ccfg: ControllerConfig) -> (Controller<Emulator>, EmuHandle) {
    let (e, h) = emu(cfg);
    (Controller::new(e, ccfg).expect("bring-up"), h)
}

pub fn small_cfg() -> EmuConfig {
    EmuConfig {
        namespaces: vec![EmuNamespace::new(8 << 20, 512, 1), EmuNamespace::new(4 << 20, 4096, 2)],
        ..EmuConfig::default()
    }
}

pub fn pattern(buf: &DmaBuffer, seed: u64) {
    let mut v = vec![0u8; buf.len()];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    buf.write_bytes(0, &v).unwrap();
}

pub fn bytes(buf: &DmaBuffer) -> Vec<u8> {
    let mut v = vec![0u8; buf.len()];
    buf.read_bytes(0, &mut v).unwrap();
    v
}

/// Poll until `n` completions arrived (or a generous deadline passes).
pub fn wait(qp: &mut IoQueuePair<Emulator>, n: usize) -> Vec<(u64, Result<(), IoError>)> {
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while out.len() < n {
        qp.poll(&mut |t, r| out.push((t, r)));
        assert!(start.elapsed() < Duration::from_secs(20), "only {} of {n} completions", out.len());
    }
    out
}

/// Submit one request via `f` and wait for its completion.
pub fn run1(
    qp: &mut IoQueuePair<Emulator>,
    f: impl FnOnce(&mut IoQueuePair<Emulator>) -> Result<(), nvme_pcie::SubmitError>,
) -> Result<(), IoError> {
    f(qp).expect("submit");
    let r = wait(qp, 1);
    r[0].1
}
