//! ANA reporting of our target, per listener (port group), changed at run
//! time: seen by the nvmf bdev, by the admin queue (log page and
//! asynchronous event), and by multipath over two paths to our target.

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{AnaState, Bdev, BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use multipath::{AutoAssemble, MultipathModule, MultipathOptions, MultipathParams, PathParams, PathState, Policy};
use nvme_spec::command::{AdminCommand, Command, FeatureId, LogPageId};
use nvme_spec::log::{AnaLog, AnaState as SpecAna};
use nvme_tcp::initiator::{AdminQueue, ConnectOpts, SyncData};
use nvme_tcp::nvmf::NvmfController;
use nvme_tcp::target::{SubsystemConfig, Target, TargetConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2024-01.io.xbdev:ana";

/// The configuration of a target with two listeners (two port groups) and
/// two namespaces.
fn config() -> TargetConfig {
    let ns: Vec<Arc<dyn Bdev>> = (0..2)
        .map(|i| {
            let p = MallocParams { name: format!("a{i}"), num_blocks: 4096, block_size: 512 };
            Arc::new(MallocBdev::new(p).expect("malloc")) as Arc<dyn Bdev>
        })
        .collect();
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    TargetConfig::new(vec![any, any], vec![SubsystemConfig::new(NQN, ns)])
}

/// A target with two listeners (two port groups) and two namespaces.
fn target() -> Target {
    Target::start(config()).expect("target")
}

fn opts(addr: SocketAddr) -> ConnectOpts {
    let mut o = ConnectOpts::new(addr, NQN);
    o.io_queues = 2;
    o.io_queue_depth = 16;
    o.fast_io_fail_timeout = Duration::ZERO;
    o
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(ch: &mut BdevChannel, r: IoRequest) -> IoStatus {
    ch.submit(&r).expect("submit");
    let mut st = None;
    let t0 = Instant::now();
    while st.is_none() {
        ch.poll(&mut |_, s| st = Some(s));
        assert!(t0.elapsed() < Duration::from_secs(20), "io hung");
    }
    st.expect("status")
}

fn ana_log(a: &mut AdminQueue) -> AnaLog {
    let mut buf = vec![0u8; 4096];
    a.get_log_page(LogPageId::ANA, 0xffff_ffff, 0, &mut buf).expect("ana log");
    AnaLog::parse(&buf).expect("parse")
}

#[test]
fn ana_state_per_listener_at_run_time() {
    let t = target();
    let mut a1 = AdminQueue::connect(&opts(t.addrs()[1]), NQN).expect("admin");
    let id = a1.identify_controller().expect("identify");
    assert_ne!(id.cmic & 0x08, 0, "ANA reporting");
    assert_eq!((id.anagrpmax.get(), id.nanagrpid.get()), (1, 1));
    // Hosts using ANA (Linux) refuse a controller unless 0 < MNAN <= NN.
    assert_eq!((id.mnan.get(), id.nn.get()), (2, 2));
    let log = ana_log(&mut a1);
    assert_eq!(log.groups.len(), 1);
    assert_eq!((log.groups[0].grpid, log.groups[0].state), (1, SpecAna::Optimized));
    assert_eq!(log.groups[0].nsids, vec![1, 2]);
    let ns = a1.identify_namespace(2).expect("identify ns");
    assert_eq!(ns.id.anagrpid.get(), 1);

    let pa = NvmfController::connect("pa", opts(t.addrs()[0])).expect("path a");
    let pb = NvmfController::connect("pb", opts(t.addrs()[1])).expect("path b");
    let (ba, bb) = (pa.bdevs().remove(0), pb.bdevs().remove(0));
    assert_eq!((ba.ana_state(), bb.ana_state()), (Some(AnaState::Optimized), Some(AnaState::Optimized)));
    let reg = Registry::new();
    reg.register(ba.clone()).expect("register");
    reg.register(bb.clone()).expect("register");
    let (da, db) = (reg.open("pan1", true).expect("open"), reg.open("pbn1", true).expect("open"));
    let (mut ca, mut cb) = (da.channel().expect("channel"), db.channel().expect("channel"));
    let mut buf = DmaBuf::zeroed(512).expect("dma");

    // Listener 1 becomes inaccessible: its controllers report it, and I/O
    // through it fails with a path error while listener 0 carries on.
    t.set_ana_state(1, AnaState::Inaccessible).expect("set");
    assert_eq!(t.ana_state(1), Some(AnaState::Inaccessible));
    let log2 = ana_log(&mut a1);
    assert_eq!(log2.groups[0].state, SpecAna::Inaccessible);
    assert!(log2.chgcnt > log.chgcnt, "change count moves");
    assert_eq!(run(&mut cb, IoRequest::read(0, 1, IoVecs::single(buf.iovec()), 0)), IoStatus::PathError);
    assert_eq!(run(&mut ca, IoRequest::read(0, 1, IoVecs::single(buf.iovec()), 0)), IoStatus::Success);
    wait_for(Duration::from_secs(5), "path b inaccessible", || bb.ana_state() == Some(AnaState::Inaccessible));
    assert_eq!(ba.ana_state(), Some(AnaState::Optimized));
    // The initiator keeps an Asynchronous Event Request outstanding: the
    // change arrived as an ANA change notice.
    wait_for(Duration::from_secs(5), "an ANA change notice", || pb.async_events() >= 1);

    t.set_ana_state(1, AnaState::NonOptimized).expect("set");
    wait_for(Duration::from_secs(5), "path b non-optimized", || bb.ana_state() == Some(AnaState::NonOptimized));
    assert_eq!(run(&mut cb, IoRequest::read(0, 1, IoVecs::single(buf.iovec()), 0)), IoStatus::Success);
    t.set_ana_state(0, AnaState::PersistentLoss).expect("set");
    wait_for(Duration::from_secs(5), "path a persistent loss", || ba.ana_state() == Some(AnaState::PersistentLoss));
    assert_eq!(run(&mut ca, IoRequest::read(0, 1, IoVecs::single(buf.iovec()), 0)), IoStatus::PathError);
    assert!(t.set_ana_state(2, AnaState::Optimized).is_err(), "no listener 2");

    drop((ca, cb, da, db));
    let _ = reg.unregister("pan1");
    let _ = reg.unregister("pbn1");
    drop((ba, bb));
    pa.detach();
    pb.detach();
    a1.close();
}

#[test]
fn ana_change_completes_an_async_event_request() {
    let t = target();
    let mut a = AdminQueue::connect(&opts(t.addrs()[0]), NQN).expect("admin");
    let enable = AdminCommand::SetFeatures {
        nsid: 0,
        fid: FeatureId::ASYNC_EVENT_CONFIG,
        save: false,
        cdw11: 1 << 11,
        cdw12_15: [0; 4],
    };
    a.exec("set async event config", Command::Admin(enable), SyncData::None).expect("enable ANA notices");
    let waiter = std::thread::spawn(move || {
        let r = a.exec("async event request", Command::Admin(AdminCommand::AsyncEventRequest), SyncData::None);
        (r.map(|c| c.dw0.get()), a)
    });
    std::thread::sleep(Duration::from_millis(200));
    t.set_ana_state(0, AnaState::NonOptimized).expect("set");
    let (dw0, mut a) = waiter.join().expect("thread");
    // Notice (2), ANA change (3), log page 0x0C.
    assert_eq!(dw0.expect("event"), 0x000c_0302);
    assert_eq!(ana_log(&mut a).groups[0].state, SpecAna::NonOptimized);
    a.close();
}

/// An ANA change the target's poll loop had not noticed yet when a Get Log
/// Page (ANA) from the host arrived: the change happened before the read,
/// while an Asynchronous Event Request was outstanding, so it is still
/// reported with a notice (the read does not swallow it).
#[test]
fn ana_change_read_before_the_target_noticed_it_still_gets_a_notice() {
    let t = Arc::new(Target::new(config()).expect("target"));
    // The poll group runs between passes only while `gate` is free: the
    // test holds it to keep the target from looking at its sockets.
    let gate = Arc::new(Mutex::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (t, gate, stop) = (t.clone(), gate.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut pg = t.poll_group();
            while !stop.load(Ordering::Acquire) {
                let g = gate.lock().expect("gate");
                pg.poll();
                drop(g);
                std::thread::sleep(Duration::from_micros(20));
            }
        })
    };
    let mut a = AdminQueue::connect(&opts(t.addrs()[0]), NQN).expect("admin");
    a.enable_async_events(1 << 11).expect("enable ANA notices");
    // The request went out with this command, so the target holds it.
    a.keep_alive().expect("keep alive");
    assert!(a.take_async_events().expect("events").is_empty());

    let paused = gate.lock().expect("gate");
    t.set_ana_state(0, AnaState::NonOptimized).expect("set");
    let reader = std::thread::spawn(move || (ana_log(&mut a), a));
    // Let the read reach the target's socket before its next pass (had it
    // not, the target would notice the change first, the easy order).
    std::thread::sleep(Duration::from_millis(50));
    drop(paused);
    let (log, mut a) = reader.join().expect("reader");
    assert_eq!(log.groups[0].state, SpecAna::NonOptimized);
    let mut events = Vec::new();
    wait_for(Duration::from_secs(5), "the ANA change notice", || {
        events.extend(a.take_async_events().expect("events"));
        !events.is_empty()
    });
    assert_eq!(events, vec![0x000c_0302]);
    a.close();
    stop.store(true, Ordering::Release);
    poller.join().expect("poller");
}

#[test]
fn multipath_follows_ana_of_our_target() {
    let t = target();
    let pa = NvmfController::connect("ma", opts(t.addrs()[0])).expect("path a");
    let pb = NvmfController::connect("mb", opts(t.addrs()[1])).expect("path b");
    let reg = Registry::new();
    reg.register(pa.bdevs().remove(0)).expect("register");
    reg.register(pb.bdevs().remove(0)).expect("register");
    let module = MultipathModule::new(AutoAssemble::default());
    let options = MultipathOptions {
        policy: Policy::RoundRobin { ios_per_path: 1 },
        ana_check_interval: Duration::from_millis(5),
        ..MultipathOptions::default()
    };
    let dev = module
        .create(
            &reg,
            MultipathParams {
                name: Some("mp".into()),
                paths: vec![PathParams::new("man1"), PathParams::new("mbn1")],
                options,
            },
        )
        .expect("multipath over two listeners of our target");
    let desc = reg.open("mp", true).expect("open");
    let mut ch = desc.channel().expect("channel");
    let mut w = DmaBuf::alloc(4096).expect("dma");
    w.as_mut_slice().fill(0xa5);
    let mut r = DmaBuf::zeroed(4096).expect("dma");
    let mut io = |ch: &mut BdevChannel, n: u64| {
        for i in 0..n {
            assert_eq!(run(ch, IoRequest::write(i * 8, 8, IoVecs::single(w.iovec()), 0)), IoStatus::Success);
            assert_eq!(run(ch, IoRequest::read(i * 8, 8, IoVecs::single(r.iovec()), 0)), IoStatus::Success);
            assert_eq!(r.as_slice(), w.as_slice());
        }
    };
    io(&mut ch, 20);
    let ios = |name: &str| dev.path(name).expect("path").stats.ios();
    assert!(ios("man1") > 0 && ios("mbn1") > 0, "round robin over both paths");

    // Path a's port group becomes inaccessible: IO keeps succeeding, on b.
    // (Multipath sees the ANA state, or first the ANA path error of an IO
    // it re-drives on b, which fails the path.)
    t.set_ana_state(0, AnaState::Inaccessible).expect("set");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = dev.path("man1").expect("path");
        if p.ana_state == Some(AnaState::Inaccessible) && p.state != PathState::Active {
            break;
        }
        io(&mut ch, 1);
        assert!(Instant::now() < deadline, "path a not taken out: {:?}", dev.paths());
    }
    let before = (ios("man1"), ios("mbn1"));
    io(&mut ch, 20);
    assert_eq!(ios("man1"), before.0, "no IO to the inaccessible path");
    assert_eq!(ios("mbn1"), before.1 + 40);

    // Back to optimized: both carry IO again.
    t.set_ana_state(0, AnaState::Optimized).expect("set");
    let deadline = Instant::now() + Duration::from_secs(10);
    while dev.path("man1").expect("path").state != PathState::Active {
        io(&mut ch, 1);
        assert!(Instant::now() < deadline, "path a did not come back: {:?}", dev.paths());
    }
    let before = ios("man1");
    io(&mut ch, 10);
    assert!(ios("man1") > before);

    drop(ch);
    drop(desc);
    let _ = module.delete(&reg, "mp");
    let _ = reg.unregister("man1");
    let _ = reg.unregister("mbn1");
    pa.detach();
    pb.detach();
}
