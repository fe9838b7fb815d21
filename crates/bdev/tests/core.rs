//! Integration tests of the block-device core: registry, claims, hot-remove, examine,
//! and every base backend through validated channels.

use bdev::backends::aio::{AioBdev, AioParams};
use bdev::backends::fault::{ErrorRule, FaultBdev, FaultConfig, Trigger};
use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::backends::null::{NullBdev, NullParams};
use bdev::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn malloc(name: &str, blocks: u64, bs: u32) -> Arc<dyn Bdev> {
    Arc::new(MallocBdev::new(MallocParams { name: name.into(), num_blocks: blocks, block_size: bs }).unwrap())
}

/// Submit one request and wait for its status.
fn run(ch: &mut BdevChannel, io: IoRequest) -> IoStatus {
    ch.submit(&io).unwrap();
    let mut got = None;
    let t0 = std::time::Instant::now();
    while got.is_none() {
        ch.poll(&mut |tag, st| {
            assert_eq!(tag, io.tag);
            got = Some(st);
        });
        assert!(t0.elapsed() < Duration::from_secs(10), "io did not complete");
    }
    got.unwrap()
}

fn write_read_roundtrip(ch: &mut BdevChannel, bs: u64, lba: u64, nblocks: u64, seed: u8) {
    let len = (bs * nblocks) as usize;
    let mut w = DmaBuf::alloc(len).unwrap();
    for (i, b) in w.as_mut_slice().iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    assert_eq!(run(ch, IoRequest::write(lba, nblocks, IoVecs::single(w.iovec()), 1)), IoStatus::Success);
    let mut r = DmaBuf::zeroed(len).unwrap();
    assert_eq!(run(ch, IoRequest::read(lba, nblocks, IoVecs::single(r.iovec()), 2)), IoStatus::Success);
    assert_eq!(r.as_slice(), w.as_slice());
}

#[test]
fn registry_lookup_alias_duplicates_and_list() {
    let reg = Registry::new();
    reg.register(malloc("m0", 16, 512)).unwrap();
    assert!(matches!(reg.register(malloc("m0", 16, 512)), Err(BdevError::Exists(_))));
    assert!(reg.lookup("m0").is_some());
    assert!(reg.lookup("nope").is_none());
    assert!(matches!(reg.open("nope", false), Err(BdevError::NotFound(_))));
    assert_eq!(reg.list().len(), 1);
    reg.unregister("m0").unwrap();
    assert!(reg.list().is_empty());
}

#[test]
fn claims_are_exclusive_and_released_on_close() {
    let reg = Registry::new();
    reg.register(malloc("m0", 16, 512)).unwrap();
    let ro = reg.open("m0", false).unwrap();
    assert!(matches!(ro.claim("raid:md0"), Err(BdevError::ReadOnlyDescriptor(_))));
    let w1 = reg.open("m0", true).unwrap();
    let w2 = reg.open("m0", true).unwrap();
    assert!(matches!(w1.claim("raid:md0"), Err(BdevError::OpenWriters { writers: 1, .. })));
    drop(w2);
    w1.claim("raid:md0").unwrap();
    let err = reg.open("m0", true).unwrap_err();
    assert_eq!(err.to_string(), "bdev 'm0' is claimed by raid:md0");
    let _ro2 = reg.open("m0", false).expect("read-only opens stay possible");
    drop(w1);
    reg.open("m0", true).expect("claim released on close");
}

