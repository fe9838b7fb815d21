//! Interoperability with the Linux kernel NVMe/TCP target (nvmet-tcp) run by
//! `../shared/testbed/nvmet-target.sh` in a QEMU guest. Ignored by default;
//! `tests/stage-guest-nvmet.sh` starts the target, exports NVMET_ADDR,
//! NVMET_PORTS, NVMET_NQN, NVMET_NAMESPACES (and NVMET_SCRIPT for the
//! path-down/up test) and runs them with `--ignored`.

mod chan;
use bdev::{Bdev, DmaBuf, IoRequest, IoStatus, IoType, IoVecs, Registry};
use chan::Chan;
use nvme_tcp::initiator::{discover, AdminQueue, ConnectOpts};
use nvme_tcp::nvmf::NvmfController;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Env {
    addrs: Vec<SocketAddr>,
    nqn: String,
    namespaces: usize,
}

fn env() -> Env {
    let ip = std::env::var("NVMET_ADDR").expect("NVMET_ADDR (run tests/stage-guest-nvmet.sh)");
    let ports = std::env::var("NVMET_PORTS").expect("NVMET_PORTS");
    Env {
        addrs: ports.split_whitespace().map(|p| format!("{ip}:{p}").parse().expect("address")).collect(),
        nqn: std::env::var("NVMET_NQN").expect("NVMET_NQN"),
        namespaces: std::env::var("NVMET_NAMESPACES").ok().and_then(|n| n.parse().ok()).unwrap_or(1),
    }
}

fn opts(e: &Env, path: usize, digests: bool) -> ConnectOpts {
    let mut o = ConnectOpts::new(e.addrs[path], &e.nqn);
    o.hdgst = digests;
    o.ddgst = digests;
    o.io_queues = 2;
    o.io_queue_depth = 64;
    o.admin_timeout = Duration::from_secs(30);
    o
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len).map(|i| ((i as u64).wrapping_mul(2654435761) ^ seed) as u8).collect()
}

#[test]
#[ignore = "needs the Linux nvmet target (tests/stage-guest-nvmet.sh)"]
fn discovery_and_identify() {
    let e = env();
    let entries = discover(&opts(&e, 0, false)).expect("discover");
    assert!(entries.iter().any(|d| d.subnqn() == Some(e.nqn.as_str())), "subsystem in discovery log");
    let o = opts(&e, 0, false);
    let mut a = AdminQueue::connect(&o, &e.nqn).expect("connect admin");
    let id = a.identify_controller().expect("identify");
    assert_eq!(id.subnqn(), Some(e.nqn.as_str()));
    assert_eq!(a.active_namespaces().expect("ns list").len(), e.namespaces);
    a.keep_alive().expect("keep alive");
    // The target grants both digests when asked.
    // (Same host identity as the admin queue; no in-capsule limit, so the
    // Connect data must still go in the capsule.)
    let dg = ConnectOpts { hdgst: true, ddgst: true, ..o.clone() };
    let q = nvme_tcp::initiator::connect_io_queue(&dg, a.cntlid, 1, 8, 0).expect("io queue");
    let n = q.queue().negotiated().expect("negotiated");
    assert!(n.hdgst && n.ddgst, "digests granted: {n:?}");
    q.close();
    a.shutdown().expect("shutdown");
}

