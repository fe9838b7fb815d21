//! End-to-end test of the driver on real (or QEMU-emulated) NVMe PCIe
//! controllers reached through VFIO (or, explicitly, without an IOMMU).
//!
//! usage: vfio_nvme_test [--mode vfio|uio] [BDF...]   (default: $TB_NVME_BDFS)
//! The mode may also come from VFIO_MODE (default vfio; uio = no IOMMU:
//! sysfs BAR mapping and physical addresses, chosen only explicitly).
//!
//! For every controller: bring-up and identify; write/read/verify patterns
//! across the namespace at sizes up to and beyond MDTS and at unaligned
//! buffer offsets; vectored I/O over odd segments (SGLs when offered);
//! several queue pairs from several threads; flush, deallocate, write
//! zeroes; log pages and features; an asynchronous event (temperature
//! threshold); a controller reset in the middle of I/O; the bdev backend
//! (with a bdev Reset mid-I/O); detach. Ends with "N passed, N failed".

use std::time::{Duration, Instant};

use nvme_pcie::nvme_spec::command::FeatureId;
use nvme_pcie::vfio::{AccessMode, PciDevice};
use nvme_pcie::{Controller, ControllerConfig, DeviceBacking, DmaBuffer, IoError, IoQueuePair, NamespaceInfo};

type Ctrl = Controller<PciDevice>;
type Qp = IoQueuePair<PciDevice>;
type R = Result<(), String>;
type Done = Vec<(u64, Result<(), IoError>)>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn fill(buf: &DmaBuffer, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; buf.len()];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
    let _ = buf.write_bytes(0, &v);
    v
}

fn contents(buf: &DmaBuffer) -> Vec<u8> {
    let mut v = vec![0u8; buf.len()];
    let _ = buf.read_bytes(0, &mut v);
    v
}

fn wait(q: &mut Qp, n: usize) -> Result<Done, String> {
    let mut out = Vec::with_capacity(n);
    let t0 = Instant::now();
    while out.len() < n {
        q.poll(&mut |t, r| out.push((t, r)));
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(format!("only {} of {n} completions after 120 s", out.len()));
        }
    }
    Ok(out)
}

fn all_ok(v: &[(u64, Result<(), IoError>)]) -> R {
    match v.iter().find(|x| x.1.is_err()) {
        Some((t, e)) => Err(format!("request {t} failed: {e:?}")),
        None => Ok(()),
    }
}

fn one(q: &mut Qp, f: impl FnOnce(&mut Qp) -> Result<(), nvme_pcie::SubmitError>) -> R {
    f(q).map_err(|e| format!("submit: {e}"))?;
    all_ok(&wait(q, 1)?)
}

fn write_read_verify(c: &Ctrl, q: &mut Qp, ns: &NamespaceInfo) -> R {
    let bs = ns.block_size as usize;
    let mdts = c.info().max_transfer;
    let sizes = [bs, 4096, 8192, 12288, 64 << 10, mdts, mdts + bs, 2 * mdts + 3 * bs, 1 << 20];
    let mut n = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let blocks = (size / bs) as u64;
        // Spread across the namespace: start, middle, end.
        for &lba in &[0, ns.blocks / 2 - blocks / 2, ns.blocks - blocks] {
            for &shift in &[0usize, 4, 512, 4092] {
                let mem = c.dma().alloc(size + shift).map_err(|e| e.to_string())?;
                let w = mem.slice(shift, size).ok_or("slice")?;
                let want = fill(&w, lba ^ (i as u64) << 32 ^ shift as u64);
                one(q, |q| q.write(ns.nsid, lba, &w, 1))?;
                let rmem = c.dma().alloc(size + 4096).map_err(|e| e.to_string())?;
                let r = rmem.slice(4096 - shift.min(4092), size).ok_or("slice")?;
                one(q, |q| q.read(ns.nsid, lba, &r, 2))?;
                if contents(&r) != want {
                    return Err(format!("data mismatch: size {size} lba {lba} shift {shift}"));
                }
                n += 1;
            }
        }
    }
    println!("    {n} write/read/verify rounds (sizes {bs} B .. 1 MiB, MDTS {mdts} B, 4 buffer alignments, start/middle/end)");
    Ok(())
}

