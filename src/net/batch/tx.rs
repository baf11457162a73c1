//! Batched send: datagrams queue up as `Transmit`s pointing into the
//! caller's buffers (nothing is copied), `plan_runs` groups them, and each
//! run leaves as one message (a GSO train with a `UDP_SEGMENT` cmsg when it
//! has more than one datagram), all in one `sendmmsg`, or one io_uring
//! SENDMSG each (`prepare`, `message`, `finish`).

use super::cmsg::{self, Ctrl};
use super::plan::{plan_runs, Run, RunLimits};
use super::sockaddr::{self, Name};
use super::{empty_msghdr, Bufs, Transmit, GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
use std::io;
use std::os::fd::RawFd;
use tracing::{debug, info, warn};

/// The send queue of one socket, with its GSO state; allocated once.
pub struct UdpTx<M> {
    v6_socket: bool,
    gso: bool,
    /// Largest GSO segment per family (IPv4, IPv6) the kernel has not
    /// refused.
    max_seg: [usize; 2],
    refused_logged: bool,
    queue: Vec<Transmit<M>>,
    runs: Vec<Run>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    names: Vec<Name>,
    ctrl: Vec<Ctrl>,
}

impl<M: Copy> UdpTx<M> {
    /// A queue of `capacity` datagrams for a socket of family `v6_socket`
    /// (IPv4 destinations are then v4-mapped); `gso`: the socket may send
    /// GSO trains (`gso_supported`).
    pub fn new(v6_socket: bool, gso: bool, capacity: usize) -> UdpTx<M> {
        UdpTx {
            v6_socket,
            gso,
            max_seg: [usize::MAX; 2],
            refused_logged: false,
            queue: Vec::with_capacity(capacity),
            runs: Vec::with_capacity(capacity),
            iovs: Vec::with_capacity(capacity),
            hdrs: Vec::with_capacity(capacity),
            names: vec![Name::default(); capacity],
            ctrl: vec![Ctrl::default(); capacity],
        }
    }

    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Largest GSO segment to IPv4 [0] and IPv6 [1] destinations.
    pub fn max_seg(&self) -> [usize; 2] {
        self.max_seg
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a datagram; false if the queue is full.
    pub fn push(&mut self, t: Transmit<M>) -> bool {
        if self.queue.len() == self.queue.capacity() {
            return false;
        }
        self.queue.push(t);
        true
    }

    fn limits(&self) -> RunLimits {
        RunLimits {
            max_segs: if self.gso { GSO_MAX_SEGMENTS } else { 1 },
            max_bytes: GSO_MAX_BYTES,
            max_seg: self.max_seg,
        }
    }

    /// Plans the queue into runs and builds one message per run
    /// (`message`); returns how many. `bufs` holds the buffers the
    /// transmits' `buf` indexes, which must stay put and unchanged until
    /// `clear`.
    pub fn prepare<B: Bufs + ?Sized>(&mut self, bufs: &B) -> usize {
        plan_runs(&self.queue, self.limits(), &mut self.runs);
        self.iovs.clear();
        for t in &self.queue {
            let bytes = &bufs.buf(t.buf)[t.start..t.start + t.len];
            self.iovs.push(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
        }
        self.hdrs.clear();
        for (k, run) in self.runs.iter().enumerate() {
            let mut m = empty_msghdr();
            m.msg_namelen =
                sockaddr::encode(self.queue[run.first].to, self.v6_socket, &mut self.names[k]);
            m.msg_name = self.names[k].0.as_mut_ptr().cast();
            m.msg_iov = self.iovs[run.first..].as_mut_ptr();
            m.msg_iovlen = run.count as _;
            if run.count > 1 {
                // Runs are at most 64 KiB, so the segment fits a u16.
                let len = cmsg::put_segment(&mut self.ctrl[k], run.seg as u16);
                m.msg_control = self.ctrl[k].0.as_mut_ptr().cast();
                m.msg_controllen = len as _;
            }
            self.hdrs.push(libc::mmsghdr {
                msg_hdr: m,
                msg_len: 0,
            });
        }
        self.hdrs.len()
    }

    /// Message `k` of the prepared batch, valid until `clear`.
    pub fn message(&self, k: usize) -> *const libc::msghdr {
        &self.hdrs[k].msg_hdr
    }

    /// Records the outcome of message `k`: `Ok` calls `sent` with the meta
    /// of each of its datagrams; a GSO train the kernel refused goes again
    /// one datagram each (and GSO is adjusted, see `refused`); any other
    /// error drops it. Returns how many datagrams were dropped.
    pub fn finish(
        &mut self,
        fd: RawFd,
        k: usize,
        result: Result<(), i32>,
        sent: &mut impl FnMut(M),
    ) -> usize {
        let run = self.runs[k];
        match result {
            Ok(()) => {
                for t in &self.queue[run.first..run.first + run.count] {
                    sent(t.meta);
                }
                0
            }
            Err(
                e @ (libc::EIO
                | libc::EINVAL
                | libc::EMSGSIZE
                | libc::ENOPROTOOPT
                | libc::EOPNOTSUPP),
            ) if run.count > 1 => {
                self.refused(e, run.seg, self.queue[run.first].to.is_ipv6());
                self.send_each(fd, k, sent)
            }
            Err(e) => {
                debug!(error = %io::Error::from_raw_os_error(e), to = %self.queue[run.first].to, "send failed");
                run.count
            }
        }
    }

    /// Datagrams in message `k` and later (what is dropped when they
    /// cannot be sent at all).
    pub fn queued_from(&self, k: usize) -> usize {
        self.runs[k..].iter().map(|r| r.count).sum()
    }

    /// Forgets the batch once every message is finished.
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// Sends everything queued with `sendmmsg`; `sent` is called with the
    /// meta of every datagram handed to the kernel. Returns how many were
    /// dropped (refused, or the socket buffer stayed full). `bufs` as for
    /// `prepare`.
    pub fn flush<B: Bufs + ?Sized>(
        &mut self,
        fd: RawFd,
        bufs: &B,
        mut sent: impl FnMut(M),
    ) -> usize {
        if self.queue.is_empty() {
            return 0;
        }
        let total = self.prepare(bufs);
        let mut dropped = 0;
        let mut waited = false;
        let mut k = 0;
        while k < total {
            // SAFETY: `prepare` pointed hdrs[k..] at our names and control
            // buffers and at the caller's bytes, all alive and unmoved
            // until `clear`.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[k..].as_mut_ptr(),
                    (total - k) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                for j in k..k + r as usize {
                    dropped += self.finish(fd, j, Ok(()), &mut sent);
                }
                k += r as usize;
                continue;
            }
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            match errno {
                libc::EINTR => continue,
                libc::EAGAIN => {
                    // The socket buffer is full: give the NIC a moment once
                    // per flush, then drop what is left (UDP may).
                    if !waited && wait_writable(fd, 10) {
                        waited = true;
                        continue;
                    }
                    dropped += self.queued_from(k);
                    break;
                }
                e => {
                    dropped += self.finish(fd, k, Err(e), &mut sent);
                    k += 1;
                }
            }
        }
        self.clear();
        dropped
    }

    /// The kernel refused a GSO send. EINVAL (IPv4) or EMSGSIZE (IPv6) means
    /// a segment of this size plus headers exceeds the path MTU: a single
    /// datagram that size is fragmented, a GSO segment is refused, so GSO is
    /// skipped for this size and up from now on, to that address family
    /// (relayed records over an IPv6 underlay of MTU 1500: 1460 + 48 bytes).
    /// Anything else means no UDP GSO at all here (one datagram per message
    /// from now on). Logged once.
    fn refused(&mut self, errno: i32, seg: usize, v6: bool) {
        let error = io::Error::from_raw_os_error(errno);
        if errno == libc::EINVAL || errno == libc::EMSGSIZE {
            self.max_seg[usize::from(v6)] = seg - 1;
            if !self.refused_logged {
                info!(%error, segment = seg, ipv6 = v6,
                    "UDP GSO refused for this segment size; those datagrams go one at a time");
            }
        } else {
            self.gso = false;
            if !self.refused_logged {
                warn!(%error, "UDP GSO refused by the kernel; falling back to sendmmsg of single datagrams");
            }
        }
        self.refused_logged = true;
    }

    /// Sends the datagrams of message `k` one `sendmsg` each; returns how
    /// many were dropped.
    fn send_each(&mut self, fd: RawFd, k: usize, sent: &mut impl FnMut(M)) -> usize {
        let run = self.runs[k];
        let mut dropped = 0;
        for j in run.first..run.first + run.count {
            let mut m = empty_msghdr();
            m.msg_name = self.names[k].0.as_mut_ptr().cast();
            m.msg_namelen = self.hdrs[k].msg_hdr.msg_namelen;
            m.msg_iov = &mut self.iovs[j];
            m.msg_iovlen = 1;
            // SAFETY: `m` points at our name and at the caller's bytes,
            // alive until `clear`.
            if unsafe { libc::sendmsg(fd, &m, libc::MSG_DONTWAIT) } >= 0 {
                sent(self.queue[j].meta);
            } else {
                dropped += 1;
            }
        }
        dropped
    }
}

/// Waits up to `ms` for the socket to take more data.
pub fn wait_writable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}
