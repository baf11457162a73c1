//! Batched receive: one `recvmmsg` fills up to `capacity` preallocated
//! slots, each with one datagram or (with UDP GRO on) one train of
//! datagrams from one sender, described by a `RecvMeta`.

use super::cmsg::{self, Ctrl, CTRL_LEN};
use super::sockaddr::{self, Name, NAME_LEN};
use super::{empty_msghdr, Bufs, RecvMeta, RX_SLOT};
use std::io;
use std::os::fd::RawFd;

impl RecvMeta {
    /// The meta of a received message from the raw `name` and `control`
    /// bytes the kernel wrote (as long as it said) and the payload length;
    /// None if the sender's address is not IPv4 or IPv6.
    pub fn decode(name: &[u8], control: &[u8], len: usize) -> Option<RecvMeta> {
        Some(RecvMeta {
            from: sockaddr::decode(name)?,
            len,
            stride: cmsg::gro_stride(control).unwrap_or(len),
        })
    }
}

/// The header a multishot receive (io_uring RECVMSG) is armed with: only
/// its name and control lengths count, and the kernel writes that much
/// name and control data in front of every payload (`RecvMeta::decode`
/// reads them).
pub fn multishot_template() -> libc::msghdr {
    let mut m = empty_msghdr();
    m.msg_namelen = NAME_LEN as _;
    m.msg_controllen = CTRL_LEN as _;
    m
}

/// `capacity` receive slots of `RX_SLOT` bytes with their names and
/// control buffers, allocated once.
pub struct UdpRx {
    bufs: Vec<u8>,
    names: Vec<Name>,
    ctrl: Vec<Ctrl>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl UdpRx {
    pub fn new(capacity: usize) -> UdpRx {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let hdr = libc::mmsghdr {
            msg_hdr: empty_msghdr(),
            msg_len: 0,
        };
        UdpRx {
            bufs: vec![0u8; capacity * RX_SLOT],
            names: vec![Name::default(); capacity],
            ctrl: vec![Ctrl::default(); capacity],
            iovs: vec![iov; capacity],
            hdrs: vec![hdr; capacity],
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to `capacity()` messages without blocking; returns how
    /// many. `WouldBlock` when there is nothing to read.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let slots = self.bufs.chunks_exact_mut(RX_SLOT);
        let parts = self
            .names
            .iter_mut()
            .zip(&mut self.ctrl)
            .zip(&mut self.iovs);
        for ((h, slot), ((name, ctrl), iov)) in self.hdrs.iter_mut().zip(slots).zip(parts) {
            *iov = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: RX_SLOT,
            };
            let m = &mut h.msg_hdr;
            m.msg_name = name.0.as_mut_ptr().cast();
            m.msg_namelen = NAME_LEN as _;
            m.msg_iov = iov;
            m.msg_iovlen = 1;
            m.msg_control = ctrl.0.as_mut_ptr().cast();
            m.msg_controllen = CTRL_LEN as _;
            m.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header was just pointed at this struct's own
        // buffers, of the lengths it states, and nothing else touches them
        // during the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Message `i` of the last `recv`: its meta (None from a sender that is
    /// not IPv4 or IPv6) and its bytes, to be opened in place.
    pub fn get(&mut self, i: usize) -> Option<(RecvMeta, &mut [u8])> {
        let meta = self.meta(i)?;
        Some((meta, &mut self.bufs[i * RX_SLOT..i * RX_SLOT + meta.len]))
    }

    /// The meta of message `i` of the last `recv`; its bytes are
    /// `buf(i)[..len]`.
    pub fn meta(&self, i: usize) -> Option<RecvMeta> {
        let m = &self.hdrs[i].msg_hdr;
        let name = &self.names[i].0[..(m.msg_namelen as usize).min(NAME_LEN)];
        // msg_controllen is a size_t on glibc (`cmsg` checks that layout).
        let control = &self.ctrl[i].0[..m.msg_controllen.min(CTRL_LEN)];
        let len = (self.hdrs[i].msg_len as usize).min(RX_SLOT);
        RecvMeta::decode(name, control, len)
    }
}

/// The receive slots, so that datagrams can be sent on from where they
/// were received (the relay forwards without a copy).
impl Bufs for UdpRx {
    fn buf(&self, i: usize) -> &[u8] {
        &self.bufs[i * RX_SLOT..(i + 1) * RX_SLOT]
    }
}