/// Deterministic pseudo-random numbers for the segment lists.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Segments of dword-aligned odd offsets and lengths adding up to `total`.
fn odd_segments(c: &Ctrl, rng: &mut Lcg, total: usize, max_segs: usize) -> Result<Vec<DmaBuffer>, String> {
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        let len = if out.len() + 1 == max_segs { left } else { ((rng.next(24 << 10) as usize + 4) & !3).min(left) };
        let off = (rng.next(4096) as usize) & !3;
        let mem = c.dma().alloc(off + len).map_err(|e| e.to_string())?;
        out.push(mem.slice(off, len).ok_or("slice")?);
        left -= len;
    }
    Ok(out)
}

fn vectored(c: &Ctrl, q: &mut Qp, ns: &NamespaceInfo) -> R {
    if !q.uses_sgls() {
        println!("    controller offers no SGLs: vectored I/O with page-aligned inner boundaries only (PRPs)");
        let w = [c.dma().alloc(4096).map_err(|e| e.to_string())?, c.dma().alloc(8192).map_err(|e| e.to_string())?];
        fill(&w[0], 1);
        fill(&w[1], 2);
        return one(q, |q| q.writev(ns.nsid, 20_000, &w, 1));
    }
    let bs = ns.block_size as usize;
    let mdts = c.info().max_transfer;
    let mut rng = Lcg(0x5eed);
    let mut rounds = 0;
    for total in [bs, 8 * bs, 64 << 10, mdts + 3 * bs, 2 * mdts + bs] {
        for round in 0..4u64 {
            let lba = 30_000 + rng.next(ns.blocks / 2);
            let w = odd_segments(c, &mut rng, total, nvme_pcie::MAX_SEGMENTS)?;
            let mut want = Vec::with_capacity(total);
            for (k, s) in w.iter().enumerate() {
                want.extend(fill(s, lba ^ round << 20 ^ k as u64));
            }
            one(q, |q| q.writev(ns.nsid, lba, &w, 1))?;
            let r = c.dma().alloc(total).map_err(|e| e.to_string())?;
            one(q, |q| q.read(ns.nsid, lba, &r, 2))?;
            if contents(&r) != want {
                return Err(format!("SGL write / PRP read mismatch: {total} B in {} segments", w.len()));
            }
            let rs = odd_segments(c, &mut rng, total, nvme_pcie::MAX_SEGMENTS)?;
            one(q, |q| q.readv(ns.nsid, lba, &rs, 3))?;
            if rs.iter().flat_map(contents).collect::<Vec<u8>>() != want {
                return Err(format!("SGL read mismatch: {total} B in {} segments", rs.len()));
            }
            rounds += 1;
        }
    }
    println!(
        "    {rounds} SGL write + PRP read + SGL read rounds, up to {} segments of odd dword offsets/lengths, \
         {} SGL commands (sgls {:?})",
        nvme_pcie::MAX_SEGMENTS,
        q.stats().sgl_commands,
        c.info().sgl
    );
    if q.stats().sgl_commands == 0 {
        return Err("no SGL commands were sent".into());
    }
    Ok(())
}

/// Lower the composite temperature threshold below the current temperature:
/// the controller reports a SMART / health event, which the driver decodes
/// with the SMART log and records; then restore the threshold.
fn async_event(c: &Ctrl) -> R {
    use nvme_pcie::events::HealthEvent;
    use nvme_pcie::{AsyncEventKind, EventDetail};
    if c.info().async_event_requests == 0 {
        return Err("no asynchronous event requests outstanding".into());
    }
    let before = c.async_event_count();
    let old = c.get_features(FeatureId::TEMPERATURE_THRESHOLD, 0).map_err(|e| e.to_string())?;
    c.set_features(FeatureId::TEMPERATURE_THRESHOLD, 0x100).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut found = None;
    while found.is_none() && t0.elapsed() < Duration::from_secs(20) {
        found = c.async_events().into_iter().find(|e| e.seq > before);
        std::thread::sleep(Duration::from_millis(5));
    }
    c.set_features(FeatureId::TEMPERATURE_THRESHOLD, old & 0xffff).map_err(|e| e.to_string())?;
    let ev = found.ok_or("no event within 20 s")?;
    println!("    event after {:?}: {:?} log {:#04x} {:?}", t0.elapsed(), ev.kind, ev.log_page.0, ev.detail);
    if ev.kind != AsyncEventKind::Health(HealthEvent::TemperatureThreshold) {
        return Err(format!("unexpected event {:?}", ev.kind));
    }
    if !matches!(ev.detail, EventDetail::Health { critical_warning, .. } if critical_warning & 2 != 0) {
        return Err("SMART log does not show the temperature warning".into());
    }
    Ok(())
}

