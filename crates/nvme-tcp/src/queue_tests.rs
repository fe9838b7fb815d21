//! Protocol violations seen by the host and controller queues: each is a
//! typed error, never a panic or a silent misplacement.

use crate::ctrl::{CtrlBuffers, CtrlConfig, CtrlError, CtrlEvent, CtrlQueue};
use crate::host::{DataDir, HostBuffers, HostConfig, HostError, HostQueue};
use crate::pdu::{to_vec, DataPdu, IcReq, IcResp, Pdu, TxConfig};
use crate::recv::{PlacementError, RecvError};
use nvme_spec::command::{Command, IoCommand};
use nvme_spec::status::Status;
use nvme_spec::Cqe;

struct NoBufs(Vec<u8>);

impl HostBuffers for NoBufs {
    fn read_dest(&mut self, _: u64, at: u32) -> Option<&mut [u8]> {
        self.0.get_mut(at as usize..).filter(|s| !s.is_empty())
    }
    fn write_src(&self, _: u64, at: u32) -> Option<&[u8]> {
        self.0.get(at as usize..).filter(|s| !s.is_empty())
    }
}

impl CtrlBuffers for NoBufs {
    fn dest(&mut self, _: u16, len: u32, at: u32) -> Option<&mut [u8]> {
        self.0.resize(len as usize, 0);
        self.0.get_mut(at as usize..).filter(|s| !s.is_empty())
    }
    fn src(&self, _: u16, at: u32) -> Option<&[u8]> {
        self.0.get(at as usize..).filter(|s| !s.is_empty())
    }
}

fn pdu(p: Pdu, data: &[u8]) -> Vec<u8> {
    to_vec(&p, data, &TxConfig::INITIAL).expect("encode")
}

fn icresp() -> Vec<u8> {
    pdu(Pdu::IcResp(IcResp { pfv: 0, cpda: 0, hdgst: false, ddgst: false, maxh2cdata: 8192 }), &[])
}

fn host() -> (HostQueue, NoBufs) {
    let mut q = HostQueue::new(HostConfig { depth: 4, incapsule_max: 0, ..HostConfig::default() });
    let mut b = NoBufs(vec![0; 8192]);
    let mut sink = Vec::new();
    q.transmit(&mut sink, &b).expect("icreq");
    q.receive(&icresp(), &mut b, &mut |_, _| {}).expect("icresp");
    assert!(q.is_ready());
    (q, b)
}

fn read_sqe() -> nvme_spec::Sqe {
    Command::Io(IoCommand::Read { nsid: 1, slba: 0, nlb: 7, fua: false, lr: false }).to_sqe(0)
}

fn write_sqe() -> nvme_spec::Sqe {
    Command::Io(IoCommand::Write { nsid: 1, slba: 0, nlb: 7, fua: false, lr: false }).to_sqe(0)
}

fn c2h(cid: u16, offset: u32, len: u32, last: bool, success: bool) -> Vec<u8> {
    pdu(Pdu::C2HData(DataPdu { cccid: cid, ttag: 0, offset, length: len, last, success }), &vec![1; len as usize])
}

#[test]
fn host_rejects_pdus_before_icresp() {
    let mut q = HostQueue::new(HostConfig::default());
    let mut b = NoBufs(vec![]);
    let e = q.receive(&pdu(Pdu::CapsuleResp { cqe: Cqe::new(0, Status::SUCCESS) }, &[]), &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Protocol { what: "pdu before icresp", .. })));
    assert!(matches!(q.submit(read_sqe(), DataDir::None, 1), Err(crate::host::SubmitError::Failed)));
}

#[test]
fn host_rejects_unrequested_digest() {
    let mut q = HostQueue::new(HostConfig::default());
    let mut b = NoBufs(vec![]);
    let r = pdu(Pdu::IcResp(IcResp { pfv: 0, cpda: 0, hdgst: true, ddgst: false, maxh2cdata: 8192 }), &[]);
    assert!(matches!(q.receive(&r, &mut b, &mut |_, _| {}), Err(HostError::Protocol { .. })));
}

