//! Transmit queue: PDU headers encoded in place, data sent straight from the
//! IO buffers with vectored writes, data digests computed before the first
//! byte of a PDU goes out. Partial writes resume where they stopped.

#![forbid(unsafe_code)]

use crate::pdu::{self, digest, EncodeError, EncodedHeader, Pdu, TxConfig};
use std::io::{self, IoSlice, Write};

/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 256;

/// Source of outgoing data.
pub trait TxData {
    /// The contiguous bytes of the data buffer of command `key` starting at
    /// byte `at`; may be shorter than needed (scatter lists), must not be
    /// empty while `at` is inside the buffer. `None` if there is no such
    /// buffer.
    fn tx_data(&self, key: u16, at: u32) -> Option<&[u8]>;
}

/// Data following a PDU header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRef {
    /// Which command's buffer ([`TxData::tx_data`] key).
    pub key: u16,
    /// Offset in that buffer.
    pub offset: u32,
    /// Length.
    pub len: u32,
}

/// Told to the owner when a PDU has been written completely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// Command key.
    pub key: u16,
    /// Owner-defined meaning.
    pub kind: u8,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    hdr: EncodedHeader,
    data: Option<DataRef>,
    ddgst: [u8; 4],
    started: bool,
    sent: usize,
    release: Option<Release>,
}

impl Entry {
    const EMPTY: Entry =
        Entry { hdr: EncodedHeader::EMPTY, data: None, ddgst: [0; 4], started: false, sent: 0, release: None };

    fn data_len(&self) -> usize {
        self.data.map_or(0, |d| d.len as usize)
    }

    fn total(&self) -> usize {
        self.hdr.as_slice().len() + self.data_len() + if self.hdr.ddgst { 4 } else { 0 }
    }
}

/// Errors writing PDUs.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The socket write failed.
    #[error("socket write failed")]
    Io(#[source] io::Error),
    /// A data buffer the PDU names is missing or too short.
    #[error("data buffer of command {key:#06x} ends before byte {at}")]
    MissingData {
        /// Command key.
        key: u16,
        /// Offset that could not be read.
        at: u32,
    },
}

/// A queue of PDUs waiting to be written.
///
/// Entries live in a ring that only grows: headers are encoded in place in
/// the slot they are sent from, so queueing a PDU moves no header bytes.
#[derive(Debug)]
pub struct TxQueue {
    ring: Vec<Entry>,
    /// Index of the first entry.
    head: usize,
    /// Number of entries.
    len: usize,
    cfg: TxConfig,
}

impl TxQueue {
    /// An empty queue with room for `capacity` PDUs before it grows.
    pub fn new(capacity: usize) -> Self {
        Self { ring: vec![Entry::EMPTY; capacity], head: 0, len: 0, cfg: TxConfig::INITIAL }
    }

    /// Ring index of the `i`th entry (`i < ring.len()`).
    fn idx(&self, i: usize) -> usize {
        let j = self.head + i;
        if j >= self.ring.len() {
            j - self.ring.len()
        } else {
            j
        }
    }

    /// The `i`th entry.
    fn nth(&self, i: usize) -> Option<&Entry> {
        if i >= self.len {
            return None;
        }
        self.ring.get(self.idx(i))
    }