fn multi_thread(c: &Ctrl, ns: &NamespaceInfo) -> R {
    let threads = c.info().io_queues.clamp(1, 4) as u64;
    let bs = u64::from(ns.block_size);
    let per = 16 * 1024 / bs; // 16 KiB per request
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> R {
                    let mut q = c.create_io_queue_pair(64).map_err(|e| e.to_string())?;
                    let base = t * (ns.blocks / threads);
                    let bufs: Vec<DmaBuffer> = (0..48)
                        .map(|_| c.dma().alloc(16 << 10))
                        .collect::<Result<_, _>>()
                        .map_err(|e| e.to_string())?;
                    let wants: Vec<Vec<u8>> =
                        bufs.iter().enumerate().map(|(i, b)| fill(b, t << 40 | i as u64)).collect();
                    for (i, b) in bufs.iter().enumerate() {
                        q.write(ns.nsid, base + i as u64 * per, b, i as u64).map_err(|e| e.to_string())?;
                    }
                    all_ok(&wait(&mut q, bufs.len())?)?;
                    for b in &bufs {
                        b.fill(0, b.len(), 0).map_err(|e| e.to_string())?;
                    }
                    for (i, b) in bufs.iter().enumerate() {
                        q.read(ns.nsid, base + i as u64 * per, b, i as u64).map_err(|e| e.to_string())?;
                    }
                    all_ok(&wait(&mut q, bufs.len())?)?;
                    for (b, w) in bufs.iter().zip(&wants) {
                        if &contents(b) != w {
                            return Err(format!("thread {t}: mismatch"));
                        }
                    }
                    let st = q.stats();
                    if st.timeouts + st.fatal_resets + st.recoveries > 0 {
                        println!("    thread {t} queue {}: {st:?}", q.qid());
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
    })?;
    println!("    {threads} threads x 1 queue pair x 48 x 16 KiB writes + reads verified");
    Ok(())
}

fn zeroes_and_deallocate(c: &Ctrl, q: &mut Qp, ns: &NamespaceInfo) -> R {
    let bs = ns.block_size as usize;
    let buf = c.dma().alloc(64 * bs).map_err(|e| e.to_string())?;
    let want = fill(&buf, 99);
    let lba = 1000;
    one(q, |q| q.write(ns.nsid, lba, &buf, 1))?;
    one(q, |q| q.flush_ns(ns.nsid, 2))?;
    let oncs = c.info().oncs;
    let mut did = vec!["flush"];
    if oncs & nvme_pcie::nvme_spec::identify::oncs::WRITE_ZEROES != 0 {
        one(q, |q| q.write_zeroes(ns.nsid, lba, 8, 3))?;
        did.push("write-zeroes");
    }
    let dealloc = oncs & nvme_pcie::nvme_spec::identify::oncs::DATASET_MANAGEMENT != 0;
    if dealloc {
        one(q, |q| q.deallocate(ns.nsid, &[(lba + 32, 16)], 4))?;
        did.push("deallocate");
    }
    let r = c.dma().alloc(64 * bs).map_err(|e| e.to_string())?;
    one(q, |q| q.read(ns.nsid, lba, &r, 5))?;
    let got = contents(&r);
    if oncs & nvme_pcie::nvme_spec::identify::oncs::WRITE_ZEROES != 0 && got[..8 * bs].iter().any(|&b| b != 0) {
        return Err("write zeroes left data".into());
    }
    if got[8 * bs..32 * bs] != want[8 * bs..32 * bs] || got[48 * bs..] != want[48 * bs..] {
        return Err("data outside zeroed/deallocated ranges changed".into());
    }
    // Deallocate is advisory (the controller may keep the data), so only
    // report what the deallocated range reads as.
    let zeroed = got[32 * bs..48 * bs].iter().all(|&b| b == 0);
    let kept = got[32 * bs..48 * bs] == want[32 * bs..48 * bs];
    println!(
        "    {} ok (dlfeat {:#x}; deallocated range reads {})",
        did.join(", "),
        ns.dlfeat,
        if zeroed {
            "zeroes"
        } else if kept {
            "old data (hint not acted on)"
        } else {
            "other data"
        }
    );
    Ok(())
}

