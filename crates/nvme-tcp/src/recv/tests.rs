use super::*;
use crate::pdu::{to_vec, DataPdu, Role, TermReq, TxConfig};
use nvme_spec::status::Status;
use nvme_spec::Cqe;
use proptest::prelude::*;

/// Collects each PDU's data into a fresh vector.
#[derive(Default)]
struct VecSink {
    cur: Option<Vec<u8>>,
}

impl DataSink for VecSink {
    fn data_buffer(&mut self, pdu: &Pdu, at: usize) -> Result<&mut [u8], PlacementError> {
        if let Pdu::C2HData(d) = pdu {
            if d.cccid == 0xdead {
                return Err(PlacementError::UnknownCommand(d.cccid));
            }
        }
        let v = self.cur.get_or_insert_with(|| vec![0; pdu.data_len() as usize]);
        // Present the buffer as segments of at most 700 bytes (a scatter list).
        let end = (at + 700 - at % 700).min(v.len());
        Ok(&mut v[at..end])
    }
}

fn host_cfg(hdgst: bool, ddgst: bool) -> RxConfig {
    RxConfig { role: Role::Host, hdgst, ddgst, align: 4, max_data: 1 << 20, max_incapsule: 0 }
}

#[derive(Clone, Debug)]
enum Item {
    Resp(u16, u32),
    Data(u16, u32, Vec<u8>, bool),
    R2t(u16, u16, u32, u32),
    Term(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        (any::<u16>(), any::<u32>()).prop_map(|(c, r)| Item::Resp(c, r)),
        (0u16..0xde00, any::<u32>(), prop::collection::vec(any::<u8>(), 1..3000), any::<bool>())
            .prop_map(|(c, o, d, s)| Item::Data(c, o, d, s)),
        (any::<u16>(), any::<u16>(), any::<u32>(), 1u32..).prop_map(|(c, t, o, l)| Item::R2t(c, t, o, l)),
        prop::collection::vec(any::<u8>(), 0..=152).prop_map(Item::Term),
    ]
}

fn encode_item(it: &Item, tx: &TxConfig) -> (Pdu, Vec<u8>, Vec<u8>) {
    let (pdu, data) = match it {
        Item::Resp(c, r) => {
            let mut cqe = Cqe::new(*c, Status::SUCCESS);
            cqe.dw0 = (*r).into();
            (Pdu::CapsuleResp { cqe }, vec![])
        }
        Item::Data(c, o, d, s) => (
            Pdu::C2HData(DataPdu { cccid: *c, ttag: 0, offset: *o, length: d.len() as u32, last: true, success: *s }),
            d.clone(),
        ),
        Item::R2t(c, t, o, l) => {
            (Pdu::R2T(DataPdu { cccid: *c, ttag: *t, offset: *o, length: *l, last: false, success: false }), vec![])
        }
        Item::Term(d) => {
            let t = TermReq { fes: crate::pdu::Fes::SequenceError, fei: 0 };
            let e = crate::pdu::encode_term_req(Role::Controller, t, d).unwrap();
            return (Pdu::C2HTermReq(t), d.clone(), e.as_slice().to_vec());
        }
    };
    let bytes = to_vec(&pdu, &data, tx).unwrap();
    (pdu, data, bytes)
}

/// Feeds `stream` in chunks of the given sizes (cycled); returns the PDUs
/// with their data, or the first error.
fn run_feed(stream: &[u8], splits: &[usize], cfg: RxConfig) -> Result<Vec<(Pdu, Vec<u8>)>, RecvError> {
    let mut rx = PduReceiver::new(cfg);
    let mut sink = VecSink::default();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = splits.get(i % splits.len().max(1)).copied().unwrap_or(1).max(1);
        i += 1;
        let end = (pos + n).min(stream.len());
        let mut chunk = &stream[pos..end];
        while !chunk.is_empty() {
            let (used, p) = rx.feed(chunk, &mut sink)?;
            chunk = &chunk[used..];
            if let Some(p) = p {
                let data = if matches!(p, Pdu::C2HTermReq(_)) {
                    rx.term_data().to_vec()
                } else {
                    sink.cur.take().unwrap_or_default()
                };
                out.push((p, data));
            } else {
                assert!(chunk.is_empty(), "feed stops only at a pdu or end of input");
            }
        }
        pos = end;
    }
    if !rx.at_boundary() {
        return Err(RecvError::Closed);
    }
    Ok(out)
}

