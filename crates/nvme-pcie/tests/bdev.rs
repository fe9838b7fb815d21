//! The `nvme` bdev backend over the emulated controller.

use std::sync::Arc;
use std::time::Duration;

use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoType, IoVecs, Registry};
use nvme_pcie::emu::{EmuConfig, EmuHandle, EmuNamespace, Emulator, FaultFilter, Processing};
use nvme_pcie::nvme_bdev::{attach, NvmeBdevParams};
use nvme_pcie::{Controller, ControllerConfig};
use proptest::prelude::*;

fn setup(prefix: &str) -> (Arc<Registry>, EmuHandle) {
    setup_with(prefix, EmuConfig::default())
}

fn setup_with(prefix: &str, cfg: EmuConfig) -> (Arc<Registry>, EmuHandle) {
    let cfg =
        EmuConfig { namespaces: vec![EmuNamespace::new(8 << 20, 512, 1), EmuNamespace::new(4 << 20, 4096, 2)], ..cfg };
    let e = Emulator::new(prefix, cfg);
    let h = e.handle();
    let c = Controller::new(e, ControllerConfig::default()).unwrap();
    let params = NvmeBdevParams { prefix: prefix.to_string(), queue_depth: 64, traddr: "emu".into() };
    let reg = Registry::new();
    for b in attach(c, &params).unwrap() {
        reg.register(b).unwrap();
    }
    (reg, h)
}

fn run(ch: &mut BdevChannel, io: IoRequest) -> IoStatus {
    ch.submit(&io).unwrap();
    let mut st = None;
    assert!(ch.drain(Duration::from_secs(10), &mut |t, s| {
        assert_eq!(t, io.tag);
        st = Some(s);
    }));
    st.unwrap()
}

fn fill(b: &mut DmaBuf, seed: u8) {
    for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
}

#[test]
fn one_bdev_per_namespace_with_identity() {
    let (reg, _h) = setup("nvmeA");
    let names: Vec<String> = reg.list().into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["nvmeAn1".to_string(), "nvmeAn2".to_string()]);
    let b = reg.lookup("nvmeAn1").unwrap();
    let i = b.info();
    assert_eq!((i.block_size, i.num_blocks), (512, 16384));
    assert_eq!(i.product, "nvme");
    let want = EmuNamespace::new(8 << 20, 512, 1);
    assert_eq!(i.ns_id.nguid, Some(want.nguid));
    assert_eq!(i.ns_id.eui64, Some(want.eui64));
    assert_eq!(i.ns_id.uuid.map(|u| u.0), want.uuid);
    assert_eq!(i.uuid.0, want.uuid.unwrap());
    assert!(i.supported.contains(IoType::Unmap) && i.supported.contains(IoType::WriteZeroes));
    assert!(i.supported.contains(IoType::Reset));
    assert!(b.config_params().unwrap().contains(r#""name":"nvmeA""#), "config names the controller prefix");
    assert_eq!(reg.lookup("nvmeAn2").unwrap().info().block_size, 4096);
}

#[test]
fn read_write_through_bdev_channels() {
    let (reg, h) = setup("nvmeB");
    let d = reg.open("nvmeBn1", true).unwrap();
    let mut ch = d.channel().unwrap();
    let mut w = DmaBuf::alloc(64 << 10).unwrap();
    fill(&mut w, 1);
    assert_eq!(run(&mut ch, IoRequest::write(10, 128, IoVecs::single(w.iovec()), 1)), IoStatus::Success);
    let mut raw = vec![0u8; 64 << 10];
    h.read_namespace(1, 10 * 512, &mut raw);
    assert_eq!(raw, w.as_slice());
    // Page-aligned segments go straight to PRPs.
    let mut a = DmaBuf::zeroed(16 << 10).unwrap();
    let mut b = DmaBuf::zeroed(48 << 10).unwrap();
    let mut iovs = IoVecs::single(a.iovec());
    iovs.push(b.iovec());
    assert_eq!(run(&mut ch, IoRequest::read(10, 128, iovs, 2)), IoStatus::Success);
    assert_eq!(a.as_slice(), &w.as_slice()[..16 << 10]);
    assert_eq!(b.as_slice(), &w.as_slice()[16 << 10..]);
    // Segments PRPs cannot describe go out as SGLs (no bounce).
    let sgl_before = h.stats().sgl_commands;
    let mut c1 = DmaBuf::zeroed(4096).unwrap();
    let mut c2 = DmaBuf::zeroed(4096).unwrap();
    let mut iovs = IoVecs::single(c1.iovec_range(512, 1024).unwrap());
    iovs.push(c2.iovec_range(100 * 4, 512).unwrap());
    assert_eq!(run(&mut ch, IoRequest::read(11, 3, iovs, 3)), IoStatus::Success);
    assert_eq!(&c1.as_slice()[512..1536], &w.as_slice()[512..1536]);
    assert_eq!(&c2.as_slice()[400..912], &w.as_slice()[1536..2048]);
    let mut wv = IoVecs::single(c2.iovec_range(400, 512).unwrap());
    wv.push(c1.iovec_range(512, 1024).unwrap());
    assert_eq!(run(&mut ch, IoRequest::write(200, 3, wv, 4)), IoStatus::Success);
    h.read_namespace(1, 200 * 512, &mut raw[..1536]);
    assert_eq!(&raw[..512], &w.as_slice()[1536..2048]);
    assert_eq!(&raw[512..1536], &w.as_slice()[512..1536]);
    assert_eq!(h.stats().sgl_commands - sgl_before, 2);
}

/// Random segment lists: dword-aligned offsets and lengths (what the bdev
/// layer lets through) adding up to whole 512-byte blocks.
fn segment_lists() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0usize..5000, 1usize..6000), 1..=bdev::MAX_IOVS).prop_map(|v| {
        let mut v: Vec<(usize, usize)> = v.into_iter().map(|(o, l)| (o & !3, (l + 3) & !3)).collect();
        let total: usize = v.iter().map(|x| x.1).sum();
        let pad = total.next_multiple_of(512) - total;
        if let Some(last) = v.last_mut() {
            last.1 += pad;
        }
        v
    })
}

