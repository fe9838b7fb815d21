//! Streaming PDU receiver.
//!
//! [`PduReceiver`] reassembles PDUs from byte chunks of any size. Header
//! bytes are collected in a small internal buffer; data bytes go straight to
//! the destination the caller's [`DataSink`] names (the command's IO
//! buffer), with the data digest computed on the way. [`StagedReceiver`]
//! adds reads from a socket: headers are read through a staging buffer,
//! while the data part of a PDU is read from the socket directly into the
//! destination, so payload bytes are copied once.

#![forbid(unsafe_code)]

use crate::pdu::wire::CommonHeader;
use crate::pdu::{self, digest, Layout, Pdu, PduError, PduType, RxConfig, MAX_HEADER_REGION};
use std::io::{self, Read};
use thiserror::Error;
use zerocopy::FromBytes;

/// Why a data PDU cannot be placed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PlacementError {
    /// No outstanding command with this ID expects data.
    #[error("data pdu for unknown or idle command {0:#06x}")]
    UnknownCommand(u16),
    /// The transfer tag does not name an R2T of the command.
    #[error("h2c data for command {cid:#06x} with unknown transfer tag {ttag:#06x}")]
    UnknownTag {
        /// Command ID.
        cid: u16,
        /// Transfer tag.
        ttag: u16,
    },
    /// Offset and length exceed the command's data buffer.
    #[error("data at offset {offset} length {len} outside the {size}-byte buffer of command {cid:#06x}")]
    OutOfRange {
        /// Command ID.
        cid: u16,
        /// Data offset.
        offset: u32,
        /// Data length.
        len: u32,
        /// Buffer size.
        size: u32,
    },
    /// Data not contiguous with what was received before.
    #[error("data at offset {offset} for command {cid:#06x}, expected offset {expected}")]
    OutOfOrder {
        /// Command ID.
        cid: u16,
        /// Data offset.
        offset: u32,
        /// Expected offset.
        expected: u32,
    },
    /// The command does not transfer data in this direction.
    #[error("command {0:#06x} does not transfer data this way")]
    WrongDirection(u16),
}

impl PlacementError {
    /// The FES / FEI to report in a termination request (FEI: byte offset
    /// of the offending field in a data PDU header).
    pub fn term_req(&self) -> crate::pdu::TermReq {
        use crate::pdu::Fes;
        let (fes, fei) = match self {
            Self::UnknownCommand(_) => (Fes::InvalidHeaderField, 8),
            Self::UnknownTag { .. } => (Fes::InvalidHeaderField, 10),
            Self::OutOfOrder { .. } => (Fes::InvalidHeaderField, 12),
            Self::OutOfRange { .. } => (Fes::DataOutOfRange, 0),
            Self::WrongDirection(_) => (Fes::InvalidHeaderField, 0),
        };
        crate::pdu::TermReq { fes, fei }
    }
}

/// Where the data part of a received PDU goes.
pub trait DataSink {
    /// Returns the contiguous destination for the data of `pdu` starting at
    /// byte `at` of its data part. It may be shorter than the remaining
    /// data (scatter lists): the receiver asks again for the rest. It must
    /// not be empty. Called with `at == 0` when the header is complete,
    /// which is where the PDU is validated against the command state, and
    /// again as data arrives; it must describe the same memory each time.
    fn data_buffer(&mut self, pdu: &Pdu, at: usize) -> Result<&mut [u8], PlacementError>;
}

