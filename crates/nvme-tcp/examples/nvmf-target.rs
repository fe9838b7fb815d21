//! Runs the NVMe/TCP target with malloc namespaces until killed (or for a
//! given number of seconds).
//!
//! usage: nvmf-target LISTEN_ADDR[,LISTEN_ADDR...] SUBNQN [NAMESPACES] [SIZE_MIB] [SECONDS]

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::Bdev;
use nvme_tcp::target::{SubsystemConfig, Target, TargetConfig};
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: nvmf-target LISTEN_ADDR[,LISTEN_ADDR...] SUBNQN [NAMESPACES] [SIZE_MIB] [SECONDS]";
    let listeners = args.get(1).ok_or(usage)?.split(',').map(|a| a.parse()).collect::<Result<Vec<_>, _>>()?;
    let nqn = args.get(2).ok_or(usage)?;
    let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let mib: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let secs: Option<u64> = args.get(5).map(|s| s.parse()).transpose()?;
    let mut ns: Vec<Arc<dyn Bdev>> = Vec::new();
    for i in 0..n {
        let p = MallocParams { name: format!("malloc{i}"), num_blocks: mib * 2048, block_size: 512 };
        ns.push(Arc::new(MallocBdev::new(p)?));
    }
    let t = Target::start(TargetConfig::new(listeners, vec![SubsystemConfig::new(nqn, ns)]))?;
    println!("listening on {:?} subsystem {nqn}", t.addrs());
    match secs {
        Some(s) => std::thread::sleep(Duration::from_secs(s)),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
    t.stop();
    Ok(())
}
