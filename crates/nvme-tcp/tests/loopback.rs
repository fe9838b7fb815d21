//! The initiator (nvmf bdev) against our own target on loopback.

mod chan;
use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, BdevChannel, DmaBuf, IoRequest, IoStatus, IoType, IoVecs, Registry};
use chan::Chan;
use nvme_spec::fabrics::DISCOVERY_NQN;
use nvme_spec::log::subtype;
use nvme_tcp::initiator::{discover, AdminQueue, ConnectOpts, HostId, InitError};
use nvme_tcp::nvmf::NvmfController;
use nvme_tcp::target::{SubsystemConfig, Target, TargetConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2024-01.io.xbdev:loop";
const PRIVATE: &str = "nqn.2024-01.io.xbdev:private";

fn malloc(name: &str, blocks: u64, bs: u32) -> Arc<dyn Bdev> {
    Arc::new(MallocBdev::new(MallocParams { name: name.into(), num_blocks: blocks, block_size: bs }).expect("malloc"))
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

struct Setup {
    target: Target,
    ns: Vec<Arc<dyn Bdev>>,
    allowed: HostId,
}

fn setup(listeners: usize) -> Setup {
    let ns = vec![malloc("m0", 8192, 512), malloc("m1", 2048, 4096)];
    let allowed = HostId::generate();
    let mut private = SubsystemConfig::new(PRIVATE, vec![malloc("m2", 1024, 512)]);
    private.allowed_hosts = Some(vec![allowed.nqn.clone()]);
    let cfg = TargetConfig::new(
        (0..listeners).map(|_| any_port()).collect(),
        vec![SubsystemConfig::new(NQN, ns.clone()), private],
    );
    Setup { target: Target::start(cfg).expect("target"), ns, allowed }
}

fn opts(addr: SocketAddr, nqn: &str) -> ConnectOpts {
    let mut o = ConnectOpts::new(addr, nqn);
    o.admin_timeout = Duration::from_secs(10);
    o.io_queues = 4;
    o.io_queue_depth = 32;
    o
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len).map(|i| ((i as u64).wrapping_mul(0x9e37_79b9) ^ seed.wrapping_mul(131)) as u8).collect()
}

/// Writes, reads back and compares `sizes` (in blocks) starting at `base`.
fn write_read_verify(c: &mut Chan, bs: usize, base: u64, sizes: &[usize], seed: u64) {
    let mut bufs = Vec::new();
    let mut reqs = Vec::new();
    let mut lba = base;
    for (i, &blocks) in sizes.iter().enumerate() {
        let len = blocks * bs;
        let mut b = DmaBuf::alloc(len).expect("dma");
        b.as_mut_slice().copy_from_slice(&pattern(len, seed + i as u64));
        // Two segments when possible, to exercise scatter lists.
        let mut iovs = IoVecs::new();
        let half = (blocks / 2) * bs;
        if half > 0 {
            iovs.push(b.iovec_range(0, half).expect("iov"));
        }
        iovs.push(b.iovec_range(half, len - half).expect("iov"));
        reqs.push(IoRequest::write(lba, blocks as u64, iovs, 0));
        bufs.push((lba, blocks, b));
        lba += blocks as u64;
    }
    assert!(c.run(&reqs).iter().all(|s| s.is_ok()), "writes");
    let mut reads = Vec::new();
    let mut backs = Vec::new();
    for (lba, blocks, _) in &bufs {
        let mut r = DmaBuf::zeroed(blocks * bs).expect("dma");
        reads.push(IoRequest::read(*lba, *blocks as u64, IoVecs::single(r.iovec()), 0));
        backs.push(r);
    }
    assert!(c.run(&reads).iter().all(|s| s.is_ok()), "reads");
    for ((_, _, w), r) in bufs.iter().zip(&backs) {
        assert!(w.as_slice() == r.as_slice(), "data read back differs");
    }
}

#[test]
fn discovery_lists_allowed_subsystems() {
    let s = setup(2);
    let addr = s.target.addrs()[1];
    let mut o = opts(addr, DISCOVERY_NQN);
    let entries = discover(&o).expect("discover");
    let nqns: Vec<_> = entries.iter().filter_map(|e| e.subnqn()).collect();
    // Two listeners x (discovery + the open subsystem); the private one is hidden.
    assert_eq!(entries.len(), 4, "{nqns:?}");
    assert!(entries.iter().any(|e| e.subnqn() == Some(NQN) && e.subtype == subtype::NVME));
    assert!(!nqns.contains(&PRIVATE));
    let ports: Vec<String> = s.target.addrs().iter().map(|a| a.port().to_string()).collect();
    assert!(entries.iter().all(|e| ports.iter().any(|p| Some(p.as_str()) == e.trsvcid())));
    o.host = s.allowed.clone();
    let entries = discover(&o).expect("discover");
    assert!(entries.iter().any(|e| e.subnqn() == Some(PRIVATE)));
    assert_eq!(entries.len(), 6);
}

#[test]
fn host_not_allowed_is_refused() {
    let s = setup(1);
    let addr = s.target.addrs()[0];
    match AdminQueue::connect(&opts(addr, PRIVATE), PRIVATE) {
        Err(InitError::Status { what: "connect", status }) => assert!(!status.is_success()),
        other => panic!("expected refusal, got {other:?}"),
    }
    let mut o = opts(addr, PRIVATE);
    o.host = s.allowed.clone();
    let a = AdminQueue::connect(&o, PRIVATE).expect("allowed host");
    a.shutdown().expect("shutdown");
    // Unknown subsystem.
    assert!(AdminQueue::connect(&opts(addr, "nqn.2024-01.io.xbdev:none"), "nqn.2024-01.io.xbdev:none").is_err());
}

fn io_test(digests: bool) {
    let s = setup(1);
    let mut o = opts(s.target.addrs()[0], NQN);
    o.hdgst = digests;
    o.ddgst = digests;
    let c = NvmfController::connect("lo", o).expect("connect");
    let bdevs = c.bdevs();
    assert_eq!(bdevs.iter().map(|b| b.info().name.clone()).collect::<Vec<_>>(), vec!["lon1", "lon2"]);
    for (b, m) in bdevs.iter().zip(&s.ns) {
        let (i, mi) = (b.info(), m.info());
        assert_eq!((i.block_size, i.num_blocks), (mi.block_size, mi.num_blocks));
        assert_eq!(i.ns_id.nguid, Some(mi.uuid.0), "nguid carries the exported bdev's uuid");
        assert_eq!(i.ns_id.uuid, Some(mi.uuid));
        assert_eq!(i.uuid, mi.uuid);
        assert!(i.supported.contains(IoType::Unmap) && i.supported.contains(IoType::WriteZeroes));
    }
    let b0: Arc<dyn Bdev> = bdevs[0].clone();
    let b1: Arc<dyn Bdev> = bdevs[1].clone();
    let mut c0 = Chan::open(b0.clone());
    // 512 B blocks: in-capsule (<= 8 KiB) and R2T sizes up to 128 KiB.
    write_read_verify(&mut c0, 512, 0, &[1, 7, 16, 17, 64, 255, 256], 1);
    let mut c1 = Chan::open(b1.clone());
    write_read_verify(&mut c1, 4096, 10, &[1, 2, 3, 32], 2);
    // The data is on the target's malloc bdev.
    let mut direct = Chan::open(s.ns[1].clone());
    let mut r = DmaBuf::zeroed(4096).expect("dma");
    assert_eq!(direct.run(&[IoRequest::read(10, 1, IoVecs::single(r.iovec()), 0)]), vec![IoStatus::Success]);
    assert_eq!(r.as_slice(), &pattern(4096, 2)[..]);
    drop(direct);
    // Write zeroes, unmap, flush.
    assert_eq!(
        c0.run(&[
            IoRequest::no_data(IoType::WriteZeroes, 0, 8, 0),
            IoRequest::no_data(IoType::Unmap, 100, 200, 0),
            IoRequest::no_data(IoType::Flush, 0, 0, 0),
        ]),
        vec![IoStatus::Success; 3]
    );
    let mut z = DmaBuf::alloc(8 * 512).expect("dma");
    z.as_mut_slice().fill(0x55);
    assert_eq!(c0.run(&[IoRequest::read(0, 8, IoVecs::single(z.iovec()), 0)]), vec![IoStatus::Success]);
    assert!(z.as_slice().iter().all(|&x| x == 0));
    // Past the end: rejected by the channel before the wire.
    assert_eq!(
        c0.run(&[IoRequest::read(8192, 1, IoVecs::single(z.iovec_range(0, 512).expect("iov")), 0)]),
        vec![IoStatus::Invalid]
    );
    drop(c0);
    drop(c1);
    drop(bdevs);
    drop(b0);
    drop(b1);
    c.detach();
}

#[test]
fn io_against_own_target() {
    io_test(false);
}

#[test]
fn io_against_own_target_with_digests() {
    io_test(true);
}

#[test]
fn large_in_capsule_writes() {
    // A target taking up to 128 KiB in the capsule: writes go without R2T.
    for digests in [false, true] {
        let ns = malloc("ic0", 8192, 512);
        let mut cfg = TargetConfig::new(vec![any_port()], vec![SubsystemConfig::new(NQN, vec![ns.clone()])]);
        cfg.incapsule = 128 << 10;
        let target = Target::start(cfg).expect("target");
        let mut o = opts(target.addrs()[0], NQN);
        o.hdgst = digests;
        o.ddgst = digests;
        let c = NvmfController::connect("ic", o).expect("connect");
        let b: Arc<dyn Bdev> = c.bdevs().remove(0);
        let mut ch = Chan::open(b.clone());
        write_read_verify(&mut ch, 512, 0, &[1, 16, 17, 64, 255, 256, 3], 20);
        // The data is on the target's bdev.
        let mut direct = Chan::open(ns.clone());
        let mut r = DmaBuf::zeroed(256 * 512).expect("dma");
        let lba = 1 + 16 + 17 + 64 + 255;
        assert_eq!(direct.run(&[IoRequest::read(lba, 256, IoVecs::single(r.iovec()), 0)]), vec![IoStatus::Success]);
        assert_eq!(r.as_slice(), &pattern(256 * 512, 25)[..]);
        drop(direct);
        drop(ch);
        drop(b);
        c.detach();
        target.stop();
    }
}

#[test]
fn channels_on_several_threads() {
    let s = setup(2);
    let c = NvmfController::connect("mt", opts(s.target.addrs()[0], NQN)).expect("connect");
    let b: Arc<dyn Bdev> = c.bdevs().remove(0);
    let reg = Registry::new();
    reg.register(b.clone()).expect("register");
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let reg = reg.clone();
            std::thread::spawn(move || {
                let desc = reg.open("mtn1", true).expect("open");
                let mut ch = desc.channel().expect("channel");
                for round in 0..5 {
                    let lba = t * 2000 + round * 300;
                    let len = 100 * 512;
                    let mut w = DmaBuf::alloc(len).expect("dma");
                    w.as_mut_slice().copy_from_slice(&pattern(len, t * 10 + round));
                    let mut r = DmaBuf::zeroed(len).expect("dma");
                    for req in [
                        IoRequest::write(lba, 100, IoVecs::single(w.iovec()), 1),
                        IoRequest::read(lba, 100, IoVecs::single(r.iovec()), 2),
                    ] {
                        ch.submit(&req).expect("submit");
                        let mut st = None;
                        let t0 = Instant::now();
                        while st.is_none() {
                            ch.poll(&mut |_, s| st = Some(s));
                            assert!(t0.elapsed() < Duration::from_secs(30), "io timed out");
                        }
                        assert_eq!(st, Some(IoStatus::Success));
                    }
                    assert!(w.as_slice() == r.as_slice(), "thread {t} round {round}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let _ = reg.unregister("mtn1");
    drop(b);
    c.detach();
}

#[test]
fn reconnects_after_target_restart() {
    let ns = malloc("r0", 4096, 512);
    let cfg = TargetConfig::new(vec![any_port()], vec![SubsystemConfig::new(NQN, vec![ns.clone()])]);
    let target = Target::start(cfg.clone()).expect("target");
    let addr = target.addrs()[0];
    let mut o = opts(addr, NQN);
    o.kato_ms = 1000;
    o.reconnect_delay = Duration::from_millis(200);
    o.fast_io_fail_timeout = Duration::from_millis(300);
    o.ctrl_loss_timeout = Duration::from_secs(30);
    let c = NvmfController::connect("rc", o).expect("connect");
    let b: Arc<dyn Bdev> = c.bdevs().remove(0);
    let mut ch = Chan::open(b.clone());
    write_read_verify(&mut ch, 512, 0, &[8], 7);
    // Keep-alive holds the association over several KATO periods.
    std::thread::sleep(Duration::from_millis(2500));
    write_read_verify(&mut ch, 512, 8, &[8], 8);
    target.stop();
    // IO fails with a path error once the connection is gone (after the
    // fast-IO-fail timeout at most).
    let mut r = DmaBuf::alloc(4096).expect("dma");
    let t0 = Instant::now();
    loop {
        let st = ch.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)]);
        if st[0] == IoStatus::PathError {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no path error: {st:?}");
    }
    // Same address again (the listener reuses the port).
    let mut cfg2 = cfg;
    cfg2.listeners = vec![addr];
    let target = Target::start(cfg2).expect("restart");
    let t0 = Instant::now();
    loop {
        let st = ch.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)]);
        if st[0] == IoStatus::Success {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no reconnect: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(r.as_slice(), &pattern(4096, 7)[..], "data survived on the target's bdev");
    drop(ch);
    drop(b);
    c.detach();
    target.stop();
}

#[test]
fn target_on_reactors() {
    use reactor::{IdlePolicy, ReactorConfig, Reactors};
    let ns = malloc("rx0", 8192, 512);
    let idle = IdlePolicy::Adaptive { spin: Duration::from_millis(20), max_sleep: Duration::from_millis(1) };
    let mut reactors = Reactors::start(&ReactorConfig { cores: vec![0, 1], pin: false, idle }).expect("reactors");
    let cfg = TargetConfig::new(vec![any_port()], vec![SubsystemConfig::new(NQN, vec![ns.clone()])]);
    let target = Target::start_on(cfg, reactors.handles()).expect("target on reactors");
    let mut o = opts(target.addrs()[0], NQN);
    o.fast_io_fail_timeout = Duration::ZERO;
    o.reconnect_delay = Duration::from_secs(30);
    let c = NvmfController::connect("re", o).expect("connect");
    let b: Arc<dyn Bdev> = c.bdevs().remove(0);
    // Three I/O queues: connections land on both poll groups.
    let reg = Registry::new();
    reg.register(b.clone()).expect("register");
    let descs: Vec<_> = (0..3).map(|_| reg.open("ren1", true).expect("open")).collect();
    let mut raw: Vec<BdevChannel> = descs.iter().map(|d| d.channel().expect("channel")).collect();
    for (i, ch) in raw.iter_mut().enumerate() {
        write_read_back(ch, i as u64 * 8, 40 + i as u64, Duration::from_secs(20), "io hung", i);
    }
    // Stopping the target ends its pollers and closes the connections.
    let t0 = Instant::now();
    target.stop();
    assert!(t0.elapsed() < Duration::from_secs(5), "stop took {:?}", t0.elapsed());
    let mut r = DmaBuf::zeroed(512).expect("dma");
    let ch = &mut raw[0];
    let t0 = Instant::now();
    loop {
        ch.submit(&IoRequest::read(0, 1, IoVecs::single(r.iovec()), 3)).expect("submit");
        let mut st = None;
        while st.is_none() {
            ch.poll(&mut |_, s| st = Some(s));
            assert!(t0.elapsed() < Duration::from_secs(20), "io hung after stop");
        }
        if st == Some(IoStatus::PathError) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(raw);
    drop(descs);
    let _ = reg.unregister("ren1");
    drop(b);
    c.detach();
    reactors.stop();
}

#[test]
fn target_on_parked_reactors_answers_without_waiting_for_the_park_timeout() {
    use reactor::{IdlePolicy, ReactorConfig, Reactors};
    let ns = malloc("pk0", 8192, 512);
    // The reactors park for up to a minute at a time: only the sockets
    // (and connections handed between the two poll groups) wake them.
    let idle = IdlePolicy::Adaptive { spin: Duration::from_micros(50), max_sleep: Duration::from_secs(60) };
    let reactors = Reactors::start(&ReactorConfig { cores: vec![0, 1], pin: false, idle }).expect("reactors");
    let cfg = TargetConfig::new(vec![any_port()], vec![SubsystemConfig::new(NQN, vec![ns.clone()])]);
    let target = Target::start_on(cfg, reactors.handles()).expect("target on reactors");
    // Connecting (admin queue, then I/O queues landing on both groups)
    // needs every step answered within the admin timeout.
    let mut o = opts(target.addrs()[0], NQN);
    o.io_queues = 2;
    o.admin_timeout = Duration::from_secs(5);
    let c = NvmfController::connect("pk", o).expect("connect while the target's reactors park");
    let b: Arc<dyn Bdev> = c.bdevs().remove(0);
    let reg = Registry::new();
    reg.register(b.clone()).expect("register");
    let descs: Vec<_> = (0..2).map(|_| reg.open("pkn1", true).expect("open")).collect();
    let mut chans: Vec<BdevChannel> = descs.iter().map(|d| d.channel().expect("channel")).collect();
    let parks = || reactors.handles().iter().map(|h| h.counters().1).collect::<Vec<_>>();
    for round in 0..3u64 {
        for (i, ch) in chans.iter_mut().enumerate() {
            // Idle far longer than the spin: the reactors park.
            std::thread::sleep(Duration::from_millis(30));
            assert!(parks().iter().all(|&p| p > 0), "reactors parked: {:?}", parks());
            // Each IO within far less than the park timeout.
            let seed = 60 + round * 2 + i as u64;
            write_read_back(ch, i as u64 * 8, seed, Duration::from_secs(5), "io waited for the park timeout", i);
        }
    }
    drop(chans);
    drop(descs);
    let _ = reg.unregister("pkn1");
    drop(b);
    c.detach();
    target.stop();
}

/// Writes 4 KiB of `pattern(seed)` at `lba` through `ch`, reads it back and compares (`channel`
/// names the channel in the message); each IO must complete within `limit` (else `late`).
fn write_read_back(ch: &mut BdevChannel, lba: u64, seed: u64, limit: Duration, late: &str, channel: usize) {
    let mut w = DmaBuf::alloc(4096).expect("dma");
    w.as_mut_slice().copy_from_slice(&pattern(4096, seed));
    let mut r = DmaBuf::zeroed(4096).expect("dma");
    for req in
        [IoRequest::write(lba, 8, IoVecs::single(w.iovec()), 1), IoRequest::read(lba, 8, IoVecs::single(r.iovec()), 2)]
    {
        ch.submit(&req).expect("submit");
        let mut st = None;
        let t0 = Instant::now();
        while st.is_none() {
            ch.poll(&mut |_, s| st = Some(s));
            assert!(t0.elapsed() < limit, "{late}");
        }
        assert_eq!(st, Some(IoStatus::Success));
    }
    assert!(w.as_slice() == r.as_slice(), "channel {channel}");
}
