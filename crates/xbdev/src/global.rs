//! The seed's process-wide API (`xbdev_init`, `xbdev_open(name) -> fd`, ...), on top of
//! [`crate::Xbdev`] and [`crate::Handle`]. The C ABI calls these.
//!
//! The descriptor table is behind a mutex taken once per call to find the handle; code that
//! wants no lock per IO keeps a [`crate::Handle`] instead.

use crate::config::Config;
use crate::error::XbdevError;
use crate::instance::{Handle, Xbdev};
use std::sync::{Arc, Mutex, MutexGuard};

struct State {
    xb: Option<Arc<Xbdev>>,
    fds: Vec<Option<Handle>>,
}

static STATE: Mutex<State> = Mutex::new(State { xb: None, fds: Vec::new() });

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start xbdev with `cfg` (seed `xbdev_init` + `xbdev_parse_config`).
pub fn init(cfg: &Config) -> Result<(), XbdevError> {
    let mut s = state();
    if s.xb.is_some() {
        return Err(XbdevError::AlreadyInitialized);
    }
    s.xb = Some(Arc::new(Xbdev::start(cfg)?));
    s.fds.clear();
    Ok(())
}

/// Stop xbdev: closes every descriptor and releases every device.
pub fn fini() -> Result<(), XbdevError> {
    let (xb, fds) = {
        let mut s = state();
        let xb = s.xb.take().ok_or(XbdevError::NotInitialized)?;
        (xb, std::mem::take(&mut s.fds))
    };
    for h in fds.into_iter().flatten() {
        let _ = h.close();
    }
    xb.stop();
    Ok(())
}

/// The running instance.
pub fn instance() -> Result<Arc<Xbdev>, XbdevError> {
    state().xb.clone().ok_or(XbdevError::NotInitialized)
}

/// Open a device read-write; returns a descriptor.
pub fn open(name: &str) -> Result<i32, XbdevError> {
    let xb = instance()?;
    let h = xb.open(name, true)?;
    let mut s = state();
    let fd = match s.fds.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            s.fds.push(None);
            s.fds.len() - 1
        }
    };
    s.fds[fd] = Some(h);
    Ok(fd as i32)
}

/// The handle behind a descriptor.
pub fn handle(fd: i32) -> Result<Handle, XbdevError> {
    let s = state();
    if s.xb.is_none() {
        return Err(XbdevError::NotInitialized);
    }
    let i = usize::try_from(fd).map_err(|_| XbdevError::BadHandle(fd))?;
    match s.fds.get(i) {
        Some(Some(h)) => Ok(h.clone()),
        Some(None) => Err(XbdevError::Closed(fd)),
        None => Err(XbdevError::BadHandle(fd)),
    }
}

/// Close a descriptor; closing twice fails with [`XbdevError::Closed`].
pub fn close(fd: i32) -> Result<(), XbdevError> {
    let h = handle(fd)?;
    h.close()?;
    let mut s = state();
    if let Some(e) = s.fds.get_mut(fd as usize) {
        *e = None;
    }
    Ok(())
}

/// Read into `buf` at byte `offset`.
pub fn read(fd: i32, buf: &mut [u8], offset: u64) -> Result<usize, XbdevError> {
    handle(fd)?.read(buf, offset)
}

/// Write `buf` at byte `offset`.
pub fn write(fd: i32, buf: &[u8], offset: u64) -> Result<usize, XbdevError> {
    handle(fd)?.write(buf, offset)
}

/// Flush a descriptor's device.
pub fn flush(fd: i32) -> Result<(), XbdevError> {
    handle(fd)?.flush()
}

/// Unmap a byte range.
pub fn unmap(fd: i32, offset: u64, len: u64) -> Result<(), XbdevError> {
    handle(fd)?.unmap(offset, len)
}

/// Write the running configuration to `path` (seed `xbdev_save_config`).
pub fn save_config(path: &str) -> Result<(), XbdevError> {
    let text = instance()?.save_config();
    std::fs::write(path, text).map_err(|source| XbdevError::File { context: format!("cannot write '{path}'"), source })
}