fn admin(c: &Ctrl) -> R {
    let smart = c.smart_log().map_err(|e| e.to_string())?;
    let fw = c.firmware_log().map_err(|e| e.to_string())?;
    let errs = c.error_log().map_err(|e| e.to_string())?;
    let nq = c.get_features(FeatureId::NUMBER_OF_QUEUES, 0).map_err(|e| e.to_string())?;
    let temp = c.get_features(FeatureId::TEMPERATURE_THRESHOLD, 0).map_err(|e| e.to_string())?;
    println!(
        "    smart: temp {} K, host reads {}, writes {}; fw slot {} rev {:?}; error log entries {}; \
         features: queues {nq:#x}, temp threshold {temp:#x}",
        smart.temperature.get(),
        smart.host_reads.get(),
        smart.host_writes.get(),
        fw.active_slot(),
        fw.revision(fw.active_slot()),
        errs.len()
    );
    Ok(())
}

fn reset_mid_io(c: &Ctrl, ns: &NamespaceInfo) -> R {
    let mut q = c.create_io_queue_pair(128).map_err(|e| e.to_string())?;
    let bufs: Vec<DmaBuffer> =
        (0..100).map(|_| c.dma().alloc(32 << 10)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let per = (32 << 10) / u64::from(ns.block_size);
    let wants: Vec<Vec<u8>> = bufs.iter().enumerate().map(|(i, b)| fill(b, 7 << 50 | i as u64)).collect();
    for (i, b) in bufs.iter().enumerate() {
        q.write(ns.nsid, 4096 + i as u64 * per, b, i as u64).map_err(|e| e.to_string())?;
    }
    q.flush(); // doorbell: commands now in flight
    let resets = c.reset_count();
    c.reset().map_err(|e| format!("reset: {e}"))?;
    let done = wait(&mut q, bufs.len())?;
    all_ok(&done)?;
    let rec = q.stats().recoveries;
    for b in &bufs {
        b.fill(0, b.len(), 0).map_err(|e| e.to_string())?;
    }
    for (i, b) in bufs.iter().enumerate() {
        q.read(ns.nsid, 4096 + i as u64 * per, b, i as u64).map_err(|e| e.to_string())?;
    }
    all_ok(&wait(&mut q, bufs.len())?)?;
    for (b, w) in bufs.iter().zip(&wants) {
        if &contents(b) != w {
            return Err("mismatch after reset".into());
        }
    }
    println!(
        "    reset with 100 x 32 KiB writes in flight: resets {} -> {}, queue recoveries {rec}, all data verified",
        resets,
        c.reset_count()
    );
    Ok(())
}

fn qd_throughput(c: &Ctrl, ns: &NamespaceInfo) -> R {
    let mut q = c.create_io_queue_pair(129).map_err(|e| e.to_string())?;
    let bufs: Vec<DmaBuffer> =
        (0..128).map(|_| c.dma().alloc(4096)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let per = 4096 / u64::from(ns.block_size);
    let n = 20_000u64;
    let t0 = Instant::now();
    let mut issued = 0u64;
    let mut done = 0u64;
    for i in 0..128u64 {
        q.read(ns.nsid, (i * per) % (ns.blocks - per), &bufs[i as usize], i).map_err(|e| e.to_string())?;
        issued += 1;
    }
    let mut free = Vec::new();
    let mut err = None;
    while done < n {
        q.poll(&mut |t, r| {
            if let Err(e) = r {
                err = Some(e);
            }
            free.push(t);
        });
        done += free.len() as u64;
        for t in free.drain(..) {
            if issued < n {
                let lba = (issued.wrapping_mul(2654435761) % (ns.blocks / per - 1)) * per;
                q.read(ns.nsid, lba, &bufs[t as usize], t).map_err(|e| e.to_string())?;
                issued += 1;
            }
        }
    }
    if let Some(e) = err {
        return Err(format!("read failed: {e:?}"));
    }
    let s = t0.elapsed().as_secs_f64();
    println!("    QD128 4 KiB random reads: {n} in {s:.2} s = {:.0} IOPS (QEMU-emulated device)", n as f64 / s);
    Ok(())
}

fn bdev_stage(c: Ctrl, bdf: &str) -> R {
    use bdev::{DmaBuf, IoRequest, IoStatus, IoType, IoVecs, Registry};
    let params =
        nvme_pcie::nvme_bdev::NvmeBdevParams { prefix: "nvme0".into(), queue_depth: 128, traddr: bdf.to_string() };
    let reg = Registry::new();
    for b in nvme_pcie::nvme_bdev::attach(c, &params).map_err(|e| e.to_string())? {
        reg.register(b).map_err(|e| e.to_string())?;
    }
    let info = reg.list().into_iter().next().ok_or("no bdev")?;
    println!(
        "    bdev {} ({} x {} B) uuid {} ns_id {:?}; buffers on hugepages: {:?}",
        info.name,
        info.num_blocks,
        info.block_size,
        info.uuid,
        info.ns_id,
        bdev::dma::uses_hugepages()
    );
    let d = reg.open(&info.name, true).map_err(|e| e.to_string())?;
    let mut ch = d.channel().map_err(|e| e.to_string())?;
    let mut run = |io: IoRequest| -> Result<IoStatus, String> {
        ch.submit(&io).map_err(|e| e.to_string())?;
        let mut st = IoStatus::Invalid;
        if !ch.drain(Duration::from_secs(60), &mut |_, s| st = s) {
            return Err("bdev io did not complete".into());
        }
        Ok(st)
    };
    let bs = u64::from(info.block_size);
    let mut w = DmaBuf::alloc(256 << 10).map_err(|e| e.to_string())?;
    for (i, x) in w.as_mut_slice().iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(13).wrapping_add(5);
    }
    let blocks = (256 << 10) / bs;
    let lba = 100_000;
    if run(IoRequest::write(lba, blocks, IoVecs::single(w.iovec()), 1))? != IoStatus::Success {
        return Err("bdev write failed".into());
    }
    let mut a = DmaBuf::zeroed(64 << 10).map_err(|e| e.to_string())?;
    let mut b = DmaBuf::zeroed(192 << 10).map_err(|e| e.to_string())?;
    let mut iovs = IoVecs::single(a.iovec());
    iovs.push(b.iovec());
    if run(IoRequest::read(lba, blocks, iovs, 2))? != IoStatus::Success {
        return Err("bdev read failed".into());
    }
    if a.as_slice() != &w.as_slice()[..64 << 10] || b.as_slice() != &w.as_slice()[64 << 10..] {
        return Err("bdev data mismatch".into());
    }
    // Unaligned segments (SGL when offered, else bounced).
    let mut c1 = DmaBuf::zeroed(4096).map_err(|e| e.to_string())?;
    let mut c2 = DmaBuf::zeroed(4096).map_err(|e| e.to_string())?;
    let mut iovs = IoVecs::single(c1.iovec_range(512, 1024).ok_or("iov")?);
    iovs.push(c2.iovec_range(1000, 512).ok_or("iov")?);
    if run(IoRequest::read(lba, 1536 / bs, iovs, 3))? != IoStatus::Success
        || c1.as_slice()[512..1536] != w.as_slice()[..1024]
        || c2.as_slice()[1000..1512] != w.as_slice()[1024..1536]
    {
        return Err("unaligned-segment bdev read failed".into());
    }
    for t in [IoType::Flush, IoType::WriteZeroes, IoType::Unmap] {
        if info.supported.contains(t) && run(IoRequest::no_data(t, lba, 8, 4))? != IoStatus::Success {
            return Err(format!("bdev {} failed", t.name()));
        }
    }
    // A bdev Reset with reads in flight: all of them and the Reset succeed.
    let mut rbufs: Vec<DmaBuf> =
        (0..32).map(|_| DmaBuf::zeroed(16 << 10)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    for (i, b) in rbufs.iter_mut().enumerate() {
        let io = IoRequest::read(
            lba + ((64 << 10) + (i as u64 % 8) * (16 << 10)) / bs,
            (16 << 10) / bs,
            IoVecs::single(b.iovec()),
            10 + i as u64,
        );
        ch.submit(&io).map_err(|e| e.to_string())?;
    }
    ch.submit(&IoRequest::no_data(IoType::Reset, 0, 0, 99)).map_err(|e| e.to_string())?;
    let mut sts = Vec::new();
    if !ch.drain(Duration::from_secs(60), &mut |t, s| sts.push((t, s))) {
        return Err("bdev reset: I/O did not complete".into());
    }
    if sts.len() != 33 || sts.iter().any(|x| x.1 != IoStatus::Success) {
        return Err(format!("bdev reset mid-I/O: {sts:?}"));
    }
    for (i, b) in rbufs.iter().enumerate() {
        let at = (64 << 10) + (i % 8) * (16 << 10);
        if b.as_slice() != &w.as_slice()[at..at + (16 << 10)] {
            return Err(format!("bdev read {i} around the reset: data mismatch"));
        }
    }
    println!("    bdev Reset with 32 reads in flight: all succeeded, data verified");
    let st = d.stats();
    println!("    bdev ops by type (read, write, flush, unmap, write_zeroes, reset): {:?}", st.ops);
    drop(ch);
    Ok(())
}

fn run_controller(bdf: &str, mode: AccessMode, pass: &mut u32, fail: &mut u32) {
    let mut check = |name: &str, r: R| match r {
        Ok(()) => {
            println!("  PASS {name}");
            *pass += 1;
        }
        Err(e) => {
            println!("  FAIL {name}: {e}");
            *fail += 1;
        }
    };
    let dev = match PciDevice::open(bdf, mode) {
        Ok(d) => d,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg += &format!(": {s}");
                src = s.source();
            }
            return check("open", Err(msg));
        }
    };
    println!("{bdf}: opened ({mode:?}), dma {:?}", dev.dma());
    let cfg = ControllerConfig { io_queues: 8, io_timeout: Duration::from_secs(30), ..Default::default() };
    let t0 = Instant::now();
    let c = match Controller::new(dev, cfg) {
        Ok(c) => c,
        Err(e) => return check("bring-up", Err(e.to_string())),
    };
    let i = c.info();
    println!(
        "  controller: vid {:#06x} model {:?} serial {:?} fw {:?} nvme {}.{}.{}; mqes {} dstrd {} B; \
         mdts {:?} B; io queues {}; shadow doorbells {}; oncs {:#x}; sgls {:?}; oaes {:#x}; AERs out {}; \
         bring-up {:?}",
        i.vid,
        i.model,
        i.serial,
        i.firmware,
        i.version.0,
        i.version.1,
        i.version.2,
        i.max_queue_entries,
        i.doorbell_stride,
        i.mdts_bytes,
        i.io_queues,
        i.shadow_doorbells,
        i.oncs,
        i.sgl,
        i.oaes,
        i.async_event_requests,
        t0.elapsed()
    );
    for ns in c.namespaces() {
        println!(
            "  nsid {}: {} blocks x {} B (ms {}), nguid {} eui64 {} uuid {}",
            ns.nsid,
            ns.blocks,
            ns.block_size,
            ns.metadata_size,
            hex(&ns.nguid),
            hex(&ns.eui64),
            ns.uuid.map(|u| hex(&u)).unwrap_or_default()
        );
    }
    check("bring-up and identify", if c.namespaces().is_empty() { Err("no namespaces".into()) } else { Ok(()) });
    let Some(ns) = c.namespaces().first().cloned() else {
        return;
    };
    let mut q = match c.create_io_queue_pair(256) {
        Ok(q) => q,
        Err(e) => return check("create queue pair", Err(e.to_string())),
    };
    let raw = c.dma().alloc(4096).ok();
    if let Some(raw) = &raw {
        let sqe = nvme_pcie::nvme_spec::AdminCommand::identify(
            nvme_pcie::nvme_spec::command::Cns::NamespaceDescriptorList,
            ns.nsid,
        )
        .to_sqe(0);
        match c.admin_command(sqe, Some(raw)) {
            Ok(_) => {
                let b = contents(raw);
                let descs = nvme_pcie::nvme_spec::identify::NsDescriptor::parse_list(&b);
                println!("  ns descriptors: {descs:?}");
            }
            Err(e) => println!("  ns descriptors: {e}"),
        }
    }
    check("write/read/verify across namespace, sizes up to and beyond MDTS", write_read_verify(&c, &mut q, &ns));
    check("vectored I/O over odd segments (SGLs)", vectored(&c, &mut q, &ns));
    if c.reset_count() > 0 {
        println!("    (controller resets so far: {})", c.reset_count());
    }
    check("flush, write zeroes, deallocate", zeroes_and_deallocate(&c, &mut q, &ns));
    if c.reset_count() > 0 {
        println!("    (controller resets so far: {})", c.reset_count());
    }
    drop(q);
    check("several queue pairs from several threads", multi_thread(&c, &ns));
    if c.reset_count() > 0 {
        println!("    (controller resets so far: {})", c.reset_count());
    }
    check("log pages and features", admin(&c));
    check("asynchronous event: temperature threshold", async_event(&c));
    if c.reset_count() > 0 {
        println!("    (controller resets so far: {})", c.reset_count());
    }
    check("controller reset mid-I/O", reset_mid_io(&c, &ns));
    check("QD128 throughput", qd_throughput(&c, &ns));
    println!("  controller resets: {} (1 expected: the explicit one)", c.reset_count());
    check("nvme bdev backend over this controller", bdev_stage(c, bdf));
    println!("  detached");
}

