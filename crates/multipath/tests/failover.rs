//! Failover, failback, no-path queueing, ANA and priority groups, hot-remove, stalls.

mod common;

use bdev::*;
use common::*;
use multipath::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rr() -> Policy {
    Policy::RoundRobin { ios_per_path: 1 }
}

#[test]
fn path_errors_are_redriven_and_never_reach_the_caller() {
    for status in [IoStatus::PathError, IoStatus::Timeout, IoStatus::Aborted] {
        let rig = rig(2, 1024, test_options(rr()));
        let mut ch = rig.channel();
        rig.fail_path(0, Some(status));
        for i in 0..50u64 {
            let mut w = pattern(4096, i);
            assert_eq!(run(&mut ch, IoRequest::write(i * 8, 8, IoVecs::single(w.iovec()), i)), IoStatus::Success);
            let mut r = DmaBuf::zeroed(4096).unwrap();
            assert_eq!(run(&mut ch, IoRequest::read(i * 8, 8, IoVecs::single(r.iovec()), i)), IoStatus::Success);
            assert_eq!(r.as_slice(), w.as_slice());
        }
        assert!(matches!(rig.state(0), PathState::Failed | PathState::Probing), "{:?}", rig.state(0));
        assert_eq!(rig.state(1), PathState::Active);
        assert!(rig.stats(0).path_errors >= 1);
        assert_eq!(rig.stats(0).ios(), 0);
        assert_eq!(rig.stats(1).ios(), 100);
        let failed: Vec<_> = rig.events().into_iter().filter(|e| matches!(e.kind, PathEventKind::Failed(_))).collect();
        assert_eq!(
            failed,
            vec![PathEvent { device: "mp0".into(), path: "path0".into(), kind: PathEventKind::Failed(status) }],
            "failed once, reported once"
        );
    }
}

#[test]
fn media_invalid_and_no_space_errors_are_returned_unchanged() {
    for status in [IoStatus::MediaError, IoStatus::NoSpace, IoStatus::Invalid] {
        let rig = rig(2, 1024, test_options(rr()));
        let mut ch = rig.channel();
        rig.fail_path(0, Some(status));
        rig.fail_path(1, Some(status));
        let mut b = DmaBuf::alloc(512).unwrap();
        assert_eq!(read1(&mut ch, &mut b, 3), status);
        assert_eq!(read1(&mut ch, &mut b, 4), status);
        assert_eq!(rig.state(0), PathState::Active, "not a path failure");
        assert_eq!(rig.state(1), PathState::Active);
        assert_eq!(rig.stats(0).io_errors + rig.stats(1).io_errors, 2);
    }
}

#[test]
fn in_flight_io_on_a_dying_path_is_redriven_exactly_once() {
    let rig = rig(3, 4096, test_options(rr()));
    let mut ch = rig.channel();
    for i in 0..3 {
        rig.delay(i, 3000);
    }
    let mut bufs: Vec<DmaBuf> = (0..60).map(|i| pattern(4096, 1000 + i)).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        ch.submit(&IoRequest::write(i as u64 * 8, 8, IoVecs::single(b.iovec()), i as u64)).unwrap();
    }
    // A third of them sit on path 1 when its link drops: they come back with PathError.
    rig.ports[1].set_link(false);
    let mut seen = HashMap::new();
    let t0 = Instant::now();
    while seen.len() < 60 {
        ch.poll(&mut |t, s| {
            assert!(seen.insert(t, s).is_none(), "tag {t} completed twice");
        });
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    pump(&mut ch, Duration::from_millis(20));
    assert!(seen.values().all(|s| *s == IoStatus::Success), "{seen:?}");
    assert!(rig.stats(1).path_errors >= 1, "some IO was in flight on the dying path");
    assert_eq!(rig.stats(0).writes + rig.stats(2).writes, 60);
    for i in 0..3 {
        rig.delay(i, 0);
    }
    for (i, w) in bufs.iter().enumerate() {
        let mut r = DmaBuf::zeroed(4096).unwrap();
        assert_eq!(run(&mut ch, IoRequest::read(i as u64 * 8, 8, IoVecs::single(r.iovec()), 0)), IoStatus::Success);
        assert_eq!(r.as_slice(), w.as_slice(), "block {i}");
    }
}

