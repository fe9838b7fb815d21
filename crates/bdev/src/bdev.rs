//! The `Bdev` trait: what every block device offers, and the IO channel contract.

use crate::io::{IoRequest, IoStatus, IoTypeSet, QueueFull};
use crate::BdevError;
use std::fmt::Write as _;

/// A 128-bit identifier (UUID or NGUID), stored big-endian as printed.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero UUID, meaning "none".
    pub const NIL: Uuid = Uuid([0; 16]);

    /// A random (version 4) UUID.
    pub fn random() -> Uuid {
        let mut b = [0u8; 16];
        let mut s = crate::rand::seed();
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&crate::rand::next(&mut s).to_le_bytes());
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Uuid(b)
    }

    /// Whether this is the nil UUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (or 32 hex digits without dashes).
    pub fn parse(s: &str) -> Option<Uuid> {
        let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
        if hex.len() != 32 || s.len() != 32 && s.len() != 36 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let txt = std::str::from_utf8(pair).ok()?;
            b[i] = u8::from_str_radix(txt, 16).ok()?;
        }
        Some(Uuid(b))
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, x) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// How a namespace identifies itself, so multipath can tell two paths to one namespace.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct NamespaceId {
    /// NVMe namespace globally unique identifier.
    pub nguid: Option<[u8; 16]>,
    /// NVMe IEEE extended unique identifier.
    pub eui64: Option<[u8; 8]>,
    /// NVMe namespace UUID (or the bdev's own UUID for other bdevs).
    pub uuid: Option<Uuid>,
}

/// ANA (asymmetric namespace access) state a path reports.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AnaState {
    /// Optimized path.
    Optimized,
    /// Usable, but slower.
    NonOptimized,
    /// Not usable now.
    Inaccessible,
    /// Not usable until the target says otherwise.
    PersistentLoss,
    /// In transition between states.
    Change,
}

/// Static description of a bdev.
#[derive(Clone, Debug)]
pub struct BdevInfo {
    /// Unique name.
    pub name: String,
    /// Other names it can be opened by.
    pub aliases: Vec<String>,
    /// The bdev's UUID.
    pub uuid: Uuid,
    /// Module that created it (`malloc`, `null`, `aio`, `raid`, ...).
    pub product: String,
    /// Logical block size in bytes (a power of two, at least 512).
    pub block_size: u32,
    /// Number of logical blocks.
    pub num_blocks: u64,
    /// Required alignment of data buffers in bytes (1 = any).
    pub required_alignment: u32,
    /// IOs should not cross multiples of this many blocks (0 = no boundary), e.g. a RAID strip.
    pub optimal_io_boundary: u32,
    /// Largest IO in blocks the bdev accepts in one request (0 = no limit).
    pub max_io_blocks: u32,
    /// The IO types the bdev executes.
    pub supported: IoTypeSet,
    /// Whether reads of unmapped blocks return zeroes.
    pub unmap_zeroes: bool,
    /// Whether the device has a volatile write cache (flush does real work).
    pub volatile_cache: bool,
    /// Namespace identity for path grouping.
    pub ns_id: NamespaceId,
}

impl BdevInfo {
    /// A description with defaults: no aliases, random UUID, alignment 1, no boundary,
    /// no IO size limit, unmapped blocks read as zeroes, no volatile cache.
    pub fn new(name: &str, product: &str, block_size: u32, num_blocks: u64, supported: IoTypeSet) -> BdevInfo {
        let uuid = Uuid::random();
        BdevInfo {
            name: name.to_string(),
            aliases: Vec::new(),
            uuid,
            product: product.to_string(),
            block_size,
            num_blocks,
            required_alignment: 1,
            optimal_io_boundary: 0,
            max_io_blocks: 0,
            supported,
            unmap_zeroes: true,
            volatile_cache: false,
            ns_id: NamespaceId { uuid: Some(uuid), ..Default::default() },
        }
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks * self.block_size as u64
    }
}

/// A block device.
///
/// Implementations are shared between reactors (`Send + Sync`); all IO goes through
/// per-reactor channels from [`Bdev::open_channel`], which share no lock with each other.
pub trait Bdev: Send + Sync + 'static {
    /// Static description.
    fn info(&self) -> &BdevInfo;

    /// Create an IO channel for the calling reactor thread. Each call returns an independent
    /// channel; the caller keeps it on the thread that created it.
    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError>;

    /// ANA state of this path, when the backend reports one (NVMe).
    fn ana_state(&self) -> Option<AnaState> {
        None
    }

    /// Called once when the bdev is unregistered: stop background work, fail new IO with
    /// `PathError`. Channels still open keep working until dropped, answering every IO.
    fn shutdown(&self) {}

    /// Module-specific configuration for `save_config`, as a JSON `params` object
    /// (`None` for bdevs that are not created from the config, e.g. members found by examine).
    fn config_params(&self) -> Option<String> {
        None
    }
}

/// `s` as a JSON string literal, for [`Bdev::config_params`] (Rust's `{:?}` is not JSON:
/// it writes `\u{1}` and `\0`).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A per-reactor IO channel.
///
/// # Contract
/// - **Submission**: [`IoChannel::submit`] queues a request and never completes it inline; it
///   returns [`QueueFull`] when the channel has no free descriptor (poll, then retry).
///   Requests reaching a backend channel have been validated by [`crate::BdevChannel`]: range
///   inside the device, buffers matching the length and alignment, type supported.
/// - **Doorbells**: queued requests reach the device at the latest in the next
///   [`IoChannel::poll`]; backends batch there (one `io_uring_enter`, one doorbell per pass).
/// - **Completion**: every submitted request is answered exactly once, from `poll`, on the
///   thread that owns the channel, with the request's tag. Dropping a channel first answers
///   (or waits for) everything in flight.
/// - **Ordering**: none between requests in flight together. A caller that needs B after A
///   waits for A's completion before submitting B.
/// - **Flush**: when a flush completes with success, every write that had completed before the
///   flush was submitted is durable.
/// - **Buffers**: the submitter owns the buffers; the channel may access them only between
///   submit and the completion it reports (see [`IoRequest`]).
pub trait IoChannel {
    /// Queue one request.
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull>;

    /// Push queued requests to the device and deliver completions through `done(tag, status)`.
    /// Returns the number of completions delivered.
    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize;

    /// Requests submitted and not yet completed.
    fn in_flight(&self) -> usize;

    /// Sleep until a request in flight may have completed, or `timeout` passes, for callers
    /// that would otherwise spin on [`IoChannel::poll`] (a fio job thread waiting for a slow
    /// device). Completions are still delivered only by `poll`. Returns false when the channel
    /// cannot sleep this way (the default); the caller then keeps polling.
    fn wait(&mut self, timeout: std::time::Duration) -> bool {
        let _ = timeout;
        false
    }
}
