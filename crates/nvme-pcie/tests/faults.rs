//! Timeouts, Abort, controller reset, fatal status and surprise removal.

mod common;

use std::time::Duration;

use common::*;
use nvme_pcie::emu::{EmuConfig, FaultFilter, Processing};
use nvme_pcie::{ControllerConfig, IoError, SubmitError};
use nvme_spec::command::opcode;

fn fast_timeouts() -> ControllerConfig {
    ControllerConfig {
        io_timeout: Duration::from_millis(30),
        admin_timeout: Duration::from_millis(500),
        ..ControllerConfig::default()
    }
}

#[test]
fn lost_completion_is_aborted_and_reported_as_timeout() {
    let (c, h) = attach_with(small_cfg(), fast_timeouts());
    let mut q = c.create_io_queue_pair(16).unwrap();
    let b = c.dma().alloc(4096).unwrap();
    h.lose_completions(FaultFilter { sqid: None, opcode: Some(opcode::READ) }, 1);
    q.read(1, 0, &b, 1).unwrap();
    q.write(1, 8, &b, 2).unwrap();
    let mut got = wait(&mut q, 2);
    got.sort_by_key(|x| x.0);
    assert_eq!(got, vec![(1, Err(IoError::Timeout)), (2, Ok(()))]);
    assert_eq!(q.stats().aborts, 1);
    assert_eq!(c.reset_count(), 0, "abort sufficed");
    assert_eq!(h.held_completions(), 0);
    run1(&mut q, |q| q.read(1, 0, &b, 3)).unwrap();
}

#[test]
fn ineffective_abort_escalates_to_reset_and_resubmits() {
    let (c, h) = attach_with(small_cfg(), fast_timeouts());
    let mut q = c.create_io_queue_pair(16).unwrap();
    let w = c.dma().alloc(4096).unwrap();
    pattern(&w, 3);
    h.set_abort_ineffective(true);
    // The write is executed but its completion lost; after the reset it is
    // resubmitted and completes normally.
    h.lose_completions(FaultFilter::ANY_IO, 1);
    q.write(1, 40, &w, 1).unwrap();
    let got = wait(&mut q, 1);
    assert_eq!(got, vec![(1, Ok(()))]);
    assert_eq!(c.reset_count(), 1);
    assert_eq!(q.stats().recoveries, 1);
    let r = c.dma().alloc(4096).unwrap();
    run1(&mut q, |q| q.read(1, 40, &r, 2)).unwrap();
    assert_eq!(bytes(&r), bytes(&w));
}

#[test]
fn command_that_always_hangs_fails_with_timeout_after_one_retry() {
    let (c, h) = attach_with(small_cfg(), fast_timeouts());
    let mut q = c.create_io_queue_pair(16).unwrap();
    let b = c.dma().alloc(512).unwrap();
    h.set_abort_ineffective(true);
    h.lose_completions(FaultFilter { sqid: None, opcode: Some(opcode::READ) }, 2);
    q.read(1, 0, &b, 1).unwrap();
    let got = wait(&mut q, 1);
    assert_eq!(got, vec![(1, Err(IoError::Timeout))]);
    assert_eq!(c.reset_count(), 2);
    h.set_abort_ineffective(false);
    run1(&mut q, |q| q.read(1, 0, &b, 2)).unwrap();
}

#[test]
fn reset_mid_io_resubmits_unfinished_commands_on_every_queue() {
    let cfg = EmuConfig { processing: Processing::Thread, ..small_cfg() };
    let (c, h) = attach_with(cfg, ControllerConfig::default());
    let mut q1 = c.create_io_queue_pair(64).unwrap();
    let mut q2 = c.create_io_queue_pair(64).unwrap();
    // Slow completions so the reset lands while commands are in flight.
    h.delay_completions(FaultFilter::ANY_IO, Some(Duration::from_millis(20)));
    let bufs: Vec<_> = (0..20)
        .map(|i| {
            let b = c.dma().alloc(4096).unwrap();
            pattern(&b, i);
            b
        })
        .collect();
    for (i, b) in bufs.iter().enumerate() {
        let q = if i % 2 == 0 { &mut q1 } else { &mut q2 };
        q.write(1, i as u64 * 8, b, i as u64).unwrap();
    }
    q1.flush();
    q2.flush();
    std::thread::sleep(Duration::from_millis(2));
    c.reset().unwrap();
    h.delay_completions(FaultFilter::ANY_IO, None);
    let mut got = wait(&mut q1, 10);
    got.extend(wait(&mut q2, 10));
    assert!(got.iter().all(|x| x.1.is_ok()), "{got:?}");
    assert_eq!(got.len(), 20);
    assert_eq!(q1.stats().recoveries, 1);
    for (i, b) in bufs.iter().enumerate() {
        let mut raw = vec![0u8; 4096];
        h.read_namespace(1, i as u64 * 8 * 512, &mut raw);
        assert_eq!(raw, bytes(b), "block {i}");
    }
}