#[test]
fn failed_path_is_probed_and_fails_back_within_the_probe_interval() {
    let mut o = test_options(rr());
    o.probe_interval = Duration::from_millis(20);
    let rig = rig(2, 1024, o);
    let mut ch = rig.channel();
    let mut b = DmaBuf::alloc(512).unwrap();
    rig.ports[0].set_link(false);
    for i in 0..4 {
        assert_eq!(read1(&mut ch, &mut b, i), IoStatus::Success);
    }
    assert!(matches!(rig.state(0), PathState::Failed | PathState::Probing));
    // Still down: probes keep failing, one per interval.
    poll_until(&mut ch, Duration::from_secs(5), || rig.stats(0).probes >= 3);
    assert!(matches!(rig.state(0), PathState::Failed | PathState::Probing));
    rig.ports[0].set_link(true);
    let took = poll_until(&mut ch, Duration::from_secs(5), || rig.state(0) == PathState::Active);
    // Figures, not assertions on timing: the probe interval bounds it.
    eprintln!("failback after link-up: {took:?} (probe interval 20 ms)");
    let kinds: Vec<_> = rig.events().into_iter().filter(|e| e.path == "path0").map(|e| e.kind).collect();
    assert_eq!(kinds, vec![PathEventKind::Failed(IoStatus::PathError), PathEventKind::Restored], "{kinds:?}");
    let used: Vec<usize> = (0..4).map(|i| which_path(&rig, || assert!(read1(&mut ch, &mut b, i).is_ok()))).collect();
    assert!(used.contains(&0) && used.contains(&1), "round robin uses the restored path again: {used:?}");
}

#[test]
fn without_a_usable_path_io_waits_then_fails_after_the_no_path_timeout() {
    let mut o = test_options(rr());
    o.no_path_timeout = Some(Duration::from_millis(60));
    let rig = rig(2, 1024, o);
    let mut ch = rig.channel();
    rig.ports[0].set_link(false);
    rig.ports[1].set_link(false);
    let mut b = DmaBuf::alloc(512).unwrap();
    let t0 = Instant::now();
    assert_eq!(read1(&mut ch, &mut b, 1), IoStatus::PathError);
    assert!(t0.elapsed() >= Duration::from_millis(60), "failed before the timeout: {:?}", t0.elapsed());
    // Zero timeout: at the next poll.
    let mut o = rig.dev.options();
    o.no_path_timeout = Some(Duration::ZERO);
    rig.dev.set_options(o).unwrap();
    assert_eq!(read1(&mut ch, &mut b, 1), IoStatus::PathError);
}

#[test]
fn queued_io_completes_when_a_path_comes_back() {
    let rig = rig(2, 1024, test_options(rr()));
    let mut ch = rig.channel();
    rig.ports[0].set_link(false);
    rig.ports[1].set_link(false);
    let mut w = pattern(512, 7);
    ch.submit(&IoRequest::write(9, 1, IoVecs::single(w.iovec()), 77)).unwrap();
    pump(&mut ch, Duration::from_millis(30));
    assert_eq!(ch.in_flight(), 1);
    rig.ports[1].set_link(true);
    let mut got = None;
    poll_until_done(&mut ch, &mut got);
    assert_eq!(got, Some((77, IoStatus::Success)));
    let mut r = DmaBuf::zeroed(512).unwrap();
    assert_eq!(read1(&mut ch, &mut r, 9), IoStatus::Success);
    assert_eq!(r.as_slice(), w.as_slice());
}

fn poll_until_done(ch: &mut BdevChannel, got: &mut Option<(u64, IoStatus)>) {
    let t0 = Instant::now();
    while got.is_none() {
        ch.poll(&mut |t, s| *got = Some((t, s)));
        assert!(t0.elapsed() < Duration::from_secs(10), "io did not complete");
    }
}