#[test]
fn host_c2h_data_checks() {
    // Unknown command.
    let (mut q, mut b) = host();
    let e = q.receive(&c2h(3, 0, 512, true, false), &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Recv(RecvError::Placement(PlacementError::UnknownCommand(3))))));
    // Out of order.
    let (mut q, mut b) = host();
    let cid = q.submit(read_sqe(), DataDir::FromController(4096), 1).expect("submit");
    let e = q.receive(&c2h(cid, 512, 512, false, false), &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Recv(RecvError::Placement(PlacementError::OutOfOrder { .. })))));
    // Beyond the buffer.
    let (mut q, mut b) = host();
    let cid = q.submit(read_sqe(), DataDir::FromController(4096), 1).expect("submit");
    let e = q.receive(&c2h(cid, 0, 4100, true, false), &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Recv(RecvError::Placement(PlacementError::OutOfRange { .. })))));
    // To a write command.
    let (mut q, mut b) = host();
    let cid = q.submit(write_sqe(), DataDir::ToController(4096), 1).expect("submit");
    let e = q.receive(&c2h(cid, 0, 512, true, false), &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Recv(RecvError::Placement(PlacementError::WrongDirection(_))))));
    // SUCCESS before all data; then the queue stays failed.
    let (mut q, mut b) = host();
    let cid = q.submit(read_sqe(), DataDir::FromController(4096), 1).expect("submit");
    let e = q.receive(&c2h(cid, 0, 512, true, true), &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Protocol { what: "success before all data", .. })));
    assert!(matches!(q.receive(&[0], &mut b, &mut |_, _| {}), Err(HostError::Failed)));
    let mut aborted = vec![];
    q.fail_all(&mut |t| aborted.push(t));
    assert_eq!(aborted, vec![1]);
    // SUCCESS with all data completes without a response capsule.
    let (mut q, mut b) = host();
    let cid = q.submit(read_sqe(), DataDir::FromController(4096), 9).expect("submit");
    let mut done = vec![];
    q.receive(&c2h(cid, 0, 4096, true, true), &mut b, &mut |t, c| done.push((t, c.status()))).expect("ok");
    assert_eq!(done, vec![(9, Status::SUCCESS)]);
    assert_eq!(q.outstanding(), 0);
}

#[test]
fn host_r2t_checks() {
    let r2t = |cid, offset, length| {
        pdu(Pdu::R2T(DataPdu { cccid: cid, ttag: 5, offset, length, last: false, success: false }), &[])
    };
    let (mut q, mut b) = host();
    let cid = q.submit(read_sqe(), DataDir::FromController(4096), 1).expect("submit");
    assert!(matches!(q.receive(&r2t(cid, 0, 4096), &mut b, &mut |_, _| {}), Err(HostError::Protocol { .. })));
    let (mut q, mut b) = host();
    let cid = q.submit(write_sqe(), DataDir::ToController(4096), 1).expect("submit");
    assert!(matches!(q.receive(&r2t(cid, 4000, 200), &mut b, &mut |_, _| {}), Err(HostError::Protocol { .. })));
    // MAXR2T (0's based 0): a second R2T while the first is unsent.
    let (mut q, mut b) = host();
    let cid = q.submit(write_sqe(), DataDir::ToController(4096), 1).expect("submit");
    q.receive(&r2t(cid, 0, 2048), &mut b, &mut |_, _| {}).expect("first r2t");
    let e = q.receive(&r2t(cid, 2048, 2048), &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Protocol { what: "more r2ts than maxr2t", .. })));
    // A response while solicited data is still queued.
    let (mut q, mut b) = host();
    let cid = q.submit(write_sqe(), DataDir::ToController(4096), 1).expect("submit");
    q.receive(&r2t(cid, 0, 4096), &mut b, &mut |_, _| {}).expect("r2t");
    let resp = pdu(Pdu::CapsuleResp { cqe: Cqe::new(cid, Status::SUCCESS) }, &[]);
    let e = q.receive(&resp, &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Protocol { what: "response before data was sent", .. })));
    // Once the data is written, the response completes the command.
    let (mut q, mut b) = host();
    let cid = q.submit(write_sqe(), DataDir::ToController(4096), 3).expect("submit");
    q.receive(&r2t(cid, 0, 4096), &mut b, &mut |_, _| {}).expect("r2t");
    let mut wire = Vec::new();
    q.transmit(&mut wire, &b).expect("h2c");
    assert!(!q.wants_transmit());
    let mut done = vec![];
    q.receive(&resp, &mut b, &mut |t, _| done.push(t)).expect("resp");
    assert_eq!(done, vec![3]);
}