static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The same random reads and writes over random segment lists give the
    /// same data on a controller with SGLs (no bounce), one without (PRPs or
    /// bounce) and a reference model.
    #[test]
    fn sgl_and_bounce_paths_agree_with_a_model(
        ops in prop::collection::vec((any::<bool>(), 0u64..300, segment_lists()), 1..10),
        mdts in 1u8..6,
    ) {
        let n = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (ra, ha) = setup_with(&format!("pa{n}x"), EmuConfig { mdts, ..EmuConfig::default() });
        let (rb, hb) = setup_with(&format!("pb{n}x"), EmuConfig { mdts, sgl: None, ..EmuConfig::default() });
        let da = ra.open(&format!("pa{n}xn1"), true).unwrap();
        let db = rb.open(&format!("pb{n}xn1"), true).unwrap();
        let (mut ca, mut cb) = (da.channel().unwrap(), db.channel().unwrap());
        let mut model = vec![0u8; 400 * 512];
        let mut multi = false;
        for (i, (write, lba, segs)) in ops.iter().enumerate() {
            let total: usize = segs.iter().map(|x| x.1).sum();
            let blocks = (total / 512) as u64;
            multi |= segs.len() > 1;
            let mut bufs: Vec<(DmaBuf, DmaBuf)> =
                segs.iter().map(|&(o, l)| (DmaBuf::zeroed(o + l).unwrap(), DmaBuf::zeroed(o + l).unwrap())).collect();
            let at = *lba as usize * 512;
            if *write {
                let mut pos = at;
                for ((a, b), &(o, l)) in bufs.iter_mut().zip(segs) {
                    fill(a, (i + pos) as u8);
                    b.as_mut_slice().copy_from_slice(a.as_slice());
                    model[pos..pos + l].copy_from_slice(&a.as_slice()[o..o + l]);
                    pos += l;
                }
            }
            let mut va = IoVecs::single(bufs[0].0.iovec_range(segs[0].0, segs[0].1).unwrap());
            let mut vb = IoVecs::single(bufs[0].1.iovec_range(segs[0].0, segs[0].1).unwrap());
            for (k, &(o, l)) in segs.iter().enumerate().skip(1) {
                prop_assert!(va.push(bufs[k].0.iovec_range(o, l).unwrap()));
                prop_assert!(vb.push(bufs[k].1.iovec_range(o, l).unwrap()));
            }
            let mk = |v| if *write { IoRequest::write(*lba, blocks, v, i as u64) } else { IoRequest::read(*lba, blocks, v, i as u64) };
            prop_assert_eq!(run(&mut ca, mk(va)), IoStatus::Success);
            prop_assert_eq!(run(&mut cb, mk(vb)), IoStatus::Success);
            let mut pos = at;
            for ((a, b), &(o, l)) in bufs.iter().zip(segs) {
                prop_assert_eq!(&a.as_slice()[o..o + l], &model[pos..pos + l]);
                prop_assert_eq!(&b.as_slice()[o..o + l], &model[pos..pos + l]);
                pos += l;
            }
        }
        let mut raw = vec![0u8; model.len()];
        ha.read_namespace(1, 0, &mut raw);
        prop_assert_eq!(&raw, &model);
        hb.read_namespace(1, 0, &mut raw);
        prop_assert_eq!(&raw, &model);
        prop_assert_eq!(ha.stats().sgl_commands > 0, multi);
        prop_assert_eq!(hb.stats().sgl_commands, 0);
    }
}

