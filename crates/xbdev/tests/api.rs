//! The embedding API: sync and async IO, errors, client queues from many threads, hot-remove,
//! JSON config errors and save_config.

use bdev::{DmaBuf, IoStatus};
use std::time::Duration;
use xbdev::{Config, Xbdev, XbdevError};

fn start(json: &str) -> Xbdev {
    Xbdev::start(&Config::from_json_str(json).unwrap()).unwrap()
}

const TWO_MALLOC: &str = r#"{"reactor": {"cores": [0, 1], "pin": false},
  "base_devices": [
    {"method": "malloc", "params": {"name": "m0", "size_mb": 16}},
    {"method": "malloc", "params": {"name": "m1", "num_blocks": 4096, "block_size": 4096}}]}"#;

#[test]
fn sync_roundtrip_plain_and_dma_buffers() {
    let xb = start(TWO_MALLOC);
    let h = xb.open("m0", true).unwrap();
    assert_eq!(h.block_size(), 512);
    assert_eq!(h.size_bytes(), 16 << 20);
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    h.write(&data, 4096).unwrap();
    let mut back = vec![0u8; 8192];
    h.read(&mut back, 4096).unwrap();
    assert_eq!(back, data);
    let mut d = DmaBuf::zeroed(8192).unwrap();
    h.read(d.as_mut_slice(), 4096).unwrap();
    assert_eq!(d.as_slice(), &data[..]);
    h.flush().unwrap();
    h.write_zeroes(4096, 512).unwrap();
    h.read(&mut back, 4096).unwrap();
    assert!(back[..512].iter().all(|&b| b == 0));
    assert_eq!(&back[512..], &data[512..]);
    h.unmap(0, 1 << 20).unwrap();
    let s = h.stats();
    assert!(s.ops_of(bdev::IoType::Read) >= 3);
}

#[test]
fn bad_input_gets_precise_errors_and_never_reaches_the_device() {
    let xb = start(TWO_MALLOC);
    assert!(matches!(xb.open("nope", true), Err(XbdevError::UnknownDevice(n)) if n == "nope"));
    let h = xb.open("m1", true).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = h.read(&mut buf, 100).unwrap_err();
    assert_eq!(e.to_string(), "offset 100 is not a multiple of the block size 4096 (off by 100 bytes)");
    let e = h.read(&mut buf[..1000], 0).unwrap_err();
    assert_eq!(e.to_string(), "length 1000 is not a multiple of the block size 4096 (off by 1000 bytes)");
    let e = h.read(&mut buf, 16 << 20).unwrap_err();
    assert_eq!(e.to_string(), "range 16777216+4096 is past the end of 'm1' (16777216 bytes) by 4096 bytes");
    assert!(matches!(h.read(&mut [], 0), Err(XbdevError::ZeroLength("read"))));
    let ro = xb.open("m1", false).unwrap();
    assert!(matches!(ro.write(&buf, 0), Err(XbdevError::ReadOnly(_))));
    assert!(matches!(ro.unmap(0, 4096), Err(XbdevError::ReadOnly(_))));
    ro.read(&mut buf, 0).unwrap();
    h.close().unwrap();
    assert!(matches!(h.read(&mut buf, 0), Err(XbdevError::Closed(_))));
    assert!(matches!(h.close(), Err(XbdevError::Closed(_))));
    let st = ro.stats();
    assert_eq!(st.total_errors(), 0, "no bad request reached the device");
    xb.stop();
    assert!(matches!(ro.read(&mut buf, 0), Err(XbdevError::NotInitialized)));
    assert!(matches!(xb.open("m0", true), Err(XbdevError::NotInitialized)));
}

