//! The `port` backend: several paths to one namespace, with link and ANA state per port.

use bdev::backends::fault::FaultBdev;
use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::backends::port::PortBdev;
use bdev::*;
use std::sync::Arc;
use std::time::Duration;

fn run(ch: &mut BdevChannel, io: IoRequest) -> IoStatus {
    ch.submit(&io).unwrap();
    let mut got = None;
    let t0 = std::time::Instant::now();
    while got.is_none() {
        ch.poll(&mut |_, st| got = Some(st));
        assert!(t0.elapsed() < Duration::from_secs(10), "io did not complete");
    }
    got.unwrap()
}

fn setup() -> (Arc<Registry>, Vec<Arc<PortBdev>>) {
    let reg = Registry::new();
    let m = MallocBdev::new(MallocParams { name: "m".into(), num_blocks: 64, block_size: 512 }).unwrap();
    reg.register(Arc::new(m)).unwrap();
    let ports = PortBdev::create(reg.open("m", true).unwrap(), &["p0", "p1"]).unwrap();
    for p in &ports {
        reg.register(p.clone()).unwrap();
    }
    (reg, ports)
}

#[test]
fn ports_share_data_and_namespace_identity() {
    let (reg, ports) = setup();
    assert!(matches!(reg.open("m", true), Err(BdevError::Claimed { .. })), "base claimed by the ports");
    let m_ns = reg.lookup("m").unwrap().info().ns_id;
    assert_eq!(ports[0].info().ns_id, m_ns);
    assert_eq!(ports[1].info().ns_id, m_ns);
    assert_ne!(ports[0].info().uuid, ports[1].info().uuid);
    let d0 = reg.open("p0", true).unwrap();
    let d1 = reg.open("p1", true).unwrap();
    let (mut c0, mut c1) = (d0.channel().unwrap(), d1.channel().unwrap());
    let mut w = DmaBuf::alloc(1024).unwrap();
    w.as_mut_slice().fill(0x3c);
    assert_eq!(run(&mut c0, IoRequest::write(4, 2, IoVecs::single(w.iovec()), 1)), IoStatus::Success);
    let mut r = DmaBuf::zeroed(1024).unwrap();
    assert_eq!(run(&mut c1, IoRequest::read(4, 2, IoVecs::single(r.iovec()), 2)), IoStatus::Success);
    assert!(r.as_slice().iter().all(|&b| b == 0x3c), "written through p0, read through p1");
    let late = ports[0].sibling("p2").unwrap();
    assert_eq!(late.info().ns_id, m_ns);
    assert_eq!(late.base_name(), "m");
}

#[test]
fn link_down_fails_new_and_in_flight_io_with_path_error() {
    let (reg, ports) = setup();
    let d0 = reg.open("p0", true).unwrap();
    let mut c0 = d0.channel().unwrap();
    let mut b = DmaBuf::alloc(512).unwrap();
    let v = IoVecs::single(b.iovec());
    // In flight (malloc answers at the next poll) when the link drops.
    c0.submit(&IoRequest::read(0, 1, v, 5)).unwrap();
    ports[0].set_link(false);
    assert!(!ports[0].link_up());
    let mut got = Vec::new();
    assert!(c0.drain(Duration::from_secs(1), &mut |t, s| got.push((t, s))));
    assert_eq!(got, vec![(5, IoStatus::PathError)]);
    assert_eq!(run(&mut c0, IoRequest::read(0, 1, v, 6)), IoStatus::PathError);
    let d1 = reg.open("p1", true).unwrap();
    assert_eq!(
        run(&mut d1.channel().unwrap(), IoRequest::read(0, 1, v, 7)),
        IoStatus::Success,
        "other port unaffected"
    );
    ports[0].set_link(true);
    assert_eq!(run(&mut c0, IoRequest::read(0, 1, v, 8)), IoStatus::Success);
}

#[test]
fn ana_state_is_reported_through_fault_bdev_and_inaccessible_refuses_io() {
    let (reg, ports) = setup();
    let f = Arc::new(FaultBdev::new("f0", reg.open("p0", true).unwrap()).unwrap());
    reg.register(f.clone()).unwrap();
    assert_eq!(f.ana_state(), None);
    ports[0].set_ana_state(Some(AnaState::NonOptimized));
    assert_eq!(f.ana_state(), Some(AnaState::NonOptimized), "fault bdev forwards its base's ANA state");
    let d = reg.open("f0", true).unwrap();
    let mut ch = d.channel().unwrap();
    let mut b = DmaBuf::alloc(512).unwrap();
    let v = IoVecs::single(b.iovec());
    assert_eq!(run(&mut ch, IoRequest::read(0, 1, v, 1)), IoStatus::Success, "non-optimized still serves IO");
    ports[0].set_ana_state(Some(AnaState::Inaccessible));
    assert_eq!(run(&mut ch, IoRequest::read(0, 1, v, 2)), IoStatus::PathError);
    ports[0].set_ana_state(Some(AnaState::Optimized));
    assert_eq!(run(&mut ch, IoRequest::read(0, 1, v, 3)), IoStatus::Success);
}

#[test]
fn bad_port_names_are_refused() {
    let reg = Registry::new();
    let m = MallocBdev::new(MallocParams { name: "m".into(), num_blocks: 8, block_size: 512 }).unwrap();
    reg.register(Arc::new(m)).unwrap();
    let e = PortBdev::create(reg.open("m", true).unwrap(), &["a", "a"]).err().unwrap();
    assert!(e.to_string().contains("given twice"), "{e}");
    assert!(PortBdev::create(reg.open("m", true).unwrap(), &[]).is_err());
    assert!(PortBdev::create(reg.open("m", true).unwrap(), &[""]).is_err());
    let _held = reg.open("m", true).unwrap();
    let e = PortBdev::create(reg.open("m", true).unwrap(), &["a"]).err().unwrap();
    assert!(matches!(e, BdevError::OpenWriters { .. }), "{e}");
}
