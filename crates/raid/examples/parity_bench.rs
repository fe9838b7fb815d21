//! Single-core parity throughput per backend, against memcpy of the same
//! bytes.
//!
//! `cargo run --release -p xbdev-raid --example parity_bench [block_kib...]`
//!
//! For each block size (default 64 KiB, in cache, and 4 MiB, from memory)
//! and backend it prints GB/s of *data* processed (4 data blocks per
//! operation):
//! * `xor 4+1`: P of 4 data blocks (raid5 full-stripe write);
//! * `pq 4+2`: P and Q of 4 data blocks (raid6 full-stripe write);
//! * `rec 2data`: two lost data blocks from the rest plus P and Q;
//! * `rec data+p`: one lost data block and P from Q;
//! * `memcpy`: copying the 4 data blocks.

use std::hint::black_box;
use std::time::{Duration, Instant};

use raid::parity::{Backend, Parity};

const DATA: usize = 4;

fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs `f` repeatedly for at least `min` and returns GB/s for `bytes`
/// per call.
fn rate(bytes: usize, min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < min {
        for _ in 0..8 {
            f();
        }
        calls += 8;
    }
    (bytes as f64 * calls as f64) / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let sizes: Vec<usize> =
        std::env::args().skip(1).filter_map(|a| a.parse::<usize>().ok()).map(|kib| kib * 1024).collect();
    let sizes = if sizes.is_empty() { vec![64 * 1024, 4 * 1024 * 1024] } else { sizes };
    let min = Duration::from_millis(400);
    println!("best backend: {}", Backend::best().name());
    for &len in &sizes {
        let data: Vec<Vec<u8>> = (0..DATA as u64).map(|s| fill(s + 1, len)).collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let bytes = DATA * len;
        println!("\nblock {} KiB, {} data blocks, GB/s of data per core", len / 1024, DATA);
        let mut copies: Vec<Vec<u8>> = vec![vec![0u8; len]; DATA];
        let memcpy = rate(bytes, min, || {
            for (d, s) in copies.iter_mut().zip(&refs) {
                d.copy_from_slice(s);
            }
            black_box(&mut copies);
        });
        println!("{:>10} {:>9} {:>9} {:>10} {:>11}", "backend", "xor 4+1", "pq 4+2", "rec 2data", "rec data+p");
        for backend in Backend::supported() {
            let Ok(e) = Parity::with_backend(backend) else {
                continue;
            };
            let mut p = vec![0u8; len];
            let mut q = vec![0u8; len];
            let xor = rate(bytes, min, || {
                e.xor(black_box(&mut p), black_box(&refs)).unwrap_or(());
            });
            let pq = rate(bytes, min, || {
                e.gen_pq(black_box(&refs), &mut p, &mut q).unwrap_or(());
            });
            e.gen_pq(&refs, &mut p, &mut q).unwrap_or(());
            let mut dx = vec![0u8; len];
            let mut dy = vec![0u8; len];
            let rec2 = rate(bytes, min, || {
                e.recover_two_data(black_box(&refs), 1, 3, &p, &q, &mut dx, &mut dy).unwrap_or(());
            });
            let ok2 = dx == data[1] && dy == data[3];
            let mut pp = vec![0u8; len];
            let recq = rate(bytes, min, || {
                e.recover_data_from_q(black_box(&refs), 2, &q, &mut dx, &mut pp).unwrap_or(());
            });
            let okq = dx == data[2] && pp == p;
            println!(
                "{:>10} {:>9.2} {:>9.2} {:>10.2} {:>11.2}{}",
                backend.name(),
                xor,
                pq,
                rec2,
                recq,
                if ok2 && okq { "" } else { "  RECOVERY MISMATCH" }
            );
        }
        println!("{:>10} {:>9.2}", "memcpy", memcpy);
    }
}
