//! The seed design's experiments (section 4), in process: four paths to one namespace (a null
//! bdev, so no memory copies), each behind a bandwidth-limited link (a FIFO link model standing
//! in for `tc` limits on NVMe/TCP connections), driven by one reactor-like loop at queue depth
//! 128 with 4 KiB random reads and writes (50/50), as the seed's
//! `fio -rw=randrw -bs=4k -iodepth=128`. Rates are a fifth of the seed's (same ratios) so one
//! core drives them with room to spare.
//!
//! 1. Aggregation (4.2): one 2 MB/s path against four.
//! 2. Failover and failback (4.3): four 2 MB/s paths, path 1 down for the middle third of the
//!    run, per-interval throughput.
//! 3. Load balancing (4.4): links of 0.2, 0.2, 20 and 20 MB/s, every policy.
//! 4. Overhead: a multipath bdev over one null path against the null bdev itself.
//!
//! Run: `cargo run --release -p xbdev-multipath --example seed_experiments [seconds-per-run]`
//! (`MP_RATES=1,1,100,100 MP_POLICY=hash` runs one custom case; `MP_DEBUG=1` prints path
//! states during the failover run).

use bdev::backends::null::{NullBdev, NullParams};
use bdev::backends::port::PortBdev;
use bdev::*;
use multipath::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: u32 = 512;
const IO_BLOCKS: u64 = 8;
const QD: usize = 128;

/// A link that moves `rate` bytes per second, one IO after another.
struct Link {
    ns_per_byte: f64,
    free_at: AtomicU64,
}

/// A bdev behind a bandwidth-limited link: each IO completes when the link has carried it.
struct LinkBdev {
    info: BdevInfo,
    base: Desc,
    link: Arc<Link>,
}

struct LinkChannel {
    base: BdevChannel,
    link: Arc<Link>,
    due: Vec<(u64, u64)>,
    held: VecDeque<(u64, u64, IoStatus)>,
}

impl Bdev for LinkBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }
    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(LinkChannel {
            base: self.base.channel()?,
            link: self.link.clone(),
            due: Vec::new(),
            held: VecDeque::new(),
        }))
    }
}

impl IoChannel for LinkChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        self.base.submit(io)?;
        let now = clock::instant_ns();
        let cost = ((io.num_blocks * BS as u64).max(64) as f64 * self.link.ns_per_byte) as u64;
        let start = self.link.free_at.load(Ordering::Relaxed).max(now);
        self.link.free_at.store(start + cost, Ordering::Relaxed);
        self.due.push((io.tag, start + cost));
        Ok(())
    }
    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let LinkChannel { base, due, held, .. } = self;
        base.poll(&mut |tag, st| {
            let at = match due.iter().position(|(t, _)| *t == tag) {
                Some(i) => due.swap_remove(i).1,
                None => 0,
            };
            held.push_back((at, tag, st));
        });
        let now = clock::instant_ns();
        let mut n = 0;
        let mut i = 0;
        while i < held.len() {
            if held[i].0 <= now {
                if let Some((_, tag, st)) = held.remove(i) {
                    done(tag, st);
                    n += 1;
                }
            } else {
                i += 1;
            }
        }
        n
    }
    fn in_flight(&self) -> usize {
        self.base.in_flight() + self.held.len()
    }
}

struct Setup {
    reg: Arc<Registry>,
    ports: Vec<Arc<PortBdev>>,
    links: Vec<Arc<Link>>,
    dev: Arc<MultipathBdev>,
}