    /// Iterates over the entries in order.
    fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        (0..self.len).filter_map(move |i| self.nth(i))
    }

    /// The slot the next entry goes to, growing the ring when it is full.
    fn tail_slot(&mut self) -> usize {
        if self.len == self.ring.len() {
            self.ring.rotate_left(self.head);
            self.head = 0;
            let more = self.ring.len().max(4);
            self.ring.resize(self.ring.len() + more, Entry::EMPTY);
        }
        self.idx(self.len)
    }

    fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = self.idx(1);
            self.len -= 1;
        }
    }

    /// The encoding configuration.
    pub fn config(&self) -> TxConfig {
        self.cfg
    }

    /// Sets the encoding configuration (after the IC exchange).
    pub fn set_config(&mut self, cfg: TxConfig) {
        self.cfg = cfg;
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of PDUs waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Queues `pdu`; its data (if `pdu.data_len() > 0`) comes from `data`.
    pub fn push(&mut self, pdu: &Pdu, data: Option<DataRef>, release: Option<Release>) -> Result<(), EncodeError> {
        let data = data.filter(|d| d.len > 0 && pdu.data_len() == d.len);
        if pdu.data_len() > 0 && data.is_none() {
            return Err(EncodeError::TooLong(pdu.data_len()));
        }
        let cfg = self.cfg;
        let at = self.tail_slot();
        let e = self.ring.get_mut(at).ok_or(EncodeError::TooLong(pdu.data_len()))?;
        pdu::encode_into(pdu, &cfg, &mut e.hdr)?;
        e.data = data;
        e.started = false;
        e.sent = 0;
        e.release = release;
        self.len += 1;
        Ok(())
    }

    /// Queues an already encoded header region (e.g. a termination request).
    pub fn push_encoded(&mut self, hdr: EncodedHeader, data: Option<DataRef>, release: Option<Release>) {
        self.push_entry(Entry { hdr, data, ddgst: [0; 4], started: false, sent: 0, release });
    }

    fn push_entry(&mut self, e: Entry) {
        let at = self.tail_slot();
        if let Some(slot) = self.ring.get_mut(at) {
            *slot = e;
            self.len += 1;
        }
    }

    /// Replaces what is queued by a termination request: PDUs not written
    /// at all are dropped (without release notices), a PDU partly written
    /// stays first so the stream remains well framed, and `term` follows.
    pub fn terminate(&mut self, term: EncodedHeader) {
        let partial = self.nth(0).copied().filter(|e| e.sent > 0);
        self.head = 0;
        self.len = 0;
        if let Some(mut e) = partial {
            e.release = None;
            self.push_entry(e);
        }
        self.push_encoded(term, None, None);
    }

    /// Drops queued PDUs of command `key` that have not started; returns
    /// how many were dropped.
    pub fn cancel_unstarted(&mut self, key: u16) -> usize {
        let before = self.len;
        let mut kept = 0;
        for i in 0..before {
            let Some(e) = self.nth(i).copied() else { break };
            if e.started || e.release.is_none_or(|r| r.key != key) {
                let to = self.idx(kept);
                if let Some(slot) = self.ring.get_mut(to) {
                    *slot = e;
                }
                kept += 1;
            }
        }
        self.len = kept;
        before - kept
    }

    /// Writes as much as `w` accepts. Returns the bytes written; stops at
    /// `WouldBlock` or when the queue is empty. `released` is told about
    /// each PDU written completely.
    pub fn write_to<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        src: &dyn TxData,
        released: &mut dyn FnMut(Release),
    ) -> Result<usize, TxError> {
        let mut total = 0;
        while !self.is_empty() {
            self.start_entries(src)?;
            let n = {
                let mut slices: [IoSlice<'_>; MAX_SLICES] = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.gather(src, &mut slices)?;
                match w.write_vectored(&slices[..count]) {
                    Ok(0) => return Err(TxError::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(TxError::Io(e)),
                }
            };
            total += n;
            self.advance(n, released);
        }
        Ok(total)
    }

    /// Computes data digests of entries about to be written.
    fn start_entries(&mut self, src: &dyn TxData) -> Result<(), TxError> {
        for i in 0..self.len.min(MAX_SLICES / 2) {
            let at = self.idx(i);
            let Some(e) = self.ring.get_mut(at) else { break };
            if e.started {
                continue;
            }
            e.started = true;
            if let (true, Some(d)) = (e.hdr.ddgst, e.data) {
                let mut crc = 0u32;
                let mut at = 0u32;
                while at < d.len {
                    let seg = segment(src, d, at)?;
                    crc = digest::crc32c_append(crc, seg);
                    at += seg.len() as u32;
                }
                e.ddgst = crc.to_le_bytes();
            }
        }
        Ok(())
    }

    /// Fills `slices` with the unsent bytes of the first entries.
    fn gather<'a>(&'a self, src: &'a dyn TxData, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> Result<usize, TxError> {
        let mut n = 0;
        'entries: for e in self.iter() {
            if !e.started {
                break;
            }
            let hdr = e.hdr.as_slice();
            let mut pos = e.sent;
            if pos < hdr.len() {
                if n == MAX_SLICES {
                    break;
                }
                slices[n] = IoSlice::new(&hdr[pos..]);
                n += 1;
                pos = hdr.len();
            }
            let data_end = hdr.len() + e.data_len();
            if let Some(d) = e.data {
                while pos < data_end {
                    if n == MAX_SLICES {
                        break 'entries;
                    }
                    let at = (pos - hdr.len()) as u32;
                    let seg = segment(src, d, at)?;
                    slices[n] = IoSlice::new(seg);
                    n += 1;
                    pos += seg.len();
                }
            }
            if e.hdr.ddgst && pos < data_end + 4 {
                if n == MAX_SLICES {
                    break;
                }
                slices[n] = IoSlice::new(&e.ddgst[pos - data_end..]);
                n += 1;
            }
        }
        Ok(n)
    }

    fn advance(&mut self, mut n: usize, released: &mut dyn FnMut(Release)) {
        while n > 0 {
            if self.len == 0 {
                return;
            }
            let head = self.head;
            let Some(e) = self.ring.get_mut(head) else {
                return;
            };
            let left = e.total() - e.sent;
            if n < left {
                e.sent += n;
                return;
            }
            n -= left;
            if let Some(r) = e.release {
                released(r);
            }
            self.pop_front();
        }
    }
}

