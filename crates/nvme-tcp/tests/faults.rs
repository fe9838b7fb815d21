//! Fault tests: the nvmf bdev against our own target through a loopback
//! proxy that kills, stalls or corrupts connections.

mod proxy;

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use nvme_spec::command::opcode;
use nvme_tcp::initiator::ConnectOpts;
use nvme_tcp::nvmf::NvmfController;
use nvme_tcp::pdu::PduType;
use nvme_tcp::target::{SubsystemConfig, Target, TargetConfig};
use proxy::{Corrupt, Dir, Proxy};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2024-01.io.xbdev:faults";
const BS: usize = 512;

/// PDU types.
const H2C_TERM_REQ: u8 = PduType::H2CTermReq.to_raw();
const C2H_TERM_REQ: u8 = PduType::C2HTermReq.to_raw();
const CAPSULE_CMD: u8 = PduType::CapsuleCmd.to_raw();
const C2H_DATA: u8 = PduType::C2HData.to_raw();

struct Env {
    target: Target,
    ns: Arc<dyn Bdev>,
    proxy: Proxy,
    ctrl: Arc<NvmfController>,
    reg: Arc<Registry>,
    ch: Option<BdevChannel>,
    desc: Option<bdev::Desc>,
}

impl Env {
    fn new(digests: bool, tune: impl FnOnce(&mut ConnectOpts)) -> Self {
        let ns: Arc<dyn Bdev> = Arc::new(
            MallocBdev::new(MallocParams { name: "f0".into(), num_blocks: 32768, block_size: BS as u32 })
                .expect("malloc"),
        );
        let cfg = TargetConfig::new(
            vec!["127.0.0.1:0".parse().expect("addr")],
            vec![SubsystemConfig::new(NQN, vec![ns.clone()])],
        );
        let target = Target::start(cfg).expect("target");
        let proxy = Proxy::start(target.addrs()[0]);
        let mut o = ConnectOpts::new(proxy.addr(), NQN);
        o.hdgst = digests;
        o.ddgst = digests;
        o.io_queues = 2;
        o.io_queue_depth = 32;
        o.kato_ms = 1000;
        o.admin_timeout = Duration::from_secs(2);
        o.reconnect_delay = Duration::from_millis(50);
        o.reconnect_delay_max = Duration::from_millis(400);
        o.fast_io_fail_timeout = Duration::from_secs(10);
        o.ctrl_loss_timeout = Duration::from_secs(60);
        tune(&mut o);
        let ctrl = NvmfController::connect("flt", o).expect("connect");
        let b: Arc<dyn Bdev> = ctrl.bdevs().remove(0);
        let reg = Registry::new();
        reg.register(b).expect("register");
        let desc = reg.open("fltn1", true).expect("open");
        let ch = desc.channel().expect("channel");
        Self { target, ns, proxy, ctrl, reg, ch: Some(ch), desc: Some(desc) }
    }

    /// The proxy connection of the I/O queue (opened last).
    fn io_conn(&self) -> usize {
        self.proxy.connections() - 1
    }

    /// Submits `reqs` (tags are their indexes) and waits for all of them.
    fn run(&mut self, reqs: &[IoRequest], limit: Duration) -> Vec<IoStatus> {
        let ch = self.ch.as_mut().expect("channel");
        let mut out = vec![None; reqs.len()];
        let t0 = Instant::now();
        for (i, r) in reqs.iter().enumerate() {
            let mut r = *r;
            r.tag = i as u64;
            while ch.submit(&r).is_err() {
                ch.poll(&mut |t, s| out[t as usize] = Some(s));
                assert!(t0.elapsed() < limit, "channel stayed full");
            }
        }
        while out.iter().any(Option::is_none) {
            ch.poll(&mut |t, s| out[t as usize] = Some(s));
            assert!(t0.elapsed() < limit, "IO hung: {out:?}");
        }
        out.into_iter().map(|s| s.expect("done")).collect()
    }

    /// Polls for `d`.
    fn poll_for(&mut self, d: Duration, done: &mut Vec<(u64, IoStatus)>) {
        let ch = self.ch.as_mut().expect("channel");
        let t0 = Instant::now();
        while t0.elapsed() < d {
            ch.poll(&mut |t, s| done.push((t, s)));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.ch = None;
        self.desc = None;
        let _ = self.reg.unregister("fltn1");
        self.ctrl.detach();
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len).map(|i| ((i as u64).wrapping_mul(0x9e37_79b9) ^ seed.wrapping_mul(131)) as u8).collect()
}

/// `n` buffers of `blocks` blocks filled with patterns `seed..seed + n`.
fn filled(n: usize, blocks: usize, seed: u64) -> Vec<DmaBuf> {
    (0..n)
        .map(|i| {
            let mut b = DmaBuf::alloc(blocks * BS).expect("dma");
            b.as_mut_slice().copy_from_slice(&pattern(blocks * BS, seed + i as u64));
            b
        })
        .collect()
}

fn writes(bufs: &mut [DmaBuf], blocks: usize) -> Vec<IoRequest> {
    bufs.iter_mut()
        .enumerate()
        .map(|(i, b)| IoRequest::write((i * blocks) as u64, blocks as u64, IoVecs::single(b.iovec()), 0))
        .collect()
}

/// Reads back what `bufs` wrote (through `read`) and compares.
fn verify(bufs: &[DmaBuf], blocks: usize, read: &mut dyn FnMut(&[IoRequest]) -> Vec<IoStatus>) {
    let mut backs: Vec<DmaBuf> = (0..bufs.len()).map(|_| DmaBuf::zeroed(blocks * BS).expect("dma")).collect();
    let reqs: Vec<IoRequest> = backs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| IoRequest::read((i * blocks) as u64, blocks as u64, IoVecs::single(b.iovec()), 0))
        .collect();
    assert!(read(&reqs).iter().all(|s| *s == IoStatus::Success), "read back");
    for (i, (w, r)) in bufs.iter().zip(&backs).enumerate() {
        assert!(w.as_slice() == r.as_slice(), "buffer {i} read back differs");
    }
}

