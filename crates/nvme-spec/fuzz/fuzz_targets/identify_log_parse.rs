//! Fuzzes the byte-buffer parsers of identify data, log pages, Fabrics
//! Connect data and the Dataset Management range list. The first input
//! byte picks the parser, the rest is the buffer. Beyond "no panic":
//! fixed-layout structures read back as exactly the bytes they came from;
//! the namespace descriptor list, namespace list, ANA log and Discovery log
//! re-encode to something that parses to the same value; Connect data and
//! Discovery entries rebuilt from their parsed strings give the same
//! strings back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_spec::command::DsmRange;
use nvme_spec::fabrics::{ConnectData, NQN_MAX_LEN};
use nvme_spec::identify::{encode_ns_list, parse_ns_list, IdentifyController, IdentifyNamespace, NsDescriptor};
use nvme_spec::log::{AnaLog, DiscoveryLog, DiscoveryLogEntry, ErrorLogEntry, FirmwareSlotLog, SmartLog};
use zerocopy::IntoBytes;

/// Checks that a fixed-layout structure is the prefix of `buf` it was read from.
fn same_prefix<T: IntoBytes + zerocopy::Immutable + ?Sized>(v: &T, buf: &[u8]) {
    let b = v.as_bytes();
    assert_eq!(Some(b), buf.get(..b.len()), "structure differs from its bytes");
}

fn identify(sel: u8, buf: &[u8]) {
    match sel {
        0 => {
            if let Ok(c) = IdentifyController::parse(buf) {
                same_prefix(&c, buf);
                let _ = (c.serial(), c.model(), c.firmware(), c.subnqn(), c.io_capsule_bytes());
                for page in [0, 1, 4096, u64::MAX] {
                    let _ = c.max_transfer_bytes(page);
                }
            }
        }
        1 => {
            if let Ok(n) = IdentifyNamespace::parse(buf) {
                same_prefix(&n, buf);
                let _ = (n.formatted_lba_index(), n.formatted_lba());
                if let Some(bs) = n.block_size() {
                    assert!(bs.is_power_of_two() && bs >= 512);
                }
            }
        }
        2 => {
            if let Ok(list) = NsDescriptor::parse_list(buf) {
                let mut enc = Vec::new();
                for d in &list {
                    d.encode(&mut enc);
                }
                let known: Vec<_> =
                    list.iter().copied().filter(|d| !matches!(d, NsDescriptor::Unknown { .. })).collect();
                assert_eq!(NsDescriptor::parse_list(&enc), Ok(known), "re-encoded descriptor list differs");
            }
        }
        _ => {
            let ids = parse_ns_list(buf);
            assert!(ids.len() <= buf.len() / 4 && !ids.contains(&0));
            if ids.len() <= 1024 {
                assert_eq!(parse_ns_list(&encode_ns_list(&ids)), ids, "re-encoded namespace list differs");
            }
        }
    }
}

fn log(sel: u8, buf: &[u8]) {
    match sel {
        0 => {
            if let Ok(s) = SmartLog::parse(buf) {
                same_prefix(&s, buf);
            }
        }
        1 => {
            let all = ErrorLogEntry::parse_all(buf);
            assert_eq!(all.len(), buf.len() / 64);
            for (e, chunk) in all.iter().zip(buf.chunks_exact(64)) {
                assert_eq!(e.as_bytes(), chunk);
                let _ = e.status();
            }
        }
        2 => {
            if let Ok(f) = FirmwareSlotLog::parse(buf) {
                same_prefix(&f, buf);
                assert!(f.active_slot() <= 7);
                for slot in 0..=8 {
                    let _ = f.revision(slot);
                }
                assert_eq!(f.revision(0), None);
                assert_eq!(f.revision(8), None);
            }
        }
        3 => {
            if let Ok(a) = AnaLog::parse(buf) {
                let enc = a.encode();
                assert_eq!(AnaLog::parse(&enc).as_ref(), Ok(&a), "re-encoded ana log differs");
                if let Some(n) = a.groups.first().and_then(|g| g.nsids.first()) {
                    assert!(a.state_of(*n).is_some());
                }
            }
        }
        _ => {
            if let Ok(d) = DiscoveryLog::parse(buf) {
                assert!(d.entries.len() as u64 <= d.numrec);
                let again = DiscoveryLog::parse(&d.encode()).expect("re-encoded discovery log parses");
                assert_eq!(again.genctr, d.genctr);
                assert_eq!(again.entries, d.entries, "re-encoded discovery entries differ");
                for e in &d.entries {
                    if let (Some(a), Some(s), Some(n)) = (e.traddr(), e.trsvcid(), e.subnqn()) {
                        if let Some(t) = DiscoveryLogEntry::tcp(e.subtype, e.adrfam, a, s, n, e.portid.get()) {
                            assert_eq!((t.traddr(), t.trsvcid(), t.subnqn()), (Some(a), Some(s), Some(n)));
                        }
                    }
                }
            }
        }
    }
}

fn connect(buf: &[u8]) {
    let Ok(c) = ConnectData::parse(buf) else {
        return;
    };
    same_prefix(&c, buf);
    if let (Ok(sub), Ok(host)) = (c.subnqn(), c.hostnqn()) {
        match ConnectData::new(c.hostid, c.cntlid.get(), sub, host) {
            Ok(n) => {
                assert_eq!((n.subnqn(), n.hostnqn()), (Ok(sub), Ok(host)));
                assert_eq!((n.hostid, n.cntlid), (c.hostid, c.cntlid));
            }
            Err(_) => assert!(sub.len() > NQN_MAX_LEN || host.len() > NQN_MAX_LEN),
        }
    }
}

fn dsm(buf: &[u8]) {
    let Some((&count, data)) = buf.split_first() else {
        return;
    };
    let count = usize::from(count) + 1;
    match DsmRange::parse_list(data, count) {
        Ok(ranges) => {
            assert_eq!(ranges.len(), count);
            same_prefix(ranges, data);
        }
        Err(_) => assert!(data.len() < count * 16),
    }
    assert!(DsmRange::parse_list(data, usize::MAX).is_err());
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, buf)) = input.split_first() else {
        return;
    };
    match sel % 11 {
        s @ 0..=3 => identify(s, buf),
        s @ 4..=8 => log(s - 4, buf),
        9 => connect(buf),
        _ => dsm(buf),
    }
});