/// A reader returning at most the next split size per read, with a
/// WouldBlock between reads.
struct ChunkReader<'a> {
    data: &'a [u8],
    pos: usize,
    splits: &'a [usize],
    i: usize,
    block_next: bool,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_vectored(&mut [io::IoSliceMut::new(buf)])
    }

    /// Fills the buffers in order, at most the next split size in all
    /// (like readv on a socket).
    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        if self.block_next {
            self.block_next = false;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.block_next = true;
        if self.pos == self.data.len() {
            return Ok(0);
        }
        let mut left = self.splits[self.i % self.splits.len()].max(1);
        self.i += 1;
        let mut total = 0;
        for b in bufs.iter_mut() {
            let n = left.min(b.len()).min(self.data.len() - self.pos);
            b[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            left -= n;
            total += n;
        }
        Ok(total)
    }
}

fn run_staged(stream: &[u8], splits: &[usize], cfg: RxConfig, stage: usize) -> Result<Vec<(Pdu, Vec<u8>)>, RecvError> {
    let mut rx = StagedReceiver::new(cfg, stage);
    let mut sink = VecSink::default();
    let mut src = ChunkReader { data: stream, pos: 0, splits, i: 0, block_next: false };
    let mut out = Vec::new();
    loop {
        match rx.poll(&mut src, &mut sink) {
            Ok(Some(p)) => {
                let data = if matches!(p, Pdu::C2HTermReq(_)) {
                    rx.inner().term_data().to_vec()
                } else {
                    sink.cur.take().unwrap_or_default()
                };
                out.push((p, data));
            }
            Ok(None) => continue,
            Err(RecvError::Closed) if src.pos == stream.len() => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_splits_give_identical_results(
        items in prop::collection::vec(item(), 1..12),
        splits in prop::collection::vec(1usize..5000, 1..16),
        hdgst in any::<bool>(),
        ddgst in any::<bool>(),
        byte_at_a_time in any::<bool>(),
    ) {
        let tx = TxConfig { hdgst, ddgst, align: 4 };
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for it in &items {
            let (p, d, b) = encode_item(it, &tx);
            stream.extend_from_slice(&b);
            want.push((p, d));
        }
        let cfg = host_cfg(hdgst, ddgst);
        let whole = run_feed(&stream, &[stream.len()], cfg).unwrap();
        prop_assert_eq!(&whole, &want);
        let splits = if byte_at_a_time { vec![1] } else { splits };
        let split = run_feed(&stream, &splits, cfg).unwrap();
        prop_assert_eq!(&split, &want);
        let staged = run_staged(&stream, &splits, cfg, 512).unwrap();
        prop_assert_eq!(&staged, &want);
        let staged = run_staged(&stream, &splits, cfg, 8192).unwrap();
        prop_assert_eq!(&staged, &want);
    }

    #[test]
    fn random_corruption_never_panics(
        items in prop::collection::vec(item(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        splits in prop::collection::vec(1usize..300, 1..8),
        cut in any::<prop::sample::Index>(),
        hdgst in any::<bool>(),
        ddgst in any::<bool>(),
    ) {
        let tx = TxConfig { hdgst, ddgst, align: 4 };
        let mut stream = Vec::new();
        for it in &items {
            stream.extend_from_slice(&encode_item(it, &tx).2);
        }
        for (i, v) in &flips {
            let i = i.index(stream.len());
            stream[i] ^= v | 1;
        }
        let cfg = host_cfg(hdgst, ddgst);
        let _ = run_feed(&stream, &splits, cfg);
        let _ = run_staged(&stream, &splits, cfg, 256);
        let truncated = &stream[..cut.index(stream.len())];
        let _ = run_feed(truncated, &splits, cfg);
        // Any configuration, including a controller receiving host PDUs.
        let _ = run_feed(&stream, &splits, RxConfig { role: Role::Controller, ..cfg });
    }
}

#[test]
fn errors_poison_and_keep_offending_header() {
    let tx = TxConfig { hdgst: true, ddgst: false, align: 4 };
    let (_, _, mut b) = encode_item(&Item::Resp(1, 2), &tx);
    b[10] ^= 0xff;
    let mut rx = PduReceiver::new(host_cfg(true, false));
    let mut sink = VecSink::default();
    let e = rx.feed(&b, &mut sink).unwrap_err();
    assert!(matches!(e, RecvError::Pdu(PduError::HeaderDigest { .. })));
    assert_eq!(rx.partial_header(), &b[..28]);
    assert!(matches!(rx.feed(&b, &mut sink), Err(RecvError::Poisoned)));
}

#[test]
fn placement_error_stops_receiver() {
    let tx = TxConfig { hdgst: false, ddgst: false, align: 4 };
    let (_, _, b) = encode_item(&Item::Data(0xdead, 0, vec![1; 10], false), &tx);
    let mut rx = PduReceiver::new(host_cfg(false, false));
    let e = rx.feed(&b, &mut VecSink::default()).unwrap_err();
    assert!(matches!(e, RecvError::Placement(PlacementError::UnknownCommand(0xdead))));
    // The whole header arrived in one chunk (decoded in place): the
    // termination request still gets it, as when it arrives byte by byte.
    assert_eq!(rx.partial_header(), &b[..24]);
    let mut slow = PduReceiver::new(host_cfg(false, false));
    let mut err = None;
    for byte in b.chunks(1) {
        if let Err(e) = slow.feed(byte, &mut VecSink::default()) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(RecvError::Placement(PlacementError::UnknownCommand(0xdead)))));
    assert_eq!(slow.partial_header(), rx.partial_header());
}

#[test]
fn staged_reads_large_data_directly() {
    // A reader that records the size of each destination buffer offered.
    struct Rec<'a> {
        data: &'a [u8],
        pos: usize,
        sizes: Vec<usize>,
    }
    impl Read for Rec<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.sizes.push(buf.len());
            let n = buf.len().min(self.data.len() - self.pos);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
    let tx = TxConfig { hdgst: false, ddgst: true, align: 4 };
    let (p, d, b) = encode_item(&Item::Data(5, 0, vec![9; 100_000], true), &tx);
    let mut rx = StagedReceiver::new(host_cfg(false, true), 4096);
    let mut sink = VecSink::default();
    let mut src = Rec { data: &b, pos: 0, sizes: vec![] };
    let got = rx.poll(&mut src, &mut sink).unwrap();
    assert_eq!(got, Some(p));
    assert_eq!(sink.cur.take().unwrap(), d);
    // Header read into the 4096-byte stage, then the rest of the data read
    // directly into the (700-byte) destination segments.
    assert_eq!(src.sizes[0], 4096);
    let first = 4096 - 24;
    assert_eq!(src.sizes[1], 700 - first % 700);
    // The tail shorter than DIRECT_MIN (and the digest) go through the stage.
    assert!(src.sizes[2..].iter().all(|&s| s <= 700 || s == 4096));
    assert!(src.sizes.iter().filter(|&&s| s == 4096).count() <= 3);
    assert!(src.sizes.iter().filter(|&&s| s <= 700).count() > 130);
    assert_eq!(rx.poll(&mut src, &mut sink).unwrap(), None);
}

#[test]
fn direct_reads_read_ahead_into_the_stage() {
    // Large PDUs back to back with one vectored read per call: each direct
    // read finishes a PDU's data and brings in the next header, so no read
    // is spent on headers alone, and the read-ahead after big data parts
    // stays short so the next data part is read directly too.
    struct Vec2<'a> {
        data: &'a [u8],
        pos: usize,
        reads: Vec<Vec<usize>>,
    }
    impl Read for Vec2<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.read_vectored(&mut [io::IoSliceMut::new(buf)])
        }
        fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
            self.reads.push(bufs.iter().map(|b| b.len()).collect());
            let mut total = 0;
            for b in bufs.iter_mut() {
                let n = b.len().min(self.data.len() - self.pos);
                b[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
                self.pos += n;
                total += n;
            }
            if total == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(total)
        }
    }
    /// One contiguous destination per PDU.
    #[derive(Default)]
    struct Flat(Option<Vec<u8>>);
    impl DataSink for Flat {
        fn data_buffer(&mut self, pdu: &Pdu, at: usize) -> Result<&mut [u8], PlacementError> {
            let v = self.0.get_or_insert_with(|| vec![0; pdu.data_len() as usize]);
            Ok(&mut v[at..])
        }
    }
    for (hdgst, ddgst) in [(false, false), (true, true)] {
        let tx = TxConfig { hdgst, ddgst, align: 4 };
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for i in 0..6u16 {
            let (p, d, b) = encode_item(&Item::Data(i, 0, vec![i as u8 + 1; 128 << 10], true), &tx);
            stream.extend_from_slice(&b);
            want.push((p, d));
        }
        let mut rx = StagedReceiver::new(host_cfg(hdgst, ddgst), 64 << 10);
        let mut sink = Flat::default();
        let mut src = Vec2 { data: &stream, pos: 0, reads: vec![] };
        let mut got = Vec::new();
        while let Some(p) = rx.poll(&mut src, &mut sink).unwrap() {
            got.push((p, sink.0.take().unwrap()));
        }
        assert_eq!(got, want);
        // The first read fills the stage; each later one reads a PDU's data
        // directly plus a short read-ahead (digests: the digest bytes fall
        // short of DIRECT_MIN and go through the stage too).
        assert_eq!(src.reads[0], vec![64 << 10]);
        assert!(src.reads[1..].iter().all(|r| r.len() == 2 && r[1] == READ_AHEAD_SMALL), "{:?}", src.reads);
        assert!(src.reads.len() <= 8, "{} reads", src.reads.len());
    }
}

