//! Readiness waiting over a few file descriptors with poll(2): the shape the
//! plain-syscall shells need (an io_uring shell replaces it wholesale).
//! Nothing is allocated: workers call this on every wake-up.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Most descriptors one call watches.
pub const MAX_FDS: usize = 16;

/// Which of the watched descriptors are readable (bit i = fds[i]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready(u16);

impl Ready {
    pub fn is(self, i: usize) -> bool {
        i < MAX_FDS && self.0 & (1 << i) != 0
    }
}

/// Waits until any of `fds` (at most `MAX_FDS`; the rest are ignored) is
/// readable or `timeout` passes. EINTR counts as a timeout so callers
/// re-check their stop flag.
pub fn readable(fds: &[RawFd], timeout: Duration) -> io::Result<Ready> {
    let n = fds.len().min(MAX_FDS);
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; MAX_FDS];
    for (p, &fd) in pfds.iter_mut().zip(&fds[..n]) {
        p.fd = fd;
    }
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: pfds holds at least n valid pollfd entries.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Ready(0));
        }
        return Err(e);
    }
    let mut bits = 0u16;
    for (i, p) in pfds[..n].iter().enumerate() {
        if p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
            bits |= 1 << i;
        }
    }
    Ok(Ready(bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn reports_the_readable_descriptor_only() {
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        let r = readable(&[a.as_raw_fd(), b.as_raw_fd()], Duration::from_secs(2)).unwrap();
        assert!(!r.is(0) && r.is(1));
        let mut buf = [0u8; 4];
        b.recv(&mut buf).unwrap();
        let r = readable(&[a.as_raw_fd(), b.as_raw_fd()], Duration::from_millis(10)).unwrap();
        assert_eq!(r, Ready(0));
    }
}
