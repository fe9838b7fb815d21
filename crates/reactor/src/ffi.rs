//! The system calls a parked reactor waits in: an eventfd that
//! [`crate::ReactorHandle::notify`] signals, and `ppoll(2)` over it and
//! the descriptors pollers asked to be woken by.
//!
//! The only module of the crate with `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking eventfd counter.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created by eventfd and is owned by nobody
        // else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the descriptor readable (wakes a `ppoll` on it).
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one`, which lives for the call, to a
        // descriptor this value owns. A full counter (EAGAIN) still leaves
        // it readable, so the result needs no handling.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter.
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into `v`, which lives for the call,
        // from a descriptor this value owns; non-blocking, so an unsignalled
        // counter returns EAGAIN, which needs no handling.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A descriptor to wait on for readability.
pub(crate) fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

/// Waits until one of `fds` is ready or `timeout` passes. Returns how many
/// are ready (0 on timeout or a signal).
pub(crate) fn wait(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd
    // structures and `ts` a valid timespec, both living for the call; no
    // signal mask is passed.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn eventfd_wakes_a_wait_and_drains() {
        let e = EventFd::new().unwrap();
        let mut fds = [readable(e.as_raw_fd())];
        let t0 = Instant::now();
        assert_eq!(wait(&mut fds, Duration::from_millis(20)).unwrap(), 0);
        assert!(t0.elapsed() >= Duration::from_millis(15));
        e.signal();
        e.signal();
        assert_eq!(wait(&mut fds, Duration::from_secs(5)).unwrap(), 1);
        e.drain();
        assert_eq!(wait(&mut fds, Duration::ZERO).unwrap(), 0);
    }
}
