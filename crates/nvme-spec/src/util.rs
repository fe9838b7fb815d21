//! Small helpers shared by the wire modules: bit-field extraction and
//! fixed-size string fields.

/// Extracts `width` bits starting at bit `lo` of `v`.
#[inline]
pub(crate) const fn bits32(v: u32, lo: u32, width: u32) -> u32 {
    (v >> lo) & mask32(width)
}

/// Returns `v` with `width` bits at `lo` replaced by `field` (truncated).
#[inline]
pub(crate) const fn set_bits32(v: u32, lo: u32, width: u32, field: u32) -> u32 {
    let m = mask32(width) << lo;
    (v & !m) | ((field << lo) & m)
}

#[inline]
const fn mask32(width: u32) -> u32 {
    if width >= 32 {
        u32::MAX
    } else {
        (1u32 << width) - 1
    }
}

/// Extracts `width` bits starting at bit `lo` of `v`.
#[inline]
pub(crate) const fn bits64(v: u64, lo: u32, width: u32) -> u64 {
    (v >> lo) & mask64(width)
}

/// Returns `v` with `width` bits at `lo` replaced by `field` (truncated).
#[inline]
pub(crate) const fn set_bits64(v: u64, lo: u32, width: u32, field: u64) -> u64 {
    let m = mask64(width) << lo;
    (v & !m) | ((field << lo) & m)
}

#[inline]
const fn mask64(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// Reads a NUL- or space-padded ASCII field: returns the bytes before the
/// first NUL with trailing spaces removed. Non-UTF-8 input yields `None`.
pub(crate) fn padded_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let s = core::str::from_utf8(field.get(..end)?).ok()?;
    Some(s.trim_end_matches(' '))
}

/// Writes `s` into `field`, padding the rest with `pad`. Returns `false`
/// (leaving `field` untouched) if `s` does not fit.
pub(crate) fn write_padded(field: &mut [u8], s: &str, pad: u8) -> bool {
    let b = s.as_bytes();
    if b.len() > field.len() {
        return false;
    }
    let (head, tail) = field.split_at_mut(b.len());
    head.copy_from_slice(b);
    tail.fill(pad);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_helpers_round_trip() {
        let v = set_bits32(0, 16, 16, 0x1_2345);
        assert_eq!(v, 0x2345_0000);
        assert_eq!(bits32(v, 16, 16), 0x2345);
        assert_eq!(bits32(u32::MAX, 0, 32), u32::MAX);
        let w = set_bits64(u64::MAX, 4, 8, 0);
        assert_eq!(bits64(w, 4, 8), 0);
        assert_eq!(bits64(w, 0, 4), 0xf);
        assert_eq!(bits64(u64::MAX, 0, 64), u64::MAX);
    }

    #[test]
    fn padded_strings() {
        let mut f = [0u8; 8];
        assert!(write_padded(&mut f, "ab", b' '));
        assert_eq!(&f, b"ab      ");
        assert_eq!(padded_str(&f), Some("ab"));
        assert!(!write_padded(&mut f, "123456789", 0));
        assert_eq!(padded_str(b"nqn\0\0junk"), Some("nqn"));
        assert_eq!(padded_str(&[0xff, 0xfe]), None);
    }
}
