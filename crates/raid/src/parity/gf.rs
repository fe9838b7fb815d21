//! GF(2^8) with the RAID6 polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d)
//! and generator {02}, as Linux's raid6 code uses.

/// The field polynomial.
pub const POLY: u16 = 0x11d;

const fn build_tables() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    while i < 512 {
        exp[i] = exp[i - 255];
        i += 1;
    }
    (exp, log)
}

const TABLES: ([u8; 512], [u8; 256]) = build_tables();
/// `EXP[i] = g^i` for `i < 510` (doubled to skip a modulo).
pub const EXP: [u8; 512] = TABLES.0;
/// `LOG[x]` with `g^LOG[x] = x` for `x != 0`.
pub const LOG: [u8; 256] = TABLES.1;

/// Product of two field elements.
pub const fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }
}

const fn build_mul() -> [[u8; 256]; 256] {
    let mut t = [[0u8; 256]; 256];
    let mut a = 0;
    while a < 256 {
        let mut b = 0;
        while b < 256 {
            t[a][b] = mul(a as u8, b as u8);
            b += 1;
        }
        a += 1;
    }
    t
}

/// Full multiplication table: `MUL[a][b] = a * b`.
pub static MUL: [[u8; 256]; 256] = build_mul();

/// `g^i`.
pub const fn pow2(i: usize) -> u8 {
    EXP[i % 255]
}

/// Multiplicative inverse of a non-zero element (0 maps to 0).
pub const fn inv(a: u8) -> u8 {
    if a == 0 {
        0
    } else {
        EXP[255 - LOG[a as usize] as usize]
    }
}

/// Split-nibble tables of "multiply by `c`": `lo[x] = c * x`,
/// `hi[x] = c * (x << 4)`, so `c * v = lo[v & 15] ^ hi[v >> 4]`.
pub fn nibble_tables(c: u8) -> ([u8; 16], [u8; 16]) {
    let row = &MUL[c as usize];
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    for (x, (l, h)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
        *l = row[x];
        *h = row[x << 4];
    }
    (lo, hi)
}

/// Coefficients to recover data slots `x < y` from `Pxy = Dx ^ Dy` and
/// `Qxy = g^x Dx ^ g^y Dy`: `Dx = a * Pxy ^ b * Qxy`, `Dy = Pxy ^ Dx`.
pub fn two_data_coefficients(x: usize, y: usize) -> (u8, u8) {
    let gyx = pow2(y - x);
    let denom = inv(gyx ^ 1);
    let a = mul(gyx, denom);
    let b = mul(inv(pow2(x)), denom);
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_mul(mut a: u8, mut b: u8) -> u8 {
        let mut r = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                r ^= a;
            }
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= (POLY & 0xff) as u8;
            }
            b >>= 1;
        }
        r
    }

    #[test]
    fn tables_match_shift_and_add() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(MUL[a as usize][b as usize], slow_mul(a, b));
            }
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1);
            }
        }
        // Generator 2 has order 255.
        assert_eq!(pow2(0), 1);
        assert_eq!(pow2(1), 2);
        assert_eq!(pow2(8), 0x1d);
        assert_eq!(pow2(255), 1);
        let (lo, hi) = nibble_tables(0x53);
        for v in 0..=255u8 {
            assert_eq!(lo[(v & 15) as usize] ^ hi[(v >> 4) as usize], mul(0x53, v));
        }
    }

    #[test]
    fn two_data_coefficients_solve_the_system() {
        for (x, y) in [(0, 1), (2, 7), (0, 253)] {
            let (a, b) = two_data_coefficients(x, y);
            for (dx, dy) in [(0x12u8, 0xf0u8), (0xff, 1), (0, 0x80)] {
                let pxy = dx ^ dy;
                let qxy = mul(pow2(x), dx) ^ mul(pow2(y), dy);
                let rx = mul(a, pxy) ^ mul(b, qxy);
                assert_eq!(rx, dx);
                assert_eq!(pxy ^ rx, dy);
            }
        }
    }
}