/// Whether `pdus` hold a termination request of `pdu_type` with FES `fes`.
fn has_term_req(pdus: &[proxy::SeenPdu], pdu_type: u8, fes: u16) -> bool {
    pdus.iter()
        .any(|p| p.pdu_type == pdu_type && p.head.len() >= 10 && u16::from_le_bytes([p.head[8], p.head[9]]) == fes)
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn connection_killed_with_r2t_outstanding() {
    let mut e = Env::new(false, |_| {});
    let io = e.io_conn();
    // 128 KiB writes: beyond the 8 KiB in-capsule size, so the target asks
    // for the data with R2T; the proxy holds the data back once it
    // forwarded the first R2T.
    let blocks = 256;
    let mut first = filled(8, blocks, 100);
    e.proxy.stall_writes_on_r2t(io);
    let reqs = writes(&mut first, blocks);
    let ch = e.ch.as_mut().expect("channel");
    for (i, r) in reqs.iter().enumerate() {
        let mut r = *r;
        r.tag = i as u64;
        ch.submit(&r).expect("submit");
    }
    let mut done = Vec::new();
    let t0 = Instant::now();
    while !e.proxy.h2c_stalled(io) {
        e.poll_for(Duration::from_millis(1), &mut done);
        assert!(t0.elapsed() < Duration::from_secs(10), "no R2T seen");
    }
    e.poll_for(Duration::from_millis(50), &mut done);
    assert!(done.is_empty(), "no write can finish while its data is held: {done:?}");
    e.proxy.kill_all();
    let t0 = Instant::now();
    while done.len() < reqs.len() {
        e.poll_for(Duration::from_millis(1), &mut done);
        assert!(t0.elapsed() < Duration::from_secs(10), "writes hung after the kill: {done:?}");
    }
    assert!(done.iter().all(|&(_, s)| s == IoStatus::PathError), "{done:?}");
    // New connections go through; IO submitted now waits for the reconnect.
    e.proxy.resume_all();
    let mut second = filled(8, blocks, 200);
    let st = e.run(&writes(&mut second, blocks), Duration::from_secs(20));
    assert!(st.iter().all(|s| *s == IoStatus::Success), "writes after reconnect: {st:?}");
    assert!(e.proxy.connections() > 2, "the queue reconnected");
    verify(&second, blocks, &mut |r| e.run(r, Duration::from_secs(20)));
    // And the data is on the target's own bdev.
    let reg = Registry::new();
    reg.register(e.ns.clone()).expect("register");
    let d = reg.open("f0", false).expect("open");
    let mut ch = d.channel().expect("channel");
    verify(&second, blocks, &mut |reqs| {
        let mut out = vec![None; reqs.len()];
        for (i, r) in reqs.iter().enumerate() {
            let mut r = *r;
            r.tag = i as u64;
            ch.submit(&r).expect("submit");
        }
        let t0 = Instant::now();
        while out.iter().any(Option::is_none) {
            ch.poll(&mut |t, s| out[t as usize] = Some(s));
            assert!(t0.elapsed() < Duration::from_secs(10));
        }
        out.into_iter().map(|s| s.expect("done")).collect()
    });
    drop(ch);
    drop(d);
    let _ = reg.unregister("f0");
    let _ = &e.target;
}

#[test]
fn stalled_target_times_out_aborts_and_reconnects() {
    let timeout = Duration::from_millis(400);
    let mut e = Env::new(false, |o| o.io_timeout = timeout);
    let mut bufs = filled(2, 8, 1);
    assert!(e.run(&writes(&mut bufs, 8), Duration::from_secs(10)).iter().all(|s| *s == IoStatus::Success));
    let io = e.io_conn();
    e.proxy.stall(io, true);
    let mut r = DmaBuf::zeroed(8 * BS).expect("dma");
    let t0 = Instant::now();
    let st = e.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)], Duration::from_secs(15));
    let took = t0.elapsed();
    assert_eq!(st, vec![IoStatus::Timeout]);
    assert!(took >= timeout, "completed after {took:?}, before the timeout");
    assert!(took < Duration::from_secs(5), "timeout took {took:?}");
    // The host asked the controller to abort it, on the admin queue.
    wait_until(Duration::from_secs(5), "an abort command", || {
        e.proxy.seen(0, Dir::H2C).iter().any(|p| p.pdu_type == CAPSULE_CMD && p.head.get(8) == Some(&opcode::ABORT))
    });
    // The stalled connection was reset; once the path works again, so does IO.
    e.proxy.resume_all();
    let t0 = Instant::now();
    loop {
        let st = e.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)], Duration::from_secs(20));
        if st == vec![IoStatus::Success] {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no reconnect: {st:?}");
    }
    assert_eq!(r.as_slice(), bufs[0].as_slice());
    assert!(e.proxy.connections() > io + 1, "a new I/O connection");
}