#[test]
fn many_client_threads_share_the_reactors() {
    let xb = std::sync::Arc::new(start(TWO_MALLOC));
    let h = xb.open("m0", true).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                let base = t * (2 << 20);
                for i in 0..200u64 {
                    let v = vec![(t * 31 + i) as u8; 4096];
                    let off = base + (i % 64) * 4096;
                    h.write(&v, off).unwrap();
                    let mut back = vec![0u8; 4096];
                    h.read(&mut back, off).unwrap();
                    assert_eq!(back, v, "thread {t} io {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn async_queue_batches_and_returns_buffers() {
    let xb = start(TWO_MALLOC);
    let h = xb.open("m1", true).unwrap();
    let mut q = xb.io_queue(128).unwrap();
    for i in 0..128u64 {
        let mut b = DmaBuf::alloc(4096).unwrap();
        b.as_mut_slice().fill(i as u8);
        q.write(&h, b, i * 4096, i).unwrap();
    }
    assert_eq!(q.in_flight(), 128);
    let extra = DmaBuf::alloc(4096).unwrap();
    let (e, _back) = q.write(&h, extra, 0, 999).unwrap_err();
    assert!(matches!(e, XbdevError::QueueFull(128)));
    assert_eq!(q.submit(), 128);
    let mut seen = [false; 128];
    let mut bufs = Vec::new();
    while bufs.len() < 128 {
        q.poll(64, Duration::from_secs(5), &mut |c| {
            assert_eq!(c.status, IoStatus::Success);
            assert!(!seen[c.user as usize], "completed twice");
            seen[c.user as usize] = true;
            bufs.push(c.buf.unwrap());
        });
    }
    for (i, b) in bufs.into_iter().enumerate() {
        q.read(&h, b, i as u64 * 4096, i as u64).unwrap();
    }
    q.submit();
    for _ in 0..128 {
        let c = q.wait_one(Duration::from_secs(5)).unwrap();
        assert!(c.buf.unwrap().as_slice().iter().all(|&x| x == c.user as u8));
    }
    assert!(matches!(q.wait_one(Duration::from_millis(10)), Err(XbdevError::Timeout)));
    q.flush(&h, 1).unwrap();
    assert_eq!(q.wait_one(Duration::from_secs(5)).unwrap().status, IoStatus::Success);
}

#[test]
fn hot_remove_while_io_is_in_flight_answers_everything() {
    let xb = start(
        r#"{"reactor": {"cores": [0], "pin": false},
        "base_devices": [{"method": "malloc", "params": {"name": "m0", "size_mb": 8}}]}"#,
    );
    let h = xb.open("m0", true).unwrap();
    let mut q = xb.io_queue(256).unwrap();
    let mut answered = 0;
    let mut path_errors = 0;
    for round in 0..20u64 {
        for i in 0..64u64 {
            let b = DmaBuf::alloc(4096).unwrap();
            q.write(&h, b, (i % 2048) * 4096, round * 64 + i).unwrap();
        }
        q.submit();
        if round == 10 {
            xb.registry().unregister("m0").unwrap();
        }
        while q.in_flight() > 0 {
            q.poll(usize::MAX, Duration::from_secs(5), &mut |c| {
                answered += 1;
                match c.status {
                    IoStatus::Success => {}
                    IoStatus::PathError => path_errors += 1,
                    s => panic!("unexpected status {s}"),
                }
            });
        }
    }
    assert_eq!(answered, 20 * 64);
    assert!(path_errors >= 9 * 64, "IO after removal fails with a path error ({path_errors})");
}

#[test]
fn config_errors_name_the_json_path() {
    let cases = [
        (
            r#"{"base_devices": [{"method": "malloc", "params": {"name": "a", "size_mb": 1}}, {"method": "aio", "params": {"name": "b"}}]}"#,
            "base_devices[1].params.filename: missing required field",
        ),
        (
            r#"{"base_devices": [{"method": "aio", "params": {"name": "b", "filename": 7}}]}"#,
            "base_devices[0].params.filename: expected a string, found a number",
        ),
        (
            r#"{"base_devices": [{"method": "floppy", "params": {}}]}"#,
            "base_devices[0].method: unknown method 'floppy' (expected one of: malloc, null, aio, nvme, nvmf)",
        ),
        (
            r#"{"base_devices": [{"method": "malloc", "params": {"name": "a", "size_mb": 1, "colour": "red"}}]}"#,
            "base_devices[0].params.colour: unknown field (expected one of: block_size, name, num_blocks, size_mb)",
        ),
        (
            r#"{"base_devices": [{"method": "malloc", "params": {"name": "a", "size_mb": 1, "block_size": 1024}}]}"#,
            "base_devices[0].params.block_size: 1024 is not a supported block size (expected 512 or 4096)",
        ),
        (
            r#"{"base_devices": [{"method": "malloc", "params": {"name": "a", "size_mb": 1}}, {"method": "null", "params": {"name": "a", "num_blocks": 8}}]}"#,
            "base_devices[1].params.name: duplicate device name 'a' (also base_devices[0])",
        ),
        (r#"{"base_devices": {}}"#, "base_devices: expected an array, found an object"),
        (
            r#"{"reactor": {"idle": "sometimes"}}"#,
            "reactor.idle: expected \"adaptive\" or \"poll\", found \"sometimes\"",
        ),
        (r#"{"bogus": 1}"#, "bogus: unknown field"),
    ];
    for (json, want) in cases {
        let e = Config::from_json_str(json).unwrap_err().to_string();
        assert!(e.starts_with(want), "for {json}\n got: {e}\nwant: {want}");
    }
    assert!(Config::from_json_str("{").unwrap_err().to_string().starts_with("config is not valid JSON"));
    let e = Config::from_json_str(r#"{"base_devices": [{"method": "rbd", "params": {}}]}"#).unwrap_err();
    assert!(e.to_string().contains("needs the Ceph RBD backend"), "{e}");
    let e = Config::from_json_str(
        r#"{"base_devices": [{"method": "nvme", "params": {"name": "n", "pci_addr": "01:00.0"}}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "base_devices[0].params.pci_addr: '01:00.0' is not a PCI address like 0000:01:00.0");
    let e = Config::from_json_str(
        r#"{"base_devices": [{"method": "nvme", "params": {"name": "n", "pci_addr": "0000:01:00.0", "mode": "dma"}}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "base_devices[0].params.mode: 'dma' is not vfio or uio");
    let xb = Xbdev::start(
        &Config::from_json_str(
            r#"{"reactor": {"cores": [0], "pin": false}, "base_devices": [{"method": "nvme", "params": {"name": "n", "pci_addr": "0000:7f:1f.7"}}]}"#,
        )
        .unwrap(),
    );
    let e = xb.err().unwrap().to_string();
    assert!(e.contains("0000:7f:1f.7"), "a missing device is named: {e}");
}

#[test]
fn save_config_recreates_the_same_devices() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.img");
    std::fs::File::create(&file).unwrap().set_len(4 << 20).unwrap();
    let json = format!(
        r#"{{"reactor": {{"cores": [0], "pin": false}}, "base_devices": [
        {{"method": "malloc", "params": {{"name": "m0", "size_mb": 2, "block_size": 4096}}}},
        {{"method": "null", "params": {{"name": "n0", "num_blocks": 1000}}}},
        {{"method": "aio", "params": {{"name": "a0", "filename": "{}", "buffered": true}}}}]}}"#,
        file.display()
    );
    let xb = start(&json);
    let saved = xb.save_config();
    let before: Vec<_> = xb.devices().into_iter().map(|i| (i.name, i.product, i.block_size, i.num_blocks)).collect();
    xb.stop();
    let xb2 = Xbdev::start(&Config::from_json_str(&saved).unwrap()).unwrap();
    let after: Vec<_> = xb2.devices().into_iter().map(|i| (i.name, i.product, i.block_size, i.num_blocks)).collect();
    assert_eq!(before, after);
    assert_eq!(before.len(), 3);
}
