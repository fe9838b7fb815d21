//! Abort on our target: the nvmf bdev times a command out and asks the
//! target to abort it; the target ends commands that have not reached the
//! bdev (queued behind a full bdev channel, or waiting for write data) and
//! leaves those on the bdev running. The Abort answers are read off the
//! wire through the loopback proxy.

// Shared with the fault tests, which use more of it.
#[allow(dead_code)]
mod proxy;

use bdev::{Bdev, BdevChannel, BdevError, BdevInfo, DmaBuf, IoChannel, IoRequest, IoStatus, IoTypeSet, IoVecs};
use bdev::{QueueFull, Registry};
use nvme_spec::command::opcode;
use nvme_tcp::initiator::ConnectOpts;
use nvme_tcp::nvmf::NvmfController;
use nvme_tcp::pdu::PduType;
use nvme_tcp::target::{SubsystemConfig, Target, TargetConfig};
use proxy::{Dir, Proxy, SeenPdu};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2024-01.io.xbdev:abort";
const BS: u32 = 512;
const CAPSULE_CMD: u8 = PduType::CapsuleCmd.to_raw();
const CAPSULE_RESP: u8 = PduType::CapsuleResp.to_raw();
const OPC_ABORT: u8 = opcode::ABORT;

/// A bdev that takes one IO at a time (the channel is full beyond that)
/// and completes it only while its gate is open. Data is not touched.
struct GateBdev {
    info: BdevInfo,
    open: Arc<AtomicBool>,
}

struct GateChannel {
    open: Arc<AtomicBool>,
    held: VecDeque<u64>,
}

impl Bdev for GateBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(GateChannel { open: self.open.clone(), held: VecDeque::new() }))
    }
}

impl IoChannel for GateChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        if !self.held.is_empty() {
            return Err(QueueFull);
        }
        self.held.push_back(io.tag);
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        if !self.open.load(Ordering::Acquire) {
            return 0;
        }
        let n = self.held.len();
        for t in self.held.drain(..) {
            done(t, IoStatus::Success);
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.held.len()
    }
}

struct Env {
    _target: Target,
    gate: Arc<AtomicBool>,
    proxy: Proxy,
    ctrl: Arc<NvmfController>,
    reg: Arc<Registry>,
    ch: Option<BdevChannel>,
    desc: Option<bdev::Desc>,
}

impl Env {
    fn new() -> Self {
        let gate = Arc::new(AtomicBool::new(false));
        let ns: Arc<dyn Bdev> =
            Arc::new(GateBdev { info: BdevInfo::new("gate0", "gate", BS, 32768, IoTypeSet::ALL), open: gate.clone() });
        let cfg =
            TargetConfig::new(vec!["127.0.0.1:0".parse().expect("addr")], vec![SubsystemConfig::new(NQN, vec![ns])]);
        let target = Target::start(cfg).expect("target");
        let proxy = Proxy::start(target.addrs()[0]);
        let mut o = ConnectOpts::new(proxy.addr(), NQN);
        o.io_queues = 1;
        o.io_queue_depth = 8;
        o.kato_ms = 2000;
        o.admin_timeout = Duration::from_secs(2);
        o.io_timeout = Duration::from_millis(300);
        o.reconnect_delay = Duration::from_millis(50);
        o.reconnect_delay_max = Duration::from_millis(200);
        o.fast_io_fail_timeout = Duration::from_secs(10);
        let ctrl = NvmfController::connect("ab", o).expect("connect");
        let b: Arc<dyn Bdev> = ctrl.bdevs().remove(0);
        let reg = Registry::new();
        reg.register(b).expect("register");
        let desc = reg.open("abn1", true).expect("open");
        let ch = desc.channel().expect("channel");
        Self { _target: target, gate, proxy, ctrl, reg, ch: Some(ch), desc: Some(desc) }
    }

    /// Polls until `n` completions arrived (tag, status), at most `limit`.
    fn wait(&mut self, n: usize, limit: Duration) -> Vec<(u64, IoStatus)> {
        let ch = self.ch.as_mut().expect("channel");
        let mut done = Vec::new();
        let t0 = Instant::now();
        while done.len() < n {
            ch.poll(&mut |t, s| done.push((t, s)));
            assert!(t0.elapsed() < limit, "only {done:?} after {limit:?}");
        }
        done
    }

    /// Polls the channel (which drives its timeouts) until `f` gives a
    /// value; completions go to `done`.
    fn poll_until<T>(
        &mut self,
        limit: Duration,
        what: &str,
        done: &mut Vec<(u64, IoStatus)>,
        mut f: impl FnMut(&Proxy) -> Option<T>,
    ) -> T {
        let t0 = Instant::now();
        loop {
            self.ch.as_mut().expect("channel").poll(&mut |t, s| done.push((t, s)));
            if let Some(v) = f(&self.proxy) {
                return v;
            }
            assert!(t0.elapsed() < limit, "no {what}");
        }
    }

    fn submit(&mut self, r: IoRequest) {
        self.ch.as_mut().expect("channel").submit(&r).expect("submit");
    }

