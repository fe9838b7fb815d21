//! NVM Express wire definitions shared by every NVMe component of xbdev.
//!
//! This crate is the single source of truth for the byte layouts and field
//! encodings of the NVMe Base specification (2.0), the NVM command set and
//! NVMe over Fabrics, used by the PCIe driver, the NVMe/TCP initiator and
//! target, and any emulated controller:
//!
//! * [`queue`]: the 64-byte submission queue entry ([`Sqe`]) and the 16-byte
//!   completion queue entry ([`Cqe`]), data pointers (PRP / SGL).
//! * [`command`]: typed admin, NVM IO and Fabrics commands with builders
//!   ([`Command::to_sqe`]) and a parser ([`Command::parse`]).
//! * [`status`]: completion status decoding and classification
//!   (path / media / retryable).
//! * [`fabrics`]: Connect data, Connect response, Property Get/Set.
//! * [`identify`]: Identify Controller / Namespace, namespace descriptors,
//!   active namespace list.
//! * [`log`]: ANA, SMART / health, error, firmware slot and Discovery log pages.
//! * [`regs`]: controller registers (also the Fabrics property offsets).
//!
//! Every multi-byte field is explicitly little-endian; every wire struct is
//! `#[repr(C)]` with a compile-time size assertion, and every parser of
//! untrusted bytes returns a typed error instead of panicking.

#![forbid(unsafe_code)]

pub mod command;
mod command_admin;
mod command_nvm;
pub mod fabrics;
pub mod identify;
pub mod log;
pub mod queue;
pub mod regs;
pub mod status;
mod util;

pub use command::{AdminCommand, Command, FabricsCommand, IoCommand, ParseError, QueueType};
pub use queue::{Cqe, DataPointer, SglDescriptor, Sqe};
pub use status::{Status, StatusCode, StatusCodeType};
