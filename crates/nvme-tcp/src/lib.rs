//! NVMe/TCP transport (NVMe over Fabrics TCP transport binding 1.0).
//!
//! Sans-IO protocol core:
//! * [`pdu`]: PDU layouts, typed parsing with validation, encoding, digests.
//! * [`recv`]: a streaming receiver that reassembles PDUs from arbitrary
//!   read splits and places data directly into the caller's IO buffers.
//! * [`tx`]: a transmit queue that sends PDU headers and data straight from
//!   IO buffers with vectored writes.
//! * [`host`] / [`ctrl`]: queue-pair state machines for the initiator and
//!   the target side.
//!
//! On top, over non-blocking `std::net` sockets (polled, no async runtime):
//! * [`initiator`]: connections, controller bring-up, Keep Alive,
//!   Discovery, I/O queue connects.
//! * [`nvmf`]: the `nvmf` bdev backend: one bdev per namespace
//!   (`<name>n<nsid>`), one I/O queue per reactor channel driven from the
//!   channel's `poll()`, IO timeouts with Abort, reconnects with
//!   exponential backoff, ANA state.
//! * [`target`]: exports bdevs as namespaces of NVM subsystems, with
//!   discovery, allowed hosts and ANA per listener, served by poll groups
//!   on threads of their own or as pollers on reactors.
//!
//! Fatal protocol errors end a connection with a termination request
//! naming the error; data digest errors fail only the command concerned
//! (transient transport error).
//!
//! All code is safe Rust except the private `dma` module, which turns IO
//! buffer segments (raw `IoVec`s under the bdev buffer contract) into
//! slices so socket reads and writes touch them directly, and the private
//! `ffi` module (socket options `std::net` lacks).

#![deny(unsafe_code)]

pub mod ctrl;
#[allow(unsafe_code)]
mod dma;
#[allow(unsafe_code)]
mod ffi;
pub mod host;
pub mod initiator;
pub mod nvmf;
pub mod pdu;
pub mod recv;
pub mod target;
pub mod tx;

#[cfg(test)]
mod pair_tests;
#[cfg(test)]
mod queue_tests;
