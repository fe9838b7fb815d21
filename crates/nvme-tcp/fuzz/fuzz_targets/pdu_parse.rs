//! Fuzzes the NVMe/TCP PDU parser and the streaming receiver: any input
//! must give a PDU or a typed error, never a panic, and the streaming
//! receiver must agree with the whole-buffer parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_tcp::pdu::{parse_pdu, to_vec, Pdu, Role, RxConfig, TxConfig};
use nvme_tcp::recv::{DataSink, PduReceiver, PlacementError};

struct Sink(Vec<u8>);

impl DataSink for Sink {
    fn data_buffer(&mut self, pdu: &Pdu, at: usize) -> Result<&mut [u8], PlacementError> {
        if at == 0 {
            self.0 = vec![0; pdu.data_len() as usize];
        }
        let end = (at + 333).min(self.0.len());
        Ok(&mut self.0[at..end])
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, rest)) = input.split_first() else {
        return;
    };
    let Some((&split, bytes)) = rest.split_first() else {
        return;
    };
    let cfg = RxConfig {
        role: if sel & 1 == 0 {
            Role::Host
        } else {
            Role::Controller
        },
        hdgst: sel & 2 != 0,
        ddgst: sel & 4 != 0,
        align: 4 * (u32::from(sel >> 5) + 1),
        max_data: 1 << 16,
        max_incapsule: 8192,
    };
    let whole = parse_pdu(bytes, &cfg);
    if let Ok((pdu, data, _)) = &whole {
        // Re-encoding a parsed PDU parses to the same PDU and data.
        if !matches!(pdu, Pdu::H2CTermReq(_) | Pdu::C2HTermReq(_)) {
            let tx = TxConfig {
                hdgst: cfg.hdgst,
                ddgst: cfg.ddgst,
                align: cfg.align,
            };
            if let Ok(v) = to_vec(pdu, data, &tx) {
                let (p2, d2, _) = parse_pdu(&v, &cfg).expect("re-encoded pdu parses");
                assert_eq!(&p2, pdu);
                assert_eq!(d2, *data);
            }
        }
    }
    // Streaming in chunks of `split` bytes.
    let mut rx = PduReceiver::new(cfg);
    let mut sink = Sink(Vec::new());
    let step = usize::from(split).max(1);
    let mut first = None;
    'outer: for chunk in bytes.chunks(step) {
        let mut c = chunk;
        while !c.is_empty() {
            match rx.feed(c, &mut sink) {
                Ok((n, p)) => {
                    c = &c[n..];
                    if let Some(p) = p {
                        first = Some(Ok((p, std::mem::take(&mut sink.0))));
                        break 'outer;
                    }
                }
                Err(_) => {
                    first = Some(Err(()));
                    break 'outer;
                }
            }
        }
    }
    // Where the whole-buffer parser found a PDU, streaming finds the same.
    if let Ok((pdu, data, _)) = whole {
        match first {
            Some(Ok((p, d))) => {
                assert_eq!(p, pdu);
                if !matches!(pdu, Pdu::H2CTermReq(_) | Pdu::C2HTermReq(_)) {
                    assert_eq!(d, data);
                }
            }
            other => panic!("streaming disagrees: {:?}", other.map(|r| r.map(|x| x.0))),
        }
    }
});