fn bdev_io(digests: bool) {
    let e = env();
    let c = NvmfController::connect("tb", opts(&e, 0, digests)).expect("connect");
    let bdevs = c.bdevs();
    assert_eq!(bdevs.len(), e.namespaces);
    let b: Arc<dyn Bdev> = bdevs[0].clone();
    let info = b.info().clone();
    assert_eq!(info.name, "tbn1");
    assert!(info.ns_id.nguid.is_some() || info.ns_id.uuid.is_some(), "namespace identity");
    let bs = info.block_size as usize;
    let mut o = Chan::open(b.clone());
    // Writes of several sizes (in-capsule and R2T), two segments each.
    let sizes = [1usize, 8, 32, 128, 255];
    let mut bufs = Vec::new();
    let mut reqs = Vec::new();
    let mut lba = 0u64;
    for (i, &blocks) in sizes.iter().enumerate() {
        let len = blocks * bs;
        let mut b = DmaBuf::alloc(len + 4096).expect("dma");
        b.as_mut_slice()[..len].copy_from_slice(&pattern(len, i as u64));
        let half = (blocks / 2) * bs;
        let mut iovs = IoVecs::new();
        if half > 0 {
            iovs.push(b.iovec_range(0, half).expect("iov"));
        }
        iovs.push(b.iovec_range(half, len - half).expect("iov"));
        reqs.push(IoRequest::write(lba, blocks as u64, iovs, 0));
        bufs.push((lba, blocks, b));
        lba += blocks as u64 + 3;
    }
    reqs.push(IoRequest::no_data(IoType::Flush, 0, 0, 0));
    assert!(o.run(&reqs).iter().all(|s| s.is_ok()), "writes");
    let mut reads = Vec::new();
    let mut backs = Vec::new();
    for (lba, blocks, _) in &bufs {
        let mut r = DmaBuf::zeroed(blocks * bs).expect("dma");
        reads.push(IoRequest::read(*lba, *blocks as u64, IoVecs::single(r.iovec()), 0));
        backs.push(r);
    }
    let st = o.run(&reads);
    assert!(st.iter().all(|s| s.is_ok()), "reads: {st:?}");
    for (i, ((_, blocks, w), r)) in bufs.iter().zip(&backs).enumerate() {
        assert_eq!(&r.as_slice()[..blocks * bs], &w.as_slice()[..blocks * bs], "read back {i}");
    }
    // Write zeroes / unmap when offered; an out-of-range read is Invalid
    // at the channel, never sent.
    if info.supported.contains(IoType::WriteZeroes) {
        assert_eq!(o.run(&[IoRequest::no_data(IoType::WriteZeroes, 0, 8, 0)]), vec![IoStatus::Success]);
        let mut r = DmaBuf::alloc(8 * bs).expect("dma");
        r.as_mut_slice().fill(0xaa);
        assert_eq!(o.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)]), vec![IoStatus::Success]);
        assert!(r.as_slice().iter().all(|&x| x == 0), "zeroed");
    }
    if info.supported.contains(IoType::Unmap) {
        assert_eq!(o.run(&[IoRequest::no_data(IoType::Unmap, 64, 64, 0)]), vec![IoStatus::Success]);
    }
    let mut r = DmaBuf::alloc(bs).expect("dma");
    assert_eq!(o.run(&[IoRequest::read(info.num_blocks, 1, IoVecs::single(r.iovec()), 0)]), vec![IoStatus::Invalid]);
    drop(o);
    drop(bdevs);
    drop(b);
    c.detach();
}

#[test]
#[ignore = "needs the Linux nvmet target (tests/stage-guest-nvmet.sh)"]
fn bdev_io_plain() {
    bdev_io(false);
}

#[test]
#[ignore = "needs the Linux nvmet target (tests/stage-guest-nvmet.sh)"]
fn bdev_io_with_digests() {
    bdev_io(true);
}

