//! CPU cost per I/O of the driver (submit + complete), at a fixed queue
//! depth, against the in-memory emulated controller (inline processing).
//!
//! The emulator executes commands synchronously inside the SQ doorbell write
//! and times itself; that time (command decoding, PRP walking, the data copy,
//! posting completions, and its own clock reads) is reported separately and
//! subtracted. "driver" is therefore everything else on the single thread:
//! building and writing SQEs and PRPs, doorbells, reaping CQEs, CID and
//! buffer bookkeeping, and this benchmark's own loop and callback.
//!
//! With `--segs N` every I/O is N separately allocated segments of bs/N
//! bytes (readv/writev): SGLs by default, PRPs with `--no-sgl` (then bs/N
//! must be a multiple of 4096).
//!
//! usage: emu_bench [--qd 128] [--ios 2000000] [--bs 4096] [--op read|write|flush] [--no-shadow]
//!                  [--segs 1] [--no-sgl]

use std::time::Instant;

use nvme_pcie::emu::{EmuConfig, EmuNamespace, Emulator};
use nvme_pcie::{Controller, ControllerConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let qd: u16 = arg(&args, "--qd", 128);
    let ios: u64 = arg(&args, "--ios", 2_000_000);
    let bs: usize = arg(&args, "--bs", 4096);
    let op: String = arg(&args, "--op", "read".to_string());
    let shadow = !args.iter().any(|a| a == "--no-shadow");
    let sgl = !args.iter().any(|a| a == "--no-sgl");
    let segs: usize = arg(&args, "--segs", 1usize).clamp(1, nvme_pcie::MAX_SEGMENTS);
    let cfg = EmuConfig {
        namespaces: vec![EmuNamespace::new(64 << 20, 512, 1)],
        doorbell_buffer: shadow,
        max_queue_entries: 4096,
        ..EmuConfig::default()
    };
    let emu = Emulator::new("bench", cfg);
    let h = emu.handle();
    let c = Controller::new(emu, ControllerConfig { sgl, ..ControllerConfig::default() })?;
    let depth = qd.checked_add(1).ok_or("queue depth too large")?;
    let mut q = c.create_io_queue_pair(depth)?;
    let blocks_per_io = (bs / 512) as u64;
    let span = (64u64 << 20) / 512 / blocks_per_io;
    let bufs: Vec<_> = (0..qd).map(|_| c.dma().alloc(bs)).collect::<Result<_, _>>()?;
    let seg_len = bs / segs;
    let vbufs: Vec<Vec<_>> = (0..qd)
        .map(|_| (0..segs).map(|_| c.dma().alloc(seg_len)).collect::<Result<Vec<_>, _>>())
        .collect::<Result<_, _>>()?;

    let submit = |q: &mut nvme_pcie::IoQueuePair<Emulator>, i: u64, slot: u64| {
        let lba = (i.wrapping_mul(0x9e37_79b9) % span) * blocks_per_io;
        let b = &bufs[slot as usize];
        let v = &vbufs[slot as usize];
        match op.as_str() {
            "write" if segs > 1 => q.writev(1, lba, v, slot),
            "write" => q.write(1, lba, b, slot),
            "flush" => q.flush_ns(1, slot),
            _ if segs > 1 => q.readv(1, lba, v, slot),
            _ => q.read(1, lba, b, slot),
        }
    };

    // Warm up, then measure.
    for round in 0..2 {
        let n = if round == 0 { ios / 10 } else { ios };
        let e0 = h.stats();
        let t0 = Instant::now();
        let mut issued = 0u64;
        let mut done = 0u64;
        let mut errors = 0u64;
        for slot in 0..u64::from(qd) {
            submit(&mut q, issued, slot)?;
            issued += 1;
        }
        let mut free: Vec<u64> = Vec::with_capacity(usize::from(qd));
        while done < n {
            q.poll(&mut |tag, r| {
                if r.is_err() {
                    errors += 1;
                }
                free.push(tag);
            });
            done += free.len() as u64;
            for slot in free.drain(..) {
                if issued < n {
                    submit(&mut q, issued, slot)?;
                    issued += 1;
                }
            }
        }
        let total = t0.elapsed().as_nanos() as f64;
        let e1 = h.stats();
        let emu_ns = (e1.busy_ns - e0.busy_ns) as f64;
        if round == 1 {
            let s = q.stats();
            println!(
                "op={op} bs={bs} qd={qd} ios={n} shadow_doorbells={} segs={segs} sgl_commands={}",
                c.info().shadow_doorbells,
                s.sgl_commands
            );
            println!(
                "total {:.1} ns/io = emulator {:.1} ns/io + driver {:.1} ns/io (submit+complete, incl. bench loop)",
                total / n as f64,
                emu_ns / n as f64,
                (total - emu_ns) / n as f64
            );
            println!(
                "ios/doorbell {:.1}; sq mmio {} cq mmio {} skipped {}; errors {errors}",
                n as f64 / (e1.doorbell_writes - e0.doorbell_writes).max(1) as f64,
                s.sq_doorbells,
                s.cq_doorbells,
                s.doorbells_skipped
            );
        }
    }
    Ok(())
}
