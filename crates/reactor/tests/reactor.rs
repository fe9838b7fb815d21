//! Reactor tests: messages, calls, pollers, timers, adaptive idle, stop.

use reactor::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cfg(n: usize, idle: IdlePolicy) -> ReactorConfig {
    ReactorConfig { cores: (0..n).collect(), pin: false, idle }
}

#[test]
fn call_runs_on_the_reactor_thread() {
    let r = Reactors::start(&cfg(2, IdlePolicy::default())).unwrap();
    let names: Vec<String> = r.call_all(|_| std::thread::current().name().unwrap_or("").to_string()).unwrap();
    assert_eq!(names, vec!["xbdev-reactor-0", "xbdev-reactor-1"]);
    assert_eq!(r.get(1).unwrap().call(|c| c.index()).unwrap(), 1);
    assert!(matches!(r.get(5), Err(ReactorError::NoSuchReactor(5))));
}

#[test]
fn pollers_run_and_can_be_removed_and_added_from_pollers() {
    let r = Reactors::start(&cfg(1, IdlePolicy::AlwaysPoll)).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c2 = count.clone();
    let id = r
        .get(0)
        .unwrap()
        .call(move |ctx| {
            ctx.add_poller("count", move |ctx| {
                if c2.fetch_add(1, Ordering::Relaxed) == 100 {
                    ctx.add_poller("nested", |_| PollStatus::Idle);
                }
                PollStatus::Busy
            })
        })
        .unwrap();
    let t0 = Instant::now();
    while count.load(Ordering::Relaxed) < 1000 {
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    let names = r.get(0).unwrap().call(|ctx| ctx.poller_names()).unwrap();
    assert_eq!(names, vec!["count", "nested"]);
    r.get(0).unwrap().call(move |ctx| ctx.remove(id)).unwrap();
    let a = count.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(20));
    assert!(count.load(Ordering::Relaxed) <= a + 1, "removed poller stopped");
}

#[test]
fn timers_fire_periodically_and_idle_reactor_parks() {
    let mut r = Reactors::start(&cfg(
        1,
        IdlePolicy::Adaptive { spin: Duration::from_micros(50), max_sleep: Duration::from_millis(50) },
    ))
    .unwrap();
    let fired = Arc::new(AtomicU64::new(0));
    let f2 = fired.clone();
    r.get(0)
        .unwrap()
        .call(move |ctx| {
            ctx.add_timer("tick", Duration::from_millis(10), move |_| {
                f2.fetch_add(1, Ordering::Relaxed);
            })
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let n = fired.load(Ordering::Relaxed);
    assert!((10..=40).contains(&n), "timer fired {n} times in 300 ms at 10 ms period");
    let (loops, parks) = r.get(0).unwrap().counters();
    assert!(parks > 5, "idle reactor parked ({parks} parks, {loops} loops)");
    // A message wakes a parked reactor promptly.
    let t0 = Instant::now();
    r.get(0).unwrap().call(|_| ()).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(40));
    r.stop();
    assert!(matches!(r.get(0).unwrap().send(|_| ()), Err(ReactorError::Stopped)));
}

#[test]
fn config_errors_are_clear() {
    assert!(matches!(Reactors::start(&cfg(0, IdlePolicy::default())), Err(ReactorError::NoCores)));
    let bad = ReactorConfig { cores: vec![0, 0], pin: false, idle: IdlePolicy::default() };
    assert!(matches!(Reactors::start(&bad), Err(ReactorError::DuplicateCore(0))));
    let far = ReactorConfig { cores: vec![4000], pin: true, idle: IdlePolicy::default() };
    assert!(matches!(Reactors::start(&far), Err(ReactorError::NoSuchCore { core: 4000, .. })));
    assert_eq!(ReactorConfig::from_mask(0b101).cores, vec![0, 2]);
}

#[test]
fn call_to_self_is_refused_not_deadlocked() {
    let r = Reactors::start(&cfg(1, IdlePolicy::default())).unwrap();
    let h = r.get(0).unwrap().clone();
    let res = r.get(0).unwrap().call(move |_| h.call(|_| 1).err().map(|e| e.to_string())).unwrap();
    assert_eq!(res.as_deref(), Some("reactor 0 cannot wait for a call to itself"));
}
