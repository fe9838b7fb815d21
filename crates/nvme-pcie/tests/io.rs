//! I/O commands, PRPs, queue mechanics against the emulator.

mod common;

use common::*;
use nvme_pcie::emu::{EmuConfig, EmuNamespace, Emulator, Processing};
use nvme_pcie::{Controller, ControllerConfig, IoError, SubmitError};
use proptest::prelude::*;

#[test]
fn write_read_verify_both_namespaces() {
    let (c, h) = attach(small_cfg());
    let mut q = c.create_io_queue_pair(64).unwrap();
    for (nsid, bs) in [(1u32, 512usize), (2, 4096)] {
        let w = c.dma().alloc(16 * bs).unwrap();
        pattern(&w, u64::from(nsid));
        run1(&mut q, |q| q.write(nsid, 3, &w, 7)).unwrap();
        let r = c.dma().alloc(16 * bs).unwrap();
        run1(&mut q, |q| q.read(nsid, 3, &r, 8)).unwrap();
        assert_eq!(bytes(&r), bytes(&w));
        let mut raw = vec![0u8; 16 * bs];
        assert!(h.read_namespace(nsid, 3 * bs as u64, &mut raw));
        assert_eq!(raw, bytes(&w));
    }
}

#[test]
fn flush_write_zeroes_and_deallocate() {
    let (c, h) = attach(small_cfg());
    let mut q = c.create_io_queue_pair(16).unwrap();
    let w = c.dma().alloc(64 * 512).unwrap();
    pattern(&w, 5);
    run1(&mut q, |q| q.write(1, 100, &w, 1)).unwrap();
    run1(&mut q, |q| q.flush_ns(1, 2)).unwrap();
    run1(&mut q, |q| q.write_zeroes(1, 100, 8, 3)).unwrap();
    run1(&mut q, |q| q.deallocate(1, &[(120, 4), (140, 2)], 4)).unwrap();
    let mut raw = vec![0u8; 64 * 512];
    h.read_namespace(1, 100 * 512, &mut raw);
    let want = bytes(&w);
    assert!(raw[..8 * 512].iter().all(|&b| b == 0));
    assert_eq!(raw[8 * 512..20 * 512], want[8 * 512..20 * 512]);
    assert!(raw[20 * 512..24 * 512].iter().all(|&b| b == 0));
    assert_eq!(raw[24 * 512..40 * 512], want[24 * 512..40 * 512]);
    assert!(raw[40 * 512..42 * 512].iter().all(|&b| b == 0));
    assert_eq!(raw[42 * 512..], want[42 * 512..]);
}

#[test]
fn submit_validation_errors_are_typed() {
    let (c, _h) = attach(small_cfg());
    let mut q = c.create_io_queue_pair(16).unwrap();
    let b = c.dma().alloc(4096).unwrap();
    assert_eq!(q.read(9, 0, &b, 0), Err(SubmitError::InvalidNamespace(9)));
    assert_eq!(q.read(1, 16383, &b, 0), Err(SubmitError::OutOfRange));
    assert_eq!(q.read(1, u64::MAX, &b, 0), Err(SubmitError::OutOfRange));
    let odd = b.slice(0, 1000).unwrap();
    assert!(matches!(q.read(1, 0, &odd, 0), Err(SubmitError::BadLength { .. })));
    let mis = b.slice(2, 512).unwrap();
    assert_eq!(q.read(1, 0, &mis, 0), Err(SubmitError::Misaligned));
    assert_eq!(q.write_zeroes(1, 0, 0, 0), Err(SubmitError::TooLarge));
    assert_eq!(q.deallocate(1, &[], 0), Err(SubmitError::TooLarge));
    assert_eq!(q.outstanding(), 0);
}

#[test]
fn transfers_beyond_mdts_are_split() {
    // MDTS 2^3 pages = 32 KiB.
    let cfg = EmuConfig { mdts: 3, ..small_cfg() };
    let (c, h) = attach(cfg);
    assert_eq!(c.info().max_transfer, 32 << 10);
    let mut q = c.create_io_queue_pair(40).unwrap();
    let w = c.dma().alloc(1 << 20).unwrap();
    pattern(&w, 77);
    let before = h.stats().commands;
    run1(&mut q, |q| q.write(1, 1, &w, 1)).unwrap();
    assert_eq!(h.stats().commands - before, 32, "1 MiB in 32 KiB commands");
    let r = c.dma().alloc(1 << 20).unwrap();
    run1(&mut q, |q| q.read(1, 1, &r, 2)).unwrap();
    assert_eq!(bytes(&r), bytes(&w));
    // Larger than the whole queue can ever hold.
    let huge = c.dma().alloc(2 << 20).unwrap();
    assert_eq!(q.free_slots(), 39);
    assert_eq!(q.read(1, 0, &huge, 3), Err(SubmitError::TooLarge));
    // An error in one child fails the parent once.
    let st =
        nvme_spec::Status::new(nvme_spec::StatusCode::Generic(nvme_spec::status::GenericStatus::InternalError), false);
    h.inject_status(nvme_pcie::emu::FaultFilter::ANY_IO, st, 1);
    q.read(1, 1, &r, 4).unwrap();
    let done = wait(&mut q, 1);
    assert_eq!(done, vec![(4, Err(IoError::Status(st)))]);
    assert_eq!(q.outstanding(), 0);
    assert_eq!(q.free_slots(), 39);
}

