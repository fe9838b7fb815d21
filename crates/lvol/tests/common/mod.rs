//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod late;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// A registry with an lvol module and a store `lvs` (cluster size `cluster`) on malloc bdev `m0`.
pub fn setup(bytes: u64, bs: u32, cluster: u64) -> (Arc<Registry>, Arc<lvol::Lvol>, Arc<dyn Bdev>) {
    let reg = Registry::new();
    let lvol = lvol::Lvol::new(&reg);
    let disk = malloc("m0", bytes, bs);
    reg.register(disk.clone()).unwrap();
    lvol.lvs_create("m0", "lvs", cluster).unwrap();
    (reg, lvol, disk)
}

/// Unloads store `lvs` and registers its disk again in a fresh registry with a fresh lvol module.
pub fn reload(lvol: &lvol::Lvol, disk: &Arc<dyn Bdev>) -> (Arc<Registry>, Arc<lvol::Lvol>) {
    lvol.lvs_unload("lvs").unwrap();
    let reg = Registry::new();
    let l2 = lvol::Lvol::new(&reg);
    reg.register(disk.clone()).unwrap();
    (reg, l2)
}

pub fn malloc(name: &str, bytes: u64, bs: u32) -> Arc<dyn Bdev> {
    Arc::new(
        MallocBdev::new(MallocParams { name: name.into(), num_blocks: bytes / bs as u64, block_size: bs }).unwrap(),
    )
}

pub fn run(ch: &mut BdevChannel, io: IoRequest) -> IoStatus {
    ch.submit(&io).unwrap();
    let mut got = None;
    let t0 = Instant::now();
    while got.is_none() {
        ch.poll(&mut |_, st| got = Some(st));
        assert!(t0.elapsed() < Duration::from_secs(30), "io did not complete");
    }
    got.unwrap()
}

pub fn write(ch: &mut BdevChannel, lba: u64, data: &[u8]) -> IoStatus {
    let bs = ch.block_size() as usize;
    let mut b = DmaBuf::alloc(data.len()).unwrap();
    b.as_mut_slice().copy_from_slice(data);
    run(ch, IoRequest::write(lba, (data.len() / bs) as u64, IoVecs::single(b.iovec()), 1))
}

pub fn read(ch: &mut BdevChannel, lba: u64, len: usize) -> Vec<u8> {
    let bs = ch.block_size() as usize;
    let mut b = DmaBuf::zeroed(len).unwrap();
    let st = run(ch, IoRequest::read(lba, (len / bs) as u64, IoVecs::single(b.iovec()), 2));
    assert_eq!(st, IoStatus::Success, "read at {lba} failed");
    b.as_slice().to_vec()
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..len).map(|_| bdev::rand::next(&mut s) as u8).collect()
}

pub fn chan(reg: &Registry, name: &str) -> BdevChannel {
    reg.open(name, true).unwrap_or_else(|e| panic!("open {name}: {e}")).channel().unwrap()
}
