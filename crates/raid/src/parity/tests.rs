use super::*;
use proptest::prelude::*;

/// Shift-and-add multiplication, independent of the tables.
fn naive_mul(mut a: u8, mut b: u8) -> u8 {
    let mut r = 0;
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        a = (a << 1) ^ if a & 0x80 != 0 { 0x1d } else { 0 };
        b >>= 1;
    }
    r
}

fn naive_pow2(i: usize) -> u8 {
    (0..i).fold(1u8, |x, _| naive_mul(x, 2))
}

fn naive_pq(data: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    let n = data.first().map_or(0, Vec::len);
    let mut p = vec![0u8; n];
    let mut q = vec![0u8; n];
    for (i, d) in data.iter().enumerate() {
        let g = naive_pow2(i);
        for j in 0..n {
            p[j] ^= d[j];
            q[j] ^= naive_mul(g, d[j]);
        }
    }
    (p, q)
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

fn engines() -> Vec<Parity> {
    Backend::supported().map(|b| Parity::with_backend(b).unwrap()).collect()
}

#[test]
fn best_backend_is_supported() {
    assert!(Backend::best().is_supported());
    assert!(Backend::Portable.is_supported());
    assert_eq!(Parity::new().backend(), Backend::best());
    assert!(!engines().is_empty());
}

#[test]
fn argument_errors() {
    let e = Parity::new();
    let a = [0u8; 64];
    let b = [0u8; 65];
    let mut d = [0u8; 64];
    let mut d2 = [0u8; 64];
    assert!(matches!(e.xor_into(&mut d, &b), Err(ParityError::LengthMismatch { .. })));
    assert_eq!(e.xor(&mut d, &[]), Err(ParityError::NoSources));
    assert!(matches!(e.xor(&mut d, &[&a, &b]), Err(ParityError::LengthMismatch { index: 1, .. })));
    assert!(matches!(e.gen_pq(&[&a, &b], &mut d, &mut d2), Err(ParityError::LengthMismatch { .. })));
    let many: Vec<&[u8]> = vec![&a; 256];
    assert_eq!(e.gen_pq(&many, &mut d, &mut d2), Err(ParityError::TooManySlots(256)));
    assert_eq!(e.recover_data_from_p(&[&a, &a], 2, &a, &mut d), Err(ParityError::BadSlot { slot: 2, slots: 2 }));
    assert_eq!(e.recover_two_data(&[&a, &a], 1, 1, &a, &a, &mut d, &mut d2), Err(ParityError::SameSlot));
    // Lost slots may be empty placeholders.
    let (x, y, z) = ([0x5au8; 64], [0x13u8; 64], [0xc4u8; 64]);
    let mut p = [0u8; 64];
    let mut q = [0u8; 64];
    e.gen_pq(&[&x, &y, &z], &mut p, &mut q).unwrap();
    e.recover_two_data(&[&[], &y, &[]], 2, 0, &p, &q, &mut d, &mut d2).unwrap();
    assert_eq!(d, z);
    assert_eq!(d2, x);
}

#[test]
fn known_q_values() {
    // Q of [1, 1, 1] = 1 + 2 + 4 = 7; P = 1.
    let d = vec![vec![1u8; 100]; 3];
    for e in engines() {
        let mut p = vec![0; 100];
        let mut q = vec![0; 100];
        e.gen_pq(&refs(&d), &mut p, &mut q).unwrap();
        assert!(p.iter().all(|&x| x == 1), "{:?}", e.backend());
        assert!(q.iter().all(|&x| x == 7), "{:?}", e.backend());
    }
    // 0x80 * g^1 wraps through the polynomial: 0x1d.
    let d = vec![vec![0u8; 64], vec![0x80u8; 64]];
    for e in engines() {
        let mut p = vec![0; 64];
        let mut q = vec![0; 64];
        e.gen_pq(&refs(&d), &mut p, &mut q).unwrap();
        assert!(q.iter().all(|&x| x == 0x1d), "{:?}", e.backend());
    }
}

fn stripe(n: usize, len: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), len), n)
}

