//! A loopback TCP proxy for fault tests (std threads): forwards both
//! directions of every connection, records what it forwarded as NVMe/TCP
//! PDUs, and on request kills connections, stalls them, or flips a byte of
//! a chosen PDU.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Direction of a byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Host to target.
    H2C,
    /// Target to host.
    C2H,
}

/// One PDU seen on the wire.
#[derive(Clone, Debug)]
pub struct SeenPdu {
    /// PDU type byte.
    pub pdu_type: u8,
    /// The first bytes of the PDU (up to 160).
    pub head: Vec<u8>,
}

/// Flip one byte of the `nth` (0-based) PDU of type `pdu_type` going `dir`
/// on connection `conn`, at byte `offset` of the PDU.
#[derive(Clone, Copy, Debug)]
pub struct Corrupt {
    /// Connection index.
    pub conn: usize,
    /// Direction.
    pub dir: Dir,
    /// PDU type.
    pub pdu_type: u8,
    /// Which PDU of that type, counting from the next one that starts
    /// after arming (0: that one).
    pub nth: usize,
    /// Byte offset inside the PDU.
    pub offset: u32,
}

#[derive(Default)]
struct ConnState {
    /// Kill requested: both sockets are shut down.
    killed: AtomicBool,
    /// Per direction: stop forwarding (bytes stay in the kernel buffers).
    stall_h2c: AtomicBool,
    stall_c2h: AtomicBool,
    /// Stall host-to-target once an R2T went to the host.
    stall_h2c_on_r2t: AtomicBool,
    seen_h2c: Mutex<Vec<SeenPdu>>,
    seen_c2h: Mutex<Vec<SeenPdu>>,
}

struct Shared {
    conns: Mutex<Vec<Arc<ConnState>>>,
    corrupt: Mutex<Option<(Corrupt, usize)>>,
    /// Corruptions applied.
    applied: Mutex<usize>,
    stop: AtomicBool,
}

/// The proxy: listens on a loopback port and forwards to `target`.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// Tracks PDU boundaries in one direction of a connection.
struct Framer {
    /// Bytes of the current PDU seen so far.
    at: u64,
    /// Length of the current PDU (0 until the common header is complete).
    plen: u64,
    head: Vec<u8>,
}

impl Framer {
    fn new() -> Self {
        Self { at: 0, plen: 0, head: Vec::new() }
    }
}