/// Drops path 1 under IO: in-flight and new IO fail with PathError after
/// the fast-IO-fail timeout; after path-up the channel reconnects and IO
/// succeeds again.
#[test]
#[ignore = "needs the Linux nvmet target and NVMET_SCRIPT (tests/stage-guest-nvmet.sh)"]
fn path_loss_and_reconnect() {
    let e = env();
    let script = std::env::var("NVMET_SCRIPT").expect("NVMET_SCRIPT");
    assert!(e.addrs.len() >= 2, "needs two listeners");
    let path = |cmd: &str| {
        let st = Command::new("bash").arg(&script).args([cmd, "1"]).status().expect("run nvmet-target.sh");
        assert!(st.success(), "{cmd} failed");
    };
    let mut o = opts(&e, 1, false);
    o.kato_ms = 2000;
    o.reconnect_delay = Duration::from_millis(500);
    o.fast_io_fail_timeout = Duration::from_secs(1);
    o.ctrl_loss_timeout = Duration::from_secs(600);
    let c = NvmfController::connect("pl", o).expect("connect");
    let b: Arc<dyn Bdev> = c.bdevs().remove(0);
    let reg = Registry::new();
    reg.register(b.clone()).expect("register");
    let desc = reg.open("pln1", true).expect("open");
    let mut ch = desc.channel().expect("channel");
    let bs = b.info().block_size as usize;
    let mut buf = DmaBuf::alloc(8 * bs).expect("dma");
    let one = |ch: &mut bdev::BdevChannel, buf: &mut DmaBuf| {
        let r = IoRequest::read(0, 8, IoVecs::single(buf.iovec()), 7);
        while ch.submit(&r).is_err() {
            ch.poll(&mut |_, _| {});
        }
        let mut st = None;
        let t0 = Instant::now();
        while st.is_none() {
            ch.poll(&mut |_, s| st = Some(s));
            assert!(t0.elapsed() < Duration::from_secs(60), "io hung");
        }
        st.expect("status")
    };
    assert_eq!(one(&mut ch, &mut buf), IoStatus::Success);
    path("path-down");
    // Existing connections are dropped by the target; IO fails over time.
    let t0 = Instant::now();
    let mut saw_path_error = false;
    while t0.elapsed() < Duration::from_secs(60) {
        match one(&mut ch, &mut buf) {
            IoStatus::PathError => {
                saw_path_error = true;
                break;
            }
            IoStatus::Success => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(saw_path_error, "path error after path-down");
    path("path-up");
    let t0 = Instant::now();
    loop {
        match one(&mut ch, &mut buf) {
            IoStatus::Success => break,
            IoStatus::PathError => {
                assert!(t0.elapsed() < Duration::from_secs(90), "no reconnect after path-up");
                std::thread::sleep(Duration::from_millis(300));
            }
            other => panic!("unexpected {other}"),
        }
    }
    println!("reconnected {:?} after path-up", t0.elapsed());
    drop(ch);
    drop(desc);
    let _ = reg.unregister("pln1");
    drop(b);
    c.detach();
}

/// ANA state changes on listener 0 are seen by the bdev (`ana_state`) and
/// IO to an inaccessible path fails with PathError.
#[test]
#[ignore = "needs the Linux nvmet target and NVMET_SCRIPT (tests/stage-guest-nvmet.sh)"]
fn ana_state_follows_the_target() {
    let e = env();
    let script = std::env::var("NVMET_SCRIPT").expect("NVMET_SCRIPT");
    let ana = |state: &str| {
        let st = Command::new("bash").arg(&script).args(["ana", "0", state]).status().expect("run nvmet-target.sh");
        assert!(st.success(), "ana {state} failed");
    };
    let c = NvmfController::connect("ana", opts(&e, 0, false)).expect("connect");
    let b: Arc<dyn Bdev> = c.bdevs().remove(0);
    assert_eq!(b.ana_state(), Some(bdev::AnaState::Optimized));
    let mut o = Chan::open(b.clone());
    let bs = b.info().block_size as usize;
    let mut buf = DmaBuf::alloc(bs).expect("dma");
    let wait_for = |want: bdev::AnaState| {
        let t0 = Instant::now();
        while b.ana_state() != Some(want) {
            assert!(t0.elapsed() < Duration::from_secs(20), "ana state {:?}, want {want:?}", b.ana_state());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    ana("inaccessible");
    assert_eq!(o.run(&[IoRequest::read(0, 1, IoVecs::single(buf.iovec()), 0)]), vec![IoStatus::PathError]);
    wait_for(bdev::AnaState::Inaccessible);
    ana("optimized");
    wait_for(bdev::AnaState::Optimized);
    assert_eq!(o.run(&[IoRequest::read(0, 1, IoVecs::single(buf.iovec()), 0)]), vec![IoStatus::Success]);
    drop(o);
    drop(b);
    c.detach();
}