fn stripe_any() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (1usize..12, 0usize..400).prop_flat_map(|(n, len)| stripe(n, len))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn xor_matches_naive(data in stripe_any()) {
        let n = data[0].len();
        let mut want = vec![0u8; n];
        for d in &data {
            for j in 0..n {
                want[j] ^= d[j];
            }
        }
        for e in engines() {
            let mut got = vec![0xaau8; n];
            e.xor(&mut got, &refs(&data)).unwrap();
            prop_assert_eq!(&got, &want, "{:?}", e.backend());
            let mut acc = data[0].clone();
            for d in &data[1..] {
                e.xor_into(&mut acc, d).unwrap();
            }
            prop_assert_eq!(&acc, &want, "{:?}", e.backend());
        }
    }

    #[test]
    fn pq_matches_naive(data in stripe_any()) {
        let (wp, wq) = naive_pq(&data);
        let n = wp.len();
        for e in engines() {
            let mut p = vec![0x55u8; n];
            let mut q = vec![0x55u8; n];
            e.gen_pq(&refs(&data), &mut p, &mut q).unwrap();
            prop_assert_eq!(&p, &wp, "{:?}", e.backend());
            prop_assert_eq!(&q, &wq, "{:?}", e.backend());
        }
    }

    #[test]
    fn mul_acc_matches_naive(src in proptest::collection::vec(any::<u8>(), 0..300), c in any::<u8>(), seed in any::<u8>()) {
        let base: Vec<u8> = (0..src.len()).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let want: Vec<u8> = base.iter().zip(&src).map(|(&b, &s)| b ^ naive_mul(c, s)).collect();
        for e in engines() {
            let mut dst = base.clone();
            e.mul_acc(&mut dst, &src, c).unwrap();
            prop_assert_eq!(&dst, &want, "{:?}", e.backend());
        }
    }

    #[test]
    fn recovery_all_failure_pairs(data in (2usize..10, 0usize..300).prop_flat_map(|(n, l)| stripe(n, l)),
                                  a in any::<usize>(), b in any::<usize>()) {
        let n = data.len();
        let len = data[0].len();
        let (p, q) = naive_pq(&data);
        let x = a % n;
        let y = (x + 1 + b % (n - 1)) % n;
        for e in engines() {
            // One data slot from P.
            let mut dx = vec![0xeeu8; len];
            let mut lost = refs(&data);
            lost[x] = &[];
            e.recover_data_from_p(&lost, x, &p, &mut dx).unwrap();
            prop_assert_eq!(&dx, &data[x], "{:?} P", e.backend());

            // Data plus P from Q.
            let mut dx = vec![0xeeu8; len];
            let mut pp = vec![0xeeu8; len];
            e.recover_data_from_q(&lost, x, &q, &mut dx, &mut pp).unwrap();
            prop_assert_eq!(&dx, &data[x], "{:?} Q", e.backend());
            prop_assert_eq!(&pp, &p, "{:?} Q->P", e.backend());

            // Two data slots.
            let mut lost2 = refs(&data);
            lost2[x] = &[];
            lost2[y] = &[];
            let mut dx = vec![0xeeu8; len];
            let mut dy = vec![0xeeu8; len];
            e.recover_two_data(&lost2, x, y, &p, &q, &mut dx, &mut dy).unwrap();
            prop_assert_eq!(&dx, &data[x], "{:?} 2x", e.backend());
            prop_assert_eq!(&dy, &data[y], "{:?} 2y", e.backend());
        }
    }

    #[test]
    fn update_pq_equals_regeneration(mut data in (1usize..8, 1usize..200).prop_flat_map(|(n, l)| stripe(n, l)),
                                     slot in any::<usize>(), seed in any::<u64>()) {
        let slot = slot % data.len();
        let (p, q) = naive_pq(&data);
        let new: Vec<u8> = (0..data[0].len()).map(|i| (seed.rotate_left(i as u32 % 64) as u8) ^ i as u8).collect();
        let delta: Vec<u8> = data[slot].iter().zip(&new).map(|(a, b)| a ^ b).collect();
        data[slot] = new;
        let (wp, wq) = naive_pq(&data);
        for e in engines() {
            let (mut p2, mut q2) = (p.clone(), q.clone());
            e.update_pq(slot, &delta, &mut p2, &mut q2).unwrap();
            prop_assert_eq!(&p2, &wp, "{:?}", e.backend());
            prop_assert_eq!(&q2, &wq, "{:?}", e.backend());
        }
    }

    /// The read-modify-write updates from old and new data (no delta
    /// buffer from the caller) equal regenerating P and Q; lengths past
    /// the 1 KiB pieces of `replace_pq` and odd tails included.
    #[test]
    fn replace_equals_regeneration(mut data in (1usize..8, 1usize..2600).prop_flat_map(|(n, l)| stripe(n, l)),
                                   slot in any::<usize>(), seed in any::<u64>()) {
        let slot = slot % data.len();
        let (p, q) = naive_pq(&data);
        let new: Vec<u8> = (0..data[0].len()).map(|i| (seed.rotate_left(i as u32 % 64) as u8) ^ i as u8).collect();
        let old = std::mem::replace(&mut data[slot], new.clone());
        let (wp, wq) = naive_pq(&data);
        for e in engines() {
            let (mut p2, mut q2) = (p.clone(), q.clone());
            e.replace_pq(slot, &old, &new, &mut p2, &mut q2).unwrap();
            prop_assert_eq!(&p2, &wp, "{:?}", e.backend());
            prop_assert_eq!(&q2, &wq, "{:?}", e.backend());
            let mut p3 = p.clone();
            e.replace_p(&old, &new, &mut p3).unwrap();
            prop_assert_eq!(&p3, &wp, "{:?}", e.backend());
        }
        let e = Parity::new();
        let mut short = vec![0u8; new.len() + 1];
        prop_assert!(e.replace_p(&old, &new, &mut short).is_err());
        let mut q3 = q.clone();
        prop_assert!(e.replace_pq(slot, &old, &new, &mut short, &mut q3).is_err());
    }
}