/// Corrupts the header of a PDU of `pdu_type` going `dir` on the I/O
/// connection; the receiver must answer with a termination request of
/// `term_type` (FES 3: header digest error) carried the other way.
fn header_digest_case(dir: Dir, pdu_type: u8, term_type: u8) {
    let mut e = Env::new(true, |_| {});
    let mut bufs = filled(1, 8, 9);
    assert!(e.run(&writes(&mut bufs, 8), Duration::from_secs(10)).iter().all(|s| *s == IoStatus::Success));
    let io = e.io_conn();
    // Byte 10 is inside the header (command / transfer fields): only the
    // header digest can tell.
    e.proxy.corrupt(Corrupt { conn: io, dir, pdu_type, nth: 0, offset: 10 });
    let mut r = DmaBuf::zeroed(8 * BS).expect("dma");
    let st = e.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)], Duration::from_secs(15));
    assert_eq!(st, vec![IoStatus::PathError]);
    assert_eq!(e.proxy.corruptions_applied(), 1);
    let back = match dir {
        Dir::H2C => Dir::C2H,
        Dir::C2H => Dir::H2C,
    };
    wait_until(Duration::from_secs(5), "the termination request", || {
        has_term_req(&e.proxy.seen(io, back), term_type, 3)
    });
    // Reconnect, and the data is intact.
    let t0 = Instant::now();
    loop {
        let st = e.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)], Duration::from_secs(20));
        if st == vec![IoStatus::Success] {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no reconnect: {st:?}");
    }
    assert_eq!(r.as_slice(), bufs[0].as_slice());
    assert!(e.proxy.connections() > io + 1, "a new I/O connection");
}

#[test]
fn header_digest_error_from_target_terminates_and_reconnects() {
    header_digest_case(Dir::C2H, C2H_DATA, H2C_TERM_REQ);
}

#[test]
fn header_digest_error_from_host_terminates_and_reconnects() {
    header_digest_case(Dir::H2C, CAPSULE_CMD, C2H_TERM_REQ);
}

#[test]
fn data_digest_errors_fail_the_command_only() {
    let mut e = Env::new(true, |_| {});
    let mut bufs = filled(1, 8, 21);
    assert!(e.run(&writes(&mut bufs, 8), Duration::from_secs(10)).iter().all(|s| *s == IoStatus::Success));
    let io = e.io_conn();
    let conns = e.proxy.connections();
    // Read data corrupted on its way to the host: C2HData header (24) +
    // header digest (4), data from byte 28.
    e.proxy.corrupt(Corrupt { conn: io, dir: Dir::C2H, pdu_type: C2H_DATA, nth: 0, offset: 28 + 100 });
    let mut r = DmaBuf::zeroed(8 * BS).expect("dma");
    let st = e.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)], Duration::from_secs(15));
    assert_eq!(st, vec![IoStatus::PathError]);
    assert_eq!(e.proxy.corruptions_applied(), 1);
    let st = e.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)], Duration::from_secs(15));
    assert_eq!(st, vec![IoStatus::Success]);
    assert_eq!(r.as_slice(), bufs[0].as_slice());
    // Write data corrupted on its way to the target (in-capsule: capsule
    // header 72 + digest 4, data from byte 76): the command is not run.
    let mut other = filled(1, 8, 22);
    e.proxy.corrupt(Corrupt { conn: io, dir: Dir::H2C, pdu_type: CAPSULE_CMD, nth: 0, offset: 76 + 50 });
    let st = e.run(&writes(&mut other, 8), Duration::from_secs(15));
    assert_eq!(st, vec![IoStatus::PathError]);
    assert_eq!(e.proxy.corruptions_applied(), 2);
    let st = e.run(&[IoRequest::read(0, 8, IoVecs::single(r.iovec()), 0)], Duration::from_secs(15));
    assert_eq!(st, vec![IoStatus::Success]);
    assert_eq!(r.as_slice(), bufs[0].as_slice(), "the corrupt write was not applied");
    // No termination, no reconnect: the same connections carry on.
    assert_eq!(e.proxy.connections(), conns);
    assert!(!e.proxy.seen(io, Dir::H2C).iter().any(|p| p.pdu_type == H2C_TERM_REQ));
    assert!(!e.proxy.seen(io, Dir::C2H).iter().any(|p| p.pdu_type == C2H_TERM_REQ));
    assert!(e.run(&writes(&mut other, 8), Duration::from_secs(15)).iter().all(|s| *s == IoStatus::Success));
}
