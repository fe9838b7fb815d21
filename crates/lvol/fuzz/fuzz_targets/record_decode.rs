//! Fuzzes the metadata record decoder (a journal body or checkpoint body: records back to
//! back), the chunk-map entry decoder and the bitmap decoder: any input gives values or a typed
//! error, never a panic. Beyond that:
//! - every decoded record re-encodes to exactly the bytes it was decoded from (the encoding is
//!   canonical) and those bytes decode to the same record;
//! - decoding stops at the first error with the reader not past the input;
//! - a decoded `ChunkLoc` re-encodes to a value that decodes to the same `ChunkLoc`;
//! - `Bitmap::from_bytes` accepts exactly what `to_bytes` produces: a decoded bitmap
//!   re-encodes to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lvol::format::{Reader, Writer};
use lvol::record::{ChunkLoc, Record};
use lvol::state::Bitmap;

fuzz_target!(|input: &[u8]| {
    // Records back to back, as in a transaction or checkpoint body.
    let mut r = Reader::new(input, "fuzz");
    let mut consumed = 0;
    while r.remaining() > 0 {
        let before = r.remaining();
        let Ok(rec) = Record::decode(&mut r) else {
            break;
        };
        let used = before - r.remaining();
        let src = &input[consumed..consumed + used];
        consumed += used;
        let mut w = Writer::default();
        rec.encode(&mut w);
        assert_eq!(w.buf, src, "re-encoded {rec:?} differs from its source bytes");
        let mut r2 = Reader::new(&w.buf, "again");
        let back = Record::decode(&mut r2).expect("re-encoded record decodes");
        assert_eq!(back, rec);
        assert_eq!(r2.remaining(), 0);
        if let Record::PutBitmap { nbits, bytes } = &rec {
            bitmap(*nbits, bytes);
        }
    }
    assert!(consumed <= input.len());

    // Every 8 bytes as a chunk-map entry.
    for c in input.chunks_exact(8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let v = u64::from_le_bytes(a);
        if let Some(loc) = ChunkLoc::decode(v) {
            assert_eq!(ChunkLoc::decode(loc.encode()), Some(loc), "chunk entry {v:#x}");
        }
    }

    // The first 8 bytes as a bit count, the rest as the bitmap's bytes.
    if let Some((n, rest)) = input.split_first_chunk::<8>() {
        let nbits = u64::from_le_bytes(*n);
        bitmap(nbits, rest);
        // Also the bit count that fits the bytes, so decoding gets past the length check.
        let fit = (rest.len() as u64 * 8).saturating_sub(nbits % 8);
        bitmap(fit, rest);
    }
});

fn bitmap(nbits: u64, bytes: &[u8]) {
    if let Some(m) = Bitmap::from_bytes(nbits, bytes) {
        assert_eq!(m.len(), nbits);
        assert_eq!(m.to_bytes(), bytes, "bitmap of {nbits} bits re-encodes differently");
        assert!(m.count() <= nbits);
        let ones: u64 = bytes.iter().map(|b| u64::from(b.count_ones())).sum();
        assert_eq!(m.count(), ones);
        if let Some(i) = m.find_clear(0) {
            assert!(i < nbits && !m.get(i));
        }
    }
}
