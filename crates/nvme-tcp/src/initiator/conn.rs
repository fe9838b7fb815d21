//! One NVMe/TCP connection: a non-blocking socket driving a [`HostQueue`],
//! with a polled, timed synchronous command helper for the control path.

use super::InitError;
use crate::host::{DataDir, HostBuffers, HostConfig, HostQueue};
use nvme_spec::{Cqe, Sqe};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connected, initialised (IC exchange done) queue pair.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    q: HostQueue,
    peer: SocketAddr,
    /// Completions of commands submitted with [`Connection::submit_async`]
    /// not yet taken.
    async_done: Vec<(u64, Cqe)>,
}

/// Data of a synchronous command.
#[derive(Debug)]
pub enum SyncData<'a> {
    /// None.
    None,
    /// Sent to the controller.
    To(&'a [u8]),
    /// Received from the controller.
    From(&'a mut [u8]),
}

/// [`HostBuffers`] over the one buffer of a synchronous command.
struct OneBuf<'a, 'b> {
    tag: u64,
    data: &'a mut SyncData<'b>,
}

impl HostBuffers for OneBuf<'_, '_> {
    fn read_dest(&mut self, tag: u64, at: u32) -> Option<&mut [u8]> {
        match (&mut *self.data, tag == self.tag) {
            (SyncData::From(b), true) => b.get_mut(at as usize..).filter(|s| !s.is_empty()),
            _ => None,
        }
    }

    fn write_src(&self, tag: u64, at: u32) -> Option<&[u8]> {
        match (&*self.data, tag == self.tag) {
            (SyncData::To(b), true) => b.get(at as usize..).filter(|s| !s.is_empty()),
            _ => None,
        }
    }
}

impl Connection {
    /// Connects to `addr` and performs the IC exchange within `timeout`;
    /// `tcp_congestion` names a TCP congestion control algorithm for the
    /// socket (`None`: the system default).
    pub fn open(
        addr: SocketAddr,
        cfg: HostConfig,
        timeout: Duration,
        tcp_congestion: Option<&str>,
    ) -> Result<Self, InitError> {
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| InitError::io("connect", e))?;
        stream.set_nodelay(true).map_err(|e| InitError::io("set TCP_NODELAY", e))?;
        if let Some(cc) = tcp_congestion {
            crate::ffi::set_congestion(&stream, cc).map_err(|e| InitError::io("set TCP_CONGESTION", e))?;
        }
        stream.set_nonblocking(true).map_err(|e| InitError::io("set non-blocking", e))?;
        let mut c = Self { stream, q: HostQueue::new(cfg), peer: addr, async_done: Vec::new() };
        let deadline = Instant::now() + timeout;
        let mut none = SyncData::None;
        while !c.q.is_ready() {
            c.poll(&mut OneBuf { tag: u64::MAX, data: &mut none }, &mut |_, _| {})?;
            if Instant::now() > deadline {
                return Err(InitError::Timeout("icresp"));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(c)
    }

    /// The peer address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The queue state machine.
    pub fn queue(&self) -> &HostQueue {
        &self.q
    }

    /// The queue state machine, mutably (to submit).
    pub fn queue_mut(&mut self) -> &mut HostQueue {
        &mut self.q
    }

    /// Moves bytes both ways until the socket would block; completions go
    /// to `done`. Returns the number of PDUs received.
    pub fn poll(&mut self, bufs: &mut dyn HostBuffers, done: &mut dyn FnMut(u64, Cqe)) -> Result<usize, InitError> {
        if self.q.wants_transmit() {
            self.q.transmit(&mut self.stream, bufs)?;
        }
        let n = self.q.poll_receive(&mut self.stream, bufs, done)?;
        if self.q.wants_transmit() {
            self.q.transmit(&mut self.stream, bufs)?;
        }
        Ok(n)
    }

    /// Submits a command without data that completes later (e.g. an
    /// Asynchronous Event Request); its completion is returned by
    /// [`Connection::poll_async`] with `tag`, which must not be
    /// [`EXEC_TAG`].
    pub fn submit_async(&mut self, sqe: Sqe, tag: u64) -> Result<u16, InitError> {
        if tag == EXEC_TAG {
            return Err(InitError::Invalid("tag reserved for synchronous commands"));
        }
        Ok(self.q.submit(sqe, DataDir::None, tag)?)
    }

    /// Polls once without blocking and returns the completions of commands
    /// submitted with [`Connection::submit_async`] (also those that arrived
    /// while [`Connection::exec`] ran).
    pub fn poll_async(&mut self) -> Result<Vec<(u64, Cqe)>, InitError> {
        let mut none = SyncData::None;
        let mut got = Vec::new();
        let polled = self.poll(&mut OneBuf { tag: EXEC_TAG, data: &mut none }, &mut |t, c| got.push((t, c)));
        if let Err(e) = polled {
            self.flush_termination(&OneBuf { tag: EXEC_TAG, data: &mut none });
            return Err(e);
        }
        let mut out = std::mem::take(&mut self.async_done);
        out.extend(got);
        Ok(out)
    }

    /// Runs one command to completion (control path: polls with short
    /// sleeps). Only commands from [`Connection::submit_async`] may be
    /// outstanding besides it.
    pub fn exec(&mut self, sqe: Sqe, mut data: SyncData<'_>, timeout: Duration) -> Result<Cqe, InitError> {
        const TAG: u64 = EXEC_TAG;
        let dir = match &data {
            SyncData::None => DataDir::None,
            SyncData::To(b) => DataDir::ToController(len32(b.len())?),
            SyncData::From(b) => DataDir::FromController(len32(b.len())?),
        };
        self.q.submit(sqe, dir, TAG)?;
        let deadline = Instant::now() + timeout;
        let mut result = None;
        loop {
            let mut bufs = OneBuf { tag: TAG, data: &mut data };
            let mut other = Vec::new();
            let polled = self.poll(&mut bufs, &mut |tag, cqe| {
                if tag == TAG {
                    result = Some(cqe);
                } else {
                    other.push((tag, cqe));
                }
            });
            self.async_done.extend(other);
            let n = match polled {
                Ok(n) => n,
                Err(e) => {
                    self.flush_termination(&bufs);
                    return Err(e);
                }
            };
            if let Some(c) = result {
                return Ok(c);
            }
            if Instant::now() > deadline {
                return Err(InitError::Timeout("command completion"));
            }
            if n == 0 {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    /// After a fatal error of the queue: writes the termination request it
    /// queued (finishing a partly written PDU first), trying a few times
    /// without blocking for long. Call before [`Connection::close`].
    pub fn flush_termination(&mut self, bufs: &dyn HostBuffers) {
        for _ in 0..TERM_FLUSH_TRIES {
            match self.q.transmit_termination(&mut self.stream, bufs) {
                Ok(false) => std::thread::yield_now(),
                Ok(true) | Err(_) => return,
            }
        }
    }

    /// Shuts the socket down.
    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The tag [`Connection::exec`] uses for its command.
pub const EXEC_TAG: u64 = 0x5359_4e43;

/// Attempts to write a termination request before giving up.
const TERM_FLUSH_TRIES: usize = 64;

fn len32(n: usize) -> Result<u32, InitError> {
    u32::try_from(n).map_err(|_| InitError::Invalid("data buffer larger than 4 GiB"))
}

impl From<io::Error> for InitError {
    fn from(e: io::Error) -> Self {
        InitError::io("socket", e)
    }
}
