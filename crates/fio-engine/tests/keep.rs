//! Thread-mode instances outlive their jobs until the library is unloaded (own test binary:
//! the unload stops every instance of the process).

mod common;
use common::*;

use bdev::IoStatus;
use fio_xbdev::{Job, Op, QueueOutcome};

#[test]
fn thread_mode_instances_outlive_their_jobs_until_unload() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "inline");
    let mut a = Job::new(&s, 4, true, start).unwrap();
    let (f, _) = a.open("m0", true).unwrap();
    a.iomem_alloc(4096).unwrap();
    a.iomem_bytes().unwrap().fill(0xab);
    let iov = a.iomem_iovec(0, 4096);
    assert!(matches!(a.queue(f, Op::Write, 4096, 4096, iov, 1), QueueOutcome::Queued));
    a.commit();
    assert_eq!(reap(&mut a, 1), vec![(1, IoStatus::Success)]);
    drop(a);
    assert!(fio_xbdev::instances::running(&s).is_some(), "kept for later jobs of the run");
    // A later job sees the data the first one wrote.
    let mut b = Job::new(&s, 4, true, |_| panic!("must reuse the kept instance")).unwrap();
    let (f, _) = b.open("m0", false).unwrap();
    b.iomem_alloc(4096).unwrap();
    let iov = b.iomem_iovec(0, 4096);
    assert!(matches!(b.queue(f, Op::Read, 4096, 4096, iov, 2), QueueOutcome::Queued));
    b.commit();
    assert_eq!(reap(&mut b, 1), vec![(2, IoStatus::Success)]);
    assert!(b.iomem_bytes().unwrap().iter().all(|&x| x == 0xab));
    drop(b);
    fio_xbdev::ffi::xbdev_rs_unload();
    assert!(fio_xbdev::instances::running(&s).is_none());
}
