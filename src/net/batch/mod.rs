//! Batches of UDP datagrams in and out, in quinn-udp's shape: everything
//! about `recvmmsg`/`sendmmsg`, control messages, UDP GSO (`UDP_SEGMENT`)
//! and UDP GRO (`UDP_GRO`) lives here, behind a small vocabulary:
//!
//! - `UdpRx::recv` fills slots; each holds one datagram or a GRO train,
//!   described by a `RecvMeta` (sender, length, stride); `segments` cuts a
//!   train back into datagrams. The io_uring shell receives the same
//!   messages through a multishot RECVMSG armed with `multishot_template`
//!   and reads them with `RecvMeta::decode`.
//! - `UdpTx::push` queues `Transmit`s (destination and bytes in the
//!   caller's buffers, no copy); `flush` plans GSO runs (`plan_runs`) and
//!   sends them with one `sendmmsg`, falling back where the kernel refuses
//!   GSO. The io_uring shell submits the same messages (`prepare`,
//!   `message`, `finish`).
//!
//! Used by the node's workers (both IO shells) and by the relay. The
//! segmentation rules are pure functions in `plan`; the byte layouts in
//! `cmsg` and `sockaddr`; the unsafe code is the system calls and the one
//! empty message header.

mod cmsg;
mod plan;
mod rx;
mod sockaddr;
mod tx;

pub use cmsg::CTRL_LEN;
pub use plan::{plan_runs, segments, Run, RunLimits};
pub use rx::{multishot_template, UdpRx};
pub use sockaddr::NAME_LEN;
pub use tx::{wait_writable, UdpTx};

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Room for a received message: a GRO train is at most 64 KiB.
pub const RX_SLOT: usize = 65536;
/// The most bytes of UDP payload one GSO send may carry: the whole train
/// must fit in one IPv4 packet's length field (65535 - 20 - 8).
pub const GSO_MAX_BYTES: usize = 65507;
/// The most segments per GSO send (the kernel allows 128 since 5.x; 64
/// keeps us clear of older limits).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// One datagram to send: bytes `start..start + len` of buffer `buf` (of
/// the `Bufs` given to `UdpTx::flush`), to `to`; `meta` is handed back once
/// it is sent.
#[derive(Clone, Copy, Debug)]
pub struct Transmit<M> {
    pub buf: usize,
    pub start: usize,
    pub len: usize,
    pub to: SocketAddr,
    pub meta: M,
}

/// One received message: `len` bytes from `from`, holding datagrams of
/// `stride` bytes each but the last (a GRO train; `stride == len`, or more,
/// for a single datagram). `segments(len, stride)` cuts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    pub from: SocketAddr,
    pub len: usize,
    pub stride: usize,
}

/// Where queued datagrams' bytes live: `Transmit::buf` indexes these.
pub trait Bufs {
    fn buf(&self, i: usize) -> &[u8];
}

impl<T: AsRef<[u8]>> Bufs for [T] {
    fn buf(&self, i: usize) -> &[u8] {
        self[i].as_ref()
    }
}

/// Bytes the kernel reads or writes as one of its structs (a control
/// message, a socket address): aligned as strictly as any of them.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Aligned<const N: usize>([u8; N]);

impl<const N: usize> Default for Aligned<N> {
    fn default() -> Self {
        Aligned([0; N])
    }
}

/// An empty message header: no name, no data, no control.
fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain old data; null pointers with zero lengths
    // are a valid empty header.
    unsafe { std::mem::zeroed() }
}

/// The `NTMTUN_OFFLOAD` switch for every offload ntmtun uses (the node's
/// TUN TSO/USO, UDP GSO/GRO in the node and the relay): on unless it says
/// `0`/`off`/`false`/`no`.
pub fn offload_from_env() -> bool {
    offload_value(std::env::var("NTMTUN_OFFLOAD").ok().as_deref())
}