/// Errors from the receiver.
#[derive(Debug, Error)]
pub enum RecvError {
    /// A malformed PDU.
    #[error("malformed pdu")]
    Pdu(#[from] PduError),
    /// Data that cannot be placed.
    #[error("misplaced data")]
    Placement(#[from] PlacementError),
    /// Reading the socket failed.
    #[error("socket read failed")]
    Io(#[source] io::Error),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// A previous error left the stream unusable.
    #[error("receiver failed earlier")]
    Poisoned,
}

impl RecvError {
    /// The termination request that reports this error to the peer, for errors in what the peer
    /// sent (`None` for socket errors, a closed connection or an earlier failure).
    pub fn term_req(&self) -> Option<pdu::TermReq> {
        match self {
            RecvError::Pdu(p) => Some(p.term_req()),
            RecvError::Placement(p) => Some(p.term_req()),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum State {
    Common { have: usize },
    Header { l: Layout, have: usize },
    Data { pdu: Pdu, l: Layout, done: usize, crc: u32 },
    Digest { pdu: Pdu, have: usize, crc: u32 },
    Failed,
}

/// A data digest that did not match the data of a PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestMismatch {
    /// Digest received.
    pub got: u32,
    /// Digest computed over the data received.
    pub computed: u32,
}

/// Reassembles PDUs from arbitrary chunks.
///
/// A data digest mismatch is not fatal (the PDU framing is intact): the
/// PDU is returned as usual and [`PduReceiver::take_digest_error`] reports
/// the mismatch; the owner must check it for every PDU with data and treat
/// the data as corrupt (the command fails with a transport error).
#[derive(Debug)]
pub struct PduReceiver {
    cfg: RxConfig,
    hdr: [u8; MAX_HEADER_REGION],
    ddgst: [u8; 4],
    state: State,
    term_len: usize,
    failed_hdr_len: usize,
    digest_error: Option<DigestMismatch>,
}

impl PduReceiver {
    /// A receiver with the given configuration.
    pub fn new(cfg: RxConfig) -> Self {
        Self {
            cfg,
            hdr: [0; MAX_HEADER_REGION],
            ddgst: [0; 4],
            state: State::Common { have: 0 },
            term_len: 0,
            failed_hdr_len: 0,
            digest_error: None,
        }
    }

    /// The data digest mismatch of the PDU returned last, if its data was
    /// corrupt (cleared by the call and by the next PDU).
    pub fn take_digest_error(&mut self) -> Option<DigestMismatch> {
        self.digest_error.take()
    }

    /// The configuration.
    pub fn config(&self) -> &RxConfig {
        &self.cfg
    }

    /// Replaces the configuration (after the IC exchange). Takes effect for
    /// the next PDU; call it only between PDUs.
    pub fn set_config(&mut self, cfg: RxConfig) {
        self.cfg = cfg;
    }

    /// Whether the receiver is between PDUs.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Common { have: 0 })
    }

    /// The data (offending header) of the last termination request.
    pub fn term_data(&self) -> &[u8] {
        self.hdr.get(24..24 + self.term_len).unwrap_or(&[])
    }

    /// The header bytes of the PDU being received (for a termination
    /// request after an error), at most 128 bytes.
    pub fn partial_header(&self) -> &[u8] {
        let n = match self.state {
            State::Common { have } => have,
            State::Header { have, .. } => have,
            State::Data { l, .. } => l.hlen,
            State::Digest { .. } => 0,
            State::Failed => self.failed_hdr_len,
        };
        self.hdr.get(..n.min(128)).unwrap_or(&[])
    }

    fn fail<E: Into<RecvError>>(&mut self, e: E) -> RecvError {
        self.failed_hdr_len = self.partial_header().len();
        self.state = State::Failed;
        e.into()
    }

    /// Consumes bytes from `input` until one PDU is complete or the input is
    /// exhausted. Returns the number of bytes consumed and the PDU if one
    /// completed (its data, if any, is then in the sink's buffer).
    #[inline(always)]
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn DataSink) -> Result<(usize, Option<Pdu>), RecvError> {
        let mut used = 0usize;
        loop {
            let rest = input.get(used..).unwrap_or(&[]);
            match self.state {
                State::Failed => return Err(RecvError::Poisoned),
                State::Common { have } => {
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    if have == 0 {
                        self.digest_error = None;
                        if let Some((n, l, pdu)) = self.whole_header(rest) {
                            used += n;
                            if l.data_len == 0 {
                                return Ok((used, Some(pdu)));
                            }
                            // Validates the PDU against the command and
                            // takes the data that came with the header.
                            let dst = match sink.data_buffer(&pdu, 0) {
                                Ok(d) if !d.is_empty() => d,
                                Ok(_) => return Err(self.fail_at_data(rest, n, l, empty_buffer(&pdu, 0))),
                                Err(e) => return Err(self.fail_at_data(rest, n, l, e)),
                            };
                            let body = rest.get(n..).unwrap_or(&[]);
                            let k = body.len().min(l.data_len as usize).min(dst.len());
                            let (src, dst) = (&body[..k], &mut dst[..k]);
                            dst.copy_from_slice(src);
                            let crc = if l.ddgst { digest::crc32c_append(0, src) } else { 0 };
                            used += k;
                            if let Some(p) = self.data_progress(pdu, l, k, crc) {
                                return Ok((used, Some(p)));
                            }
                            continue;
                        }
                    }
                    let n = rest.len().min(8 - have);
                    self.hdr[have..have + n].copy_from_slice(&rest[..n]);
                    used += n;
                    if have + n < 8 {
                        self.state = State::Common { have: have + n };
                        continue;
                    }
                    let ch = match CommonHeader::read_from_bytes(&self.hdr[..8]) {
                        Ok(c) => c,
                        Err(_) => return Err(self.fail(PduError::UnknownType(self.hdr[0]))),
                    };
                    let l = match pdu::layout(&ch, &self.cfg) {
                        Ok(l) => l,
                        Err(e) => {
                            self.state = State::Common { have: 8 };
                            let e = self.fail(e);
                            return Err(e);
                        }
                    };
                    self.state = State::Header { l, have: 8 };
                    if let Some(p) = self.header_progress(l, 8, sink)? {
                        return Ok((used, Some(p)));
                    }
                }
                State::Header { l, have } => {
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let want = Self::header_bytes(&l);
                    let n = rest.len().min(want - have);
                    self.hdr[have..have + n].copy_from_slice(&rest[..n]);
                    used += n;
                    if let Some(p) = self.header_progress(l, have + n, sink)? {
                        return Ok((used, Some(p)));
                    }
                }
                State::Data { pdu, l, done, crc } => {
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let total = l.data_len as usize;
                    let dst = match sink.data_buffer(&pdu, done) {
                        Ok(d) if !d.is_empty() => d,
                        Ok(_) => return Err(self.fail(empty_buffer(&pdu, done))),
                        Err(e) => return Err(self.fail(e)),
                    };
                    let n = rest.len().min(total - done).min(dst.len());
                    let (src, dst) = (&rest[..n], &mut dst[..n]);
                    dst.copy_from_slice(src);
                    let crc = if l.ddgst { digest::crc32c_append(crc, src) } else { crc };
                    used += n;
                    if let Some(p) = self.data_progress(pdu, l, done + n, crc) {
                        return Ok((used, Some(p)));
                    }
                }
                State::Digest { pdu, have, crc } => {
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let n = rest.len().min(4 - have);
                    self.ddgst[have..have + n].copy_from_slice(&rest[..n]);
                    used += n;
                    if have + n < 4 {
                        self.state = State::Digest { pdu, have: have + n, crc };
                        continue;
                    }
                    let got = u32::from_le_bytes(self.ddgst);
                    self.digest_error = (got != crc).then_some(DigestMismatch { got, computed: crc });
                    self.state = State::Common { have: 0 };
                    return Ok((used, Some(pdu)));
                }
            }
        }
    }

    /// Fast path at a PDU boundary: when `input` holds the PDU's whole
    /// header region and it parses, the PDU is decoded in place, without
    /// collecting the header first. Returns the header region length, the
    /// layout and the PDU; `None` (nothing consumed) leaves the PDU to the
    /// byte-wise path, which reports errors and keeps the offending header.
    #[inline(always)]
    fn whole_header(&self, input: &[u8]) -> Option<(usize, Layout, Pdu)> {
        let ch = CommonHeader::read_from_bytes(input.get(..8)?).ok()?;
        let l = pdu::layout(&ch, &self.cfg).ok()?;
        if matches!(l.pdu_type, PduType::H2CTermReq | PduType::C2HTermReq) {
            return None;
        }
        let region = input.get(..l.header_region)?;
        let pdu = pdu::parse_header(region, &l).ok()?;
        Some((l.header_region, l, pdu))
    }

    /// Fails after the fast path took a header whose data cannot be
    /// placed, keeping the header for the termination request.
    fn fail_at_data(&mut self, input: &[u8], n: usize, l: Layout, e: PlacementError) -> RecvError {
        if let (Some(dst), Some(src)) = (self.hdr.get_mut(..n), input.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.state = State::Header { l, have: n };
        self.fail(e)
    }

    /// Header bytes to collect: the header region, plus the data of
    /// termination requests (kept internally).
    fn header_bytes(l: &Layout) -> usize {
        if matches!(l.pdu_type, PduType::H2CTermReq | PduType::C2HTermReq) {
            l.header_region + l.data_len as usize
        } else {
            l.header_region
        }
    }

    fn header_progress(&mut self, l: Layout, have: usize, sink: &mut dyn DataSink) -> Result<Option<Pdu>, RecvError> {
        self.state = State::Header { l, have };
        if have < Self::header_bytes(&l) {
            return Ok(None);
        }
        let pdu = match pdu::parse_header(&self.hdr[..l.header_region], &l) {
            Ok(p) => p,
            Err(e) => return Err(self.fail(e)),
        };
        if matches!(pdu, Pdu::H2CTermReq(_) | Pdu::C2HTermReq(_)) {
            self.term_len = l.data_len as usize;
            self.state = State::Common { have: 0 };
            return Ok(Some(pdu));
        }
        if l.data_len == 0 {
            self.state = State::Common { have: 0 };
            return Ok(Some(pdu));
        }
        match sink.data_buffer(&pdu, 0) {
            Ok(d) if !d.is_empty() => {}
            Ok(_) => return Err(self.fail(empty_buffer(&pdu, 0))),
            Err(e) => return Err(self.fail(e)),
        }
        self.state = State::Data { pdu, l, done: 0, crc: 0 };
        Ok(None)
    }

    fn data_progress(&mut self, pdu: Pdu, l: Layout, done: usize, crc: u32) -> Option<Pdu> {
        if done < l.data_len as usize {
            self.state = State::Data { pdu, l, done, crc };
            return None;
        }
        if l.ddgst {
            self.state = State::Digest { pdu, have: 0, crc };
            return None;
        }
        self.state = State::Common { have: 0 };
        Some(pdu)
    }

    /// Data bytes still expected for the PDU being received, if the
    /// receiver is in the data part of a PDU.
    pub fn data_remaining(&self) -> Option<usize> {
        match self.state {
            State::Data { l, done, .. } => Some(l.data_len as usize - done),
            _ => None,
        }
    }

    /// While in the data part of a PDU: one vectored read from `src`
    /// directly into the sink's buffer (the rest of this PDU's data there)
    /// and on into `ahead` (the following bytes: next headers), so a PDU
    /// boundary costs no extra read. Returns the PDU if it completed, the
    /// bytes that went to `ahead`, and whether the read returned less than
    /// asked (the source is probably empty).
    fn read_data_direct<R: Read>(
        &mut self,
        src: &mut R,
        sink: &mut dyn DataSink,
        ahead: &mut [u8],
    ) -> Result<Direct, RecvError> {
        let State::Data { pdu, l, done, crc } = self.state else {
            return Ok(Direct::NotInData);
        };
        let dst = match sink.data_buffer(&pdu, done) {
            Ok(d) if !d.is_empty() => d,
            Ok(_) => return Err(self.fail(empty_buffer(&pdu, done))),
            Err(e) => return Err(self.fail(e)),
        };
        let remaining = l.data_len as usize - done;
        let want = remaining.min(dst.len());
        let dst = &mut dst[..want];
        // Read ahead only when this read finishes the PDU's data (a
        // scatter list's next segment must come before later bytes).
        let ahead = if want == remaining { ahead } else { &mut [][..] };
        let asked = want + ahead.len();
        let n = {
            let mut bufs = [io::IoSliceMut::new(dst), io::IoSliceMut::new(ahead)];
            match src.read_vectored(&mut bufs) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => n,
                Err(e) => return Err(RecvError::Io(e)),
            }
        };
        let in_data = n.min(want);
        let crc = if l.ddgst { digest::crc32c_append(crc, dst.get(..in_data).unwrap_or(&[])) } else { crc };
        Ok(Direct::Read { pdu: self.data_progress(pdu, l, done + in_data, crc), ahead: n - in_data, short: n < asked })
    }
}

fn empty_buffer(pdu: &Pdu, at: usize) -> PlacementError {
    let (cid, offset) = match pdu {
        Pdu::H2CData(d) | Pdu::C2HData(d) => (d.cccid, d.offset),
        Pdu::CapsuleCmd { sqe, .. } => (sqe.cid(), 0),
        _ => (0, 0),
    };
    PlacementError::OutOfRange {
        cid,
        offset: offset.saturating_add(at as u32),
        len: pdu.data_len(),
        size: offset.saturating_add(at as u32),
    }
}

enum Direct {
    NotInData,
    Read { pdu: Option<Pdu>, ahead: usize, short: bool },
}

/// Data parts shorter than this are read through the staging buffer
/// (together with the following headers) rather than directly.
const DIRECT_MIN: usize = 1024;

/// Data parts at least this large are followed by a short read-ahead.
const BIG_DATA: usize = 32 << 10;

/// Read-ahead after a large data part: room for the next headers and the
/// start of a data part.
const READ_AHEAD_SMALL: usize = 4096;

/// A [`PduReceiver`] reading from a byte source (a non-blocking socket)
/// through a staging buffer for headers and directly into IO buffers for
/// data.
#[derive(Debug)]
pub struct StagedReceiver {
    rx: PduReceiver,
    stage: Box<[u8]>,
    start: usize,
    end: usize,
    /// The last read returned less than asked: once the staged bytes are
    /// used up, report "would block" without another read (saves the
    /// read that would only say so).
    drained: bool,
}

impl StagedReceiver {
    /// A receiver with a staging buffer of `stage_len` bytes (at least 256).
    pub fn new(cfg: RxConfig, stage_len: usize) -> Self {
        Self {
            rx: PduReceiver::new(cfg),
            stage: vec![0; stage_len.max(256)].into_boxed_slice(),
            start: 0,
            end: 0,
            drained: false,
        }
    }

    /// The inner receiver (configuration, termination data).
    pub fn inner(&self) -> &PduReceiver {
        &self.rx
    }

    /// The inner receiver, mutably (to reconfigure after the IC exchange).
    pub fn inner_mut(&mut self) -> &mut PduReceiver {
        &mut self.rx
    }

    /// Reads until one PDU is complete (`Ok(Some)`) or the source would
    /// block (`Ok(None)`). EOF gives [`RecvError::Closed`]. After a read
    /// that returned less than asked, `Ok(None)` comes once the bytes read
    /// are used up, without reading again; the next call reads.
    #[inline(always)]
    pub fn poll<R: Read>(&mut self, src: &mut R, sink: &mut dyn DataSink) -> Result<Option<Pdu>, RecvError> {
        loop {
            if self.start < self.end {
                let chunk = self.stage.get(self.start..self.end).unwrap_or(&[]);
                let (n, p) = self.rx.feed(chunk, sink)?;
                self.start += n;
                if p.is_some() {
                    return Ok(p);
                }
                continue;
            }
            self.start = 0;
            self.end = 0;
            if self.drained {
                self.drained = false;
                return Ok(None);
            }
            if let Some(remaining) = self.rx.data_remaining().filter(|&r| r >= DIRECT_MIN) {
                // After a large data part, read ahead only a little: the
                // next PDU is probably large too and its data is better
                // read directly.
                let ahead_len = if remaining >= BIG_DATA { READ_AHEAD_SMALL } else { self.stage.len() };
                let ahead_len = ahead_len.min(self.stage.len());
                let ahead = self.stage.get_mut(..ahead_len).unwrap_or(&mut []);
                match self.rx.read_data_direct(src, sink, ahead) {
                    Ok(Direct::Read { pdu: p, ahead, short }) => {
                        self.drained = short;
                        self.end = ahead;
                        match p {
                            Some(p) => return Ok(Some(p)),
                            None => continue,
                        }
                    }
                    Ok(Direct::NotInData) => {}
                    Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            match src.read(&mut self.stage) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => {
                    self.end = n;
                    self.drained = n < self.stage.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests;
