//! Probes an NVMe/TCP target: discovery, controller bring-up, identify,
//! and a write/read/compare on an I/O queue of namespace 1.
//!
//! usage: nvmf-probe HOST:PORT [SUBNQN] [--digests]

use nvme_spec::command::{Command, IoCommand};
use nvme_tcp::initiator::{connect_io_queue, discover, AdminQueue, ConnectOpts, SyncData};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).ok_or("usage: nvmf-probe HOST:PORT [SUBNQN] [--digests]")?.parse()?;
    let subnqn = args.get(2).filter(|a| !a.starts_with("--")).cloned();
    let digests = args.iter().any(|a| a == "--digests");
    let mut opts = ConnectOpts::new(addr, subnqn.as_deref().unwrap_or(""));
    opts.hdgst = digests;
    opts.ddgst = digests;
    let entries = discover(&opts)?;
    for e in &entries {
        println!(
            "discovery: trtype {} subtype {} {}:{} {}",
            e.trtype,
            e.subtype,
            e.traddr().unwrap_or("?"),
            e.trsvcid().unwrap_or("?"),
            e.subnqn().unwrap_or("?")
        );
    }
    let subnqn = match subnqn {
        Some(s) => s,
        None => entries
            .iter()
            .find(|e| e.subtype == nvme_spec::log::subtype::NVME)
            .and_then(|e| e.subnqn())
            .ok_or("no nvm subsystem in the discovery log")?
            .to_string(),
    };
    opts.subnqn = subnqn.clone();
    let mut a = AdminQueue::connect(&opts, &subnqn)?;
    let id = a.identify_controller()?;
    println!(
        "controller {}: vs {}.{} mn '{}' sn '{}' fr '{}' mdts {} ioccsz {} kas {} cap.mqes {}",
        a.cntlid,
        a.vs.mjr(),
        a.vs.mnr(),
        id.model().unwrap_or("?"),
        id.serial().unwrap_or("?"),
        id.firmware().unwrap_or("?"),
        id.mdts,
        id.ioccsz.get(),
        id.kas.get(),
        a.cap.mqes()
    );
    let nq = a.set_num_queues(2)?;
    println!("io queues granted: {nq}");
    let nsids = a.active_namespaces()?;
    println!("namespaces: {nsids:?}");
    let mut bs = 512u32;
    for &n in &nsids {
        let ns = a.identify_namespace(n)?;
        println!(
            "  ns {n}: {} blocks of {} bytes, nguid {:02x?}, descriptors {:?}",
            ns.id.nsze.get(),
            ns.id.block_size().unwrap_or(0),
            ns.id.nguid,
            ns.descriptors
        );
        if n == nsids[0] {
            bs = ns.id.block_size().unwrap_or(512);
        }
    }
    a.keep_alive()?;
    let incap = (id.ioccsz.get() * 16).saturating_sub(64);
    let mut q = connect_io_queue(&opts, a.cntlid, 1, 32, incap)?;
    let nsid = *nsids.first().ok_or("no namespace")?;
    for len in [bs as usize, 4096, 65536, 1 << 20] {
        let blocks = (len / bs as usize) as u16;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        let t = Instant::now();
        let w = IoCommand::Write { nsid, slba: 8, nlb: blocks - 1, fua: false, lr: false };
        let c = q.exec(Command::Io(w).to_sqe(0), SyncData::To(&data), opts.admin_timeout)?;
        assert!(c.status().is_success(), "write: {}", c.status());
        let mut back = vec![0u8; len];
        let r = IoCommand::Read { nsid, slba: 8, nlb: blocks - 1, fua: false, lr: false };
        let c = q.exec(Command::Io(r).to_sqe(0), SyncData::From(&mut back), opts.admin_timeout)?;
        assert!(c.status().is_success(), "read: {}", c.status());
        println!(
            "io {len} bytes: write+read compare {} in {:?}",
            if back == data { "ok" } else { "MISMATCH" },
            t.elapsed()
        );
        if back != data {
            return Err("data mismatch".into());
        }
    }
    let c = q.exec(Command::Io(IoCommand::Flush { nsid }).to_sqe(0), SyncData::None, opts.admin_timeout)?;
    println!("flush: {}", c.status());
    q.close();
    a.shutdown()?;
    println!("shutdown ok");
    Ok(())
}
