//! Each policy's path selection, through real channels over delayed and stalled paths.

mod common;

use bdev::*;
use common::*;
use multipath::*;
use std::time::{Duration, Instant};

/// Latency-driven tests run one at a time, so they do not disturb each other's timing.
static TIMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timing() -> std::sync::MutexGuard<'static, ()> {
    TIMING.lock().unwrap_or_else(|e| e.into_inner())
}

fn reads(rig: &Rig, ch: &mut BdevChannel, n: u64) -> Vec<usize> {
    let mut b = DmaBuf::alloc(512).unwrap();
    (0..n).map(|i| which_path(rig, || assert_eq!(read1(ch, &mut b, i % 64), IoStatus::Success))).collect()
}

fn shares(picks: &[usize], n_paths: usize) -> Vec<f64> {
    (0..n_paths).map(|p| picks.iter().filter(|&&x| x == p).count() as f64 / picks.len() as f64).collect()
}

#[test]
fn round_robin_sends_ios_per_path_then_moves_on() {
    let rig = rig(3, 1024, test_options(Policy::RoundRobin { ios_per_path: 3 }));
    let mut ch = rig.channel();
    assert_eq!(reads(&rig, &mut ch, 12), [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0]);
    rig.dev.set_policy(Policy::RoundRobin { ios_per_path: 1 }).unwrap();
    let seq = reads(&rig, &mut ch, 6);
    assert_eq!(&seq[1..4], &[seq[1], (seq[1] + 1) % 3, (seq[1] + 2) % 3], "one IO per path: {seq:?}");
}

#[test]
fn random_spreads_evenly() {
    let rig = rig(3, 1024, test_options(Policy::Random));
    let mut ch = rig.channel();
    let s = shares(&reads(&rig, &mut ch, 3000), 3);
    assert!(s.iter().all(|&x| (0.27..0.40).contains(&x)), "{s:?}");
}

#[test]
fn weighted_follows_static_weights_changed_at_run_time() {
    let rig = rig_with(2, 1024, test_options(Policy::Weighted), |i| PathParams {
        bdev: String::new(),
        group: 0,
        weight: [1, 3][i],
    });
    let mut ch = rig.channel();
    let s = shares(&reads(&rig, &mut ch, 4000), 2);
    assert!((0.20..0.30).contains(&s[0]), "{s:?}");
    rig.dev.set_path_weight("path1", 0).unwrap();
    assert!(reads(&rig, &mut ch, 200).iter().all(|&p| p == 0));
    assert_eq!(rig.dev.path("path1").unwrap().weight, 0);
    assert!(rig.dev.set_path_weight("nope", 1).is_err());
}

#[test]
fn hash_keeps_each_region_on_its_path() {
    let rig = rig(3, 8192, test_options(Policy::Hash { region_blocks: 64 }));
    let mut ch = rig.channel();
    let mut b = DmaBuf::alloc(512).unwrap();
    let mut owner = Vec::new();
    for region in 0..60u64 {
        let lbas = [region * 64, region * 64 + 17, region * 64 + 63];
        let got: Vec<usize> =
            lbas.iter().map(|&l| which_path(&rig, || assert!(read1(&mut ch, &mut b, l).is_ok()))).collect();
        assert!(got.iter().all(|&p| p == got[0]), "region {region} split over paths {got:?}");
        owner.push(got[0]);
    }
    let s = shares(&owner, 3);
    assert!(s.iter().all(|&x| x > 0.1), "regions spread over paths: {s:?}");
    // Path 1 fails: only its regions move.
    rig.ports[1].set_link(false);
    for region in 0..60u64 {
        let p = which_path(&rig, || assert!(read1(&mut ch, &mut b, region * 64 + 5).is_ok()));
        if owner[region as usize] != 1 {
            assert_eq!(p, owner[region as usize], "region {region} moved");
        } else {
            assert_ne!(p, 1);
        }
    }
}

/// Options for the latency-driven policies: a scheduling hiccup on a loaded test machine can
/// make the fast path look slow for a while; the periodic reset bounds that.
fn dynamic(policy: Policy) -> MultipathOptions {
    MultipathOptions { stats_reset_interval: Duration::from_millis(50), ..test_options(policy) }
}

fn count(picks: &[usize], p: usize) -> usize {
    picks.iter().filter(|&&x| x == p).count()
}