/// The segment of `d` at data offset `at`, clipped to the data length.
fn segment(src: &dyn TxData, d: DataRef, at: u32) -> Result<&[u8], TxError> {
    let missing = TxError::MissingData { key: d.key, at: d.offset.saturating_add(at) };
    let buf_at = d.offset.checked_add(at).ok_or(missing)?;
    let seg = src.tx_data(d.key, buf_at).ok_or(TxError::MissingData { key: d.key, at: buf_at })?;
    let want = (d.len - at) as usize;
    let seg = seg.get(..want.min(seg.len())).unwrap_or(&[]);
    if seg.is_empty() {
        return Err(TxError::MissingData { key: d.key, at: buf_at });
    }
    Ok(seg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{parse_pdu, DataPdu, Role, RxConfig};

    /// Buffers split into 100-byte segments.
    struct Bufs(Vec<Vec<u8>>);

    impl TxData for Bufs {
        fn tx_data(&self, key: u16, at: u32) -> Option<&[u8]> {
            let b = self.0.get(usize::from(key))?;
            let at = at as usize;
            let end = (at + 100 - at % 100).min(b.len());
            b.get(at..end)
        }
    }

    /// Accepts at most `max` bytes per call, blocking every other call.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        block: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.block = !self.block;
            if self.block {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn c2h(cid: u16, offset: u32, len: u32, last: bool) -> Pdu {
        Pdu::C2HData(DataPdu { cccid: cid, ttag: 0, offset, length: len, last, success: false })
    }

    #[test]
    fn writes_headers_data_and_digests_across_partial_writes() {
        let bufs = Bufs(vec![(0..1000u32).map(|i| i as u8).collect(), (0..5000u32).map(|i| (i * 7) as u8).collect()]);
        for (hdgst, ddgst) in [(false, false), (true, true), (false, true)] {
            let cfg = TxConfig { hdgst, ddgst, align: 4 };
            let mut q = TxQueue::new(4);
            q.set_config(cfg);
            let pdus = [
                (c2h(0, 10, 900, true), 0u16, 10u32, 900u32),
                (c2h(1, 0, 2500, false), 1, 0, 2500),
                (c2h(1, 2500, 2500, true), 1, 2500, 2500),
            ];
            for (i, (p, key, off, len)) in pdus.iter().enumerate() {
                q.push(
                    p,
                    Some(DataRef { key: *key, offset: *off, len: *len }),
                    Some(Release { key: *key, kind: i as u8 }),
                )
                .unwrap();
            }
            let mut w = Trickle { out: vec![], max: 37, block: false };
            let mut rel = vec![];
            while !q.is_empty() {
                q.write_to(&mut w, &bufs, &mut |r| rel.push(r.kind)).unwrap();
            }
            assert_eq!(rel, vec![0, 1, 2]);
            let rx = RxConfig { role: Role::Host, hdgst, ddgst, align: 4, max_data: 1 << 20, max_incapsule: 0 };
            let mut pos = 0;
            for (p, key, off, len) in pdus {
                let (got, data, n) = parse_pdu(&w.out[pos..], &rx).unwrap();
                assert_eq!(got, p);
                let b = &bufs.0[usize::from(key)];
                assert_eq!(data, &b[off as usize..(off + len) as usize]);
                pos += n;
            }
            assert_eq!(pos, w.out.len());
        }
    }

    #[test]
    fn ring_wraps_grows_and_cancels_in_order() {
        let bufs = Bufs((0..8u32).map(|k| (0..300u32).map(|i| (i + k) as u8).collect()).collect());
        let mut q = TxQueue::new(3);
        let mut w = Trickle { out: vec![], max: 50, block: false };
        let mut rel = vec![];
        let mut expect = vec![];
        let push = |q: &mut TxQueue, key: u16, expect: &mut Vec<u16>| {
            q.push(
                &c2h(key, 0, 300, true),
                Some(DataRef { key, offset: 0, len: 300 }),
                Some(Release { key, kind: key as u8 }),
            )
            .unwrap();
            expect.push(key);
        };
        // Fill, drain part of it so the ring wraps, then push past its size.
        for key in 0..3 {
            push(&mut q, key, &mut expect);
        }
        while rel.len() < 2 {
            q.write_to(&mut w, &bufs, &mut |r| rel.push(r.key)).unwrap();
        }
        for key in 3..8 {
            push(&mut q, key, &mut expect);
        }
        // Drop two unstarted PDUs from the middle.
        assert_eq!(q.cancel_unstarted(5), 1);
        assert_eq!(q.cancel_unstarted(6), 1);
        expect.retain(|&k| k != 5 && k != 6);
        while !q.is_empty() {
            q.write_to(&mut w, &bufs, &mut |r| rel.push(r.key)).unwrap();
        }
        assert_eq!(rel, expect);
        let rx =
            RxConfig { role: Role::Host, hdgst: false, ddgst: false, align: 4, max_data: 1 << 20, max_incapsule: 0 };
        let mut pos = 0;
        for key in expect {
            let (got, data, n) = parse_pdu(&w.out[pos..], &rx).unwrap();
            assert_eq!(got, c2h(key, 0, 300, true));
            assert_eq!(data, &bufs.0[usize::from(key)][..]);
            pos += n;
        }
        assert_eq!(pos, w.out.len());
    }

    #[test]
    fn missing_data_and_cancel() {
        let bufs = Bufs(vec![vec![1; 10]]);
        let mut q = TxQueue::new(2);
        q.push(&c2h(0, 0, 20, true), Some(DataRef { key: 0, offset: 0, len: 20 }), Some(Release { key: 0, kind: 0 }))
            .unwrap();
        let mut out = Vec::new();
        assert!(matches!(q.write_to(&mut out, &bufs, &mut |_| {}), Err(TxError::MissingData { key: 0, at: 10 })));
        let mut q = TxQueue::new(2);
        q.push(&c2h(0, 0, 5, true), Some(DataRef { key: 0, offset: 0, len: 5 }), Some(Release { key: 3, kind: 0 }))
            .unwrap();
        assert_eq!(q.cancel_unstarted(3), 1);
        assert!(q.is_empty());
        // Data length must match the PDU.
        assert!(q.push(&c2h(0, 0, 5, true), Some(DataRef { key: 0, offset: 0, len: 4 }), None).is_err());
    }
}
