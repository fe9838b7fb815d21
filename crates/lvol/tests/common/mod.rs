//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