#[test]
fn hot_remove_notifies_and_fails_new_io_with_path_error() {
    let reg = Registry::new();
    reg.register(malloc("m0", 64, 512)).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev2 = events.clone();
    let desc = reg.open_with_events("m0", true, Some(Box::new(move |e| ev2.lock().unwrap().push(e.clone())))).unwrap();
    let mut ch = desc.channel().unwrap();
    let mut buf = DmaBuf::alloc(4096).unwrap();
    // In flight at removal time: still answered.
    ch.submit(&IoRequest::read(0, 8, IoVecs::single(buf.iovec()), 7)).unwrap();
    reg.unregister("m0").unwrap();
    assert_eq!(*events.lock().unwrap(), vec![BdevEvent::Remove { name: "m0".into() }]);
    let mut seen = Vec::new();
    assert!(ch.drain(Duration::from_secs(1), &mut |t, s| seen.push((t, s))));
    assert_eq!(seen, vec![(7, IoStatus::Success)]);
    assert_eq!(run(&mut ch, IoRequest::read(0, 8, IoVecs::single(buf.iovec()), 8)), IoStatus::PathError);
    assert!(desc.is_removed());
    assert!(matches!(desc.channel(), Err(BdevError::Removed(_))));
}

struct CountingExaminer(AtomicUsize);
impl Examiner for CountingExaminer {
    fn name(&self) -> &str {
        "count"
    }
    fn examine(&self, _r: &Registry, _b: &Arc<dyn Bdev>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn examiners_see_existing_and_new_bdevs() {
    let reg = Registry::new();
    reg.register(malloc("a", 8, 512)).unwrap();
    let ex = Arc::new(CountingExaminer(AtomicUsize::new(0)));
    reg.add_examiner(ex.clone());
    assert_eq!(ex.0.load(Ordering::SeqCst), 1);
    reg.register(malloc("b", 8, 512)).unwrap();
    assert_eq!(ex.0.load(Ordering::SeqCst), 2);
}

#[test]
fn validation_rejects_bad_requests_before_the_backend() {
    let reg = Registry::new();
    reg.register(malloc("m0", 64, 512)).unwrap();
    let ro = reg.open("m0", false).unwrap();
    let mut ch = ro.channel().unwrap();
    let mut buf = DmaBuf::alloc(4096).unwrap();
    let v = IoVecs::single(buf.iovec());
    assert_eq!(run(&mut ch, IoRequest::write(0, 8, v, 1)), IoStatus::Invalid, "read-only descriptor");
    assert_eq!(run(&mut ch, IoRequest::read(60, 8, v, 1)), IoStatus::Invalid, "past the end");
    assert_eq!(run(&mut ch, IoRequest::read(u64::MAX - 2, 8, v, 1)), IoStatus::Invalid, "overflow");
    assert_eq!(run(&mut ch, IoRequest::read(0, 4, v, 1)), IoStatus::Invalid, "buffer length mismatch");
    assert_eq!(run(&mut ch, IoRequest::read(0, 0, IoVecs::new(), 1)), IoStatus::Invalid, "zero blocks");
    assert_eq!(run(&mut ch, IoRequest::read(0, 8, v, 1)), IoStatus::Success);
    let s = reg.stats("m0").unwrap();
    assert_eq!(s.ops_of(IoType::Read), 1);
    assert_eq!(s.errors[IoStatus::Invalid as usize], 5);
}

#[test]
fn malloc_roundtrip_unmap_and_write_zeroes() {
    for bs in [512u32, 4096] {
        let reg = Registry::new();
        reg.register(malloc("m", 1024, bs)).unwrap();
        let d = reg.open("m", true).unwrap();
        let mut ch = d.channel().unwrap();
        write_read_roundtrip(&mut ch, bs as u64, 3, 5, 9);
        assert_eq!(run(&mut ch, IoRequest::no_data(IoType::WriteZeroes, 4, 1, 3)), IoStatus::Success);
        let mut r = DmaBuf::alloc(bs as usize * 3).unwrap();
        assert_eq!(run(&mut ch, IoRequest::read(3, 3, IoVecs::single(r.iovec()), 4)), IoStatus::Success);
        let s = r.as_slice();
        let b = bs as usize;
        assert!(s[b..2 * b].iter().all(|&x| x == 0));
        assert!(s[..b].iter().any(|&x| x != 0) && s[2 * b..].iter().any(|&x| x != 0));
        assert_eq!(run(&mut ch, IoRequest::no_data(IoType::Flush, 0, 0, 5)), IoStatus::Success);
    }
    assert!(MallocBdev::new(MallocParams { name: "x".into(), num_blocks: 8, block_size: 1000 }).is_err());
    assert!(MallocBdev::new(MallocParams { name: "x".into(), num_blocks: 0, block_size: 512 }).is_err());
}

#[test]
fn scatter_gather_splits_across_segments() {
    let reg = Registry::new();
    reg.register(malloc("m", 64, 512)).unwrap();
    let d = reg.open("m", true).unwrap();
    let mut ch = d.channel().unwrap();
    let mut a = DmaBuf::alloc(512).unwrap();
    let mut b = DmaBuf::alloc(1024).unwrap();
    a.as_mut_slice().fill(1);
    b.as_mut_slice().fill(2);
    let mut v = IoVecs::new();
    v.push(a.iovec());
    v.push(b.iovec());
    assert_eq!(run(&mut ch, IoRequest::write(10, 3, v, 1)), IoStatus::Success);
    let mut r = DmaBuf::alloc(1536).unwrap();
    assert_eq!(run(&mut ch, IoRequest::read(10, 3, IoVecs::single(r.iovec()), 2)), IoStatus::Success);
    assert!(r.as_slice()[..512].iter().all(|&x| x == 1));
    assert!(r.as_slice()[512..].iter().all(|&x| x == 2));
}

#[test]
fn null_reads_zeroes_and_queue_full_is_reported() {
    let reg = Registry::new();
    reg.register(Arc::new(
        NullBdev::new(NullParams { name: "n".into(), num_blocks: 1 << 20, block_size: 4096, zero_reads: true })
            .unwrap(),
    ))
    .unwrap();
    let d = reg.open("n", true).unwrap();
    let mut ch = d.channel_with_depth(2).unwrap();
    let mut buf = DmaBuf::alloc(4096).unwrap();
    buf.as_mut_slice().fill(0xaa);
    let v = IoVecs::single(buf.iovec());
    ch.submit(&IoRequest::read(0, 1, v, 1)).unwrap();
    ch.submit(&IoRequest::read(1, 1, v, 2)).unwrap();
    assert_eq!(ch.submit(&IoRequest::read(2, 1, v, 3)), Err(QueueFull));
    let mut n = 0;
    ch.poll(&mut |_, s| {
        assert_eq!(s, IoStatus::Success);
        n += 1;
    });
    assert_eq!(n, 2);
    assert!(buf.as_slice().iter().all(|&x| x == 0));
}

fn temp_file(len: u64) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(len).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

#[test]
fn aio_direct_and_buffered_roundtrip() {
    for buffered in [false, true] {
        let (_dir, path) = temp_file(8 << 20);
        let mut p = AioParams::new("aio0", &path);
        p.buffered = buffered;
        let reg = Registry::new();
        reg.register(Arc::new(AioBdev::new(p).unwrap())).unwrap();
        let d = reg.open("aio0", true).unwrap();
        assert_eq!(d.info().num_blocks, (8 << 20) / 512);
        let mut ch = d.channel().unwrap();
        write_read_roundtrip(&mut ch, 512, 8, 8, 3);
        write_read_roundtrip(&mut ch, 512, 100, 256, 4);
        assert_eq!(run(&mut ch, IoRequest::no_data(IoType::Flush, 0, 0, 9)), IoStatus::Success);
        assert_eq!(run(&mut ch, IoRequest::no_data(IoType::WriteZeroes, 8, 8, 9)), IoStatus::Success);
        let mut r = DmaBuf::alloc(4096).unwrap();
        assert_eq!(run(&mut ch, IoRequest::read(8, 8, IoVecs::single(r.iovec()), 2)), IoStatus::Success);
        assert!(r.as_slice().iter().all(|&x| x == 0));
        write_read_roundtrip(&mut ch, 512, 16, 8, 5);
        assert_eq!(run(&mut ch, IoRequest::no_data(IoType::Unmap, 16, 8, 9)), IoStatus::Success);
        assert_eq!(run(&mut ch, IoRequest::read(16, 8, IoVecs::single(r.iovec()), 2)), IoStatus::Success);
        assert!(r.as_slice().iter().all(|&x| x == 0));
    }
}

#[test]
fn aio_direct_enforces_alignment_and_data_persists_in_the_file() {
    let (_dir, path) = temp_file(1 << 20);
    let reg = Registry::new();
    reg.register(Arc::new(AioBdev::new(AioParams::new("a", &path)).unwrap())).unwrap();
    let d = reg.open("a", true).unwrap();
    assert!(d.info().required_alignment >= 512);
    let mut ch = d.channel().unwrap();
    let mut buf = DmaBuf::alloc(8192).unwrap();
    buf.as_mut_slice().fill(0x5a);
    let misaligned = buf.iovec_range(1, 512).unwrap();
    assert_eq!(run(&mut ch, IoRequest::write(0, 1, IoVecs::single(misaligned), 1)), IoStatus::Invalid);
    let ok = buf.iovec_range(512, 4096).unwrap();
    assert_eq!(run(&mut ch, IoRequest::write(2, 8, IoVecs::single(ok), 1)), IoStatus::Success);
    drop(ch);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes[1024..1024 + 4096].iter().all(|&x| x == 0x5a));
    assert!(bytes[..1024].iter().all(|&x| x == 0));
}

#[test]
fn aio_reports_clear_errors() {
    let e = AioBdev::new(AioParams::new("a", "/nonexistent/x")).err().unwrap();
    assert!(e.to_string().contains("cannot open '/nonexistent/x'"), "{e}");
    let (_dir, path) = temp_file(100);
    let e = AioBdev::new(AioParams::new("a", &path)).err().unwrap();
    assert!(e.to_string().contains("smaller than one 512-byte block"), "{e}");
    let (_dir2, path2) = temp_file(1 << 20);
    let mut p = AioParams::new("a", &path2);
    p.block_size = Some(1000);
    assert!(AioBdev::new(p).err().unwrap().to_string().contains("block_size"));
}

#[test]
fn aio_batches_many_ios_in_flight() {
    let (_dir, path) = temp_file(16 << 20);
    let reg = Registry::new();
    reg.register(Arc::new(AioBdev::new(AioParams::new("a", &path)).unwrap())).unwrap();
    let d = reg.open("a", true).unwrap();
    let mut ch = d.channel().unwrap();
    let mut bufs: Vec<DmaBuf> = (0..128)
        .map(|i| {
            let mut b = DmaBuf::alloc(4096).unwrap();
            b.as_mut_slice().fill(i as u8);
            b
        })
        .collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        ch.submit(&IoRequest::write(i as u64 * 8, 8, IoVecs::single(b.iovec()), i as u64)).unwrap();
    }
    let mut done = [false; 128];
    assert!(ch.drain(Duration::from_secs(10), &mut |t, s| {
        assert_eq!(s, IoStatus::Success);
        assert!(!done[t as usize], "completed twice");
        done[t as usize] = true;
    }));
    assert!(done.iter().all(|&x| x));
    for (i, b) in bufs.iter_mut().enumerate() {
        assert_eq!(run(&mut ch, IoRequest::read(i as u64 * 8, 8, IoVecs::single(b.iovec()), 0)), IoStatus::Success);
        assert!(b.as_slice().iter().all(|&x| x == i as u8));
    }
}