#[test]
fn ana_inaccessible_paths_get_no_io_and_non_optimized_paths_stand_by() {
    let rig = rig(2, 1024, test_options(rr()));
    let mut ch = rig.channel();
    let mut b = DmaBuf::alloc(512).unwrap();
    rig.ports[0].set_ana_state(Some(AnaState::Inaccessible));
    poll_until(&mut ch, Duration::from_secs(5), || rig.state(0) == PathState::Inaccessible);
    for i in 0..6 {
        assert_eq!(which_path(&rig, || assert!(read1(&mut ch, &mut b, i).is_ok())), 1);
    }
    rig.ports[0].set_ana_state(Some(AnaState::Optimized));
    rig.ports[1].set_ana_state(Some(AnaState::NonOptimized));
    poll_until(&mut ch, Duration::from_secs(5), || {
        (rig.state(0), rig.state(1)) == (PathState::Active, PathState::Passive)
    });
    for i in 0..6 {
        assert_eq!(which_path(&rig, || assert!(read1(&mut ch, &mut b, i).is_ok())), 0, "optimized path first");
    }
    // The optimized path fails: the non-optimized one carries the IO.
    rig.ports[0].set_link(false);
    for i in 0..6 {
        assert!(read1(&mut ch, &mut b, i).is_ok());
    }
    assert!(rig.stats(1).reads >= 6);
    let ana_events = rig.events().iter().filter(|e| matches!(e.kind, PathEventKind::AnaChanged(_))).count();
    assert_eq!(ana_events, 3, "{:?}", rig.events());
}

#[test]
fn passive_group_carries_io_only_while_the_active_group_is_unusable() {
    let mut o = test_options(rr());
    o.probe_interval = Duration::from_millis(5);
    let rig = rig_with(3, 1024, o, |i| PathParams { bdev: String::new(), group: (i == 2) as u8, weight: 1 });
    let mut ch = rig.channel();
    let mut b = DmaBuf::alloc(512).unwrap();
    for i in 0..10 {
        assert_ne!(which_path(&rig, || assert!(read1(&mut ch, &mut b, i).is_ok())), 2);
    }
    assert_eq!(rig.state(2), PathState::Passive);
    rig.ports[0].set_link(false);
    rig.ports[1].set_link(false);
    for i in 0..10 {
        assert!(read1(&mut ch, &mut b, i).is_ok());
    }
    assert_eq!(rig.state(2), PathState::Active);
    assert!(rig.stats(2).reads >= 10);
    rig.ports[1].set_link(true);
    poll_until(&mut ch, Duration::from_secs(5), || rig.state(1) == PathState::Active);
    assert_eq!(rig.state(2), PathState::Passive, "failback to the active group");
    for i in 0..5 {
        assert_eq!(which_path(&rig, || assert!(read1(&mut ch, &mut b, i).is_ok())), 1);
    }
    // Groups change at run time.
    rig.dev.set_path_group("path1", 3).unwrap();
    for i in 0..5 {
        assert_eq!(which_path(&rig, || assert!(read1(&mut ch, &mut b, i).is_ok())), 2);
    }
}

#[test]
fn a_hot_removed_path_leaves_the_device_and_io_continues() {
    let rig = rig(2, 1024, test_options(rr()));
    let mut ch = rig.channel();
    let mut w = pattern(4096, 3);
    assert!(run(&mut ch, IoRequest::write(0, 8, IoVecs::single(w.iovec()), 1)).is_ok());
    rig.reg.unregister("path0").unwrap();
    assert_eq!(rig.dev.paths().len(), 1);
    assert!(rig.events().iter().any(|e| e.path == "path0" && e.kind == PathEventKind::Removed));
    for i in 0..8 {
        let mut r = DmaBuf::zeroed(4096).unwrap();
        assert_eq!(run(&mut ch, IoRequest::read(0, 8, IoVecs::single(r.iovec()), i)), IoStatus::Success);
        assert_eq!(r.as_slice(), w.as_slice());
    }
    assert_eq!(rig.stats(1).reads, 8);
    // A new port to the namespace joins by request.
    rig.reg.register(Arc::new(rig.ports[0].sibling("port9").unwrap())).unwrap();
    rig.dev.add_path(&rig.reg, PathParams::new("port9")).unwrap();
    assert!(rig.events().iter().any(|e| e.path == "port9" && e.kind == PathEventKind::Added));
    let used: Vec<usize> = (0..4)
        .map(|i| {
            let before = rig.stats(1).reads;
            let mut r = DmaBuf::zeroed(512).unwrap();
            assert!(read1(&mut ch, &mut r, i).is_ok());
            (rig.stats(1).reads - before) as usize
        })
        .collect();
    assert!(used.contains(&0), "the new path takes part: {used:?}");
}

