//! The `nvme` bdev backend over the emulated controller.

use std::sync::Arc;
use std::time::Duration;

use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoType, IoVecs, Registry};
use nvme_pcie::emu::{EmuConfig, EmuHandle, EmuNamespace, Emulator};
use nvme_pcie::nvme_bdev::{attach, NvmeBdevParams};
use nvme_pcie::{Controller, ControllerConfig};

fn setup(prefix: &str) -> (Arc<Registry>, EmuHandle) {
    let cfg = EmuConfig {
        namespaces: vec![EmuNamespace::new(8 << 20, 512, 1), EmuNamespace::new(4 << 20, 4096, 2)],
        ..EmuConfig::default()
    };
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
    assert!(!i.supported.contains(IoType::Reset));
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
    // Segments PRPs cannot describe are bounced.
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