fn offload_value(v: Option<&str>) -> bool {
    v.is_none_or(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        )
    })
}

/// Turns on UDP_GRO (Linux 5.0+): the kernel may then hand one receive a
/// train of same-size datagrams from one sender, glued together, with the
/// stride in a control message. Only sockets read through `UdpRx` or
/// `RecvMeta::decode` may have it, as they split the trains.
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    crate::net::udp::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Whether the kernel knows UDP_SEGMENT (Linux 4.18+): reading the option
/// fails with ENOPROTOOPT where it does not. A kernel that knows it may
/// still refuse a given send (EIO without checksum offload, EINVAL when a
/// segment exceeds the path MTU); `UdpTx` handles that per send.
pub fn gso_supported(fd: RawFd) -> bool {
    let mut val: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `val` and `len` outlive the call and describe a 4-byte buffer.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut val as *mut i32).cast(),
            &mut len,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn offload_switch_values() {
        for (v, want) in [
            (None, true),
            (Some("1"), true),
            (Some("on"), true),
            (Some(""), true),
            (Some("0"), false),
            (Some(" Off "), false),
            (Some("false"), false),
            (Some("no"), false),
        ] {
            assert_eq!(offload_value(v), want, "{v:?}");
        }
    }

    /// Receives until `want` datagrams came (bounded), each message cut by
    /// its stride; returns the datagrams and how many messages were trains.
    fn receive(rx: &UdpSocket, want: usize, from: SocketAddr) -> (Vec<Vec<u8>>, usize) {
        let mut r = UdpRx::new(8);
        let (mut got, mut trains) = (Vec::new(), 0);
        for _ in 0..200 {
            let n = r.recv(rx.as_raw_fd()).unwrap_or(0);
            for i in 0..n {
                let (meta, data) = r.get(i).unwrap();
                assert_eq!(meta.from, from);
                assert_eq!(meta.len, data.len());
                if meta.stride < meta.len {
                    trains += 1;
                }
                for s in segments(meta.len, meta.stride) {
                    got.push(data[s].to_vec());
                }
            }
            if got.len() >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (got, trains)
    }

    /// UDP GSO out, UDP GRO in, over loopback: the datagrams come back
    /// whole and in order, cut at the stride.
    #[test]
    fn gso_send_and_gro_receive_round_trip() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gro = enable_gro(rx.as_raw_fd()).is_ok();
        let gso = gso_supported(tx.as_raw_fd());
        let to = rx.local_addr().unwrap();
        // Ten buffers: 9 datagrams of 1000 bytes and one of 300, byte i of
        // datagram k = k.
        let bufs: Vec<Vec<u8>> = (0..10u8).map(|k| vec![k; 1100]).collect();
        let mut out: UdpTx<usize> = UdpTx::new(false, gso, 16);
        for k in 0..10 {
            let len = if k == 9 { 300 } else { 1000 };
            let meta = k;
            assert!(out.push(Transmit {
                buf: k,
                start: 50,
                len,
                to,
                meta,
            }));
        }
        let mut sent = Vec::new();
        assert_eq!(out.flush(tx.as_raw_fd(), &bufs[..], |m| sent.push(m)), 0);
        assert_eq!(sent, (0..10).collect::<Vec<_>>());
        let (got, trains) = receive(&rx, 10, tx.local_addr().unwrap());
        assert_eq!(got.len(), 10);
        if gro && gso {
            // One GSO send arrives as one GRO train on loopback.
            assert_eq!(trains, 1);
        }
        for (k, d) in got.iter().enumerate() {
            assert_eq!(d.len(), if k == 9 { 300 } else { 1000 });
            assert!(d.iter().all(|&b| b == k as u8), "datagram {k} mixed up");
        }
    }

    /// What the relay does: a GRO train is sent on from the receive slots
    /// it arrived in, again as one GSO train, to another address of the
    /// other family (a dual-stack sender, v4-mapped).
    #[test]
    fn a_train_is_forwarded_from_its_receive_slot() {
        let (Ok(hop), Ok(dst)) = (UdpSocket::bind("[::]:0"), UdpSocket::bind("127.0.0.1:0")) else {
            return; // no IPv6 here
        };
        let src = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gro = enable_gro(hop.as_raw_fd()).is_ok() && enable_gro(dst.as_raw_fd()).is_ok();
        let gso = gso_supported(src.as_raw_fd()) && gso_supported(hop.as_raw_fd());
        let hop_at: SocketAddr = format!("127.0.0.1:{}", hop.local_addr().unwrap().port())
            .parse()
            .unwrap();
        let bufs: Vec<Vec<u8>> = (0..6u8).map(|k| vec![k; 1200]).collect();
        let mut first: UdpTx<()> = UdpTx::new(false, gso, 8);
        for k in 0..6 {
            first.push(Transmit {
                buf: k,
                start: 0,
                len: 1200,
                to: hop_at,
                meta: (),
            });
        }
        assert_eq!(first.flush(src.as_raw_fd(), &bufs[..], |_| ()), 0);
        let mut r = UdpRx::new(4);
        let mut on: UdpTx<()> = UdpTx::new(true, gso, 8);
        let mut forwarded = 0;
        for _ in 0..200 {
            let n = r.recv(hop.as_raw_fd()).unwrap_or(0);
            for i in 0..n {
                let meta = r.meta(i).unwrap();
                assert_eq!(meta.from, src.local_addr().unwrap(), "canonical IPv4");
                for s in segments(meta.len, meta.stride) {
                    forwarded += 1;
                    assert!(on.push(Transmit {
                        buf: i,
                        start: s.start,
                        len: s.len(),
                        to: dst.local_addr().unwrap(),
                        meta: (),
                    }));
                }
            }
            assert_eq!(on.flush(hop.as_raw_fd(), &r, |_| ()), 0);
            if forwarded >= 6 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (got, trains) = receive(&dst, 6, hop_at);
        assert_eq!(got.len(), 6);
        for (k, d) in got.iter().enumerate() {
            assert_eq!(d, &bufs[k], "datagram {k}");
        }
        if gro && gso {
            assert_eq!(trains, 1, "forwarded as one train");
        }
    }

    /// A GSO send whose segments exceed the path MTU is refused (IPv6:
    /// EMSGSIZE); the datagrams then go one at a time (fragmented, as a
    /// plain send would be) and later flushes skip GSO for that size.
    #[test]
    fn gso_refused_for_a_segment_size_falls_back_to_single_datagrams() {
        let (Ok(rx), Ok(tx)) = (UdpSocket::bind("[::1]:0"), UdpSocket::bind("[::1]:0")) else {
            return; // no IPv6 loopback here
        };
        if !gso_supported(tx.as_raw_fd()) {
            return;
        }
        // IPV6_MTU on the sender caps the path MTU at 1280.
        crate::net::udp::setsockopt_int(tx.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_MTU, 1280)
            .unwrap();
        let to = rx.local_addr().unwrap();
        let bufs: Vec<Vec<u8>> = (0..4u8).map(|k| vec![k; 1300]).collect();
        let mut out: UdpTx<usize> = UdpTx::new(true, true, 8);
        for round in 0..2 {
            for k in 0..4 {
                out.push(Transmit {
                    buf: k,
                    start: 0,
                    len: 1300,
                    to,
                    meta: k,
                });
            }
            let mut sent = Vec::new();
            assert_eq!(out.flush(tx.as_raw_fd(), &bufs[..], |m| sent.push(m)), 0);
            assert_eq!(sent, vec![0, 1, 2, 3], "round {round}");
            assert!(out.gso(), "GSO stays on for other sizes");
            assert_eq!(out.max_seg()[1], 1299);
        }
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4096];
        for _ in 0..8 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(n, 1300);
        }
    }
}