#[test]
fn a_stalled_path_gets_no_new_io_and_its_held_io_completes_once() {
    let mut o = test_options(rr());
    o.stall_timeout = Some(Duration::from_millis(5));
    o.probe_interval = Duration::from_millis(5);
    let rig = rig(2, 1024, o);
    let mut ch = rig.channel();
    rig.faults[0].update(|c| c.stall = true);
    let mut a = DmaBuf::alloc(512).unwrap();
    ch.submit(&IoRequest::read(0, 1, IoVecs::single(a.iovec()), 500)).unwrap();
    let mut done = Vec::new();
    let t0 = Instant::now();
    while !matches!(rig.state(0), PathState::Failed | PathState::Probing) {
        ch.poll(&mut |t, s| done.push((t, s)));
        assert!(t0.elapsed() < Duration::from_secs(5), "stall not detected");
    }
    let mut b = DmaBuf::alloc(512).unwrap();
    // Round robin starts on path 0: the first IO is held there, and the stall check fails it.
    assert!(done.is_empty(), "{done:?}");
    assert!(matches!(rig.state(0), PathState::Failed | PathState::Probing), "{:?}", rig.state(0));
    assert!(rig.events().contains(&PathEvent {
        device: "mp0".into(),
        path: "path0".into(),
        kind: PathEventKind::Failed(IoStatus::Timeout)
    }));
    for i in 0..5 {
        let mut got = None;
        ch.submit(&IoRequest::read(i, 1, IoVecs::single(b.iovec()), i)).unwrap();
        let t0 = Instant::now();
        while got.is_none() {
            ch.poll(&mut |t, s| if t == 500 { done.push((t, s)) } else { got = Some(s) });
            assert!(t0.elapsed() < Duration::from_secs(5));
        }
        assert_eq!(got, Some(IoStatus::Success));
    }
    assert!(done.is_empty(), "held IO still held");
    rig.faults[0].update(|c| c.stall = false);
    let t0 = Instant::now();
    while done.is_empty() {
        ch.poll(&mut |t, s| done.push((t, s)));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    pump(&mut ch, Duration::from_millis(20));
    assert_eq!(done, vec![(500, IoStatus::Success)], "held IO answered exactly once");
    poll_until(&mut ch, Duration::from_secs(5), || rig.state(0) == PathState::Active);
}

#[test]
fn reset_goes_to_every_usable_path() {
    let rig = rig(3, 1024, test_options(Policy::QueueLength));
    let mut ch = rig.channel();
    rig.ports[2].set_link(false);
    let mut b = DmaBuf::alloc(512).unwrap();
    // Let path 2 fail first, so the reset sees two usable paths.
    for i in 0..6 {
        assert!(read1(&mut ch, &mut b, i).is_ok());
    }
    assert_eq!(run(&mut ch, IoRequest::no_data(IoType::Reset, 0, 0, 9)), IoStatus::Success);
    assert_eq!((rig.stats(0).others, rig.stats(1).others, rig.stats(2).others), (1, 1, 0));
    assert_eq!(run(&mut ch, IoRequest::no_data(IoType::Flush, 0, 0, 9)), IoStatus::Success);
    assert_eq!(rig.stats(0).others + rig.stats(1).others, 3, "flush goes down one path");
}

#[test]
fn policy_changes_under_io_lose_and_duplicate_nothing() {
    let rig = rig(3, 4096, test_options(Policy::QueueLength));
    let mut ch = rig.channel();
    rig.delay(0, 500);
    rig.delay(2, 1500);
    let mut bufs: Vec<DmaBuf> = (0..256).map(|i| pattern(512, i)).collect();
    let mut seen = vec![0u32; 256];
    let policies: Vec<Policy> = Policy::NAMES.iter().map(|n| Policy::from_name(n).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        while ch.submit(&IoRequest::write(i as u64, 1, IoVecs::single(b.iovec()), i as u64)).is_err() {
            ch.poll(&mut |t, s| {
                assert_eq!(s, IoStatus::Success);
                seen[t as usize] += 1;
            });
        }
        if i % 16 == 0 {
            rig.dev.set_policy(policies[(i / 16) % policies.len()]).unwrap();
        }
        ch.poll(&mut |t, s| {
            assert_eq!(s, IoStatus::Success);
            seen[t as usize] += 1;
        });
    }
    let t0 = Instant::now();
    while seen.contains(&0) {
        ch.poll(&mut |t, s| {
            assert_eq!(s, IoStatus::Success);
            seen[t as usize] += 1;
        });
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    pump(&mut ch, Duration::from_millis(10));
    assert!(seen.iter().all(|&n| n == 1));
    assert_eq!(ch.in_flight(), 0);
    assert!(rig.ios().iter().all(|&n| n > 0), "every path used: {:?}", rig.ios());
}

#[test]
fn channels_on_several_threads_ride_through_path_flaps_without_errors() {
    let mut o = test_options(Policy::QueueLength);
    o.probe_interval = Duration::from_millis(1);
    let rig = Arc::new(rig(3, 8192, o));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let rig = rig.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ch = rig.channel();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 200 {
                    let lba = t * 4096 + (n % 512) * 8;
                    let mut w = pattern(4096, t * 1_000_000 + n);
                    assert_eq!(run(&mut ch, IoRequest::write(lba, 8, IoVecs::single(w.iovec()), n)), IoStatus::Success);
                    let mut r = DmaBuf::zeroed(4096).unwrap();
                    assert_eq!(run(&mut ch, IoRequest::read(lba, 8, IoVecs::single(r.iovec()), n)), IoStatus::Success);
                    assert_eq!(r.as_slice(), w.as_slice());
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Flap paths 0 and 1; path 2 stays up so a path is always usable.
    for k in 0..40 {
        rig.ports[k % 2].set_link(false);
        std::thread::sleep(Duration::from_millis(3));
        rig.ports[k % 2].set_link(true);
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!("{total} write+read pairs, path stats {:?}", rig.ios());
    assert!(rig.stats(0).failures + rig.stats(1).failures > 0, "flaps were noticed");
}

#[test]
fn dropping_a_channel_gives_back_its_share_of_the_in_flight_counts() {
    let rig = rig(2, 1024, test_options(Policy::QueueLength));
    rig.faults[0].update(|c| c.stall = true);
    let mut ch = rig.channel();
    let mut bufs: Vec<DmaBuf> = (0..8).map(|_| DmaBuf::alloc(512).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        ch.submit(&IoRequest::read(i as u64, 1, IoVecs::single(b.iovec()), i as u64)).unwrap();
    }
    assert!(rig.stats(0).in_flight > 0);
    let releaser = {
        let f = rig.faults[0].clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            f.update(|c| c.stall = false);
        })
    };
    drop(ch);
    releaser.join().unwrap();
    assert_eq!((rig.stats(0).in_flight, rig.stats(1).in_flight), (0, 0));
    assert_eq!((rig.stats(0).in_flight_bytes, rig.stats(1).in_flight_bytes), (0, 0));
}

#[test]
fn a_path_failed_by_ana_inaccessibility_is_reported_inaccessible_and_returns_with_its_ana_state() {
    let mut o = test_options(rr());
    // Only the ANA change can bring the path back within this test.
    o.probe_interval = Duration::from_secs(3600);
    let rig = rig(2, 1024, o);
    let mut ch = rig.channel();
    let mut b = DmaBuf::alloc(512).unwrap();
    // As over NVMe/TCP: IO fails with a path error before the ANA log tells why.
    rig.fail_path(0, Some(IoStatus::PathError));
    for i in 0..4 {
        assert_eq!(read1(&mut ch, &mut b, i), IoStatus::Success);
    }
    assert!(matches!(rig.state(0), PathState::Failed | PathState::Probing), "{:?}", rig.state(0));
    rig.ports[0].set_ana_state(Some(AnaState::Inaccessible));
    rig.fail_path(0, None);
    poll_until(&mut ch, Duration::from_secs(5), || rig.state(0) == PathState::Inaccessible);
    let probes = rig.stats(0).probes;
    pump(&mut ch, Duration::from_millis(30));
    assert_eq!(rig.stats(0).probes, probes, "an inaccessible path is not probed");
    for i in 0..4 {
        assert_eq!(which_path(&rig, || assert!(read1(&mut ch, &mut b, i).is_ok())), 1);
    }
    rig.ports[0].set_ana_state(Some(AnaState::Optimized));
    poll_until(&mut ch, Duration::from_secs(5), || rig.state(0) == PathState::Active);
    let kinds: Vec<_> = rig.events().into_iter().filter(|e| e.path == "path0").map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            PathEventKind::Failed(IoStatus::PathError),
            PathEventKind::AnaChanged(Some(AnaState::Inaccessible)),
            PathEventKind::AnaChanged(Some(AnaState::Optimized)),
            PathEventKind::Restored
        ]
    );
    let used: Vec<usize> = (0..4).map(|i| which_path(&rig, || assert!(read1(&mut ch, &mut b, i).is_ok()))).collect();
    assert!(used.contains(&0), "the path carries IO again: {used:?}");
}

