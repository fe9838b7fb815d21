use super::*;
use nvme_spec::command::AdminCommand;
use nvme_spec::status::Status;

fn ctrl_rx(hdgst: bool, ddgst: bool, align: u32) -> RxConfig {
    RxConfig { role: Role::Controller, hdgst, ddgst, align, max_data: 1 << 20, max_incapsule: 8192 }
}

fn host_rx(hdgst: bool, ddgst: bool, align: u32) -> RxConfig {
    RxConfig { role: Role::Host, ..ctrl_rx(hdgst, ddgst, align) }
}

fn tx(hdgst: bool, ddgst: bool, align: u32) -> TxConfig {
    TxConfig { hdgst, ddgst, align }
}

fn sample_pdus() -> Vec<(Pdu, Vec<u8>)> {
    let sqe = AdminCommand::KeepAlive.to_sqe(3);
    let cqe = Cqe::new(3, Status::SUCCESS);
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let d = |len: u32| DataPdu { cccid: 3, ttag: 0, offset: 512, length: len, last: true, success: false };
    vec![
        (Pdu::IcReq(IcReq { pfv: 0, hpda: 0, hdgst: true, ddgst: false, maxr2t: 3 }), vec![]),
        (Pdu::IcResp(IcResp { pfv: 0, cpda: 1, hdgst: true, ddgst: true, maxh2cdata: 131072 }), vec![]),
        (Pdu::CapsuleCmd { sqe, data_len: 0 }, vec![]),
        (Pdu::CapsuleCmd { sqe, data_len: 1000 }, data.clone()),
        (Pdu::CapsuleResp { cqe }, vec![]),
        (Pdu::H2CData(DataPdu { ttag: 9, last: false, ..d(1000) }), data.clone()),
        (Pdu::C2HData(DataPdu { success: true, ..d(1000) }), data.clone()),
        (Pdu::R2T(DataPdu { ttag: 4, last: false, ..d(65536) }), vec![]),
    ]
}

#[test]
fn round_trip_all_types_and_configs() {
    for (hd, dd, align) in
        [(false, false, 4), (true, false, 4), (false, true, 4), (true, true, 4), (true, true, 128), (false, false, 32)]
    {
        for (pdu, data) in sample_pdus() {
            let v = to_vec(&pdu, &data, &tx(hd, dd, align)).unwrap();
            let rx = if pdu.pdu_type().receiver() == Role::Controller {
                ctrl_rx(hd, dd, align)
            } else {
                host_rx(hd, dd, align)
            };
            let (p, got, n) = parse_pdu(&v, &rx).unwrap_or_else(|e| panic!("{pdu:?} {e}"));
            assert_eq!(n, v.len());
            assert_eq!(p, pdu);
            assert_eq!(got, &data[..]);
            if !data.is_empty() {
                assert_eq!(usize::from(v[3]) % align as usize, 0, "pdo aligned");
            }
        }
    }
}

#[test]
fn header_layout_bytes() {
    let v = to_vec(
        &Pdu::R2T(DataPdu { cccid: 0x1234, ttag: 0x55, offset: 4096, length: 8192, last: false, success: false }),
        &[],
        &tx(true, true, 4),
    )
    .unwrap();
    assert_eq!(v.len(), 28);
    assert_eq!(&v[..4], &[0x09, FLAG_HDGST, 24, 0]);
    assert_eq!(&v[4..8], &28u32.to_le_bytes());
    assert_eq!(&v[8..10], &0x1234u16.to_le_bytes());
    assert_eq!(&v[10..12], &0x55u16.to_le_bytes());
    assert_eq!(&v[12..16], &4096u32.to_le_bytes());
    assert_eq!(&v[16..20], &8192u32.to_le_bytes());
    assert_eq!(&v[24..28], &digest::crc32c(&v[..24]).to_le_bytes());
    // In-capsule data with digests and CPDA alignment 32: pdo = 96.
    let sqe = AdminCommand::KeepAlive.to_sqe(1);
    let v = to_vec(&Pdu::CapsuleCmd { sqe, data_len: 4 }, &[1, 2, 3, 4], &tx(true, true, 32)).unwrap();
    assert_eq!(v[3], 96);
    assert_eq!(v[1], FLAG_HDGST | FLAG_DDGST);
    assert_eq!(v.len(), 96 + 4 + 4);
}

#[test]
fn term_req_round_trip() {
    let offending = [0xaa; 30];
    let e = encode_term_req(Role::Controller, TermReq { fes: Fes::HeaderDigest, fei: 0 }, &offending).unwrap();
    let (p, data, n) = parse_pdu(e.as_slice(), &host_rx(true, true, 4)).unwrap();
    assert_eq!(n, 54);
    assert_eq!(p, Pdu::C2HTermReq(TermReq { fes: Fes::HeaderDigest, fei: 0 }));
    assert_eq!(data, &offending);
    assert_eq!(encode_term_req(Role::Host, p_term(), &[0; 153]), Err(EncodeError::TermDataTooLong(153)));
    for v in 0..8 {
        assert_eq!(Fes::from_raw(v).to_raw(), v);
    }
}

fn p_term() -> TermReq {
    TermReq { fes: Fes::SequenceError, fei: 0 }
}

fn c2h(len: u32) -> Vec<u8> {
    to_vec(
        &Pdu::C2HData(DataPdu { cccid: 1, ttag: 0, offset: 0, length: len, last: true, success: false }),
        &vec![7; len as usize],
        &tx(true, true, 4),
    )
    .unwrap()
}