#[test]
fn data_digest_mismatch_is_reported_and_not_fatal() {
    let tx = TxConfig { hdgst: true, ddgst: true, align: 4 };
    let (p1, _, mut b1) = encode_item(&Item::Data(5, 0, vec![7; 300], true), &tx);
    let (p2, d2, b2) = encode_item(&Item::Data(6, 0, vec![8; 100], true), &tx);
    // Flip a data byte of the first PDU (after the 24-byte header and its
    // 4-byte digest).
    b1[40] ^= 0x10;
    let mut stream = b1.clone();
    stream.extend_from_slice(&b2);
    let mut rx = PduReceiver::new(host_cfg(true, true));
    let mut sink = VecSink::default();
    let (n, got) = rx.feed(&stream, &mut sink).expect("framing intact");
    assert_eq!(got, Some(p1));
    assert_eq!(n, b1.len());
    let m = rx.take_digest_error().expect("mismatch reported");
    assert_ne!(m.got, m.computed);
    assert_eq!(rx.take_digest_error(), None);
    sink.cur = None;
    let (_, got) = rx.feed(&stream[n..], &mut sink).expect("next pdu");
    assert_eq!(got, Some(p2));
    assert_eq!(sink.cur.take().expect("data"), d2);
    assert_eq!(rx.take_digest_error(), None);
}