#[test]
fn service_time_prefers_the_faster_path_per_direction() {
    let _serial = timing();
    let rig = rig(2, 1024, dynamic(Policy::ServiceTime));
    let mut ch = rig.channel();
    rig.delay(0, 5000);
    rig.delay(1, 100);
    let picks = reads(&rig, &mut ch, 100);
    assert!(count(&picks, 0) <= 15, "slow path tried only when its window is empty: {picks:?}");
    // Reads and writes are kept apart: path 0 slow only for reads, path 1 only for writes.
    rig.faults[0].update(|c| {
        c.delay_us = 5000;
        c.delay_types = IoTypeSet::of(&[IoType::Read]);
    });
    rig.faults[1].update(|c| {
        c.delay_us = 5000;
        c.delay_types = IoTypeSet::of(&[IoType::Write]);
    });
    rig.dev.reset_path_statistics();
    let mut w = pattern(512, 1);
    for i in 0..40 {
        run(&mut ch, IoRequest::write(i, 1, IoVecs::single(w.iovec()), i));
    }
    let before = rig.stats(0).writes;
    for i in 0..40 {
        run(&mut ch, IoRequest::write(i, 1, IoVecs::single(w.iovec()), i));
    }
    assert!(rig.stats(0).writes - before >= 34, "writes on the path fast for writes");
    let picks = reads(&rig, &mut ch, 40);
    assert!(count(&picks, 1) >= 34, "reads on the path fast for reads: {picks:?}");
}

#[test]
fn average_rate_prefers_the_path_with_more_throughput() {
    let _serial = timing();
    let rig = rig(2, 1024, dynamic(Policy::AverageRate));
    let mut ch = rig.channel();
    rig.delay(0, 100);
    rig.delay(1, 5000);
    let picks = reads(&rig, &mut ch, 100);
    assert!(count(&picks, 1) <= 15, "{picks:?}");
}

#[test]
fn statistics_reset_lets_a_path_that_got_faster_win_again() {
    let _serial = timing();
    let mut o = test_options(Policy::ServiceTime);
    o.stats_reset_interval = Duration::from_millis(30);
    let rig = rig(2, 1024, o);
    let mut ch = rig.channel();
    rig.delay(0, 3000);
    rig.delay(1, 100);
    reads(&rig, &mut ch, 50);
    // Path 0 gets fast, path 1 slow; path 0's window (3 ms) would keep it out for ever
    // without the periodic reset.
    rig.delay(0, 0);
    rig.delay(1, 3000);
    let base = rig.stats(0).reads;
    let mut b = DmaBuf::alloc(512).unwrap();
    let t0 = Instant::now();
    while rig.stats(0).reads < base + 100 {
        assert!(read1(&mut ch, &mut b, 1).is_ok());
        assert!(t0.elapsed() < Duration::from_secs(10), "path 0 not preferred again");
    }
    let picks = reads(&rig, &mut ch, 40);
    assert!(count(&picks, 0) >= 30, "{picks:?}");
}

/// Submit `n` reads at once (no polling), then report each path's in-flight count.
fn burst(rig: &Rig, ch: &mut BdevChannel, bufs: &mut [DmaBuf]) -> Vec<u64> {
    for (i, b) in bufs.iter_mut().enumerate() {
        ch.submit(&IoRequest::read(i as u64, 1, IoVecs::single(b.iovec()), i as u64)).unwrap();
    }
    (0..rig.faults.len()).map(|i| rig.stats(i).in_flight).collect()
}

fn drain(ch: &mut BdevChannel) {
    assert!(ch.drain(Duration::from_secs(10), &mut |_, s| assert_eq!(s, IoStatus::Success)));
}