#[test]
fn malformed_headers_are_typed_errors() {
    let rx = host_rx(true, true, 4);
    let good = c2h(64);
    assert!(parse_pdu(&good, &rx).is_ok());

    let mut b = good.clone();
    b[0] = 0x08;
    assert_eq!(parse_pdu(&b, &rx).unwrap_err(), PduError::UnknownType(8));

    assert!(matches!(parse_pdu(&good, &ctrl_rx(true, true, 4)), Err(PduError::WrongDirection { .. })));

    let mut b = good.clone();
    b[2] = 28;
    assert!(matches!(parse_pdu(&b, &rx), Err(PduError::BadHlen { hlen: 28, .. })));

    // Header digest flag cleared while negotiated.
    let mut b = good.clone();
    b[1] &= !FLAG_HDGST;
    assert!(matches!(parse_pdu(&b, &rx), Err(PduError::DigestFlag { .. })));
    // Data digest present but not negotiated.
    assert!(matches!(parse_pdu(&good, &host_rx(true, false, 4)), Err(PduError::DigestFlag { .. })));

    // PDO inside the header.
    let mut b = good.clone();
    b[3] = 20;
    assert!(matches!(parse_pdu(&b, &rx), Err(PduError::BadPdo { .. })));
    // PDO misaligned for HPDA 8 bytes.
    assert_eq!(parse_pdu(&good, &host_rx(true, true, 8)).unwrap_err(), PduError::Misaligned { pdo: 28, align: 8 });

    // PLEN shorter than header + digests.
    let mut b = good.clone();
    b[4..8].copy_from_slice(&30u32.to_le_bytes());
    assert!(parse_pdu(&b, &rx).is_err());
    // PLEN longer than the buffer.
    let mut b = good.clone();
    b[4..8].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(parse_pdu(&b, &rx), Err(PduError::Truncated { .. })));
    // ... and with enough bytes the header digest (which covers PLEN) fails.
    b.resize(1000, 0);
    assert!(matches!(parse_pdu(&b, &rx), Err(PduError::HeaderDigest { .. })));

    // DATAL disagreeing with PLEN (fix the header digest so only DATAL is wrong).
    let mut b = good.clone();
    b[16..20].copy_from_slice(&63u32.to_le_bytes());
    let d = digest::crc32c(&b[..24]);
    b[24..28].copy_from_slice(&d.to_le_bytes());
    assert_eq!(parse_pdu(&b, &rx).unwrap_err(), PduError::DataLengthMismatch { field: 63, from_plen: 64 });

    // Header digest corrupted.
    let mut b = good.clone();
    b[12] ^= 1;
    assert!(matches!(parse_pdu(&b, &rx), Err(PduError::HeaderDigest { .. })));
    // Data digest corrupted.
    let mut b = good.clone();
    b[40] ^= 1;
    assert!(matches!(parse_pdu(&b, &rx), Err(PduError::DataDigest { .. })));

    // Data beyond the limit.
    let big = c2h(4096);
    let mut small = rx;
    small.max_data = 4095;
    assert_eq!(
        parse_pdu(&big, &small).unwrap_err(),
        PduError::DataTooLong { pdu_type: PduType::C2HData, len: 4096, max: 4095 }
    );
    // In-capsule data beyond the limit.
    let sqe = AdminCommand::KeepAlive.to_sqe(1);
    let cap = to_vec(&Pdu::CapsuleCmd { sqe, data_len: 8196 }, &[0; 8196], &tx(false, false, 4)).unwrap();
    assert!(matches!(parse_pdu(&cap, &ctrl_rx(false, false, 4)), Err(PduError::DataTooLong { max: 8192, .. })));

    // Truncated.
    assert!(matches!(parse_pdu(&good[..5], &rx), Err(PduError::Truncated { .. })));
    assert!(matches!(parse_pdu(&good[..good.len() - 1], &rx), Err(PduError::Truncated { .. })));
}

#[test]
fn ic_field_checks() {
    let rx = host_rx(false, false, 4);
    let resp = |maxh2cdata, cpda| {
        to_vec(&Pdu::IcResp(IcResp { pfv: 0, cpda, hdgst: false, ddgst: false, maxh2cdata }), &[], &TxConfig::INITIAL)
            .unwrap()
    };
    assert!(parse_pdu(&resp(4096, 0), &rx).is_ok());
    assert!(matches!(
        parse_pdu(&resp(4095, 0), &rx),
        Err(PduError::Unsupported { field: "maxh2cdata", offset: 12, .. })
    ));
    assert!(matches!(parse_pdu(&resp(8192, 32), &rx), Err(PduError::Unsupported { field: "cpda", .. })));
    let mut b = resp(8192, 0);
    b[8] = 1;
    let e = parse_pdu(&b, &rx).unwrap_err();
    assert_eq!(e.term_req().fes, Fes::UnsupportedParameter);
    assert_eq!(e.term_req().fei, 8);
    // IC PDUs never carry digests even when negotiated later.
    let mut b = resp(8192, 0);
    b[1] = FLAG_HDGST;
    assert!(matches!(parse_pdu(&b, &host_rx(true, false, 4)), Err(PduError::DigestFlag { .. })));
}

#[test]
fn encode_rejects_bad_alignment() {
    let sqe = AdminCommand::KeepAlive.to_sqe(1);
    let p = Pdu::CapsuleCmd { sqe, data_len: 4 };
    assert_eq!(encode(&p, &tx(false, false, 6)), Err(EncodeError::BadAlign(6)));
    assert!(to_vec(&p, &[0; 3], &tx(false, false, 4)).is_err());
}