fn ctrl() -> (CtrlQueue, NoBufs) {
    let mut q = CtrlQueue::new(CtrlConfig { depth: 2, ..CtrlConfig::default() });
    let mut b = NoBufs(vec![]);
    let icreq = pdu(Pdu::IcReq(IcReq { pfv: 0, hpda: 0, hdgst: false, ddgst: false, maxr2t: 0 }), &[]);
    q.receive(&icreq, &mut b, &mut |_| {}).expect("icreq");
    assert!(q.is_ready());
    (q, b)
}

fn capsule(cid: u16) -> Vec<u8> {
    let mut sqe = read_sqe();
    sqe.set_cid(cid);
    sqe.set_data_pointer(nvme_spec::DataPointer::Sgl(nvme_spec::SglDescriptor::transport(4096)));
    pdu(Pdu::CapsuleCmd { sqe, data_len: 0 }, &[])
}

#[test]
fn ctrl_checks() {
    // Capsule before ICReq.
    let mut q = CtrlQueue::new(CtrlConfig::default());
    let mut b = NoBufs(vec![]);
    assert!(matches!(q.receive(&capsule(1), &mut b, &mut |_| {}), Err(CtrlError::Protocol { .. })));
    // Command ID in use.
    let (mut q, mut b) = ctrl();
    let mut evs = vec![];
    q.receive(&capsule(7), &mut b, &mut |e| evs.push(e)).expect("first");
    assert!(matches!(evs[0], CtrlEvent::Command { slot: _, .. }));
    assert!(matches!(
        q.receive(&capsule(7), &mut b, &mut |_| {}),
        Err(CtrlError::Protocol { what: "command id in use", .. })
    ));
    // More commands than the depth.
    let (mut q, mut b) = ctrl();
    q.receive(&capsule(1), &mut b, &mut |_| {}).expect("1");
    q.receive(&capsule(2), &mut b, &mut |_| {}).expect("2");
    assert!(q.receive(&capsule(3), &mut b, &mut |_| {}).is_err());
    // H2C data with an unknown transfer tag.
    let (mut q, mut b) = ctrl();
    let h2c =
        pdu(Pdu::H2CData(DataPdu { cccid: 1, ttag: 1, offset: 0, length: 16, last: true, success: false }), &[0; 16]);
    let e = q.receive(&h2c, &mut b, &mut |_| {});
    assert!(matches!(e, Err(CtrlError::Recv(RecvError::Placement(PlacementError::UnknownTag { .. })))));
    // API misuse: completing an unknown slot, requesting data twice.
    let (mut q, mut b) = ctrl();
    assert!(matches!(q.complete(1, Cqe::new(0, Status::SUCCESS), 0), Err(CtrlError::BadSlot(1))));
    let mut evs = vec![];
    let mut wsqe = write_sqe();
    wsqe.set_cid(4);
    wsqe.set_data_pointer(nvme_spec::DataPointer::Sgl(nvme_spec::SglDescriptor::transport(4096)));
    q.receive(&pdu(Pdu::CapsuleCmd { sqe: wsqe, data_len: 0 }, &[]), &mut b, &mut |e| evs.push(e)).expect("cmd");
    let CtrlEvent::Command { slot, data, .. } = evs[0] else { panic!("command event") };
    assert_eq!(data, crate::ctrl::CmdData::ToController(4096));
    q.request_data(slot).expect("r2t");
    assert!(matches!(q.request_data(slot), Err(CtrlError::BadSlot(_))));
    assert!(matches!(q.complete(slot, Cqe::new(0, Status::SUCCESS), 0), Err(CtrlError::BadSlot(_))));
}

fn digest_pdu(p: Pdu, data: &[u8]) -> Vec<u8> {
    to_vec(&p, data, &TxConfig { hdgst: true, ddgst: true, align: 4 }).expect("encode")
}

/// A host queue that negotiated header and data digests.
fn host_digests() -> (HostQueue, NoBufs) {
    let mut q = HostQueue::new(HostConfig { depth: 4, hdgst: true, ddgst: true, ..HostConfig::default() });
    let mut b = NoBufs(vec![0; 8192]);
    q.transmit(&mut Vec::new(), &b).expect("icreq");
    let r = pdu(Pdu::IcResp(IcResp { pfv: 0, cpda: 0, hdgst: true, ddgst: true, maxh2cdata: 8192 }), &[]);
    q.receive(&r, &mut b, &mut |_, _| {}).expect("icresp");
    (q, b)
}