fn setup(rates_mb: &[f64], options: MultipathOptions) -> Setup {
    let reg = Registry::new();
    let blocks = (64 << 20) / BS as u64;
    let m =
        NullBdev::new(NullParams { name: "m".into(), num_blocks: blocks, block_size: BS, zero_reads: false }).unwrap();
    reg.register(Arc::new(m)).unwrap();
    let names: Vec<String> = (0..rates_mb.len()).map(|i| format!("port{i}")).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let ports = PortBdev::create(reg.open("m", true).unwrap(), &refs).unwrap();
    let mut links = Vec::new();
    let mut paths = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        reg.register(p.clone()).unwrap();
        let base = reg.open(&names[i], true).unwrap();
        base.claim("link").unwrap();
        let mut info = base.info().clone();
        info.name = format!("path{i}");
        info.product = "link".into();
        let link = Arc::new(Link { ns_per_byte: 1000.0 / rates_mb[i], free_at: AtomicU64::new(0) });
        reg.register(Arc::new(LinkBdev { info, base, link: link.clone() })).unwrap();
        links.push(link);
        // Weights proportional to the link rates, as the seed set them.
        paths.push(PathParams { bdev: format!("path{i}"), group: 0, weight: (rates_mb[i] * 10.0).max(1.0) as u32 });
    }
    let module = MultipathModule::new(AutoAssemble { enabled: false, ..Default::default() });
    let dev = module.create(&reg, MultipathParams { name: Some("mp0".into()), paths, options }).unwrap();
    Setup { reg, ports, links, dev }
}

