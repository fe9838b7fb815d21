//! Data codecs: AES-XTS-256 encryption (RustCrypto `aes` + `xts-mode`) and lz4 compression
//! (`lz4_flex`) of granule-sized chunks.
//!
//! Tweaks: cluster data uses the volume LBA (in volume blocks) as the XTS data-unit number, so
//! snapshots and clones that share a block share its ciphertext. Packed chunks use
//! `1 << 127 | granule << 20 | sector`, which never collides with an LBA.

use crate::format::SECTOR;
use crate::record::KeyRef;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes256, Block};
use xts_mode::Xts128;

/// Key length for AES-XTS-256 (two AES-256 keys).
pub const KEY_LEN: usize = 64;

/// An AES-XTS-256 cipher. Held only in memory.
pub struct Cipher {
    /// Key 1: encrypts the data blocks.
    data: Aes256,
    /// Key 2: encrypts the data-unit number into the first tweak.
    tweak: Aes256,
    /// The `xts-mode` implementation, for units that need ciphertext stealing (not a multiple
    /// of 16 bytes) and the key check value.
    xts: Xts128<Aes256>,
}

/// Blocks handed to AES at once: the AES-NI backend pipelines eight.
const LANES: usize = 8;

/// Multiplies an XTS tweak by the primitive element of GF(2^128) (little-endian, as IEEE 1619).
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ if t >> 127 != 0 { 0x87 } else { 0 }
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// A cipher from a 64-byte key; `None` when the length is wrong or the halves are equal
    /// (XTS requires two different keys).
    pub fn new(key: &[u8]) -> Option<Cipher> {
        if key.len() != KEY_LEN || key[..32] == key[32..] {
            return None;
        }
        let c1 = Aes256::new_from_slice(&key[..32]).ok()?;
        let c2 = Aes256::new_from_slice(&key[32..]).ok()?;
        Some(Cipher { data: c1.clone(), tweak: c2.clone(), xts: Xts128::new(c1, c2) })
    }

    /// Encrypt data units of `unit` bytes in place, numbered from `first`.
    pub fn encrypt(&self, data: &mut [u8], unit: usize, first: u128) {
        self.units(data, unit, first, true);
    }

    /// Decrypt data units of `unit` bytes in place, numbered from `first`.
    pub fn decrypt(&self, data: &mut [u8], unit: usize, first: u128) {
        self.units(data, unit, first, false);
    }

    /// XTS over each data unit. Units that are a multiple of 16 bytes (every block size) go
    /// eight AES blocks at a time, which the AES-NI backend pipelines; `xts-mode` encrypts one
    /// block per call, several times slower. Others (ciphertext stealing) go through `xts-mode`.
    fn units(&self, data: &mut [u8], unit: usize, first: u128, encrypt: bool) {
        for (i, u) in data.chunks_mut(unit.max(1)).enumerate() {
            let number = first.wrapping_add(i as u128).to_le_bytes();
            if u.len() % 16 != 0 {
                if u.len() >= 16 && encrypt {
                    self.xts.encrypt_sector(u, number);
                } else if u.len() >= 16 {
                    self.xts.decrypt_sector(u, number);
                }
                continue;
            }
            let mut t = Block::from(number);
            self.tweak.encrypt_block(&mut t);
            let mut tweak = u128::from_le_bytes(t.into());
            for group in u.chunks_mut(16 * LANES) {
                let mut blocks = [Block::default(); LANES];
                let mut tweaks = [0u128; LANES];
                let n = group.len() / 16;
                for ((b, tw), p) in blocks.iter_mut().zip(tweaks.iter_mut()).zip(group.chunks_exact(16)) {
                    let mut x = [0u8; 16];
                    x.copy_from_slice(p);
                    *b = Block::from((u128::from_le_bytes(x) ^ tweak).to_le_bytes());
                    *tw = tweak;
                    tweak = mul_alpha(tweak);
                }
                if encrypt {
                    self.data.encrypt_blocks(&mut blocks[..n]);
                } else {
                    self.data.decrypt_blocks(&mut blocks[..n]);
                }
                for ((b, tw), c) in blocks.iter().zip(tweaks.iter()).zip(group.chunks_exact_mut(16)) {
                    let mut x = [0u8; 16];
                    x.copy_from_slice(b);
                    c.copy_from_slice(&(u128::from_le_bytes(x) ^ tw).to_le_bytes());
                }
            }
        }
    }

    /// The key check value over `nonce`: proves later that a key is the one used.
    pub fn check_value(&self, nonce: &[u8; 16]) -> [u8; 16] {
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(nonce);
        b[16..].copy_from_slice(nonce);
        self.xts.encrypt_sector(&mut b, u128::MAX.to_le_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&b[16..]);
        out
    }

    /// A key reference for this key with a fresh nonce.
    pub fn key_ref(&self) -> KeyRef {
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&bdev::Uuid::random().0);
        KeyRef { nonce, check: self.check_value(&nonce) }
    }

    /// Whether this key matches a reference.
    pub fn matches(&self, r: &KeyRef) -> bool {
        self.check_value(&r.nonce) == r.check
    }
}

/// Data-unit number of sector `s` of the chunk stored for granule `g`.
pub fn chunk_tweak(g: u64, s: u64) -> u128 {
    (1u128 << 127) | ((g as u128) << 20) | s as u128
}

/// Bytes of the header in front of a compressed chunk: compressed length and its crc32c.
pub const CHUNK_HDR: usize = 8;

