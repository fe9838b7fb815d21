//! Benchmark 4 of issue 2: IOPS through the synchronous and asynchronous xbdev API from 1 and
//! 4 application threads to a null bdev, i.e. the cost of the client queue per IO.
//!
//! `cargo run --release --example client_api_bench [seconds]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xbdev::bdev::{DmaBuf, IoStatus};
use xbdev::{Config, Xbdev};

fn run(xb: &Arc<Xbdev>, threads: usize, asynchronous: bool, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let xb = xb.clone();
            let stop = stop.clone();
            let total = total.clone();
            std::thread::spawn(move || {
                let h = xb.open("Null0", true).expect("open");
                let mut n = 0u64;
                if asynchronous {
                    let qd = 128;
                    let mut q = xb.io_queue(qd).expect("queue");
                    for i in 0..qd as u64 {
                        let b = DmaBuf::alloc(4096).expect("buf");
                        q.read(&h, b, ((t as u64 * 1000 + i) % 200_000) * 4096, i).map_err(|e| e.0).expect("read");
                    }
                    q.submit();
                    let mut again = Vec::with_capacity(qd);
                    while !stop.load(Ordering::Relaxed) {
                        q.poll(qd, Duration::from_millis(100), &mut |c| {
                            assert_eq!(c.status, IoStatus::Success);
                            again.push((c.user, c.buf.expect("buffer back")));
                        });
                        for (u, b) in again.drain(..) {
                            n += 1;
                            let off = ((u.wrapping_mul(2654435761) + n) % 200_000) * 4096;
                            q.read(&h, b, off, u).map_err(|e| e.0).expect("read");
                        }
                        q.submit();
                    }
                    while q.in_flight() > 0 {
                        q.poll(usize::MAX, Duration::from_secs(1), &mut |_| {});
                    }
                } else {
                    let mut b = DmaBuf::alloc(4096).expect("buf");
                    while !stop.load(Ordering::Relaxed) {
                        h.read(b.as_mut_slice(), (n % 200_000) * 4096).expect("read");
                        n += 1;
                    }
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().expect("thread");
    }
    total.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let cfg = Config::from_json_str(
        r#"{"reactor": {"cores": [0], "idle": "adaptive", "pin": false},
            "base_devices": [{"method": "null", "params": {"name": "Null0", "num_blocks": 262144,
                              "block_size": 4096, "zero_reads": false}}]}"#,
    )
    .expect("config");
    let xb = Arc::new(Xbdev::start(&cfg).expect("start"));
    println!("client API to a null bdev (4 KiB reads, one reactor, adaptive idle):");
    for (asy, name) in [(false, "sync "), (true, "async qd128")] {
        for threads in [1, 4] {
            let iops = run(&xb, threads, asy, secs);
            println!("  {name:<12} {threads} thread(s): {iops:>12.0} IOPS  {:>8.0} ns per IO", 1e9 / iops);
        }
    }
    xb.stop();
}