/// A path bdev whose channels count their polls (a transport that reconnects from `poll`, as
/// NVMe/TCP does, needs them).
struct PollCounting {
    info: BdevInfo,
    base: Desc,
    polls: Arc<std::sync::atomic::AtomicU64>,
}

struct PollCountingChannel {
    base: BdevChannel,
    polls: Arc<std::sync::atomic::AtomicU64>,
}

impl Bdev for PollCounting {
    fn info(&self) -> &BdevInfo {
        &self.info
    }
    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(PollCountingChannel { base: self.base.channel()?, polls: self.polls.clone() }))
    }
}

impl IoChannel for PollCountingChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        self.base.submit(io)
    }
    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.base.poll(done)
    }
    fn in_flight(&self) -> usize {
        self.base.in_flight()
    }
}

#[test]
fn idle_channels_of_failed_paths_are_still_polled() {
    use bdev::backends::malloc::{MallocBdev, MallocParams};
    use bdev::backends::port::PortBdev;
    let reg = Registry::new();
    let m = MallocBdev::new(MallocParams { name: "m".into(), num_blocks: 1024, block_size: 512 }).unwrap();
    reg.register(Arc::new(m)).unwrap();
    let ports = PortBdev::create(reg.open("m", true).unwrap(), &["port0", "port1"]).unwrap();
    let mut polls = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        reg.register(p.clone()).unwrap();
        let base = reg.open(&format!("port{i}"), true).unwrap();
        base.claim("test").unwrap();
        let mut info = base.info().clone();
        info.name = format!("path{i}");
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        reg.register(Arc::new(PollCounting { info, base, polls: n.clone() })).unwrap();
        polls.push(n);
    }
    let mut o = test_options(rr());
    o.probe_interval = Duration::from_secs(3600);
    let module = MultipathModule::new(AutoAssemble { enabled: false, ..Default::default() });
    let params = MultipathParams {
        name: Some("mp0".into()),
        paths: vec![PathParams::new("path0"), PathParams::new("path1")],
        options: o,
    };
    let dev = module.create(&reg, params).unwrap();
    let desc = reg.open("mp0", true).unwrap();
    let mut ch = desc.channel().unwrap();
    let mut b = DmaBuf::alloc(512).unwrap();
    ports[0].set_link(false);
    for i in 0..4 {
        assert_eq!(read1(&mut ch, &mut b, i), IoStatus::Success);
    }
    assert_eq!(dev.path("path0").unwrap().state, PathState::Failed);
    let (failed0, healthy0) = (polls[0].load(Ordering::Relaxed), polls[1].load(Ordering::Relaxed));
    pump(&mut ch, Duration::from_millis(20));
    let failed = polls[0].load(Ordering::Relaxed) - failed0;
    let healthy = polls[1].load(Ordering::Relaxed) - healthy0;
    assert!(failed > 0, "the failed path's idle channel is polled ({failed} polls)");
    assert_eq!(healthy, 0, "an idle channel of a usable path is left alone");
}
