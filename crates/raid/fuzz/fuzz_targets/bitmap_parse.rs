//! Fuzzes the md write-intent bitmap header decoder and the bit layout it
//! yields. Input: one flag byte, a sync-range sector and a sector count
//! (8 bytes little-endian each, used as the range an I/O dirties), then
//! the bitmap area (256-byte header followed by the bits).
//!
//! Beyond "no panic": a parsed header encodes to the bytes it came from
//! (except the padding, which is written as zero) and parses back to the
//! same value; `parse_for` accepts exactly the headers `parse` accepts
//! whose UUID matches; every bit `set_bits` reports is within the layout
//! and tests as set, and setting / clearing a bit changes only that bit;
//! the bits an I/O range dirties cover that range.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raid::superblock::bitmap::{BitmapSuper, RawBitmapSuper, BITMAP_SB_BYTES};

/// Bytes of the header before the zero padding.
const UNPADDED: usize = core::mem::offset_of!(RawBitmapSuper, pad);

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let Some((sector, rest)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let Some((count, bytes)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let (sector, count) = (u64::from_le_bytes(*sector), u64::from_le_bytes(*count));

    let parsed = BitmapSuper::parse(bytes);
    // Either the header's own UUID or one that differs from it.
    let mut uuid = [0u8; 16];
    if let Some(u) = bytes.get(8..24) {
        uuid.copy_from_slice(u);
    }
    if flags & 1 != 0 {
        uuid[0] ^= 1;
    }
    let for_uuid = BitmapSuper::parse_for(bytes, &uuid);
    match &parsed {
        Ok(b) if b.uuid == uuid => assert_eq!(for_uuid.as_ref(), Ok(b)),
        _ => assert!(for_uuid.is_err()),
    }
    let Ok(b) = parsed else {
        let _ = for_uuid.map_err(|e| e.to_string());
        return;
    };

    let mut enc = [0u8; BITMAP_SB_BYTES];
    b.encode_into(&mut enc).expect("256 bytes");
    assert_eq!(enc.get(..UNPADDED), bytes.get(..UNPADDED), "re-encoded header differs from its bytes");
    assert_eq!(BitmapSuper::parse(&enc).as_ref(), Ok(&b), "re-encoded header parses differently");
    assert!(b.encode_into(&mut [0u8; BITMAP_SB_BYTES - 1]).is_err());
    let _ = b.state.is_stale();

    let layout = b.layout();
    let nbits = layout.bits();
    assert!(layout.chunk_sectors.is_power_of_two());
    let _ = (layout.bit_bytes(), layout.total_bytes(4096), layout.total_bytes(u64::from(flags)));
    let bits = bytes.get(BITMAP_SB_BYTES..).unwrap_or_default();
    let mut first = None;
    for bit in layout.set_bits(bits) {
        assert!(bit < nbits);
        assert_eq!(layout.test(bits, bit), Ok(true));
        first.get_or_insert(bit);
    }
    if let Some(bit) = first {
        let mut copy = bits.to_vec();
        layout.set(&mut copy, bit, false).expect("bit in range");
        assert_eq!(layout.test(&copy, bit), Ok(false));
        layout.set(&mut copy, bit, true).expect("bit in range");
        assert_eq!(copy, bits);
        let s = layout.sectors_of(bit);
        assert!(s.start < s.end && s.end <= layout.sync_sectors);
        assert_eq!(layout.bit_of(s.start), bit);
    }
    let _ = layout.test(bits, nbits);

    // The bits an I/O range dirties cover it.
    let range = layout.bits_of(sector, count);
    if count > 0 {
        assert_eq!(range.start, layout.bit_of(sector));
        // Empty only for the bit `u64::MAX`, which no layout has.
        assert!(range.start < range.end || range.start == u64::MAX);
        assert!(range.end.saturating_sub(range.start) <= count);
        if sector < layout.sync_sectors {
            let covered = layout.sectors_of(range.start);
            assert!(covered.start <= sector && sector < covered.end);
        }
    } else {
        assert!(range.is_empty());
    }
});
