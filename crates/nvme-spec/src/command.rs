//! Typed commands: builders ([`Command::to_sqe`]) and the parser
//! ([`Command::parse`]) used by controllers, targets and emulators.

use crate::queue::Sqe;
use thiserror::Error;

pub use crate::command_admin::{AdminCommand, AsyncEvent, Cns, FeatureId, FeatureSelect, LogPageId, NumQueues};
pub use crate::command_nvm::{DsmRange, IoCommand};
pub use crate::fabrics::FabricsCommand;

/// Opcode values.
pub mod opcode {
    /// Admin: Delete I/O Submission Queue.
    pub const DELETE_IO_SQ: u8 = 0x00;
    /// Admin: Create I/O Submission Queue.
    pub const CREATE_IO_SQ: u8 = 0x01;
    /// Admin: Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Admin: Delete I/O Completion Queue.
    pub const DELETE_IO_CQ: u8 = 0x04;
    /// Admin: Create I/O Completion Queue.
    pub const CREATE_IO_CQ: u8 = 0x05;
    /// Admin: Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Admin: Abort.
    pub const ABORT: u8 = 0x08;
    /// Admin: Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Admin: Get Features.
    pub const GET_FEATURES: u8 = 0x0a;
    /// Admin: Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    /// Admin: Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Fabrics command (admin or I/O queue).
    pub const FABRICS: u8 = 0x7f;
    /// NVM: Flush.
    pub const FLUSH: u8 = 0x00;
    /// NVM: Write.
    pub const WRITE: u8 = 0x01;
    /// NVM: Read.
    pub const READ: u8 = 0x02;
    /// NVM: Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// NVM: Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Which kind of queue a command was submitted on; admin and I/O opcodes
/// overlap, so parsing needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueType {
    /// The admin queue (queue 0).
    Admin,
    /// An I/O queue.
    Io,
}

/// Why a submission queue entry could not be parsed. A controller maps
/// these to a completion status with [`ParseError::status`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// The opcode is not a known command on this queue type.
    #[error("invalid opcode {opcode:#04x} on {queue:?} queue")]
    InvalidOpcode {
        /// The opcode.
        opcode: u8,
        /// The queue type it arrived on.
        queue: QueueType,
    },
    /// Identify with an unsupported CNS value.
    #[error("unsupported identify cns {0:#04x}")]
    UnsupportedCns(u8),
    /// Fabrics command with an unknown FCTYPE.
    #[error("unknown fabrics command type {0:#04x}")]
    UnknownFabricsType(u8),
    /// A field holds a value the specification forbids.
    #[error("invalid {field}: {value:#x}")]
    InvalidField {
        /// Name of the field.
        field: &'static str,
        /// Offending value.
        value: u64,
    },
}

impl ParseError {
    /// The completion status a controller returns for this error.
    pub fn status(&self) -> crate::status::Status {
        use crate::status::{GenericStatus, Status, StatusCode};
        let g = match self {
            Self::InvalidOpcode { .. } | Self::UnknownFabricsType(_) => GenericStatus::InvalidOpcode,
            Self::UnsupportedCns(_) | Self::InvalidField { .. } => GenericStatus::InvalidField,
        };
        Status::new(StatusCode::Generic(g), true)
    }
}

/// A typed command of any kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// An admin command.
    Admin(AdminCommand),
    /// An NVM I/O command.
    Io(IoCommand),
    /// A Fabrics command (opcode 7Fh).
    Fabrics(FabricsCommand),
}

impl Command {
    /// Parses an entry submitted on a queue of type `queue`. The data
    /// pointer, PSDT and CID are not interpreted; read them from the `Sqe`.
    #[inline]
    pub fn parse(sqe: &Sqe, queue: QueueType) -> Result<Self, ParseError> {
        if sqe.opcode() == opcode::FABRICS {
            return FabricsCommand::parse(sqe).map(Self::Fabrics);
        }
        match queue {
            QueueType::Admin => AdminCommand::parse(sqe).map(Self::Admin),
            QueueType::Io => IoCommand::parse(sqe).map(Self::Io),
        }
    }

