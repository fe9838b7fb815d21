//! xbdev: a pure-Rust, user-space storage stack. This crate is what applications embed.
//!
//! ```no_run
//! use xbdev::{Config, Xbdev};
//! let cfg = Config::from_json_str(r#"{"base_devices": [
//!     {"method": "malloc", "params": {"name": "m0", "size_mb": 64}}]}"#)?;
//! let xb = Xbdev::start(&cfg)?;
//! let h = xb.open("m0", true)?;
//! h.write(&[7u8; 4096], 0)?;
//! let mut back = [0u8; 4096];
//! h.read(&mut back, 0)?;
//! # Ok::<(), xbdev::XbdevError>(())
//! ```

mod client;
pub mod config;
mod config_stack;
mod dma;
mod error;
pub mod global;
mod instance;
mod queue;

pub use bdev;
pub use config::{BaseDevice, Config, ConfigError, ReactorSettings};
pub use error::XbdevError;
pub use instance::{Handle, Xbdev};
pub use queue::{Completion, IoQueue};
pub use reactor;
pub mod ffi;
pub mod perf;
pub mod rpc;