/// Compress `input` (one granule) into `out` as `len u32, crc u32, lz4 block`. Returns the
/// number of sectors used, or `None` when compression would not save a sector.
pub fn compress_chunk(input: &[u8], out: &mut [u8]) -> Option<u64> {
    let body = out.get_mut(CHUNK_HDR..)?;
    let n = lz4_flex::block::compress_into(input, body).ok()?;
    let total = CHUNK_HDR + n;
    let nsect = (total as u64).div_ceil(SECTOR);
    if nsect >= (input.len() as u64).div_ceil(SECTOR) {
        return None;
    }
    let crc = crc32c::crc32c(out.get(CHUNK_HDR..total)?);
    out.get_mut(..4)?.copy_from_slice(&(n as u32).to_le_bytes());
    out.get_mut(4..8)?.copy_from_slice(&crc.to_le_bytes());
    if let Some(pad) = out.get_mut(total..(nsect * SECTOR) as usize) {
        pad.fill(0);
    }
    Some(nsect)
}

/// Why a stored chunk could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Header length out of range.
    #[error("compressed chunk length {0} out of range")]
    Length(usize),
    /// Payload checksum mismatch.
    #[error("compressed chunk checksum mismatch")]
    Crc,
    /// lz4 refused the data or it decoded to the wrong size.
    #[error("compressed chunk does not decode to a granule")]
    Decode,
}

/// Decompress a chunk stored by [`compress_chunk`] into `out` (exactly one granule).
pub fn decompress_chunk(stored: &[u8], out: &mut [u8]) -> Result<(), ChunkError> {
    let len_b: [u8; 4] = stored.get(..4).and_then(|s| s.try_into().ok()).ok_or(ChunkError::Length(0))?;
    let crc_b: [u8; 4] = stored.get(4..8).and_then(|s| s.try_into().ok()).ok_or(ChunkError::Length(0))?;
    let n = u32::from_le_bytes(len_b) as usize;
    let body = stored.get(CHUNK_HDR..CHUNK_HDR + n).ok_or(ChunkError::Length(n))?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc_b) {
        return Err(ChunkError::Crc);
    }
    match lz4_flex::block::decompress_into(body, out) {
        Ok(m) if m == out.len() => Ok(()),
        _ => Err(ChunkError::Decode),
    }
}

/// Room needed in a buffer receiving [`compress_chunk`] output for a granule of `g` bytes.
pub fn compress_bound(g: usize) -> usize {
    CHUNK_HDR + lz4_flex::block::get_maximum_output_size(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        (0..64u8).collect()
    }

    #[test]
    fn xts_roundtrip_and_tweak_matters() {
        let c = Cipher::new(&key()).unwrap();
        let plain: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        let mut a = plain.clone();
        c.encrypt(&mut a, 512, 100);
        assert_ne!(a, plain);
        let mut b = plain.clone();
        c.encrypt(&mut b, 512, 101);
        assert_ne!(a[..512], b[..512]);
        assert_eq!(a[512..1024], b[..512], "unit i+1 at 100 equals unit i at 101");
        c.decrypt(&mut a, 512, 100);
        assert_eq!(a, plain);
        assert!(Cipher::new(&[0u8; 64]).is_none(), "equal halves refused");
        assert!(Cipher::new(&[1u8; 32]).is_none());
    }

    #[test]
    fn batched_xts_equals_the_reference_implementation() {
        let c = Cipher::new(&key()).unwrap();
        let mut st = 7u64;
        let plain: Vec<u8> = (0..3 * 4096 + 100).map(|_| bdev::rand::next(&mut st) as u8).collect();
        for (unit, first) in [(512, 0u128), (4096, 12345), (512, chunk_tweak(3, 5)), (16, u128::MAX - 2), (100, 9)] {
            let mut fast = plain.clone();
            c.encrypt(&mut fast, unit, first);
            let mut reference = plain.clone();
            for (i, u) in reference.chunks_mut(unit).enumerate() {
                if u.len() >= 16 {
                    c.xts.encrypt_sector(u, first.wrapping_add(i as u128).to_le_bytes());
                }
            }
            assert!(fast == reference, "unit {unit} first {first}");
            c.decrypt(&mut fast, unit, first);
            assert!(fast == plain, "roundtrip unit {unit}");
        }
    }

    #[test]
    fn key_ref_identifies_the_key() {
        let c = Cipher::new(&key()).unwrap();
        let r = c.key_ref();
        assert!(c.matches(&r));
        let mut k2 = key();
        k2[0] ^= 1;
        assert!(!Cipher::new(&k2).unwrap().matches(&r));
    }

    #[test]
    fn chunk_compression_roundtrip_and_corruption() {
        let g = 65536;
        let input: Vec<u8> = (0..g).map(|i| (i / 100) as u8).collect();
        let mut out = vec![0u8; compress_bound(g)];
        let nsect = compress_chunk(&input, &mut out).unwrap();
        assert!(nsect < 16);
        let mut back = vec![0u8; g];
        decompress_chunk(&out[..(nsect * SECTOR) as usize], &mut back).unwrap();
        assert_eq!(back, input);
        out[20] ^= 0xff;
        assert_eq!(decompress_chunk(&out, &mut back), Err(ChunkError::Crc));
        let mut st = 42u64;
        let random: Vec<u8> = (0..g).map(|_| bdev::rand::next(&mut st) as u8).collect();
        assert!(compress_chunk(&random, &mut out).is_none());
        assert!(decompress_chunk(&[1, 2], &mut back).is_err());
    }
}
