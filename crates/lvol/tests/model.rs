//! Property test: random writes, unmaps and write-zeroes (any size and alignment), snapshots,
//! clones, codec toggles and reloads against an in-memory model of every volume's contents.

mod common;

use bdev::{DmaBuf, IoChannel, IoRequest, IoStatus, IoVecs, Registry};
use lvol::{check, CreateOpts, Store};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const BS: u64 = 512;
const VOL: u64 = 256 << 10;

#[derive(Clone, Debug)]
enum Act {
    /// A write, submitted as `split + 1` adjacent requests at once (they often share a
    /// granule: the later ones wait for the first one's claim).
    Write {
        vol: usize,
        lba: u64,
        nb: u64,
        seed: u8,
        split: u64,
    },
    /// Unmap (or write-zeroes when `wz`); `whole` covers the volume.
    Zero {
        vol: usize,
        lba: u64,
        nb: u64,
        wz: bool,
        whole: bool,
    },
    Snapshot {
        vol: usize,
    },
    Clone {
        snap: usize,
    },
    Compress {
        vol: usize,
        on: bool,
    },
    Encrypt {
        vol: usize,
    },
    Reload,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        8 => (0..4usize, 0..VOL / BS, 1..64u64, any::<u8>(), 0..4u64)
            .prop_map(|(vol, lba, nb, seed, split)| Act::Write { vol, lba, nb, seed, split }),
        3 => (0..4usize, 0..VOL / BS, 1..600u64, any::<bool>(), any::<bool>())
            .prop_map(|(vol, lba, nb, wz, whole)| Act::Zero { vol, lba, nb, wz, whole }),
        1 => (0..4usize).prop_map(|vol| Act::Snapshot { vol }),
        1 => (0..4usize).prop_map(|snap| Act::Clone { snap }),
        1 => (0..4usize, any::<bool>()).prop_map(|(vol, on)| Act::Compress { vol, on }),
        1 => (0..4usize).prop_map(|vol| Act::Encrypt { vol }),
        1 => Just(Act::Reload),
    ]
}

fn io(ch: &mut dyn IoChannel, req: IoRequest) -> IoStatus {
    ch.submit(&req).unwrap();
    let mut got = None;
    while got.is_none() {
        ch.poll(&mut |_, st| got = Some(st));
    }
    got.unwrap()
}

fn read_all(store: &Store, name: &str) -> Vec<u8> {
    let mut ch = store.channel(name).unwrap();
    let mut b = DmaBuf::alloc(VOL as usize).unwrap();
    assert_eq!(io(&mut ch, IoRequest::read(0, VOL / BS, IoVecs::single(b.iovec()), 0)), IoStatus::Success);
    b.as_slice().to_vec()
}

const KEY: [u8; 64] = {
    let mut k = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        k[i] = i as u8 + 1;
        i += 1;
    }
    k
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn volumes_match_a_model(acts in proptest::collection::vec(act(), 1..40)) {
        let reg = Registry::new();
        let disk = common::malloc("m", 16 << 20, 512);
        reg.register(disk.clone()).unwrap();
        let opts = CreateOpts { cluster_size: 128 << 10, journal_size: 64 << 10, max_volumes: 32 };
        let mut store = Store::create(reg.open("m", true).unwrap(), "lvs", &opts).unwrap();
        store.create_volume("v0", VOL, true).unwrap();
        let mut model: BTreeMap<String, (Vec<u8>, bool)> = BTreeMap::new();
        model.insert("v0".into(), (vec![0; VOL as usize], false));
        let mut n = 0;
        for a in acts {
            let writable: Vec<String> = model.iter().filter(|(_, v)| !v.1).map(|(k, _)| k.clone()).collect();
            let snaps: Vec<String> = model.iter().filter(|(_, v)| v.1).map(|(k, _)| k.clone()).collect();
            match a {
                Act::Write { vol, lba, nb, seed, split } => {
                    let name = &writable[vol % writable.len()];
                    let nb = nb.min(VOL / BS - lba);
                    let data: Vec<u8> = (0..nb * BS).map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed)).collect();
                    let mut ch = store.channel(name).unwrap();
                    let mut b = DmaBuf::alloc(data.len()).unwrap();
                    b.as_mut_slice().copy_from_slice(&data);
                    let parts = (split + 1).min(nb);
                    for k in 0..parts {
                        let (a, e) = (nb * k / parts, nb * (k + 1) / parts);
                        let v = IoVecs::single(b.iovec_range((a * BS) as usize, ((e - a) * BS) as usize).unwrap());
                        ch.submit(&IoRequest::write(lba + a, e - a, v, k)).unwrap();
                    }
                    let mut left = parts;
                    let mut bad = None;
                    while left > 0 {
                        ch.poll(&mut |_, st| {
                            left -= 1;
                            if st != IoStatus::Success {
                                bad = Some(st);
                            }
                        });
                    }
                    prop_assert_eq!(bad, None);
                    let m = model.get_mut(name).unwrap();
                    m.0[(lba * BS) as usize..((lba + nb) * BS) as usize].copy_from_slice(&data);
                }
                Act::Zero { vol, lba, nb, wz, whole } => {
                    let name = &writable[vol % writable.len()];
                    let (lba, nb) = if whole { (0, VOL / BS) } else { (lba, nb.min(VOL / BS - lba)) };
                    let ty = if wz { bdev::IoType::WriteZeroes } else { bdev::IoType::Unmap };
                    let mut ch = store.channel(name).unwrap();
                    prop_assert_eq!(io(&mut ch, IoRequest::no_data(ty, lba, nb, 0)), IoStatus::Success);
                    model.get_mut(name).unwrap().0[(lba * BS) as usize..((lba + nb) * BS) as usize].fill(0);
                    let info = store.volume(name).unwrap();
                    if whole && info.parent.is_none() {
                        prop_assert_eq!((info.allocated_clusters, info.compressed_chunks), (0, 0), "{} kept space", name);
                    }
                }
                Act::Snapshot { vol } => {
                    let name = writable[vol % writable.len()].clone();
                    n += 1;
                    let s = format!("s{n}");
                    store.snapshot(&name, &s).unwrap();
                    let d = model[&name].0.clone();
                    model.insert(s, (d, true));
                }
                Act::Clone { snap } => {
                    if snaps.is_empty() { continue; }
                    let s = snaps[snap % snaps.len()].clone();
                    n += 1;
                    let c = format!("c{n}");
                    store.clone_volume(&s, &c).unwrap();
                    let d = model[&s].0.clone();
                    model.insert(c, (d, false));
                }
                Act::Compress { vol, on } => {
                    store.set_compression(&writable[vol % writable.len()], if on { 3 } else { 0 }).unwrap();
                }
                Act::Encrypt { vol } => {
                    store.enable_encryption(&writable[vol % writable.len()], &KEY).unwrap();
                }
                Act::Reload => {
                    store.close(true).unwrap();
                    drop(store);
                    store = Store::load(reg.open("m", true).unwrap()).unwrap();
                    store.unlock(&KEY).unwrap();
                }
            }
        }
        let rep = check(&store).unwrap();
        prop_assert_eq!(rep.claimed_granules, 0, "a claim outlived its write");
        for (name, (data, _)) in &model {
            prop_assert!(read_all(&store, name) == *data, "volume {} differs", name);
        }
        // Space accounting: mapped clusters are exactly what the volumes own.
        let owned: u64 = store.volumes().iter().map(|v| v.allocated_clusters).sum();
        prop_assert_eq!(owned, rep.mapped_clusters);
        store.close(false).unwrap();
        let _ = Arc::clone(&disk);
    }
}
