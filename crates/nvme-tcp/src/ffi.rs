//! Socket options `std::net` does not offer, set through `setsockopt(2)`.
//!
//! Only the congestion control algorithm so far: on loopback, the pacing
//! of BBR (a common system default) holds large transfers back.
//!
//! This module and `dma` are the only ones of the crate with `unsafe`.

use std::io;
use std::os::fd::AsRawFd;

/// Sets the congestion control algorithm of the socket (`TCP_CONGESTION`).
pub(crate) fn set_congestion(s: &impl AsRawFd, name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid for
    // the whole call; the descriptor belongs to `s`; setsockopt copies the
    // bytes and does not keep the pointer.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The congestion control algorithm of the socket.
#[cfg(test)]
pub(crate) fn congestion(s: &impl AsRawFd) -> io::Result<String> {
    let mut buf = [0u8; 32];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the pointer and length describe `buf`, writable for the whole
    // call, and `len` is a valid in/out length; the descriptor belongs to
    // `s`; getsockopt writes at most `len` bytes and keeps no pointer.
    let r = unsafe {
        libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_CONGESTION, buf.as_mut_ptr().cast(), &mut len)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let b = buf.get(..len as usize).unwrap_or(&[]);
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    Ok(String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn congestion_control_is_set_and_inherited_by_accepted_sockets() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        set_congestion(&l, "reno").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        assert_eq!(congestion(&a).unwrap(), "reno");
        set_congestion(&s, "reno").unwrap();
        assert_eq!(congestion(&s).unwrap(), "reno");
        assert!(set_congestion(&s, "no-such-algorithm").is_err());
    }
}
