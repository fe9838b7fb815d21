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

#[test]
fn parked_reactor_wakes_on_a_watched_socket() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    // Parks for up to a minute at a time: only the socket can wake it.
    let park = Duration::from_secs(60);
    let r =
        Reactors::start(&cfg(1, IdlePolicy::Adaptive { spin: Duration::from_micros(50), max_sleep: park })).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    // An echo poller on the reactor, watching its socket.
    let served = Arc::new(AtomicU64::new(0));
    let s2 = served.clone();
    // Parks counted so far; each message and each ping wakes the reactor,
    // so another park follows.
    let mut parks = r.get(0).unwrap().counters().1;
    let watched = r
        .get(0)
        .unwrap()
        .call(move |ctx| {
            ctx.watch_fd(&server);
            let mut server = server;
            ctx.add_poller("echo", move |_| {
                let mut b = [0u8; 64];
                match server.read(&mut b) {
                    Ok(n) if n > 0 => {
                        s2.fetch_add(1, Ordering::Relaxed);
                        server.write_all(&b[..n]).unwrap();
                        PollStatus::Busy
                    }
                    _ => PollStatus::Idle,
                }
            });
            ctx.watched_fds()
        })
        .unwrap();
    assert_eq!(watched, 1);
    for round in 0..3 {
        // Wait until the reactor has parked again.
        let t0 = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let (_, p) = r.get(0).unwrap().counters();
            if p > parks {
                parks = p;
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "reactor never parked");
        }
        let t0 = Instant::now();
        client.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client.read_exact(&mut back).unwrap();
        let took = t0.elapsed();
        assert_eq!(&back, b"ping");
        assert_eq!(served.load(Ordering::Relaxed), round + 1);
        // Far below the park timeout: the socket woke the reactor.
        assert!(took < Duration::from_secs(5), "served after {took:?}");
    }
}

#[test]
fn unwatched_descriptors_do_not_wake_a_parked_reactor() {
    let r = Reactors::start(&cfg(
        1,
        IdlePolicy::Adaptive { spin: Duration::from_micros(50), max_sleep: Duration::from_millis(20) },
    ))
    .unwrap();
    let n = r
        .get(0)
        .unwrap()
        .call(|ctx| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let w = ctx.watch_fd(&l);
            let w2 = ctx.watch_fd(&l);
            ctx.unwatch_fd(w);
            let after_one = ctx.watched_fds();
            ctx.unwatch_fd(w2);
            (after_one, ctx.watched_fds())
        })
        .unwrap();
    assert_eq!(n, (1, 0));
}