#[test]
fn host_header_digest_error_sends_termination_request() {
    let (mut q, mut b) = host_digests();
    let cid = q.submit(read_sqe(), DataDir::FromController(512), 1).expect("submit");
    q.transmit(&mut Vec::new(), &b).expect("capsule");
    let mut wire = digest_pdu(Pdu::CapsuleResp { cqe: Cqe::new(cid, Status::SUCCESS) }, &[]);
    wire[12] ^= 1;
    let e = q.receive(&wire, &mut b, &mut |_, _| {});
    assert!(matches!(e, Err(HostError::Recv(RecvError::Pdu(crate::pdu::PduError::HeaderDigest { .. })))));
    assert!(q.is_terminating());
    let mut out = Vec::new();
    assert!(q.transmit_termination(&mut out, &b).expect("written"));
    let rx = crate::pdu::RxConfig {
        role: crate::pdu::Role::Controller,
        hdgst: false,
        ddgst: false,
        align: 4,
        max_data: 0,
        max_incapsule: 0,
    };
    let (p, data, n) = crate::pdu::parse_pdu(&out, &rx).expect("a termination request");
    assert_eq!(n, out.len());
    let Pdu::H2CTermReq(t) = p else { panic!("expected H2CTermReq, got {p:?}") };
    assert_eq!(t.fes, crate::pdu::Fes::HeaderDigest);
    // The offending header (with its digest) is carried back.
    assert_eq!(data, &wire[..28]);
}

#[test]
fn host_data_digest_error_fails_only_the_command() {
    let (mut q, mut b) = host_digests();
    let c1 = q.submit(read_sqe(), DataDir::FromController(512), 1).expect("submit");
    let c2 = q.submit(read_sqe(), DataDir::FromController(512), 2).expect("submit");
    let mut wire = digest_pdu(
        Pdu::C2HData(DataPdu { cccid: c1, ttag: 0, offset: 0, length: 512, last: true, success: true }),
        &[3; 512],
    );
    wire[100] ^= 4;
    wire.extend(digest_pdu(
        Pdu::C2HData(DataPdu { cccid: c2, ttag: 0, offset: 0, length: 512, last: true, success: false }),
        &[3; 512],
    ));
    wire.extend(digest_pdu(Pdu::CapsuleResp { cqe: Cqe::new(c2, Status::SUCCESS) }, &[]));
    let mut done = vec![];
    q.receive(&wire, &mut b, &mut |t, c| done.push((t, c.status()))).expect("not fatal");
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].0, 1);
    assert!(done[0].1.is_path_error(), "corrupt data: transient transport error, got {:?}", done[0].1);
    assert_eq!(done[1], (2, Status::SUCCESS));
    assert!(!q.is_terminating());
    // Data digest error followed by a successful response capsule: the
    // response's success is overridden.
    let c3 = q.submit(read_sqe(), DataDir::FromController(512), 3).expect("submit");
    let mut wire = digest_pdu(
        Pdu::C2HData(DataPdu { cccid: c3, ttag: 0, offset: 0, length: 512, last: true, success: false }),
        &[3; 512],
    );
    wire[200] ^= 4;
    wire.extend(digest_pdu(Pdu::CapsuleResp { cqe: Cqe::new(c3, Status::SUCCESS) }, &[]));
    let mut done = vec![];
    q.receive(&wire, &mut b, &mut |t, c| done.push((t, c.status()))).expect("not fatal");
    assert!(done.len() == 1 && done[0].0 == 3 && !done[0].1.is_success());
}

