//! Per-IO CPU cost of the sans-IO queue state machines, without sockets:
//! a host queue and a controller queue paired in memory run 4 KiB reads
//! (submit, encode, receive/decode, complete) at a fixed queue depth;
//! prints nanoseconds per IO spent in each side.
//!
//! usage: queue-cpu-bench [IOS_MILLIONS] [QUEUE_DEPTH] [REPEATS]
//!
//! Bytes go through `poll_receive` from an in-memory reader that returns
//! what was written and then "would block", so the staged receive path
//! (staging buffer, vectored reads straight into IO buffers) is the one a
//! socket takes. The controller completes every read with its data and the
//! SUCCESS flag (SQ flow control off, as the nvmf initiator asks).

use nvme_spec::command::{Command, IoCommand};
use nvme_spec::status::Status;
use nvme_spec::Cqe;
use nvme_tcp::ctrl::{CmdData, CtrlBuffers, CtrlConfig, CtrlEvent, CtrlQueue};
use nvme_tcp::host::{DataDir, HostBuffers, HostConfig, HostQueue};
use std::hint::black_box;
use std::io::{self, IoSliceMut, Read};
use std::time::{Duration, Instant};

const IO: usize = 4096;

/// Reads from a byte vector, then "would block".
struct Pipe {
    buf: Vec<u8>,
    pos: usize,
}

impl Pipe {
    fn new() -> Self {
        Self { buf: Vec::with_capacity(4 << 20), pos: 0 }
    }
    fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }
}

impl Read for Pipe {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs.iter_mut() {
            if b.is_empty() {
                continue;
            }
            match self.read(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }
}

struct HBufs(Vec<Vec<u8>>);

impl HostBuffers for HBufs {
    fn read_dest(&mut self, tag: u64, at: u32) -> Option<&mut [u8]> {
        self.0.get_mut(tag as usize)?.get_mut(at as usize..).filter(|s| !s.is_empty())
    }
    fn write_src(&self, tag: u64, at: u32) -> Option<&[u8]> {
        self.0.get(tag as usize)?.get(at as usize..).filter(|s| !s.is_empty())
    }
}

struct CBufs(Vec<Vec<u8>>);

impl CtrlBuffers for CBufs {
    fn dest(&mut self, slot: u16, _len: u32, at: u32) -> Option<&mut [u8]> {
        self.0.get_mut(usize::from(slot))?.get_mut(at as usize..).filter(|s| !s.is_empty())
    }
    fn src(&self, slot: u16, at: u32) -> Option<&[u8]> {
        self.0.get(usize::from(slot))?.get(at as usize..).filter(|s| !s.is_empty())
    }
}

struct Pair {
    host: HostQueue,
    ctrl: CtrlQueue,
    hb: HBufs,
    cb: CBufs,
    h2c: Pipe,
    c2h: Pipe,
    free_tags: Vec<u64>,
    events: Vec<CtrlEvent>,
    lba: u64,
}

impl Pair {
    fn new(qd: usize) -> Self {
        let depth = qd as u16;
        let mut host = HostQueue::new(HostConfig { depth, incapsule_max: 8192, ..HostConfig::default() });
        let mut ctrl = CtrlQueue::new(CtrlConfig { depth, ..CtrlConfig::default() });
        let mut hb = HBufs((0..qd).map(|_| vec![0u8; IO]).collect());
        let mut cb = CBufs((0..qd).map(|i| vec![i as u8; IO]).collect());
        let (mut h2c, mut c2h) = (Pipe::new(), Pipe::new());
        host.transmit(&mut h2c.buf, &hb).expect("icreq");
        ctrl.poll_receive(&mut h2c, &mut cb, &mut |_| {}).expect("icreq in");
        ctrl.transmit(&mut c2h.buf, &cb, &mut |_| {}).expect("icresp");
        host.poll_receive(&mut c2h, &mut hb, &mut |_, _| {}).expect("icresp in");
        assert!(host.is_ready() && ctrl.is_ready());
        ctrl.set_success_flag(true);
        h2c.reset();
        c2h.reset();
        Self {
            host,
            ctrl,
            hb,
            cb,
            h2c,
            c2h,
            free_tags: (0..qd as u64).collect(),
            events: Vec::with_capacity(qd),
            lba: 0,
        }
    }

    /// One round: the host submits every free tag, the controller answers
    /// all of them, the host completes them. Returns (host, ctrl) time.
    fn round(&mut self) -> (Duration, Duration) {
        let t0 = Instant::now();
        while let Some(tag) = self.free_tags.pop() {
            self.lba = (self.lba + 7919) & 0xf_ffff;
            let cmd = IoCommand::Read { nsid: 1, slba: self.lba, nlb: 7, fua: false, lr: false };
            self.host.submit(Command::Io(cmd).to_sqe(0), DataDir::FromController(IO as u32), tag).expect("submit");
        }
        self.host.transmit(&mut self.h2c.buf, &self.hb).expect("host tx");
        let t1 = Instant::now();
        let events = &mut self.events;
        self.ctrl.poll_receive(&mut self.h2c, &mut self.cb, &mut |e| events.push(e)).expect("ctrl rx");
        for e in self.events.drain(..) {
            let CtrlEvent::Command { slot, sqe, data: CmdData::FromController(len) } = e else {
                panic!("unexpected event {e:?}");
            };
            let Ok(Command::Io(IoCommand::Read { .. })) = Command::parse(&sqe, nvme_spec::command::QueueType::Io)
            else {
                panic!("not a read");
            };
            self.ctrl.complete(slot, Cqe::new(0, Status::SUCCESS), len).expect("complete");
        }
        self.ctrl.transmit(&mut self.c2h.buf, &self.cb, &mut |_| {}).expect("ctrl tx");
        let t2 = Instant::now();
        let free = &mut self.free_tags;
        self.host
            .poll_receive(&mut self.c2h, &mut self.hb, &mut |tag, cqe| {
                debug_assert!(cqe.status().is_success());
                free.push(tag);
            })
            .expect("host rx");
        let t3 = Instant::now();
        black_box(&self.hb.0[0][0]);
        assert!(self.h2c.pos == self.h2c.buf.len() && self.c2h.pos == self.c2h.buf.len());
        self.h2c.reset();
        self.c2h.reset();
        ((t1 - t0) + (t3 - t2), t2 - t1)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let millions: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let qd: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let repeats: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let rounds = ((millions * 1e6) as usize / qd).max(1);
    let mut p = Pair::new(qd);
    for _ in 0..rounds / 10 {
        p.round();
    }
    let mut best = (f64::MAX, f64::MAX);
    for r in 0..repeats {
        let (mut h, mut c) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let (a, b) = p.round();
            h += a;
            c += b;
        }
        let ios = (rounds * qd) as f64;
        let (hn, cn) = (h.as_nanos() as f64 / ios, c.as_nanos() as f64 / ios);
        println!("run {r}: host {hn:.1} ns/IO  ctrl {cn:.1} ns/IO");
        best = (best.0.min(hn), best.1.min(cn));
    }
    println!("best: host {:.1} ns/IO  ctrl {:.1} ns/IO  total {:.1}", best.0, best.1, best.0 + best.1);
}