    /// Builds a submission queue entry with command identifier `cid` and a
    /// zero data pointer (set it with [`Sqe::set_data_pointer`]).
    #[inline]
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        match self {
            Self::Admin(a) => a.to_sqe(cid),
            Self::Io(i) => i.to_sqe(cid),
            Self::Fabrics(f) => f.to_sqe(cid),
        }
    }

    /// The queue type this command belongs on (Fabrics Connect is valid on
    /// both; this returns the one its QID names).
    pub fn queue_type(&self) -> QueueType {
        match self {
            Self::Admin(_) => QueueType::Admin,
            Self::Io(_) => QueueType::Io,
            Self::Fabrics(FabricsCommand::Connect { qid, .. }) if *qid != 0 => QueueType::Io,
            Self::Fabrics(_) => QueueType::Admin,
        }
    }

    /// Whether the command transfers data from host to controller, by the
    /// opcode's data-transfer bits (bit 0: host to controller).
    pub fn opcode_transfers_to_controller(opcode: u8) -> bool {
        opcode & 1 != 0
    }

    /// Whether the command transfers data from controller to host (bit 1).
    pub fn opcode_transfers_to_host(opcode: u8) -> bool {
        opcode & 2 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabrics::PropertySize;
    use proptest::prelude::*;
    use zerocopy::FromBytes;

    fn any_admin() -> impl Strategy<Value = AdminCommand> {
        prop_oneof![
            any::<u16>().prop_map(|qid| AdminCommand::DeleteIoSq { qid }),
            any::<u16>().prop_map(|qid| AdminCommand::DeleteIoCq { qid }),
            (any::<u16>(), any::<u16>(), any::<u16>(), 0u8..4, any::<bool>(), any::<u16>()).prop_map(
                |(qid, qsize, cqid, prio, contiguous, nvmsetid)| {
                    AdminCommand::CreateIoSq { qid, qsize, cqid, prio, contiguous, nvmsetid }
                }
            ),
            (any::<u16>(), any::<u16>(), any::<u16>(), any::<bool>(), any::<bool>()).prop_map(
                |(qid, qsize, iv, ien, contiguous)| { AdminCommand::CreateIoCq { qid, qsize, iv, ien, contiguous } }
            ),
            (any::<u32>(), any::<u8>(), 0u8..128, any::<bool>(), any::<u32>(), any::<u64>(), any::<u16>(), any::<u8>())
                .prop_map(|(nsid, lid, lsp, rae, numd, offset, lsi, csi)| {
                    AdminCommand::GetLogPage { nsid, lid: LogPageId(lid), lsp, rae, numd, offset, lsi, csi }
                }),
            (prop::sample::select(Cns::ALL.to_vec()), any::<u32>(), any::<u16>(), any::<u16>(), any::<u8>())
                .prop_map(|(cns, nsid, cntid, cnssid, csi)| AdminCommand::Identify { cns, nsid, cntid, cnssid, csi }),
            (any::<u16>(), any::<u16>()).prop_map(|(sqid, cid)| AdminCommand::Abort { sqid, cid }),
            (any::<u32>(), any::<u8>(), any::<bool>(), any::<u32>(), any::<[u32; 4]>()).prop_map(
                |(nsid, fid, save, cdw11, cdw12_15)| {
                    AdminCommand::SetFeatures { nsid, fid: FeatureId(fid), save, cdw11, cdw12_15 }
                }
            ),
            (any::<u32>(), any::<u8>(), 0u8..4, any::<u32>()).prop_map(|(nsid, fid, sel, cdw11)| {
                AdminCommand::GetFeatures {
                    nsid,
                    fid: FeatureId(fid),
                    sel: FeatureSelect::from_raw(sel).unwrap_or(FeatureSelect::Current),
                    cdw11,
                }
            }),
            Just(AdminCommand::AsyncEventRequest),
            Just(AdminCommand::KeepAlive),
        ]
    }

    fn any_io() -> impl Strategy<Value = IoCommand> {
        prop_oneof![
            (any::<u32>(), any::<u64>(), any::<u16>(), any::<bool>(), any::<bool>())
                .prop_map(|(nsid, slba, nlb, fua, lr)| IoCommand::Read { nsid, slba, nlb, fua, lr }),
            (any::<u32>(), any::<u64>(), any::<u16>(), any::<bool>(), any::<bool>())
                .prop_map(|(nsid, slba, nlb, fua, lr)| IoCommand::Write { nsid, slba, nlb, fua, lr }),
            any::<u32>().prop_map(|nsid| IoCommand::Flush { nsid }),
            (any::<u32>(), any::<u8>(), any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(nsid, nr, ad, idw, idr)| IoCommand::DatasetManagement { nsid, nr, ad, idw, idr }),
            (any::<u32>(), any::<u64>(), any::<u16>(), any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(nsid, slba, nlb, deac, fua, lr)| IoCommand::WriteZeroes { nsid, slba, nlb, deac, fua, lr }),
        ]
    }

    fn any_fabrics() -> impl Strategy<Value = FabricsCommand> {
        prop_oneof![
            (any::<u16>(), any::<u16>(), any::<u16>(), any::<u8>(), any::<u32>()).prop_map(
                |(recfmt, qid, sqsize, cattr, kato)| { FabricsCommand::Connect { recfmt, qid, sqsize, cattr, kato } }
            ),
            (any::<bool>(), any::<u32>()).prop_map(|(wide, offset)| FabricsCommand::PropertyGet {
                size: if wide { PropertySize::Eight } else { PropertySize::Four },
                offset
            }),
            (any::<bool>(), any::<u32>(), any::<u64>()).prop_map(|(wide, offset, value)| {
                FabricsCommand::PropertySet {
                    size: if wide { PropertySize::Eight } else { PropertySize::Four },
                    offset,
                    value,
                }
            }),
            (0u8..4).prop_map(|recfmt| FabricsCommand::Disconnect { recfmt: recfmt.into() }),
        ]
    }

    proptest! {
        #[test]
        fn admin_round_trip(cmd in any_admin(), cid in any::<u16>()) {
            let sqe = Command::Admin(cmd).to_sqe(cid);
            prop_assert_eq!(sqe.cid(), cid);
            prop_assert_eq!(Command::parse(&sqe, QueueType::Admin), Ok(Command::Admin(cmd)));
        }

        #[test]
        fn io_round_trip(cmd in any_io(), cid in any::<u16>()) {
            let sqe = Command::Io(cmd).to_sqe(cid);
            prop_assert_eq!(sqe.cid(), cid);
            prop_assert_eq!(Command::parse(&sqe, QueueType::Io), Ok(Command::Io(cmd)));
        }

        #[test]
        fn fabrics_round_trip(cmd in any_fabrics(), cid in any::<u16>(), io in any::<bool>()) {
            let sqe = Command::Fabrics(cmd).to_sqe(cid);
            let q = if io { QueueType::Io } else { QueueType::Admin };
            prop_assert_eq!(Command::parse(&sqe, q), Ok(Command::Fabrics(cmd)));
        }

        #[test]
        fn random_entries_never_panic(bytes in any::<[u8; 64]>()) {
            let sqe = Sqe::read_from_bytes(&bytes).expect("64 bytes");
            for q in [QueueType::Admin, QueueType::Io] {
                if let Ok(cmd) = Command::parse(&sqe, q) {
                    // Re-encoding a parsed command parses to the same command.
                    let again = cmd.to_sqe(sqe.cid());
                    prop_assert_eq!(Command::parse(&again, q), Ok(cmd));
                }
                let _ = sqe.data_pointer();
            }
        }
    }

    #[test]
    fn invalid_opcodes_rejected() {
        let sqe = Sqe::new(0x03, 1);
        let e = Command::parse(&sqe, QueueType::Admin).unwrap_err();
        assert_eq!(e, ParseError::InvalidOpcode { opcode: 3, queue: QueueType::Admin });
        assert_eq!(e.status().code, crate::StatusCode::Generic(crate::status::GenericStatus::InvalidOpcode));
        assert!(Command::parse(&Sqe::new(0x06, 1), QueueType::Io).is_err());
        // Opcode 0x01 is Create I/O SQ on admin, Write on I/O.
        let sqe = Sqe::new(0x01, 1);
        assert!(matches!(Command::parse(&sqe, QueueType::Admin), Ok(Command::Admin(AdminCommand::CreateIoSq { .. }))));
        assert!(matches!(Command::parse(&sqe, QueueType::Io), Ok(Command::Io(IoCommand::Write { .. }))));
    }

    #[test]
    fn data_direction_bits() {
        assert!(Command::opcode_transfers_to_controller(opcode::WRITE));
        assert!(Command::opcode_transfers_to_host(opcode::READ));
        assert!(Command::opcode_transfers_to_host(opcode::IDENTIFY));
        assert!(!Command::opcode_transfers_to_host(opcode::FLUSH));
    }

    #[test]
    fn queue_type_of_commands() {
        let c = Command::Fabrics(FabricsCommand::Connect { recfmt: 0, qid: 3, sqsize: 127, cattr: 0, kato: 0 });
        assert_eq!(c.queue_type(), QueueType::Io);
        assert_eq!(Command::Admin(AdminCommand::KeepAlive).queue_type(), QueueType::Admin);
    }
}
