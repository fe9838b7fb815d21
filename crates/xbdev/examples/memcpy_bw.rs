//! The memcpy anchor for the malloc benchmarks: bandwidth of copying IO-size blocks to random
//! (or sequential) places in a 1 GiB region, the access pattern of a malloc bdev.
//!
//! `cargo run --release --example memcpy_bw [io_size_bytes] [random|seq]`

use std::time::{Duration, Instant};
use xbdev::bdev::{rand, DmaBuf};

fn main() {
    let io: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let random = std::env::args().nth(2).as_deref() != Some("seq");
    let mut region = DmaBuf::zeroed(1 << 30).expect("1 GiB");
    let src = DmaBuf::zeroed(io).expect("src");
    let slots = (1usize << 30) / io;
    let mut s = rand::seed();
    let mut n = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        for _ in 0..1024 {
            let i = if random { (rand::next(&mut s) as usize) % slots } else { (n as usize) % slots };
            region.as_mut_slice()[i * io..(i + 1) * io].copy_from_slice(src.as_slice());
            n += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "memcpy {} B {}: {:.0} copies/s, {:.2} GB/s",
        io,
        if random { "random" } else { "sequential" },
        n as f64 / secs,
        n as f64 * io as f64 / secs / 1e9
    );
}
