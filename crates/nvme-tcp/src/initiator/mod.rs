//! NVMe/TCP initiator: connections over non-blocking sockets, controller
//! bring-up (Connect, Property Get/Set, enable, Identify, number of queues),
//! Keep Alive, Discovery, and I/O queue connections.

mod admin;
mod conn;

pub use admin::{connect_io_queue, discover, AdminQueue, NamespaceData};
pub use conn::{Connection, SyncData, EXEC_TAG};

use crate::host::{HostError, SubmitError};
use nvme_spec::status::Status;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Errors of the initiator's control path.
#[derive(Debug, Error)]
pub enum InitError {
    /// A socket operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The queue failed (protocol error, termination, socket).
    #[error("queue failed")]
    Queue(#[from] HostError),
    /// A command could not be submitted.
    #[error("cannot submit")]
    Submit(#[from] SubmitError),
    /// The controller did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A command failed.
    #[error("{what} failed: {status}")]
    Status {
        /// Which command.
        what: &'static str,
        /// Its status.
        status: Status,
    },
    /// The controller reported something unusable.
    #[error("controller: {0}")]
    Controller(String),
    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

impl InitError {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> Self {
        InitError::Io { context, source }
    }
}

/// The host's identity: NQN and 128-bit host ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostId {
    /// Host NQN.
    pub nqn: String,
    /// Host identifier.
    pub id: [u8; 16],
}

impl HostId {
    /// A generated identity: a random UUID as host ID and the
    /// `nqn.2014-08.org.nvmexpress:uuid:<uuid>` NQN made from it.
    pub fn generate() -> Self {
        let u = bdev::Uuid::random();
        Self { nqn: format!("nqn.2014-08.org.nvmexpress:uuid:{u}"), id: u.0 }
    }
}

/// How to reach and treat a controller.
#[derive(Clone, Debug)]
pub struct ConnectOpts {
    /// Target address.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host identity.
    pub host: HostId,
    /// Keep alive timeout in milliseconds (0: none).
    pub kato_ms: u32,
    /// Request header digests.
    pub hdgst: bool,
    /// Request data digests.
    pub ddgst: bool,
    /// Commands in flight per I/O queue.
    pub io_queue_depth: u16,
    /// Number of I/O queues to ask for.
    pub io_queues: u16,
    /// Timeout of connects and admin commands.
    pub admin_timeout: Duration,
    /// Delay before the first reconnect attempt; it doubles after every
    /// failed attempt, up to `reconnect_delay_max`.
    pub reconnect_delay: Duration,
    /// Longest delay between reconnect attempts.
    pub reconnect_delay_max: Duration,
    /// Give up reconnecting after this long (the bdev then fails all IO).
    pub ctrl_loss_timeout: Duration,
    /// IO submitted while disconnected waits this long for a reconnect
    /// before failing with a path error (zero: fail at once).
    pub fast_io_fail_timeout: Duration,
    /// A command outstanding this long is aborted (Abort on the admin
    /// queue); if it is still outstanding after as long again (at most the
    /// admin timeout), its connection is reset: it completes with
    /// `Timeout`, the others in flight with `PathError`, and the queue
    /// reconnects. Zero: no timeout.
    pub io_timeout: Duration,
    /// TCP congestion control algorithm of the connections (`TCP_CONGESTION`,
    /// e.g. `"reno"`); `None` keeps the system default. On loopback the
    /// pacing of BBR holds large transfers back.
    pub tcp_congestion: Option<String>,
}

impl ConnectOpts {
    /// Options with defaults: generated host identity, KATO 10 s, no
    /// digests, 128 commands per queue, 4 I/O queues, 10 s admin timeout,
    /// reconnect after 1 s, backing off to 8 s, for up to 60 s, fail IO
    /// after 5 s disconnected, IO timeout 30 s, the system's TCP congestion
    /// control.
    pub fn new(addr: SocketAddr, subnqn: &str) -> Self {
        Self {
            addr,
            subnqn: subnqn.to_string(),
            host: HostId::generate(),
            kato_ms: 10_000,
            hdgst: false,
            ddgst: false,
            io_queue_depth: 128,
            io_queues: 4,
            admin_timeout: Duration::from_secs(10),
            reconnect_delay: Duration::from_secs(1),
            reconnect_delay_max: Duration::from_secs(8),
            ctrl_loss_timeout: Duration::from_secs(60),
            fast_io_fail_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            tcp_congestion: None,
        }
    }

    /// The delay before reconnect attempt `failures + 1` (after `failures`
    /// failed attempts): `reconnect_delay * 2^failures`, capped at
    /// `reconnect_delay_max` (and never below `reconnect_delay`).
    pub fn backoff(&self, failures: u32) -> Duration {
        let cap = self.reconnect_delay_max.max(self.reconnect_delay);
        self.reconnect_delay.checked_mul(1u32 << failures.min(20)).map_or(cap, |d| d.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_doubles_up_to_the_cap() {
        let mut o = ConnectOpts::new("127.0.0.1:4420".parse().expect("addr"), "nqn.x");
        o.reconnect_delay = Duration::from_millis(100);
        o.reconnect_delay_max = Duration::from_millis(1000);
        let d: Vec<u64> = (0..6).map(|f| o.backoff(f).as_millis() as u64).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(o.backoff(u32::MAX), Duration::from_millis(1000));
        // A cap below the first delay does not shorten it.
        o.reconnect_delay_max = Duration::from_millis(10);
        assert_eq!(o.backoff(3), Duration::from_millis(100));
    }
}