#[test]
fn fatal_status_triggers_reset_and_io_continues() {
    let (c, h) = attach_with(small_cfg(), fast_timeouts());
    let mut q = c.create_io_queue_pair(16).unwrap();
    let b = c.dma().alloc(4096).unwrap();
    h.set_fatal();
    // Submitted while the controller is failed: nothing happens until the
    // driver notices CFS, resets and resubmits.
    q.write(1, 0, &b, 1).unwrap();
    let got = wait(&mut q, 1);
    assert_eq!(got, vec![(1, Ok(()))]);
    assert_eq!(c.reset_count(), 1);
    assert!(!c.is_gone());
}

#[test]
fn surprise_removal_fails_io_with_path_error_without_hanging() {
    let (c, h) = attach_with(small_cfg(), fast_timeouts());
    let mut q = c.create_io_queue_pair(32).unwrap();
    let mut q2 = c.create_io_queue_pair(32).unwrap();
    let b = c.dma().alloc(4096).unwrap();
    run1(&mut q, |q| q.write(1, 0, &b, 0)).unwrap();
    h.remove();
    for t in 1..=10 {
        q.read(1, 0, &b, t).unwrap();
    }
    let got = wait(&mut q, 10);
    assert!(got.iter().all(|x| x.1 == Err(IoError::DeviceGone)));
    assert!(got[0].1.unwrap_err().is_path_error());
    assert!(c.is_gone());
    assert_eq!(q.read(1, 0, &b, 11), Err(SubmitError::DeviceGone));
    assert_eq!(q2.write(1, 0, &b, 12), Err(SubmitError::DeviceGone));
    assert!(c.reset().is_err());
    assert!(c.smart_log().is_err());
    drop((q, q2));
    drop(c);
}

#[test]
fn removal_while_a_resubmitted_command_hangs_fails_it() {
    let (c, h) = attach_with(small_cfg(), fast_timeouts());
    let mut q = c.create_io_queue_pair(16).unwrap();
    let b = c.dma().alloc(512).unwrap();
    h.set_abort_ineffective(true);
    h.lose_completions(FaultFilter::ANY_IO, 2);
    q.read(1, 0, &b, 1).unwrap();
    // Poll until the reset resubmitted the read (lost again), then pull
    // the device.
    while q.stats().recoveries == 0 {
        q.poll(&mut |_, _| {});
    }
    h.remove();
    let got = wait(&mut q, 1);
    assert_eq!(got, vec![(1, Err(IoError::DeviceGone))]);
    assert!(c.is_gone());
}

#[test]
fn delayed_completions_arrive_without_spurious_timeouts() {
    let cfg = EmuConfig { processing: Processing::Thread, ..small_cfg() };
    let ccfg = ControllerConfig { io_timeout: Duration::from_millis(500), ..fast_timeouts() };
    let (c, h) = attach_with(cfg, ccfg);
    let mut q = c.create_io_queue_pair(16).unwrap();
    h.delay_completions(FaultFilter::ANY_IO, Some(Duration::from_millis(50)));
    let b = c.dma().alloc(4096).unwrap();
    for t in 0..8 {
        q.read(1, t * 8, &b, t).unwrap();
    }
    let got = wait(&mut q, 8);
    assert!(got.iter().all(|x| x.1.is_ok()));
    assert_eq!(q.stats().aborts, 0);
}