#[test]
fn ctrl_data_digest_error_completes_without_running() {
    let mut q = CtrlQueue::new(CtrlConfig { depth: 2, ..CtrlConfig::default() });
    let mut b = NoBufs(vec![]);
    let icreq = pdu(Pdu::IcReq(IcReq { pfv: 0, hpda: 0, hdgst: true, ddgst: true, maxr2t: 0 }), &[]);
    q.receive(&icreq, &mut b, &mut |_| {}).expect("icreq");
    q.transmit(&mut Vec::new(), &b, &mut |_| {}).expect("icresp");
    let mut sqe = write_sqe();
    sqe.set_cid(9);
    sqe.set_data_pointer(nvme_spec::DataPointer::Sgl(nvme_spec::SglDescriptor::in_capsule(0, 512)));
    let mut wire = digest_pdu(Pdu::CapsuleCmd { sqe, data_len: 512 }, &[1; 512]);
    wire[80] ^= 2;
    let mut evs = vec![];
    q.receive(&wire, &mut b, &mut |e| evs.push(e)).expect("not fatal");
    assert!(evs.is_empty(), "the command must not run: {evs:?}");
    let mut out = Vec::new();
    let mut released = vec![];
    q.transmit(&mut out, &b, &mut |s| released.push(s)).expect("response");
    let rx = crate::pdu::RxConfig {
        role: crate::pdu::Role::Host,
        hdgst: true,
        ddgst: true,
        align: 4,
        max_data: 1 << 20,
        max_incapsule: 0,
    };
    let (p, _, _) = crate::pdu::parse_pdu(&out, &rx).expect("response");
    let Pdu::CapsuleResp { cqe } = p else { panic!("expected a response, got {p:?}") };
    assert_eq!(cqe.cid.get(), 9);
    assert!(cqe.status().is_path_error());
    assert_eq!(released.len(), 1);
}

#[test]
fn ctrl_placement_error_sends_termination_request() {
    let (mut q, mut b) = ctrl();
    let h2c =
        pdu(Pdu::H2CData(DataPdu { cccid: 1, ttag: 1, offset: 0, length: 16, last: true, success: false }), &[0; 16]);
    assert!(q.receive(&h2c, &mut b, &mut |_| {}).is_err());
    let mut out = Vec::new();
    assert!(q.transmit_termination(&mut out, &b).expect("written"));
    let rx = crate::pdu::RxConfig {
        role: crate::pdu::Role::Host,
        hdgst: false,
        ddgst: false,
        align: 4,
        max_data: 0,
        max_incapsule: 0,
    };
    let (p, data, _) = crate::pdu::parse_pdu(&out, &rx).expect("termination request");
    let Pdu::C2HTermReq(t) = p else { panic!("expected C2HTermReq, got {p:?}") };
    assert_eq!((t.fes, t.fei), (crate::pdu::Fes::InvalidHeaderField, 10));
    assert_eq!(data, &h2c[..24]);
}

#[test]
fn host_reads_data_and_the_next_header_in_one_vectored_read() {
    use std::io::{self, IoSliceMut, Read};
    /// Serves `data`: the first read only `first` bytes, later ones as
    /// much as fits, across all buffers; records the buffer count of each
    /// vectored read.
    struct Src {
        data: Vec<u8>,
        pos: usize,
        first: usize,
        vectored: Vec<usize>,
    }
    impl Read for Src {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.read_vectored(&mut [IoSliceMut::new(buf)])
        }
        fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
            self.vectored.push(bufs.len());
            let mut limit = if self.pos == 0 { self.first } else { usize::MAX };
            let mut n = 0;
            for b in bufs.iter_mut() {
                let k = b.len().min(self.data.len() - self.pos).min(limit);
                b[..k].copy_from_slice(&self.data[self.pos..self.pos + k]);
                self.pos += k;
                limit -= k;
                n += k;
            }
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }
    }
    let (mut q, mut b) = host();
    let a = q.submit(read_sqe(), DataDir::FromController(4096), 1).expect("submit");
    let c = q.submit(read_sqe(), DataDir::FromController(4096), 2).expect("submit");
    let mut data = c2h(a, 0, 4096, true, true);
    data.extend(c2h(c, 0, 4096, true, true));
    // The first read ends early in the first PDU's data.
    let mut src = Src { data, pos: 0, first: 24 + 100, vectored: vec![] };
    let mut done = vec![];
    while done.len() < 2 {
        q.poll_receive(&mut src, &mut b, &mut |t, _| done.push(t)).expect("receive");
    }
    assert_eq!(done, vec![1, 2]);
    // The rest of the first data part and the second PDU came in one
    // vectored read: the reader got both buffers.
    assert_eq!(src.vectored.get(1), Some(&2), "{:?}", src.vectored);
    assert_eq!(src.pos, src.data.len());
}
