//! Fuzzes the md v1.2 superblock decoder. Input: one flag byte, the
//! member size in sectors (8 bytes little-endian), then the superblock
//! bytes. Flag bit 0 stores the correct checksum before parsing (so the
//! fuzzer gets past the checksum check), bit 1 takes the sector the
//! superblock was "read at" from its own `super_offset` instead of 8
//! (where v1.2 puts it), bit 2 also plans an assembly from the result.
//!
//! Beyond "no panic": a parsed superblock encodes (checksum recomputed)
//! to exactly the bytes it came from and parses back to the same value;
//! `parse_on_member` accepts exactly what `parse` accepts and
//! `validate_on_member` then passes, and what it accepts lies within the
//! member.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raid::superblock::{checksum, RawSuperblock1, Superblock, SB_FIXED_BYTES};

/// Byte offset of `sb_csum` in the fixed part.
const CSUM_AT: usize = core::mem::offset_of!(RawSuperblock1, sb_csum);
/// Byte offset of `super_offset` in the fixed part.
const SUPER_OFFSET_AT: usize = core::mem::offset_of!(RawSuperblock1, super_offset);

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let Some((dev, sb_bytes)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let device_sectors = u64::from_le_bytes(*dev);
    let mut bytes = sb_bytes.to_vec();
    if flags & 1 != 0 {
        if let Ok(sum) = checksum(&bytes) {
            bytes[CSUM_AT..CSUM_AT + 4].copy_from_slice(&sum.to_le_bytes());
        }
    }
    let read_at = match bytes.get(SUPER_OFFSET_AT..SUPER_OFFSET_AT + 8) {
        Some(b) if flags & 2 != 0 => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        _ => 8,
    };

    let parsed = Superblock::parse(&bytes);
    let on_member = Superblock::parse_on_member(&bytes, read_at, device_sectors);
    if let Ok(m) = &on_member {
        assert_eq!(parsed.as_ref(), Ok(m), "parse_on_member accepted what parse rejected");
        assert!(m.data_offset.checked_add(m.data_size).is_some_and(|end| end <= device_sectors));
        assert!(m.super_offset.checked_add(m.encoded_sectors()).is_some_and(|end| end <= device_sectors));
    }
    let Ok(sb) = parsed else {
        let _ = on_member.map_err(|e| e.to_string());
        return;
    };
    assert_eq!(on_member.is_ok(), sb.validate_on_member(read_at, device_sectors).is_ok());

    // Encode (checksum recomputed) and parse again.
    let len = sb.encoded_len();
    assert_eq!(len, SB_FIXED_BYTES + 2 * sb.max_dev() as usize);
    let enc = sb.encode(512).expect("a parsed superblock encodes");
    assert_eq!(enc.len() % 512, 0);
    assert_eq!(enc.get(..len), bytes.get(..len), "re-encoded superblock differs from its bytes");
    assert_eq!(Superblock::parse(&enc).as_ref(), Ok(&sb), "re-encoded superblock parses differently");
    assert_eq!(sb.to_raw().sb_csum.get(), checksum(&enc).expect("checksum of an encoded superblock"));
    let mut short = vec![0u8; len - 1];
    assert!(sb.encode_into(&mut short).is_err());

    let _ = (sb.role(), sb.name(), sb.uuid_string(), sb.is_clean());
    if flags & 4 != 0 {
        let _ = raid::assemble::plan(core::slice::from_ref(&sb)).map_err(|e| e.to_string());
    }
});
