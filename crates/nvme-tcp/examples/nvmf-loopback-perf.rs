//! Throughput of the nvmf bdev against our own target over loopback TCP:
//! one channel (one I/O queue), fixed queue depth, prints IOPS and MiB/s.
//!
//! usage: nvmf-loopback-perf [SECONDS] [QUEUE_DEPTH] [--digests]

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, DmaBuf, IoRequest, IoVecs, Registry};
use nvme_tcp::initiator::ConnectOpts;
use nvme_tcp::nvmf::NvmfController;
use nvme_tcp::target::{SubsystemConfig, Target, TargetConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let qd: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let digests = args.iter().any(|a| a == "--digests");
    let nqn = "nqn.2024-01.io.xbdev:perf";
    let m: Arc<dyn Bdev> =
        Arc::new(MallocBdev::new(MallocParams { name: "m".into(), num_blocks: 1 << 18, block_size: 512 })?);
    let t = Target::start(TargetConfig::new(vec!["127.0.0.1:0".parse()?], vec![SubsystemConfig::new(nqn, vec![m])]))?;
    let mut o = ConnectOpts::new(t.addrs()[0], nqn);
    o.hdgst = digests;
    o.ddgst = digests;
    o.io_queue_depth = (qd as u16).max(2) + 1;
    let c = NvmfController::connect("perf", o)?;
    let b: Arc<dyn Bdev> = c.bdevs().remove(0);
    let reg = Registry::new();
    reg.register(b)?;
    let desc = reg.open("perfn1", true)?;
    let mut ch = desc.channel()?;
    for (name, io_len, write) in [
        ("4k randread", 4096usize, false),
        ("4k randwrite", 4096, true),
        ("128k write", 128 << 10, true),
        ("128k read", 128 << 10, false),
    ] {
        let mut bufs: Vec<DmaBuf> = (0..qd).map(|_| DmaBuf::zeroed(io_len)).collect::<Result<_, _>>()?;
        let blocks = (io_len / 512) as u64;
        let span = (1u64 << 18) / blocks;
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next_lba = |i: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if io_len == 4096 {
                (seed % span) * blocks
            } else {
                (i % span) * blocks
            }
        };
        let mut done = 0u64;
        let mut issued = 0u64;
        let mk = |i: usize, lba: u64, bufs: &mut Vec<DmaBuf>| {
            let v = IoVecs::single(bufs[i].iovec());
            if write {
                IoRequest::write(lba, blocks, v, i as u64)
            } else {
                IoRequest::read(lba, blocks, v, i as u64)
            }
        };
        for i in 0..qd {
            let r = mk(i, next_lba(issued), &mut bufs);
            ch.submit(&r).map_err(|e| format!("{e}"))?;
            issued += 1;
        }
        let t0 = Instant::now();
        let mut free = Vec::with_capacity(qd);
        while t0.elapsed() < Duration::from_secs(secs) {
            ch.poll(&mut |tag, st| {
                assert!(st.is_ok(), "io failed: {st}");
                free.push(tag as usize);
            });
            for i in free.drain(..) {
                done += 1;
                let r = mk(i, next_lba(issued), &mut bufs);
                if ch.submit(&r).is_ok() {
                    issued += 1;
                }
            }
        }
        let el = t0.elapsed().as_secs_f64();
        ch.drain(Duration::from_secs(10), &mut |_, _| {});
        println!(
            "{name:>13} qd {qd}{}: {:>9.0} IOPS {:>8.1} MiB/s",
            if digests { " digests" } else { "" },
            done as f64 / el,
            done as f64 * io_len as f64 / el / (1 << 20) as f64
        );
    }
    drop(ch);
    drop(desc);
    let _ = reg.unregister("perfn1");
    c.detach();
    t.stop();
    Ok(())
}