/// Keep QD random 4 KiB reads/writes in flight for `d`; call `tick` every `interval` with the
/// bytes moved in that interval. Returns (IOPS, MB/s, errors).
fn drive(
    ch: &mut BdevChannel,
    blocks: u64,
    d: Duration,
    interval: Duration,
    mut tick: impl FnMut(Duration, u64),
) -> (f64, f64, u64) {
    let mut bufs: Vec<DmaBuf> = (0..QD).map(|_| DmaBuf::alloc((IO_BLOCKS * BS as u64) as usize).unwrap()).collect();
    let mut free: Vec<usize> = (0..QD).collect();
    let mut rng = 0x1234_5678u64;
    let (mut ios, mut errors, mut bytes_iv) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    let mut next_tick = interval;
    while t0.elapsed() < d {
        while let Some(i) = free.pop() {
            let r = rand::next(&mut rng);
            let lba = (r >> 1) % (blocks / IO_BLOCKS) * IO_BLOCKS;
            let v = IoVecs::single(bufs[i].iovec());
            let io = if r & 1 == 0 {
                IoRequest::read(lba, IO_BLOCKS, v, i as u64)
            } else {
                IoRequest::write(lba, IO_BLOCKS, v, i as u64)
            };
            if ch.submit(&io).is_err() {
                free.push(i);
                break;
            }
        }
        ch.poll(&mut |t, s| {
            free.push(t as usize);
            if s.is_ok() {
                ios += 1;
                bytes_iv += IO_BLOCKS * BS as u64;
            } else {
                errors += 1;
            }
        });
        if t0.elapsed() >= next_tick {
            tick(next_tick, bytes_iv);
            bytes_iv = 0;
            next_tick += interval;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    ch.drain(Duration::from_secs(60), &mut |_, _| {});
    (ios as f64 / secs, ios as f64 * (IO_BLOCKS * BS as u64) as f64 / secs / 1e6, errors)
}

fn options(policy: Policy) -> MultipathOptions {
    MultipathOptions { policy, probe_interval: Duration::from_millis(100), ..Default::default() }
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let run = Duration::from_secs_f64(secs);
    let blocks = (64 << 20) / BS as u64;

    if let Ok(r) = std::env::var("MP_RATES") {
        let rates: Vec<f64> = r.split(',').filter_map(|x| x.parse().ok()).collect();
        let pol = std::env::var("MP_POLICY").unwrap_or("queue_length".into());
        let s = setup(&rates, options(Policy::from_name(&pol).unwrap()));
        let d = s.reg.open("mp0", true).unwrap();
        let mut ch = d.channel().unwrap();
        let dev = s.dev.clone();
        let (iops, mbs, _) = drive(&mut ch, blocks, run, run / 4, |_, _| {
            let v: Vec<u64> = dev.paths().iter().map(|p| p.stats.in_flight).collect();
            eprintln!("in flight {v:?}");
        });
        println!("{rates:?} {pol}: {iops:.0} IOPS {mbs:.2} MB/s");
        return;
    }
    println!("== 1. aggregation: 2 MB/s links, queue_length ==");
    for n in [1usize, 4] {
        let s = setup(&vec![2.0; n], options(Policy::QueueLength));
        let d = s.reg.open("mp0", true).unwrap();
        let mut ch = d.channel().unwrap();
        let (iops, mbs, err) = drive(&mut ch, blocks, run, run, |_, _| {});
        println!("{n} path(s): {iops:8.0} IOPS {mbs:7.2} MB/s errors {err}");
    }

    println!("\n== 2. failover and failback: 4 x 2 MB/s, path 1 down from 1/3 to 2/3 of the run ==");
    {
        let s = setup(&[2.0; 4], options(Policy::QueueLength));
        let d = s.reg.open("mp0", true).unwrap();
        let mut ch = d.channel().unwrap();
        let iv = run / 12;
        let port = s.ports[1].clone();
        let dev = s.dev.clone();
        let (_, _, err) = drive(&mut ch, blocks, run, iv, |at, bytes| {
            if std::env::var("MP_DEBUG").is_ok() {
                for p in dev.paths() {
                    eprintln!(
                        "  {} {:?} inflight {} ios {} perr {}",
                        p.name,
                        p.state,
                        p.stats.in_flight,
                        p.stats.ios(),
                        p.stats.path_errors
                    );
                }
            }
            if at >= run / 3 && at < run * 2 / 3 {
                port.set_link(false);
            } else {
                port.set_link(true);
            }
            println!(
                "t={:5.2}s {:7.2} MB/s link1 {}",
                at.as_secs_f64(),
                bytes as f64 / iv.as_secs_f64() / 1e6,
                if port.link_up() { "up" } else { "down" }
            );
        });
        let p1 = s.dev.path("path1").unwrap();
        println!("errors seen by the caller: {err}; path1 failures {} probes {}", p1.stats.failures, p1.stats.probes);
    }

    println!("\n== 3. load balancing: links of 0.2, 0.2, 20, 20 MB/s ==");
    println!("{:<24} {:>9} {:>9}   share of IOs per path", "policy", "IOPS", "MB/s");
    for name in Policy::NAMES {
        let s = setup(&[0.2, 0.2, 20.0, 20.0], options(Policy::from_name(name).unwrap()));
        let d = s.reg.open("mp0", true).unwrap();
        let mut ch = d.channel().unwrap();
        let (iops, mbs, err) = drive(&mut ch, blocks, run, run, |_, _| {});
        let ios: Vec<u64> = s.dev.paths().iter().map(|p| p.stats.ios()).collect();
        let total = ios.iter().sum::<u64>().max(1) as f64;
        let share: Vec<String> = ios.iter().map(|&n| format!("{:5.1}%", n as f64 * 100.0 / total)).collect();
        println!("{name:<24} {iops:9.0} {mbs:9.2}   {} errors {err}", share.join(" "));
        drop(s.links);
    }

    println!("\n== 4. overhead: null bdev direct vs through multipath (1 path), QD 32, 4 KiB reads ==");
    for via_mp in [false, true] {
        let reg = Registry::new();
        let null =
            NullBdev::new(NullParams { name: "n".into(), num_blocks: 1 << 24, block_size: 512, zero_reads: false })
                .unwrap();
        reg.register(Arc::new(null)).unwrap();
        let name = if via_mp {
            let module = MultipathModule::new(AutoAssemble { enabled: false, ..Default::default() });
            module
                .create(
                    &reg,
                    MultipathParams {
                        name: Some("mp0".into()),
                        paths: vec![PathParams::new("n")],
                        options: options(Policy::QueueLength),
                    },
                )
                .unwrap();
            "mp0"
        } else {
            "n"
        };
        let d = reg.open(name, true).unwrap();
        let mut ch = d.channel().unwrap();
        let mut bufs: Vec<DmaBuf> = (0..32).map(|_| DmaBuf::alloc(4096).unwrap()).collect();
        let mut free: Vec<usize> = (0..32).collect();
        let mut n = 0u64;
        let t0 = Instant::now();
        while t0.elapsed() < run {
            while let Some(i) = free.pop() {
                ch.submit(&IoRequest::read((i as u64) * 8, 8, IoVecs::single(bufs[i].iovec()), i as u64)).unwrap();
            }
            ch.poll(&mut |t, _| {
                free.push(t as usize);
                n += 1;
            });
        }
        let ns = t0.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "{:<12} {:10.0} IOPS {:7.1} ns/IO",
            if via_mp { "multipath" } else { "null" },
            n as f64 / t0.elapsed().as_secs_f64(),
            ns
        );
    }
}