impl Proxy {
    /// Starts a proxy in front of `target`.
    pub fn start(target: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            conns: Mutex::new(Vec::new()),
            corrupt: Mutex::new(None),
            applied: Mutex::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let acceptor = std::thread::spawn(move || {
            while !sh.stop.load(Ordering::Acquire) {
                let Ok((host, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let Ok(tgt) = TcpStream::connect(target) else {
                    let _ = host.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = host.set_nonblocking(false);
                let _ = host.set_nodelay(true);
                let _ = tgt.set_nodelay(true);
                let st = Arc::new(ConnState::default());
                let idx = {
                    let mut c = sh.conns.lock().expect("lock");
                    c.push(st.clone());
                    c.len() - 1
                };
                for dir in [Dir::H2C, Dir::C2H] {
                    let (from, to) = match dir {
                        Dir::H2C => (host.try_clone(), tgt.try_clone()),
                        Dir::C2H => (tgt.try_clone(), host.try_clone()),
                    };
                    let (Ok(from), Ok(to)) = (from, to) else { continue };
                    let (sh, st) = (sh.clone(), st.clone());
                    std::thread::spawn(move || pump(from, to, dir, idx, &sh, &st));
                }
            }
        });
        Self { addr, shared, acceptor: Some(acceptor) }
    }

    /// The address hosts connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().expect("lock").len()
    }

    fn conn(&self, i: usize) -> Arc<ConnState> {
        self.shared.conns.lock().expect("lock").get(i).cloned().expect("no such connection")
    }

    /// Kills every connection accepted so far.
    pub fn kill_all(&self) {
        for c in self.shared.conns.lock().expect("lock").iter() {
            c.killed.store(true, Ordering::Release);
        }
    }

    /// Stops (`true`) or resumes forwarding on connection `i`, both ways.
    pub fn stall(&self, i: usize, on: bool) {
        let c = self.conn(i);
        c.stall_h2c.store(on, Ordering::Release);
        c.stall_c2h.store(on, Ordering::Release);
    }

    /// Resumes forwarding on every connection and disarms R2T stalls.
    pub fn resume_all(&self) {
        for c in self.shared.conns.lock().expect("lock").iter() {
            c.stall_h2c_on_r2t.store(false, Ordering::Release);
            c.stall_h2c.store(false, Ordering::Release);
            c.stall_c2h.store(false, Ordering::Release);
        }
    }

    /// Once connection `i` forwards an R2T to the host, stop forwarding
    /// host-to-target data on it.
    pub fn stall_writes_on_r2t(&self, i: usize) {
        self.conn(i).stall_h2c_on_r2t.store(true, Ordering::Release);
    }

    /// Whether host-to-target forwarding on connection `i` is stalled.
    pub fn h2c_stalled(&self, i: usize) -> bool {
        self.conn(i).stall_h2c.load(Ordering::Acquire)
    }

    /// Arms a one-shot corruption.
    pub fn corrupt(&self, c: Corrupt) {
        *self.shared.corrupt.lock().expect("lock") = Some((c, 0));
    }

    /// Corruptions applied so far.
    pub fn corruptions_applied(&self) -> usize {
        *self.shared.applied.lock().expect("lock")
    }

    /// The PDUs forwarded on connection `i` in direction `dir`.
    pub fn seen(&self, i: usize, dir: Dir) -> Vec<SeenPdu> {
        let c = self.conn(i);
        let v = match dir {
            Dir::H2C => c.seen_h2c.lock().expect("lock").clone(),
            Dir::C2H => c.seen_c2h.lock().expect("lock").clone(),
        };
        v
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.kill_all();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, dir: Dir, idx: usize, sh: &Shared, st: &ConnState) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(5)));
    let mut buf = vec![0u8; 64 << 10];
    let mut framer = Framer::new();
    // Offset inside the current PDU to corrupt.
    let mut flip_at: Option<u64> = None;
    let close = |a: &TcpStream, b: &TcpStream| {
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    };
    let dead = || st.killed.load(Ordering::Acquire) || sh.stop.load(Ordering::Acquire);
    let stalled = || match dir {
        Dir::H2C => st.stall_h2c.load(Ordering::Acquire),
        Dir::C2H => st.stall_c2h.load(Ordering::Acquire),
    };
    loop {
        if dead() {
            close(&from, &to);
            return;
        }
        if stalled() {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => {
                close(&from, &to);
                return;
            }
        };
        // A stall that began while reading holds these bytes back too.
        while stalled() {
            if dead() {
                close(&from, &to);
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for b in buf.iter_mut().take(n) {
            if framer.at == 0 {
                // A PDU starts: is it the one to corrupt?
                let t = *b;
                let mut armed = sh.corrupt.lock().expect("lock");
                if let Some((c, skipped)) = armed.as_mut() {
                    if c.conn == idx && c.dir == dir && c.pdu_type == t {
                        if *skipped == c.nth {
                            flip_at = Some(u64::from(c.offset));
                            *armed = None;
                        } else {
                            *skipped += 1;
                        }
                    }
                }
            }
            if flip_at == Some(framer.at) {
                *b ^= 0x5a;
                flip_at = None;
                *sh.applied.lock().expect("lock") += 1;
            }
            if framer.head.len() < 160 {
                framer.head.push(*b);
            }
            framer.at += 1;
            if framer.at == 8 {
                let h = &framer.head;
                framer.plen = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]])).max(8);
            }
            if framer.plen > 0 && framer.at >= framer.plen {
                let t = framer.head[0];
                let seen = SeenPdu { pdu_type: t, head: std::mem::take(&mut framer.head) };
                match dir {
                    Dir::H2C => st.seen_h2c.lock().expect("lock").push(seen),
                    Dir::C2H => st.seen_c2h.lock().expect("lock").push(seen),
                }
                if dir == Dir::C2H && t == 0x09 && st.stall_h2c_on_r2t.load(Ordering::Acquire) {
                    st.stall_h2c.store(true, Ordering::Release);
                }
                framer = Framer::new();
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            close(&from, &to);
            return;
        }
    }
}
