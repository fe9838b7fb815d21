//! Fuzzes the submission queue entry parser: any 64 bytes parsed as an
//! admin, I/O or Fabrics command give a command or a typed error, never a
//! panic. A parsed command re-encoded with `to_sqe` parses to the same
//! command (on the same queue, and Fabrics commands on either queue), keeps
//! its CID, and the helpers a controller calls on it (data pointer, data
//! lengths, error status) do not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_spec::command::{AsyncEvent, NumQueues};
use nvme_spec::{Command, QueueType, Sqe};
use zerocopy::FromBytes;

fuzz_target!(|input: &[u8]| {
    let mut bytes = [0u8; 64];
    let n = input.len().min(64);
    bytes[..n].copy_from_slice(&input[..n]);
    let sqe = Sqe::read_from_bytes(&bytes).expect("64 bytes");
    let _ = sqe.psdt();
    let _ = sqe.data_pointer();
    let _ = sqe.cdw10_15();
    for q in [QueueType::Admin, QueueType::Io] {
        match Command::parse(&sqe, q) {
            Ok(cmd) => {
                let again = cmd.to_sqe(sqe.cid());
                assert_eq!(again.cid(), sqe.cid());
                assert_eq!(again.opcode(), sqe.opcode());
                assert_eq!(Command::parse(&again, q), Ok(cmd), "re-encoded command differs");
                if let Command::Fabrics(_) = cmd {
                    let other = if q == QueueType::Admin { QueueType::Io } else { QueueType::Admin };
                    assert_eq!(Command::parse(&again, other), Ok(cmd), "fabrics parse depends on queue");
                } else {
                    assert_eq!(cmd.queue_type(), q);
                }
                match cmd {
                    Command::Admin(a) => {
                        let _ = a.data_len_to_host();
                    }
                    Command::Io(i) => {
                        let _ = (i.nsid(), i.lba_range());
                        for bs in [0, 512, 4096, u32::MAX] {
                            let _ = i.data_len(bs);
                        }
                    }
                    Command::Fabrics(f) => {
                        let _ = f.fctype();
                    }
                }
            }
            Err(e) => {
                let _ = e.status();
                let _ = e.to_string();
            }
        }
    }
    // The completion dword helpers are bijections on their fields.
    let dw = sqe.cdw11.get();
    assert_eq!(NumQueues::from_dword(NumQueues::from_dword(dw).to_dword()), NumQueues::from_dword(dw));
    assert_eq!(AsyncEvent::from_dword(AsyncEvent::from_dword(dw).to_dword()), AsyncEvent::from_dword(dw));
});