#[test]
fn aio_channel_sleeps_until_a_completion_and_other_channels_cannot() {
    let (_dir, path) = temp_file(1 << 20);
    let reg = Registry::new();
    reg.register(Arc::new(AioBdev::new(AioParams::new("a", &path)).unwrap())).unwrap();
    reg.register(malloc("m", 64, 512)).unwrap();
    let d = reg.open("a", true).unwrap();
    let mut ch = d.channel().unwrap();
    // Nothing in flight: nothing to wait for.
    assert!(!ch.wait(Duration::from_millis(10)));
    let mut b = DmaBuf::alloc(4096).unwrap();
    ch.submit(&IoRequest::read(0, 8, IoVecs::single(b.iovec()), 7)).unwrap();
    // wait() submits the queued read and sleeps until it completes; poll() then delivers it.
    let mut got = Vec::new();
    let t0 = std::time::Instant::now();
    while got.is_empty() {
        assert!(ch.wait(Duration::from_secs(5)));
        ch.poll(&mut |t, s| got.push((t, s)));
        assert!(t0.elapsed() < Duration::from_secs(10), "read never completed");
    }
    assert_eq!(got, vec![(7, IoStatus::Success)]);
    assert_eq!(ch.in_flight(), 0);
    // Backends without a way to sleep say so.
    let m = reg.open("m", true).unwrap();
    let mut mch = m.channel().unwrap();
    mch.submit(&IoRequest::read(0, 8, IoVecs::single(b.iovec()), 1)).unwrap();
    assert!(!mch.wait(Duration::from_millis(10)));
    assert_eq!(run_drain(&mut mch), vec![(1, IoStatus::Success)]);
}

