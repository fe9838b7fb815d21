//! An external fio ioengine over xbdev.
//!
//! Load it with `fio --ioengine=external:/path/to/libfio_xbdev.so --xbdev_conf=stack.json
//! --filename=malloc0`; `fio --enghelp=/path/to/libfio_xbdev.so` lists its options. It works in
//! fio's default process-per-job mode and with `--thread`, needs no `LD_PRELOAD`, and gives fio
//! DMA-capable IO buffers through fio's `iomem_alloc` hook so the hot path copies nothing.
//! A panic never unwinds into fio: every entry point is `extern "C"`, which aborts the process
//! on a panic (the language guarantees it since Rust 1.81).
//!
//! Layout:
//! - `csrc/fio_xbdev.c`: the only code that touches fio's structures, compiled against the
//!   headers of the installed fio (see `build.rs` and `setup-fio.sh`); it calls into
//! - [`ffi`]: the `extern "C"` functions the shim calls, and `get_ioengine`;
//! - [`job`]: one fio job's state (open devices, completions, IO memory) and its IO path:
//!   `inline` (default; fio's thread owns a channel per device and polls it in `getevents`,
//!   sleeping in the device's wait after `xbdev_spin_us`) or `reactor` (an xbdev IO queue to a
//!   reactor core);
//! - [`instances`]: the xbdev instances of this process, shared by its jobs and reference
//!   counted, so the last job's cleanup stops the reactors before fio unloads the library;
//! - [`probe`]: device sizes for fio's `setup` hook, which fio may call in its main process
//!   before forking the jobs (where no thread may be started): a short-lived child process
//!   answers them;
//! - [`spec`]: the engine options (`xbdev_conf`, `xbdev_cores`, `xbdev_idle`, `xbdev_mode`,
//!   `xbdev_spin_us`) turned into an xbdev [`xbdev::Config`] and the job's IO path.

mod error;
pub mod ffi;
pub mod instances;
pub mod job;
mod logger;
pub mod probe;
pub mod spec;

pub use error::EngineError;
pub use job::{Job, Op, QueueOutcome};
pub use spec::JobSpec;

/// The fio version (`fio-3.33`) whose headers the C shim was compiled against.
pub const FIO_BUILT_VERSION: &str = env!("XBDEV_FIO_BUILT_VERSION");