/// Every controller attached at the same time, each driven by its own
/// thread, then all detached.
fn all_at_once(bdfs: &[String], mode: AccessMode) -> R {
    let ctrls: Vec<Ctrl> = bdfs
        .iter()
        .map(|b| {
            let dev = PciDevice::open(b, mode).map_err(|e| e.to_string())?;
            Controller::new(dev, ControllerConfig::default()).map_err(|e| e.to_string())
        })
        .collect::<Result<_, String>>()?;
    std::thread::scope(|s| {
        let hs: Vec<_> = ctrls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                s.spawn(move || -> R {
                    let ns = c.namespaces().first().ok_or("no namespace")?.clone();
                    let mut q = c.create_io_queue_pair(32).map_err(|e| e.to_string())?;
                    let w = c.dma().alloc(128 << 10).map_err(|e| e.to_string())?;
                    let want = fill(&w, 1000 + i as u64);
                    for k in 0..16u64 {
                        one(&mut q, |q| q.write(ns.nsid, 50_000 + k * 256, &w, k))?;
                    }
                    let r = c.dma().alloc(128 << 10).map_err(|e| e.to_string())?;
                    for k in 0..16u64 {
                        one(&mut q, |q| q.read(ns.nsid, 50_000 + k * 256, &r, k))?;
                        if contents(&r) != want {
                            return Err(format!("controller {i}: mismatch"));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut mode_s = std::env::var("VFIO_MODE").unwrap_or_else(|_| "vfio".into());
    if let Some(i) = args.iter().position(|a| a == "--mode") {
        if let Some(m) = args.get(i + 1) {
            mode_s = m.clone();
        }
        args.drain(i..(i + 2).min(args.len()));
    }
    let Some(mode) = AccessMode::parse(&mode_s) else {
        eprintln!("unknown VFIO_MODE {mode_s:?} (vfio or uio)");
        std::process::exit(2);
    };
    let mut bdfs = args;
    if bdfs.is_empty() {
        bdfs = std::env::var("TB_NVME_BDFS").unwrap_or_default().split_whitespace().map(String::from).collect();
    }
    if bdfs.is_empty() {
        eprintln!("no devices: pass PCI addresses or set TB_NVME_BDFS");
        std::process::exit(2);
    }
    let (mut pass, mut fail) = (0, 0);
    for b in &bdfs {
        run_controller(b, mode, &mut pass, &mut fail);
    }
    if bdfs.len() > 1 {
        match all_at_once(&bdfs, mode) {
            Ok(()) => {
                println!("PASS all controllers attached at once, I/O on each from its own thread");
                pass += 1;
            }
            Err(e) => {
                println!("FAIL all controllers at once: {e}");
                fail += 1;
            }
        }
    }
    println!("{pass} passed, {fail} failed");
    std::process::exit(if fail == 0 { 0 } else { 1 });
}