#[test]
fn queue_length_balances_and_counts_every_channel() {
    let rig = rig(2, 1024, test_options(Policy::QueueLength));
    let mut bufs: Vec<DmaBuf> = (0..32).map(|_| DmaBuf::alloc(512).unwrap()).collect();
    let mut a = rig.channel();
    for f in &rig.faults {
        f.update(|c| c.stall = true);
    }
    assert_eq!(burst(&rig, &mut a, &mut bufs), [16, 16]);
    for f in &rig.faults {
        f.update(|c| c.stall = false);
    }
    drain(&mut a);
    // Channel A loads path 0 (round robin, many IOs per path); channel B, on another
    // thread, then sends queue-length IO: it sees A's IOs and avoids path 0.
    for f in &rig.faults {
        f.update(|c| c.stall = true);
    }
    rig.dev.set_policy(Policy::RoundRobin { ios_per_path: 1000 }).unwrap();
    let mut abufs: Vec<DmaBuf> = (0..10).map(|_| DmaBuf::alloc(512).unwrap()).collect();
    assert_eq!(burst(&rig, &mut a, &mut abufs), [10, 0]);
    rig.dev.set_policy(Policy::QueueLength).unwrap();
    let rig = std::sync::Arc::new(rig);
    let r2 = rig.clone();
    let in_flight = std::thread::spawn(move || {
        let mut b = r2.channel();
        let mut bbufs: Vec<DmaBuf> = (0..10).map(|_| DmaBuf::alloc(512).unwrap()).collect();
        let got = burst(&r2, &mut b, &mut bbufs);
        for f in &r2.faults {
            f.update(|c| c.stall = false);
        }
        drain(&mut b);
        got
    })
    .join()
    .unwrap();
    assert_eq!(in_flight, [10, 10], "all of B's IO went to the path A left idle");
    drain(&mut a);
}

#[test]
fn queue_length_sends_most_io_to_the_faster_path() {
    let _serial = timing();
    let rig = rig(2, 1024, test_options(Policy::QueueLength));
    let mut ch = rig.channel();
    rig.delay(0, 100);
    rig.delay(1, 2000);
    let mut bufs: Vec<DmaBuf> = (0..16).map(|_| DmaBuf::alloc(512).unwrap()).collect();
    let mut free: Vec<usize> = (0..16).collect();
    let mut done = 0;
    // Keep 16 reads in flight for 1000 completions.
    while done < 1000 {
        while let Some(i) = free.pop() {
            ch.submit(&IoRequest::read(i as u64, 1, IoVecs::single(bufs[i].iovec()), i as u64)).unwrap();
        }
        ch.poll(&mut |t, s| {
            assert_eq!(s, IoStatus::Success);
            free.push(t as usize);
            done += 1;
        });
    }
    drain(&mut ch);
    let ios = rig.ios();
    assert!(ios[0] > 4 * ios[1], "{ios:?}");
}

#[test]
fn historical_service_time_splits_a_burst_by_expected_completion() {
    let _serial = timing();
    let mut o = test_options(Policy::HistoricalServiceTime);
    o.window_ios = 32;
    let rig = rig(2, 1024, o);
    let mut ch = rig.channel();
    rig.delay(0, 100);
    rig.delay(1, 1000);
    // Fill both windows: path 1 alone first (path 0 in a passive group), then path 0.
    let mut b = DmaBuf::alloc(512).unwrap();
    rig.dev.set_path_group("path0", 1).unwrap();
    for i in 0..32 {
        assert!(read1(&mut ch, &mut b, i).is_ok());
    }
    rig.dev.set_path_group("path0", 0).unwrap();
    rig.dev.set_path_group("path1", 1).unwrap();
    for i in 0..32 {
        assert!(read1(&mut ch, &mut b, i).is_ok());
    }
    rig.dev.set_path_group("path1", 0).unwrap();
    let info: Vec<PathInfo> = rig.dev.paths();
    eprintln!(
        "learned read latency: path0 {:?} ns, path1 {:?} ns",
        info[0].recent_read_latency_ns, info[1].recent_read_latency_ns
    );
    let mut bufs: Vec<DmaBuf> = (0..64).map(|_| DmaBuf::alloc(512).unwrap()).collect();
    let split = burst(&rig, &mut ch, &mut bufs);
    drain(&mut ch);
    // Expected completion equalises at roughly (latency ratio) IOs on the fast path per IO on
    // the slow one: most go to path 0, but the slow path is not left idle.
    // The split follows the learned latency ratio r: about one IO on the slow path per r on
    // the fast one (a loaded test machine can stretch the measured latencies, so the bounds
    // come from what was learned).
    let r = info[1].recent_read_latency_ns.unwrap() as f64 / info[0].recent_read_latency_ns.unwrap().max(1) as f64;
    assert!(split[0] > split[1], "{split:?} r={r}");
    let expect_slow = 65.0 / (r + 1.0);
    assert!(
        (split[1] as f64) <= 2.0 * expect_slow + 2.0 && (split[1] as f64) >= expect_slow / 2.0 - 1.0,
        "{split:?} r={r}"
    );
}