#[test]
fn flush_unmap_write_zeroes_and_large_io() {
    let (reg, h) = setup("nvmeC");
    let d = reg.open("nvmeCn2", true).unwrap();
    let mut ch = d.channel().unwrap();
    // 1 MiB: split into MDTS-sized commands by the driver.
    let mut w = DmaBuf::alloc(1 << 20).unwrap();
    fill(&mut w, 9);
    assert_eq!(run(&mut ch, IoRequest::write(0, 256, IoVecs::single(w.iovec()), 1)), IoStatus::Success);
    assert_eq!(run(&mut ch, IoRequest::no_data(IoType::Flush, 0, 0, 2)), IoStatus::Success);
    assert_eq!(run(&mut ch, IoRequest::no_data(IoType::WriteZeroes, 4, 2, 3)), IoStatus::Success);
    assert_eq!(run(&mut ch, IoRequest::no_data(IoType::Unmap, 8, 1, 4)), IoStatus::Success);
    let mut raw = vec![0u8; 16 * 4096];
    h.read_namespace(2, 0, &mut raw);
    assert_eq!(&raw[..4 * 4096], &w.as_slice()[..4 * 4096]);
    assert!(raw[4 * 4096..6 * 4096].iter().all(|&x| x == 0));
    assert_eq!(&raw[6 * 4096..8 * 4096], &w.as_slice()[6 * 4096..8 * 4096]);
    assert!(raw[8 * 4096..9 * 4096].iter().all(|&x| x == 0));
    let mut r = DmaBuf::zeroed(1 << 20).unwrap();
    assert_eq!(run(&mut ch, IoRequest::read(0, 256, IoVecs::single(r.iovec()), 5)), IoStatus::Success);
    assert_eq!(&r.as_slice()[9 * 4096..], &w.as_slice()[9 * 4096..]);
}

#[test]
fn many_in_flight_and_surprise_removal_gives_path_errors() {
    let (reg, h) = setup("nvmeD");
    let d = reg.open("nvmeDn1", true).unwrap();
    let mut ch = d.channel().unwrap();
    let mut bufs: Vec<DmaBuf> = (0..60).map(|_| DmaBuf::zeroed(4096).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        ch.submit(&IoRequest::read(i as u64 * 8, 8, IoVecs::single(b.iovec()), i as u64)).unwrap();
    }
    let mut n = 0;
    assert!(ch.drain(Duration::from_secs(10), &mut |_, s| {
        assert_eq!(s, IoStatus::Success);
        n += 1;
    }));
    assert_eq!(n, 60);
    h.remove();
    for (i, b) in bufs.iter_mut().enumerate().take(10) {
        ch.submit(&IoRequest::read(i as u64 * 8, 8, IoVecs::single(b.iovec()), i as u64)).unwrap();
    }
    let mut sts = Vec::new();
    assert!(ch.drain(Duration::from_secs(20), &mut |_, s| sts.push(s)));
    assert_eq!(sts.len(), 10);
    assert!(sts.iter().all(|s| *s == IoStatus::PathError), "{sts:?}");
    assert_eq!(run(&mut ch, IoRequest::no_data(IoType::Flush, 0, 0, 99)), IoStatus::PathError);
}

