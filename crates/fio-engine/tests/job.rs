//! The engine's job logic against a real xbdev instance, in both IO paths, without fio.

mod common;
use common::*;

use bdev::IoStatus;
use fio_xbdev::{EngineError, Job, Op, QueueOutcome};
use std::time::Duration;

fn queue_ok(job: &mut Job, file: u32, op: Op, off: u64, len: u64, buf_off: Option<usize>, user: u64) {
    let iov = buf_off.map(|o| job.iomem_iovec(o, len as usize).unwrap());
    match job.queue(file, op, off, len, iov, user) {
        QueueOutcome::Queued => {}
        other => panic!("{op:?} at {off}: {other:?}"),
    }
}

fn write_read_back(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), mode);
    let mut job = Job::new(&s, 16, false, start).unwrap();
    assert_eq!(job.mode(), s.mode);
    let (f, size) = job.open("m0", true).unwrap();
    assert_eq!(size, 256 * 4096);
    job.iomem_alloc(64 * 1024).unwrap();
    let mem = job.iomem_bytes().unwrap();
    for (i, b) in mem[..32 * 1024].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    // Eight 4 KiB writes in one batch, then a flush, then read them back into the upper half.
    for i in 0..8u64 {
        queue_ok(&mut job, f, Op::Write, i * 8192, 4096, Some(i as usize * 4096), i);
    }
    job.commit();
    let done = reap(&mut job, 8);
    assert!(done.iter().all(|(_, s)| s.is_ok()), "{done:?}");
    let mut users: Vec<u64> = done.iter().map(|d| d.0).collect();
    users.sort_unstable();
    assert_eq!(users, (0..8).collect::<Vec<_>>());
    queue_ok(&mut job, f, Op::Flush, 0, 0, None, 100);
    job.commit();
    assert_eq!(reap(&mut job, 1), vec![(100, IoStatus::Success)]);
    for i in 0..8u64 {
        queue_ok(&mut job, f, Op::Read, i * 8192, 4096, Some(32 * 1024 + i as usize * 4096), 10 + i);
    }
    job.commit();
    assert!(reap(&mut job, 8).iter().all(|(_, s)| s.is_ok()));
    let mem = job.iomem_bytes().unwrap();
    assert_eq!(mem[..32 * 1024], mem[32 * 1024..64 * 1024]);
    // Unmap, then read zeroes (malloc unmaps to zeroes).
    queue_ok(&mut job, f, Op::Unmap, 0, 8192, None, 200);
    job.commit();
    assert_eq!(reap(&mut job, 1), vec![(200, IoStatus::Success)]);
    queue_ok(&mut job, f, Op::Read, 0, 4096, Some(0), 201);
    job.commit();
    assert_eq!(reap(&mut job, 1), vec![(201, IoStatus::Success)]);
    assert!(job.iomem_bytes().unwrap()[..4096].iter().all(|&b| b == 0));
    job.close(f).unwrap();
    assert!(matches!(job.close(f), Err(EngineError::BadFile(_))));
}

#[test]
fn inline_write_flush_read_unmap() {
    write_read_back("inline");
}

#[test]
fn reactor_write_flush_read_unmap() {
    write_read_back("reactor");
}

fn refusals(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), mode);
    let mut job = Job::new(&s, 4, false, start).unwrap();
    let e = job.open("nope", true).unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT, "{}", e.chain());
    let (f, _) = job.open("m1", true).unwrap();
    job.iomem_alloc(8192).unwrap();
    // Misaligned offset, length past the end, bad file id.
    let iov = job.iomem_iovec(0, 512);
    match job.queue(f, Op::Read, 100, 512, iov, 1) {
        QueueOutcome::Failed(e) => assert_eq!(e.errno(), libc::EINVAL, "{}", e.chain()),
        other => panic!("{other:?}"),
    }
    let iov = job.iomem_iovec(0, 1024);
    match job.queue(f, Op::Write, 2047 * 512, 1024, iov, 2) {
        QueueOutcome::Failed(e) => assert!(e.chain().contains("past") || e.chain().contains("range"), "{}", e.chain()),
        other => panic!("{other:?}"),
    }
    let iov = job.iomem_iovec(0, 512);
    assert!(matches!(job.queue(9, Op::Read, 0, 512, iov, 3), QueueOutcome::Failed(EngineError::BadFile(9))));
    // Nothing in flight: getevents returns at once even when asked to wait for one.
    let t0 = std::time::Instant::now();
    assert_eq!(job.getevents(1, 4, None), 0);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(job.in_flight(), 0);
}

#[test]
fn inline_refusals() {
    refusals("inline");
}

#[test]
fn reactor_refusals() {
    refusals("reactor");
}

fn read_only_write(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), mode);
    let mut job = Job::new(&s, 4, false, start).unwrap();
    let (f, _) = job.open("m0", false).unwrap();
    job.iomem_alloc(4096).unwrap();
    let iov = job.iomem_iovec(0, 4096);
    match job.queue(f, Op::Write, 0, 4096, iov, 7) {
        // The reactor path refuses at once; the inline channel answers with a status.
        QueueOutcome::Failed(e) => assert_eq!(e.errno(), libc::EROFS, "{}", e.chain()),
        QueueOutcome::Queued => {
            job.commit();
            assert_eq!(reap(&mut job, 1), vec![(7, IoStatus::Invalid)]);
        }
        QueueOutcome::Busy => panic!("busy with nothing in flight"),
    }
}

#[test]
fn inline_read_only_write_fails() {
    read_only_write("inline");
}

#[test]
fn reactor_read_only_write_fails() {
    read_only_write("reactor");
}

#[test]
fn jobs_of_one_spec_share_an_instance_until_the_last_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "inline");
    let a = Job::new(&s, 4, false, start).unwrap();
    let b = Job::new(&s, 4, false, |_| panic!("the second job must not start another instance")).unwrap();
    assert!(std::ptr::eq(a.xbdev(), b.xbdev()));
    drop(a);
    assert!(fio_xbdev::instances::running(&s).is_some(), "still used by b");
    drop(b);
    assert!(fio_xbdev::instances::running(&s).is_none(), "stopped with its last job");
}

#[test]
fn busy_when_the_queue_is_full_then_drains() {
    for mode in ["inline", "reactor"] {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), mode);
        let mut job = Job::new(&s, 2, false, start).unwrap();
        let (f, _) = job.open("m0", true).unwrap();
        job.iomem_alloc(4096 * 64).unwrap();
        let mut queued = 0u64;
        let mut busy = false;
        for i in 0..64u64 {
            let iov = job.iomem_iovec(i as usize * 4096, 4096);
            match job.queue(f, Op::Read, i * 4096, 4096, iov, i) {
                QueueOutcome::Queued => queued += 1,
                QueueOutcome::Busy => {
                    busy = true;
                    break;
                }
                QueueOutcome::Failed(e) => panic!("{mode}: {}", e.chain()),
            }
        }
        assert!(busy, "{mode}: never busy after {queued} requests");
        job.commit();
        assert_eq!(reap(&mut job, queued as usize).len(), queued as usize);
        assert_eq!(job.in_flight(), 0);
    }
}