    /// Reads until one succeeds (after the reconnect).
    fn read_works_again(&mut self) {
        let mut b = DmaBuf::zeroed(4096).expect("dma");
        let t0 = Instant::now();
        loop {
            self.submit(IoRequest::read(0, 8, IoVecs::single(b.iovec()), 7));
            if self.wait(1, Duration::from_secs(20)) == vec![(7, IoStatus::Success)] {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no reconnect");
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.gate.store(true, Ordering::Release);
        self.ch = None;
        self.desc = None;
        let _ = self.reg.unregister("abn1");
        self.ctrl.detach();
    }
}

fn u16_at(p: &SeenPdu, at: usize) -> u16 {
    u16::from_le_bytes([p.head[at], p.head[at + 1]])
}

fn u32_at(p: &SeenPdu, at: usize) -> u32 {
    u32::from_le_bytes([p.head[at], p.head[at + 1], p.head[at + 2], p.head[at + 3]])
}

/// The command IDs of the commands with `opcode` sent on connection `conn`.
fn sent_cids(proxy: &Proxy, conn: usize, opcode: u8) -> Vec<u16> {
    proxy
        .seen(conn, Dir::H2C)
        .iter()
        .filter(|p| p.pdu_type == CAPSULE_CMD && p.head[8] == opcode)
        .map(|p| u16_at(p, 10))
        .collect()
}

/// The answers to Aborts seen on the admin connection: (aborted command
/// ID, its queue, completion dword 0). Admin command IDs are reused, so
/// the n-th command with an ID pairs with the n-th response with it.
fn abort_answers(proxy: &Proxy) -> Vec<(u16, u16, u32)> {
    let mut uses = std::collections::HashMap::<u16, usize>::new();
    let mut cmds = Vec::new();
    for p in proxy.seen(0, Dir::H2C).iter().filter(|p| p.pdu_type == CAPSULE_CMD) {
        // SQE at byte 8: opcode at 0, CID at 2, CDW10 (SQID, CID) at 40.
        let acid = u16_at(p, 10);
        let n = uses.entry(acid).or_default();
        if p.head[8] == OPC_ABORT {
            cmds.push((acid, *n, u16_at(p, 48), u16_at(p, 50)));
        }
        *n += 1;
    }
    let resps = proxy.seen(0, Dir::C2H);
    cmds.iter()
        .filter_map(|&(acid, n, sqid, cid)| {
            // CQE at byte 8: dword 0 at 0, CID at 12.
            let r = resps.iter().filter(|p| p.pdu_type == CAPSULE_RESP && u16_at(p, 20) == acid).nth(n)?;
            Some((cid, sqid, u32_at(r, 8)))
        })
        .collect()
}

#[test]
fn abort_ends_a_queued_command_and_not_one_on_the_bdev() {
    let mut e = Env::new();
    let io = e.proxy.connections() - 1;
    let mut a = DmaBuf::zeroed(4096).expect("dma");
    let mut b = DmaBuf::zeroed(4096).expect("dma");
    // A reaches the gate bdev and stays there; B finds the bdev channel
    // full and waits in the target's queue.
    e.submit(IoRequest::read(0, 8, IoVecs::single(a.iovec()), 1));
    e.submit(IoRequest::read(8, 8, IoVecs::single(b.iovec()), 2));
    let done = e.wait(1, Duration::from_secs(5));
    assert_eq!(done, vec![(2, IoStatus::Aborted)], "B ends with Command Abort Requested");
    // A was not aborted: the connection is reset after the abort wait.
    let done = e.wait(1, Duration::from_secs(5));
    assert_eq!(done, vec![(1, IoStatus::Timeout)]);
    let reads = sent_cids(&e.proxy, io, opcode::READ);
    assert_eq!(reads.len(), 2, "{reads:?}");
    let answers = e.poll_until(Duration::from_secs(5), "abort answers", &mut Vec::new(), |p| {
        let a = abort_answers(p);
        (a.len() >= 2).then_some(a)
    });
    let qid = answers[0].1;
    assert!(qid != 0);
    let of = |cid: u16| answers.iter().find(|x| x.0 == cid).map(|x| x.2 & 1);
    assert_eq!(of(reads[0]), Some(1), "on the bdev: not aborted ({answers:?})");
    assert_eq!(of(reads[1]), Some(0), "queued: aborted ({answers:?})");
    // Once the bdev answers again, IO works on the new connection.
    e.gate.store(true, Ordering::Release);
    e.read_works_again();
}

#[test]
fn abort_ends_a_write_waiting_for_its_data() {
    let mut e = Env::new();
    e.gate.store(true, Ordering::Release);
    let io = e.proxy.connections() - 1;
    // 64 KiB: beyond the in-capsule size, so the target asks for the data
    // with R2T, and the proxy holds the data back.
    e.proxy.stall_writes_on_r2t(io);
    let mut w = DmaBuf::zeroed(64 << 10).expect("dma");
    e.submit(IoRequest::write(0, 128, IoVecs::single(w.iovec()), 3));
    let mut done = Vec::new();
    let answers = e.poll_until(Duration::from_secs(5), "an abort answer", &mut done, |p| {
        let a = abort_answers(p);
        (!a.is_empty()).then_some(a)
    });
    let writes = sent_cids(&e.proxy, io, opcode::WRITE);
    assert_eq!(answers.iter().map(|x| (x.0, x.2 & 1)).collect::<Vec<_>>(), vec![(writes[0], 0)], "aborted");
    // The data never comes, so the write ends with the reset of its
    // connection; then IO works again.
    if done.is_empty() {
        done = e.wait(1, Duration::from_secs(5));
    }
    assert_eq!(done, vec![(3, IoStatus::Timeout)]);
    e.proxy.resume_all();
    e.read_works_again();
}
