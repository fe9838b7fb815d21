//! Fuzzes the super block parser: any input gives a super block or a typed error, never a
//! panic. A parsed super block re-serializes (`to_block`) to a block that parses to the same
//! bytes, and its name accessor and layout derivation (`Layout::from_super` against a base of
//! any size) give a value or a typed error.
//!
//! Input: the first 8 bytes are the base size for `Layout::from_super`, the rest the block.
//! When the block's magic and version are right but the crc is not, the crc is fixed up so the
//! fuzzer reaches the field checks behind it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lvol::format::{crc_with_hole, Layout, SuperBlock, SB_CRC_AT};

fuzz_target!(|input: &[u8]| {
    let Some((size, block)) = input.split_first_chunk::<8>() else {
        return;
    };
    let base_bytes = u64::from_le_bytes(*size);
    check(block, base_bytes);
    // The same bytes with a correct crc, to get past the checksum.
    let n = core::mem::size_of::<SuperBlock>();
    if block.len() >= n {
        let mut fixed = block.to_vec();
        let crc = crc_with_hole(&fixed[..n], SB_CRC_AT);
        fixed[SB_CRC_AT..SB_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        check(&fixed, base_bytes);
    }
});

fn check(block: &[u8], base_bytes: u64) {
    let Ok(sb) = SuperBlock::parse(block) else {
        return;
    };
    let n = core::mem::size_of::<SuperBlock>();
    let out = sb.to_block();
    assert_eq!(&out[..n], &block[..n], "re-serialized super block differs");
    assert!(out[n..].iter().all(|&b| b == 0));
    let again = SuperBlock::parse(&out).expect("re-serialized super block parses");
    let _ = sb.name();
    assert_eq!(again.name(), sb.name());
    if let Ok(l) = Layout::from_super(&sb, base_bytes) {
        // A layout accepted for a base fits inside it.
        let end = l.total_clusters.checked_mul(l.cluster_size).and_then(|b| b.checked_add(l.data_offset));
        assert!(end.is_some_and(|e| e <= base_bytes), "layout {l:?} past base of {base_bytes} bytes");
        let _ = l.granules();
        let _ = l.sectors_per_cluster();
    }
}
