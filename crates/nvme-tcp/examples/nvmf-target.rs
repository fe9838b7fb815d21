//! Runs the NVMe/TCP target until killed (or for a given number of seconds).
//!
//! usage: nvmf-target LISTEN_ADDR[,LISTEN_ADDR...] SUBNQN [NAMESPACES] [SIZE_MIB] [SECONDS] [options]
//!   --null          null namespaces (store nothing, reads leave buffers
//!                   as they are) instead of malloc
//!   --block-size N  namespace block size (default 512)
//!   --cores LIST    serve connections from busy-polling reactors pinned to
//!                   these CPUs (e.g. `1` or `2,3`) instead of threads
//!   --digests-off   refuse header/data digests
//!   --incapsule N   in-capsule data accepted on I/O queues, bytes
//!   --tcp-congestion NAME  TCP congestion control of the connections
//!                   (e.g. reno; default: the system's)
//!   --idle MODE     poll (default) or adaptive reactor idle policy (with
//!                   --cores)

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::backends::null::{NullBdev, NullParams};
use bdev::Bdev;
use nvme_tcp::target::{SubsystemConfig, Target, TargetConfig};
use reactor::{IdlePolicy, ReactorConfig, Reactors};
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: nvmf-target LISTEN_ADDR[,LISTEN_ADDR...] SUBNQN [NAMESPACES] [SIZE_MIB] [SECONDS] \
                     [--null] [--block-size N] [--cores LIST] [--digests-off] [--incapsule N] \
                     [--tcp-congestion NAME] [--idle poll|adaptive]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut pos = Vec::new();
    let mut null = false;
    let mut bs = 512u32;
    let mut cores: Option<Vec<usize>> = None;
    let mut digests = true;
    let mut incapsule: Option<u32> = None;
    let mut congestion: Option<String> = None;
    let mut idle = IdlePolicy::AlwaysPoll;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--null" => null = true,
            "--digests-off" => digests = false,
            "--block-size" => bs = args.next().ok_or(USAGE)?.parse()?,
            "--incapsule" => incapsule = Some(args.next().ok_or(USAGE)?.parse()?),
            "--tcp-congestion" => congestion = Some(args.next().ok_or(USAGE)?),
            "--idle" => {
                idle = match args.next().ok_or(USAGE)?.as_str() {
                    "poll" => IdlePolicy::AlwaysPoll,
                    "adaptive" => IdlePolicy::default(),
                    _ => return Err(USAGE.into()),
                }
            }
            "--cores" => {
                cores = Some(args.next().ok_or(USAGE)?.split(',').map(str::parse).collect::<Result<_, _>>()?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => pos.push(a),
        }
    }
    let listeners = pos.first().ok_or(USAGE)?.split(',').map(|a| a.parse()).collect::<Result<Vec<_>, _>>()?;
    let nqn = pos.get(1).ok_or(USAGE)?;
    let n: usize = pos.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let mib: u64 = pos.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let secs: Option<u64> = pos.get(4).map(|s| s.parse()).transpose()?;
    let blocks = mib * (1 << 20) / u64::from(bs);
    let mut ns: Vec<Arc<dyn Bdev>> = Vec::new();
    for i in 0..n {
        if null {
            let p = NullParams { name: format!("null{i}"), num_blocks: blocks, block_size: bs, zero_reads: false };
            ns.push(Arc::new(NullBdev::new(p)?));
        } else {
            let p = MallocParams { name: format!("malloc{i}"), num_blocks: blocks, block_size: bs };
            ns.push(Arc::new(MallocBdev::new(p)?));
        }
    }
    let mut cfg = TargetConfig::new(listeners, vec![SubsystemConfig::new(nqn, ns)]);
    cfg.allow_digests = digests;
    cfg.tcp_congestion = congestion;
    if let Some(n) = incapsule {
        cfg.incapsule = n;
    }
    let mut reactors = None;
    let t = match cores {
        Some(cores) => {
            let r = Reactors::start(&ReactorConfig { cores, pin: true, idle })?;
            let t = Target::start_on(cfg, r.handles())?;
            reactors = Some(r);
            t
        }
        None => Target::start(cfg)?,
    };
    println!("listening on {:?} subsystem {nqn}", t.addrs());
    match secs {
        Some(s) => std::thread::sleep(Duration::from_secs(s)),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
    t.stop();
    drop(reactors);
    Ok(())
}
