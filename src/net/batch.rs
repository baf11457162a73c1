//! Batched UDP receive and send (recvmmsg/sendmmsg): one system call moves
//! up to `BATCH` datagrams. The buffers and headers are allocated once.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

pub const BATCH: usize = 64;
pub const SLOT: usize = 65536;

/// Converts a kernel socket address to std's (v4-mapped IPv6 to IPv4, so a
/// dual-stack socket reports the address the peer really has).
pub fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// Writes `addr` for a socket of family `v6_socket`: IPv4 destinations on
/// an IPv6 socket become v4-mapped. Returns the length to pass.
pub fn to_sockaddr(
    addr: SocketAddr,
    v6_socket: bool,
    ss: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    // SAFETY: zeroed storage is a valid sockaddr_storage.
    *ss = unsafe { MaybeUninit::zeroed().assume_init() };
    let v6 = match (addr, v6_socket) {
        (SocketAddr::V4(a), false) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            return std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        (SocketAddr::V4(a), true) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
        (SocketAddr::V6(a), _) => a,
    };
    // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
    let sin6 = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in6) };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_port = v6.port().to_be();
    sin6.sin6_addr.s6_addr = v6.ip().octets();
    sin6.sin6_flowinfo = v6.flowinfo();
    sin6.sin6_scope_id = v6.scope_id();
    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
}

/// Receive side: `BATCH` slots of `SLOT` bytes.
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside point into the struct's own heap buffers.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        // SAFETY: zeroed sockaddr_storage/mmsghdr are valid initial values.
        let zero_ss: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut b = RecvBatch {
            bufs: vec![0u8; BATCH * SLOT],
            addrs: vec![zero_ss; BATCH],
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
        };
        for i in 0..BATCH {
            b.iovs.push(libc::iovec {
                iov_base: b.bufs[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            });
        }
        for i in 0..BATCH {
            // SAFETY: zeroed mmsghdr is valid; we fill the pointers next.
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// Receives up to BATCH datagrams without blocking; returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_len = 0;
        }
        // SAFETY: hdrs point into our own live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The i-th received datagram and its sender.
    pub fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        let len = (self.hdrs[i].msg_len as usize).min(SLOT);
        (
            from_sockaddr(&self.addrs[i]),
            &self.bufs[i * SLOT..i * SLOT + len],
        )
    }
}

/// Send side: collects (destination, bytes) and flushes with sendmmsg.
pub struct SendBatch {
    bufs: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    /// Rebuilt on every flush, but their capacity stays: no allocation.
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    v6_socket: bool,
}

// SAFETY: the raw pointers in iovs/hdrs point into the struct's own heap
// buffers and are rebuilt before every use.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(v6_socket: bool) -> SendBatch {
        // SAFETY: zeroed sockaddr_storage is valid.
        let zero_ss: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        SendBatch {
            bufs: vec![0u8; BATCH * SLOT],
            lens: Vec::with_capacity(BATCH),
            addrs: vec![zero_ss; BATCH],
            addr_lens: vec![0; BATCH],
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
            v6_socket,
        }
    }

    pub fn is_full(&self) -> bool {
        self.lens.len() == BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Queues a copy of `data` for `to`; false if the batch is full.
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        let i = self.lens.len();
        if i == BATCH || data.len() > SLOT {
            return false;
        }
        self.bufs[i * SLOT..i * SLOT + data.len()].copy_from_slice(data);
        self.addr_lens[i] = to_sockaddr(to, self.v6_socket, &mut self.addrs[i]);
        self.lens.push(data.len());
        true
    }

    /// Sends everything queued (retrying partial sends a bounded number of
    /// times); returns how many datagrams were handed to the kernel or
    /// skipped as refused. Whatever is left is dropped, as UDP allows.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let n = self.lens.len();
        let (iovs, hdrs) = (&mut self.iovs, &mut self.hdrs);
        iovs.clear();
        hdrs.clear();
        for (i, &len) in self.lens.iter().enumerate() {
            iovs.push(libc::iovec {
                iov_base: self.bufs[i * SLOT..].as_mut_ptr().cast(),
                iov_len: len,
            });
        }
        for (i, iov) in iovs.iter_mut().enumerate() {
            // SAFETY: zeroed mmsghdr is valid; the pointers set here are live.
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = self.addr_lens[i];
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            hdrs.push(h);
        }
        let mut sent = 0;
        for _ in 0..4 {
            if sent == n {
                break;
            }
            // SAFETY: hdrs[sent..] point into live buffers.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[sent..].as_mut_ptr(),
                    (n - sent) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r >= 0 {
                sent += r as usize;
            } else if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                break;
            } else {
                // A datagram the kernel refuses (unreachable, too big) must
                // not hold back the rest of the batch: skip it.
                sent += 1;
            }
        }
        self.lens.clear();
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_roundtrip_on_loopback_v4_and_mapped() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut s = SendBatch::new(false);
        for i in 0..10u8 {
            assert!(s.push(rx.local_addr().unwrap(), &[i; 100]));
        }
        assert_eq!(s.flush(tx.as_raw_fd()), 10);
        let mut r = RecvBatch::new();
        let mut got = 0;
        for _ in 0..100 {
            got += r.recv(rx.as_raw_fd()).unwrap_or(0);
            if got == 10 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 10);
        let (from, data) = r.get(0);
        assert_eq!(from, Some(tx.local_addr().unwrap()));
        assert_eq!(data.len(), 100);
        let mut ss = unsafe { MaybeUninit::zeroed().assume_init() };
        let a: SocketAddr = "198.51.100.1:5".parse().unwrap();
        to_sockaddr(a, true, &mut ss);
        assert_eq!(
            from_sockaddr(&ss),
            Some(a),
            "v4-mapped must read back as IPv4"
        );
    }
}
