//! Multipath bdev: one namespace reached through several path bdevs (NVMe/TCP connections,
//! NVMe PCIe controllers, RBD clients, anything implementing [`bdev::Bdev`]).
//!
//! - **Aggregation**: paths are grouped by the namespace identity they report (NGUID, EUI-64
//!   or UUID). A [`MultipathModule`] installed as an examiner assembles devices and adds paths
//!   that appear later; [`MultipathModule::create`] builds one from configuration. Members
//!   are claimed and hidden from [`bdev::Registry::list`]; [`MultipathBdev::paths`] lists them
//!   with their state and statistics. A path of another size, block size or namespace is
//!   refused with a [`MultipathError::Mismatch`] naming the difference.
//! - **Policies** ([`Policy`]): round_robin, random, weighted, hash, service_time,
//!   average_rate, queue_length and historical_service_time, all switchable at run time.
//!   IO goes to the usable paths of the best priority tier: ANA optimized (or unreported)
//!   before non-optimized, then the configured group (0 active, higher passive).
//! - **Failover**: an IO failing with a path error is re-driven on another usable path,
//!   invisible to the caller; media and invalid-request errors are returned as they are. With
//!   no usable path, IO waits up to the no-path timeout, then fails with `PathError`.
//! - **Failback**: failed paths are probed with a one-block read every probe interval and
//!   rejoin when one succeeds; [`PathEvent`]s report failures, restores and ANA changes. A
//!   path whose ANA state is inaccessible is reported as such (not failed), is not probed, and
//!   is probed at once when its ANA state becomes accessible again.
//!
//! Time-based work (probes, ANA refresh, statistics reset, stall detection, no-path
//! timeouts) runs from the channels' `poll`, so a device only makes progress while some
//! reactor polls one of its channels.

mod channel;
mod config;
mod device;
mod error;
mod event;
mod group;
mod identity;
mod module;
mod path;
mod select;
mod window;

pub use config::{MultipathOptions, MultipathParams, PathParams, Policy, MAX_PATHS, MAX_QUEUE_DEPTH, MAX_WINDOW_IOS};
pub use device::{params_to_json, MultipathBdev};
pub use error::MultipathError;
pub use event::{PathEvent, PathEventCallback, PathEventKind};
pub use module::{AutoAssemble, MultipathModule, PRODUCT};
pub use path::{PathInfo, PathState, PathStats};