#[test]
fn queue_wraps_many_times_with_batched_doorbells() {
    let (c, h) = attach(EmuConfig { doorbell_buffer: false, ..small_cfg() });
    let mut q = c.create_io_queue_pair(8).unwrap();
    let bufs: Vec<_> = (0..7).map(|_| c.dma().alloc(512).unwrap()).collect();
    let mut total = 0;
    for round in 0..100u64 {
        for (i, b) in bufs.iter().enumerate() {
            q.read(1, round + i as u64, b, round * 10 + i as u64).unwrap();
        }
        assert_eq!(q.read(1, 0, &bufs[0], 0), Err(SubmitError::QueueFull));
        let got = wait(&mut q, 7);
        let mut tags: Vec<u64> = got.iter().map(|x| x.0).collect();
        tags.sort();
        assert_eq!(tags, (0..7).map(|i| round * 10 + i).collect::<Vec<_>>());
        assert!(got.iter().all(|x| x.1.is_ok()));
        total += 7;
    }
    let s = q.stats();
    assert_eq!(s.completed, total);
    assert_eq!(s.sq_doorbells, 100, "one SQ doorbell per batch");
    assert!(s.cq_doorbells <= 100 + 1);
    let _ = h;
}

#[test]
fn command_id_exhaustion_and_reuse() {
    let (c, _h) = attach(small_cfg());
    let mut q = c.create_io_queue_pair(4).unwrap();
    let b = c.dma().alloc(512).unwrap();
    for t in 0..3 {
        q.read(1, 0, &b, t).unwrap();
    }
    assert_eq!(q.free_slots(), 0);
    assert_eq!(q.read(1, 0, &b, 9), Err(SubmitError::QueueFull));
    assert_eq!(q.flush_ns(1, 9), Err(SubmitError::QueueFull));
    wait(&mut q, 3);
    assert_eq!(q.free_slots(), 3);
    run1(&mut q, |q| q.read(1, 0, &b, 10)).unwrap();
}

#[test]
fn shadow_doorbells_skip_cq_mmio_writes() {
    let (c, _h) = attach(small_cfg());
    assert!(c.info().shadow_doorbells);
    let mut q = c.create_io_queue_pair(16).unwrap();
    let b = c.dma().alloc(4096).unwrap();
    for i in 0..50 {
        run1(&mut q, |q| q.write(1, i, &b, i)).unwrap();
    }
    let s = q.stats();
    assert!(s.doorbells_skipped >= 40, "{s:?}");
    assert!(s.cq_doorbells < 10, "{s:?}");
}