#[test]
fn channels_on_several_threads() {
    let (reg, _h) = setup("nvmeE");
    let d = Arc::new(reg.open("nvmeEn1", true).unwrap());
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let d = d.clone();
            s.spawn(move || {
                let mut ch = d.channel().unwrap();
                let mut w = DmaBuf::alloc(8192).unwrap();
                fill(&mut w, t as u8);
                let lba = 1000 + t * 16;
                assert_eq!(run(&mut ch, IoRequest::write(lba, 16, IoVecs::single(w.iovec()), t)), IoStatus::Success);
                let mut r = DmaBuf::zeroed(8192).unwrap();
                assert_eq!(run(&mut ch, IoRequest::read(lba, 16, IoVecs::single(r.iovec()), t)), IoStatus::Success);
                assert_eq!(r.as_slice(), w.as_slice());
            });
        }
    });
}

/// A bdev Reset in the middle of I/O on two channels: the controller is
/// reset once, both channels re-create their queues and resubmit what had
/// not completed, every write lands, and the Reset completes with Success.
#[test]
fn reset_mid_io_resubmits_and_completes_with_success() {
    let cfg = EmuConfig {
        namespaces: vec![EmuNamespace::new(8 << 20, 512, 1)],
        processing: Processing::Thread,
        ..EmuConfig::default()
    };
    let e = Emulator::new("nvmeR", cfg);
    let h = e.handle();
    let c = Controller::new(e, ControllerConfig::default()).unwrap();
    let params = NvmeBdevParams { prefix: "nvmeR".into(), queue_depth: 64, traddr: "emu".into() };
    let bdevs = attach(c, &params).unwrap();
    let ctrl_bdev = bdevs[0].clone();
    let reg = Registry::new();
    for b in bdevs {
        reg.register(b).unwrap();
    }
    let d = reg.open("nvmeRn1", true).unwrap();
    let (mut a, mut b) = (d.channel().unwrap(), d.channel().unwrap());
    // Slow completions, so the reset lands while writes are in flight.
    h.delay_completions(FaultFilter::ANY_IO, Some(Duration::from_millis(30)));
    let mut bufs: Vec<DmaBuf> = (0..40).map(|_| DmaBuf::alloc(4096).unwrap()).collect();
    for (i, buf) in bufs.iter_mut().enumerate() {
        fill(buf, i as u8);
        let ch = if i % 2 == 0 { &mut a } else { &mut b };
        ch.submit(&IoRequest::write(i as u64 * 8, 8, IoVecs::single(buf.iovec()), i as u64)).unwrap();
    }
    // Ring the doorbells (nothing can have completed yet).
    let mut early = Vec::new();
    a.poll(&mut |t, s| early.push((t, s)));
    b.poll(&mut |t, s| early.push((t, s)));
    std::thread::sleep(Duration::from_millis(5));
    assert!(early.is_empty(), "{early:?}");
    let before = h.stats().commands;
    a.submit(&IoRequest::no_data(IoType::Reset, 0, 0, 1000)).unwrap();
    h.delay_completions(FaultFilter::ANY_IO, None);
    let mut got = early;
    assert!(a.drain(Duration::from_secs(20), &mut |t, s| got.push((t, s))));
    assert!(b.drain(Duration::from_secs(20), &mut |t, s| got.push((t, s))));
    got.sort_unstable_by_key(|x| x.0);
    assert_eq!(got.len(), 41, "{got:?}");
    assert!(got.iter().all(|x| x.1 == IoStatus::Success), "{got:?}");
    assert_eq!(got.last().map(|x| x.0), Some(1000));
    assert_eq!(ctrl_bdev.controller().reset_count(), 1);
    assert!(h.stats().commands - before >= 40, "unfinished writes were resubmitted");
    for (i, buf) in bufs.iter().enumerate() {
        let mut raw = vec![0u8; 4096];
        h.read_namespace(1, i as u64 * 8 * 512, &mut raw);
        assert_eq!(raw, buf.as_slice(), "write {i}");
    }
    // I/O goes on after the reset; a reset of a removed controller fails
    // with a path error.
    let mut r = DmaBuf::zeroed(4096).unwrap();
    assert_eq!(run(&mut a, IoRequest::read(8, 8, IoVecs::single(r.iovec()), 1)), IoStatus::Success);
    assert_eq!(r.as_slice(), bufs[1].as_slice());
    h.remove();
    assert_eq!(run(&mut b, IoRequest::no_data(IoType::Reset, 0, 0, 2)), IoStatus::PathError);
}