fn run_drain(ch: &mut BdevChannel) -> Vec<(u64, IoStatus)> {
    let mut v = Vec::new();
    assert!(ch.drain(Duration::from_secs(10), &mut |t, s| v.push((t, s))));
    v
}

#[test]
fn fault_injection_errors_delay_and_stall() {
    let reg = Registry::new();
    reg.register(malloc("base", 64, 512)).unwrap();
    let fault = Arc::new(FaultBdev::new("f", reg.open("base", true).unwrap()).unwrap());
    assert!(matches!(reg.open("base", true), Err(BdevError::Claimed { .. })));
    reg.register(fault.clone()).unwrap();
    let d = reg.open("f", true).unwrap();
    let mut ch = d.channel().unwrap();
    let mut buf = DmaBuf::alloc(512).unwrap();
    let v = IoVecs::single(buf.iovec());
    fault.configure(FaultConfig {
        errors: vec![ErrorRule {
            io_types: IoTypeSet::of(&[IoType::Write]),
            status: IoStatus::MediaError,
            trigger: Trigger::AfterCount(2),
            lba_range: None,
        }],
        ..Default::default()
    });
    assert_eq!(run(&mut ch, IoRequest::write(0, 1, v, 1)), IoStatus::Success);
    assert_eq!(run(&mut ch, IoRequest::write(0, 1, v, 1)), IoStatus::Success);
    assert_eq!(run(&mut ch, IoRequest::write(0, 1, v, 1)), IoStatus::MediaError);
    assert_eq!(run(&mut ch, IoRequest::read(0, 1, v, 1)), IoStatus::Success, "reads unaffected");
    fault.configure(FaultConfig { delay_us: 20_000, ..Default::default() });
    let t0 = std::time::Instant::now();
    assert_eq!(run(&mut ch, IoRequest::read(0, 1, v, 1)), IoStatus::Success);
    assert!(t0.elapsed() >= Duration::from_millis(19), "delay applied: {:?}", t0.elapsed());
    fault.configure(FaultConfig { stall: true, ..Default::default() });
    ch.submit(&IoRequest::read(0, 1, v, 42)).unwrap();
    for _ in 0..1000 {
        assert_eq!(ch.poll(&mut |_, _| panic!("stalled device completed")), 0);
    }
    fault.configure(FaultConfig::default());
    let mut got = Vec::new();
    assert!(ch.drain(Duration::from_secs(1), &mut |t, s| got.push((t, s))));
    assert_eq!(got, vec![(42, IoStatus::Success)]);
    fault.configure(FaultConfig {
        errors: vec![ErrorRule {
            io_types: IoTypeSet::ALL,
            status: IoStatus::PathError,
            trigger: Trigger::Rate(1.0),
            lba_range: Some((10, 20)),
        }],
        ..Default::default()
    });
    assert_eq!(run(&mut ch, IoRequest::read(0, 1, v, 1)), IoStatus::Success);
    assert_eq!(run(&mut ch, IoRequest::read(15, 1, v, 1)), IoStatus::PathError);
}