#[test]
fn threaded_emulator_and_several_queue_pairs_on_several_threads() {
    let cfg = EmuConfig {
        processing: Processing::Thread,
        namespaces: vec![EmuNamespace::new(32 << 20, 512, 3)],
        ..EmuConfig::default()
    };
    let c = Controller::new(Emulator::new("emu-t", cfg), ControllerConfig::default()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let c = &c;
            s.spawn(move || {
                let mut q = c.create_io_queue_pair(64).unwrap();
                let region = t * 8192; // blocks: 4 MiB per thread
                let bufs: Vec<_> = (0..32).map(|_| c.dma().alloc(8192).unwrap()).collect();
                for (i, b) in bufs.iter().enumerate() {
                    pattern(b, t * 1000 + i as u64);
                    q.write(1, region + i as u64 * 16, b, i as u64).unwrap();
                }
                assert!(wait(&mut q, 32).iter().all(|x| x.1.is_ok()));
                let rbufs: Vec<_> = (0..32).map(|_| c.dma().alloc(8192).unwrap()).collect();
                for (i, b) in rbufs.iter().enumerate() {
                    q.read(1, region + i as u64 * 16, b, i as u64).unwrap();
                }
                assert!(wait(&mut q, 32).iter().all(|x| x.1.is_ok()));
                for (w, r) in bufs.iter().zip(&rbufs) {
                    assert_eq!(bytes(w), bytes(r));
                }
            });
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any buffer alignment (dword granularity) and size up to beyond MDTS
    /// moves exactly the right bytes through PRP1/PRP2/PRP lists.
    #[test]
    fn prp_transfers_at_every_alignment(off in 0usize..1024, blocks in 1usize..700, lba in 0u64..1000) {
        let (c, h) = attach(EmuConfig { mdts: 6, ..small_cfg() });
        let mut q = c.create_io_queue_pair(32).unwrap();
        let off = off * 4;
        let len = blocks * 512;
        let mem = c.dma().alloc(off + len).unwrap();
        let w = mem.slice(off, len).unwrap();
        pattern(&w, lba);
        prop_assert!(run1(&mut q, |q| q.write(1, lba, &w, 1)).is_ok());
        let mut raw = vec![0u8; len];
        h.read_namespace(1, lba * 512, &mut raw);
        prop_assert_eq!(&raw, &bytes(&w));
        let rmem = c.dma().alloc(off + len + 4096).unwrap();
        let r = rmem.slice(off + 4096 - 4 * (off / 4 % 7), len).unwrap();
        prop_assert!(run1(&mut q, |q| q.read(1, lba, &r, 2)).is_ok());
        prop_assert_eq!(bytes(&r), raw);
    }
}

/// Regression: a re-created queue must not inherit the previous queue's
/// shadow doorbell / EventIdx values (found on QEMU: the first doorbell of
/// the new queue was skipped and its commands hung until a reset).
#[test]
fn recreated_queue_starts_with_clean_shadow_doorbells() {
    let (c, _h) = attach(small_cfg());
    let b = c.dma().alloc(512).unwrap();
    {
        let mut q = c.create_io_queue_pair(256).unwrap();
        assert_eq!(q.qid(), 1);
        for t in 0..130 {
            q.read(1, 0, &b, t).unwrap();
        }
        wait(&mut q, 130);
    }
    let mut q = c.create_io_queue_pair(64).unwrap();
    assert_eq!(q.qid(), 1);
    for t in 0..48 {
        q.read(1, 0, &b, t).unwrap();
    }
    let mut n = 0;
    for _ in 0..10 {
        n += q.poll(&mut |_, r| assert!(r.is_ok()));
    }
    assert_eq!(n, 48, "commands of the re-created queue must run at once");
    assert_eq!(q.stats().timeouts, 0);
}

/// Without an MDTS limit a single 4 MiB command needs a chained PRP list
/// (more than 512 entries), at an unaligned buffer offset too.
#[test]
fn chained_prp_lists_for_a_single_large_command() {
    let cfg = EmuConfig { mdts: 0, ..small_cfg() };
    let ccfg = ControllerConfig { max_transfer: 4 << 20, ..ControllerConfig::default() };
    let (c, h) = attach_with(cfg, ccfg);
    assert_eq!(c.info().max_transfer, 4 << 20);
    let mut q = c.create_io_queue_pair(8).unwrap();
    let mem = c.dma().alloc((4 << 20) + 4096).unwrap();
    let w = mem.slice(1028, 4 << 20).unwrap();
    pattern(&w, 4);
    let before = h.stats().commands;
    run1(&mut q, |q| q.write(1, 7, &w, 1)).unwrap();
    assert_eq!(h.stats().commands - before, 1, "one command");
    let mut raw = vec![0u8; 4 << 20];
    h.read_namespace(1, 7 * 512, &mut raw);
    assert_eq!(raw, bytes(&w));
}

/// The emulated controller checks data pointers: a PRP entry that is not
/// dword aligned fails with PRP Offset Invalid.
#[test]
fn emulator_rejects_misaligned_prp() {
    let (c, _h) = attach(small_cfg());
    let buf = c.dma().alloc(8192).unwrap();
    let mut sqe = nvme_spec::AdminCommand::identify(nvme_spec::command::Cns::Controller, 0).to_sqe(0);
    sqe.set_data_pointer(nvme_spec::DataPointer::Prp { prp1: buf.iova() + 2, prp2: buf.iova() + 4096 });
    match c.admin_command(sqe, None) {
        Err(nvme_pcie::NvmeError::AdminStatus { status, .. }) => {
            assert_eq!(status.code, nvme_spec::StatusCode::Generic(nvme_spec::status::GenericStatus::PrpOffsetInvalid))
        }
        other => panic!("{other:?}"),
    }
    sqe.set_data_pointer(nvme_spec::DataPointer::Prp { prp1: buf.iova() + 512, prp2: buf.iova() + 4096 + 8 });
    assert!(c.admin_command(sqe, None).is_err(), "prp2 must be page aligned");
    sqe.set_data_pointer(nvme_spec::DataPointer::Prp { prp1: buf.iova() + 512, prp2: buf.iova() + 4096 });
    c.admin_command(sqe, None).unwrap();
}

#[test]
fn namespaces_with_separate_metadata_are_refused() {
    let mut md = EmuNamespace::new(1 << 20, 512, 5);
    md.metadata_size = 8;
    let cfg = EmuConfig { namespaces: vec![EmuNamespace::new(1 << 20, 512, 4), md], ..EmuConfig::default() };
    let (c, _h) = attach(cfg);
    let ns2 = c.namespace(2).unwrap();
    assert_eq!((ns2.metadata_size, ns2.extended_lba), (8, false));
    let mut q = c.create_io_queue_pair(8).unwrap();
    let b = c.dma().alloc(512).unwrap();
    assert_eq!(q.read(2, 0, &b, 0), Err(SubmitError::UnsupportedFormat(2)));
    run1(&mut q, |q| q.read(1, 0, &b, 1)).unwrap();
}
