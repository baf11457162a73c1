//! Offloads, in one place: the TUN's virtio header and super-packets (TSO/
//! USO reads split into segments, writes coalesced by `gro`), UDP
//! GSO sends (one `sendmsg` per run of records, `UDP_SEGMENT` cmsg) and UDP
//! GRO receives (`UDP_GRO` cmsg, coalesced datagrams split back into
//! records). The worker above sees plain IP packets and plain datagrams.
//!
//! Everything here is allocated once, in the `new` functions; the per-batch
//! paths only fill preallocated buffers.

use super::gro::Coalescer;
use crate::net::batch::{from_sockaddr, to_sockaddr};
use crate::net::udp;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use tracing::{debug, info, warn};
use tun_rs::{
    SyncDevice, VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN,
};

/// Length of the virtio header in front of every read and write on an
/// offload TUN.
pub const VNET_HDR_LEN: usize = VIRTIO_NET_HDR_LEN;
/// The largest IP packet, and the largest TUN super-packet.
pub const MAX_PACKET: usize = 65535;
/// The most bytes of UDP payload one GSO send may carry: the whole train
/// must fit in one IPv4 packet's length field (65535 - 20 - 8).
pub const GSO_MAX_BYTES: usize = 65507;
/// The most segments per GSO send (the kernel allows 128 since 5.x; 64
/// keeps us clear of older limits).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Room for a datagram on receive: a GRO train is at most 64 KiB.
pub const RX_SLOT: usize = 65536;

const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// The `NTMTUN_OFFLOAD` switch: offloads (TUN TSO/USO, UDP GSO/GRO) are on
/// unless it says `0`/`off`/`false`/`no`.
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

/// Writes one IP packet into the TUN from outside the workers (the control
/// thread's DNS answers and first packets). On an offload TUN the packet
/// needs a virtio header in front: an all-zero one (no GSO, checksum
/// complete), prepended with `writev` so nothing is copied.
pub fn tun_write(dev: &SyncDevice, offload: bool, pkt: &[u8]) -> io::Result<usize> {
    if !offload {
        return dev.send(pkt);
    }
    let hdr = [0u8; VNET_HDR_LEN];
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: pkt.as_ptr() as *mut libc::c_void,
            iov_len: pkt.len(),
        },
    ];
    // SAFETY: both iovecs describe live buffers of the stated lengths.
    let n = unsafe { libc::writev(dev.as_raw_fd(), iov.as_ptr(), 2) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize).saturating_sub(VNET_HDR_LEN))
}

/// Finishes a partial transport checksum (virtio `NEEDS_CSUM` without GSO:
/// the kernel left the pseudo-header sum at `start + offset`). Returns false
/// if the offsets do not fit the packet.
fn finish_checksum(pkt: &mut [u8], start: u16, offset: u16) -> bool {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if start >= pkt.len() || at + 2 > pkt.len() {
        return false;
    }
    let initial = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    pkt[at] = 0;
    pkt[at + 1] = 0;
    let mut sum = !tun_rs::checksum(&pkt[start..], u64::from(initial));
    // UDP sends a computed zero as all ones (zero means "no checksum").
    if offset == 6 && sum == 0 {
        sum = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

/// What the last `TunReader::read` left in the raw buffer.
#[derive(Clone, Copy)]
enum Pending {
    None,
    One,
    Super { hdr: VirtioNetHdr, is_v6: bool },
}

/// Reads from a TUN queue into preallocated packet slots. Each slot holds
/// one IP packet at `headroom` (room in front for the caller's headers)
/// with `tail` bytes free behind it. A read first lands in a spare buffer;
/// `place` then swaps it into a slot (a plain packet: no copy) or splits a
/// super-packet into consecutive slots (one copy per segment, with headers
/// rebuilt by tun-rs's `gso_split`).
pub struct TunReader {
    offload: bool,
    headroom: usize,
    raw: Vec<u8>,
    raw_len: usize,
    pending: Pending,
    slots: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

impl TunReader {
    /// `headroom` must be at least `VNET_HDR_LEN` (the virtio header of an
    /// offload read lands just in front of the packet).
    pub fn new(offload: bool, headroom: usize, tail: usize, slots: usize) -> TunReader {
        assert!(headroom >= VNET_HDR_LEN);
        let size = headroom + MAX_PACKET + tail;
        TunReader {
            offload,
            headroom,
            raw: vec![0u8; size],
            raw_len: 0,
            pending: Pending::None,
            slots: (0..slots).map(|_| vec![0u8; size]).collect(),
            sizes: vec![0; slots],
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Length of the virtio header in front of every read.
    fn vnet_len(&self) -> usize {
        if self.offload {
            VNET_HDR_LEN
        } else {
            0
        }
    }

    /// Reads one packet (or super-packet). Returns how many slots `place`
    /// needs for it; `Ok(0)` means it was malformed and dropped.
    pub fn read(&mut self, tun: &SyncDevice) -> io::Result<usize> {
        self.pending = Pending::None;
        let from = self.headroom - self.vnet_len();
        let n = tun.recv(&mut self.raw[from..self.headroom + MAX_PACKET])?;
        let mut raw = std::mem::take(&mut self.raw);
        let need = self.plan(&mut raw[from..from + n]);
        self.raw = raw;
        Ok(need)
    }

    /// Takes a read done elsewhere (an io_uring completion): `read` holds
    /// what the TUN returned, virtio header included on an offload TUN.
    /// Returns how many slots `place_from` needs for it (0: malformed and
    /// dropped). A checksum left partial by the kernel is completed in
    /// `read`.
    pub fn plan(&mut self, read: &mut [u8]) -> usize {
        self.pending = Pending::None;
        self.raw_len = 0;
        if read.len() > self.vnet_len() + MAX_PACKET {
            return 0;
        }
        if !self.offload {
            self.raw_len = read.len();
            self.pending = Pending::One;
            return 1;
        }
        if read.len() <= VNET_HDR_LEN {
            return 0;
        }
        self.raw_len = read.len() - VNET_HDR_LEN;
        let Ok(hdr) = VirtioNetHdr::decode(&read[..VNET_HDR_LEN]) else {
            return 0;
        };
        let pkt = &mut read[VNET_HDR_LEN..];
        match plan_split(pkt, hdr) {
            Some((_, 0)) | None => {
                debug!(
                    gso_type = hdr.gso_type,
                    len = self.raw_len,
                    "malformed TUN super-packet dropped"
                );
                0
            }
            Some((None, _)) => {
                if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
                    && !finish_checksum(pkt, hdr.csum_start, hdr.csum_offset)
                {
                    return 0;
                }
                self.pending = Pending::One;
                1
            }
            Some((Some((hdr, is_v6)), segments)) => {
                self.pending = Pending::Super { hdr, is_v6 };
                segments
            }
        }
    }

    /// Puts what `read` got into the slots from `at` on; returns how many
    /// slots it filled (0: it did not fit or could not be split). A plain
    /// packet trades places with the slot: no copy.
    pub fn place(&mut self, at: usize) -> usize {
        let (h, len) = (self.headroom, self.raw_len);
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => 0,
            Pending::One => {
                if at >= self.slots.len() {
                    return 0;
                }
                std::mem::swap(&mut self.raw, &mut self.slots[at]);
                self.sizes[at] = len;
                1
            }
            Pending::Super { hdr, is_v6 } => {
                let mut raw = std::mem::take(&mut self.raw);
                let n = self.split(&mut raw[h..h + len], hdr, is_v6, at);
                self.raw = raw;
                n
            }
        }
    }

    /// Like `place`, for the read `plan` looked at (the same bytes): a
    /// plain packet is copied into its slot.
    pub fn place_from(&mut self, read: &mut [u8], at: usize) -> usize {
        let (h, len) = (self.headroom, self.raw_len);
        let from = self.vnet_len();
        let Some(pkt) = read.get_mut(from..from + len) else {
            return 0;
        };
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => 0,
            Pending::One => {
                if at >= self.slots.len() {
                    return 0;
                }
                self.slots[at][h..h + len].copy_from_slice(pkt);
                self.sizes[at] = len;
                1
            }
            Pending::Super { hdr, is_v6 } => self.split(pkt, hdr, is_v6, at),
        }
    }

    /// Splits a super-packet into the slots from `at` on.
    fn split(&mut self, pkt: &mut [u8], hdr: VirtioNetHdr, is_v6: bool, at: usize) -> usize {
        if at >= self.slots.len() {
            return 0;
        }
        match tun_rs::gso_split(
            pkt,
            hdr,
            &mut self.slots[at..],
            &mut self.sizes[at..],
            self.headroom,
            is_v6,
        ) {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "TUN super-packet not split; dropped");
                0
            }
        }
    }

    /// The packet in slot `i`.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.slots[i][self.headroom..self.headroom + self.sizes[i]]
    }

    /// Slot `i` and the length of the packet at `headroom` in it.
    pub fn slot_mut(&mut self, i: usize) -> (&mut [u8], usize) {
        (&mut self.slots[i], self.sizes[i])
    }

    pub fn slots(&self) -> &[Vec<u8>] {
        &self.slots
    }
}

/// Checks a virtio header against its packet. `Some((None, 1))`: a plain
/// packet; `Some((Some((hdr, is_v6)), n))`: a super-packet of `n` segments,
/// with `hdr.hdr_len` recomputed from the packet (the kernel's value cannot
/// be trusted on the forwarding path; tun-rs's `recv_multiple` does the
/// same); `Some((_, 0))` or `None`: malformed.
#[allow(clippy::type_complexity)]
fn plan_split(pkt: &[u8], mut hdr: VirtioNetHdr) -> Option<(Option<(VirtioNetHdr, bool)>, usize)> {
    if hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE {
        return Some((None, 1));
    }
    let is_v6 = match pkt.first()? >> 4 {
        4 => false,
        6 => true,
        _ => return None,
    };
    let start = usize::from(hdr.csum_start);
    let hdr_len = match hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_UDP_L4 => start + 8,
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => {
            let doff = usize::from(*pkt.get(start + 12)? >> 4) * 4;
            if !(20..=60).contains(&doff) {
                return None;
            }
            start + doff
        }
        _ => return None,
    };
    if hdr.gso_size == 0 || hdr_len > pkt.len() || hdr_len > usize::from(u16::MAX) {
        return None;
    }
    hdr.hdr_len = hdr_len as u16;
    let payload = pkt.len() - hdr_len;
    Some((
        Some((hdr, is_v6)),
        payload.div_ceil(usize::from(hdr.gso_size)),
    ))
}

/// Collects IP packets for the TUN and writes them: our own GRO
/// (`gro::Coalescer`) merges TCP segments, and UDP datagrams where the TUN
/// has USO, of one flow into super-packets as they are queued; `flush`
/// writes one `write` per packet left. Nothing here allocates after `new`.
pub struct TunWriter {
    gro: Coalescer,
}

impl TunWriter {
    /// `offload`: the TUN has IFF_VNET_HDR (virtio headers, TSO); `uso`:
    /// it also takes UDP_L4 super-packets.
    pub fn new(count: usize, offload: bool, uso: bool) -> TunWriter {
        TunWriter {
            gro: Coalescer::new(count, offload, uso),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.gro.is_empty()
    }

    /// Packets that can still be queued before a flush.
    pub fn room(&self) -> usize {
        self.gro.room()
    }

    /// Queues a copy of `pkt` (or of its payload, onto its flow's last
    /// packet); false if the batch is full or `pkt` too big.
    pub fn push(&mut self, pkt: &[u8]) -> bool {
        self.gro.push(pkt)
    }

    /// Writes everything queued to the TUN, one `write` per packet.
    pub fn flush(&mut self, tun: &SyncDevice) -> io::Result<usize> {
        self.flush_to(tun.as_raw_fd())
    }

    /// Writes everything queued to `fd` (a TUN queue; tests use any file),
    /// one `write` per packet, and empties the batch. Every packet is
    /// tried; the last error, if any, is returned.
    pub fn flush_to(&mut self, fd: RawFd) -> io::Result<usize> {
        self.gro.finish();
        let mut total = 0;
        let mut result = Ok(());
        for i in 0..self.gro.len() {
            let p = self.gro.packet(i);
            // SAFETY: `p` is a live buffer of `p.len()` bytes.
            let n = unsafe { libc::write(fd, p.as_ptr().cast(), p.len()) };
            if n < 0 {
                result = Err(io::Error::last_os_error());
            } else {
                total += n as usize;
            }
        }
        self.gro.clear();
        result.map(|()| total)
    }
}

/// Control-message room: UDP_GRO (an int) or UDP_SEGMENT (a u16), with
/// space to spare for anything else the kernel adds; aligned for cmsghdr.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// The segments of a received datagram of `len` bytes whose UDP_GRO
/// segment size was `seg` (0: no cmsg, a single datagram): every segment
/// is `seg` bytes but the last, which may be shorter. A zero-length
/// datagram is one empty segment.
pub fn segments(len: usize, seg: usize) -> impl Iterator<Item = Range<usize>> {
    let seg = if seg == 0 || seg > len {
        len.max(1)
    } else {
        seg
    };
    (0..len.max(1))
        .step_by(seg)
        .map(move |start| start..(start + seg).min(len))
}

/// Batched receive with recvmmsg and (when enabled on the socket) UDP GRO:
/// each slot holds one datagram or one coalesced train of datagrams from
/// one sender.
pub struct UdpRx {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    ctrl: Vec<Cmsg>,
    hdrs: Vec<libc::mmsghdr>,
}

impl UdpRx {
    pub fn new(count: usize) -> UdpRx {
        // SAFETY: all-zero sockaddr_storage and mmsghdr are valid values.
        let zero_ss: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut r = UdpRx {
            bufs: vec![0u8; count * RX_SLOT],
            names: vec![zero_ss; count],
            iovs: Vec::with_capacity(count),
            ctrl: vec![Cmsg([0; 64]); count],
            hdrs: Vec::with_capacity(count),
        };
        for i in 0..count {
            let base = r.bufs[i * RX_SLOT..].as_mut_ptr();
            r.iovs.push(libc::iovec {
                iov_base: base.cast(),
                iov_len: RX_SLOT,
            });
        }
        for i in 0..count {
            // SAFETY: see above; the pointers are set next.
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_name = (&mut r.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_iov = &mut r.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = r.ctrl[i].0.as_mut_ptr().cast();
            r.hdrs.push(h);
        }
        r
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to `capacity()` datagrams without blocking.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_controllen = std::mem::size_of::<Cmsg>() as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points into our own live buffers of the
        // sizes it states.
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

    /// The i-th datagram of the last `recv`: sender, GRO segment size (0 if
    /// none) and bytes.
    pub fn get(&mut self, i: usize) -> (Option<SocketAddr>, usize, &mut [u8]) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(RX_SLOT);
        let seg = gro_segment_size(&h.msg_hdr);
        let from = from_sockaddr(&self.names[i]).map(udp::canonical);
        (from, seg, &mut self.bufs[i * RX_SLOT..i * RX_SLOT + len])
    }
}

/// The UDP_GRO segment size in control data a receive returned (an
/// io_uring multishot receive hands back the bytes, not a msghdr).
pub fn gro_segment_size_in(control: &[u8]) -> usize {
    // SAFETY: an all-zero msghdr is valid; only the control fields are set,
    // to the caller's bytes, which the CMSG_* macros stay within.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_control = control.as_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() as _;
    gro_segment_size(&msg)
}

/// The UDP_GRO segment size in a received message's control data.
fn gro_segment_size(msg: &libc::msghdr) -> usize {
    // SAFETY: the control buffer is ours and msg_controllen is what the
    // kernel filled in; the CMSG_* macros stay within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                return v.max(0) as usize;
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    0
}

/// One record to send: bytes `start..start + len` of packet slot `slot`,
/// to `to`, with the caller's `meta` handed back once it is sent.
#[derive(Clone, Copy, Debug)]
pub struct TxRec<M> {
    pub slot: usize,
    pub start: usize,
    pub len: usize,
    pub to: SocketAddr,
    pub meta: M,
}

/// Records `first..first + count` go out in one message; with more than
/// one, as a GSO train of `seg`-byte segments (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: usize,
    pub count: usize,
    pub seg: usize,
}

/// What a GSO send may hold.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// 1 turns GSO off: every record is its own message.
    pub max_segs: usize,
    pub max_bytes: usize,
    /// Largest segment GSO is used for, to IPv4 [0] and IPv6 [1]
    /// destinations (lowered when the kernel refuses a size).
    pub max_seg: [usize; 2],
}

/// Groups consecutive records into GSO runs: same destination, all the
/// size of the first but the last (which may be shorter), within the
/// limits. Records that cannot join a train go alone.
pub fn plan_runs<M>(recs: &[TxRec<M>], lim: RunLimits, out: &mut Vec<Run>) {
    out.clear();
    let mut i = 0;
    while i < recs.len() {
        let head = &recs[i];
        let seg = head.len;
        let (mut count, mut bytes) = (1, seg);
        if lim.max_segs > 1 && seg <= lim.max_seg[usize::from(head.to.is_ipv6())] {
            while i + count < recs.len() && count < lim.max_segs {
                let r = &recs[i + count];
                if r.to != head.to || r.len > seg || bytes + r.len > lim.max_bytes {
                    break;
                }
                count += 1;
                bytes += r.len;
                if r.len < seg {
                    break;
                }
            }
        }
        out.push(Run {
            first: i,
            count,
            seg,
        });
        i += count;
    }
}

/// Batched send: records queue up (pointing into the caller's packet
/// slots), then one `sendmmsg` sends them, each run of records as one
/// message, with a UDP_SEGMENT cmsg when the run has more than one.
pub struct UdpTx<M> {
    v6_socket: bool,
    gso: bool,
    max_seg: [usize; 2],
    refused_logged: bool,
    recs: Vec<TxRec<M>>,
    runs: Vec<Run>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    addrs: Vec<libc::sockaddr_storage>,
    ctrl: Vec<Cmsg>,
}

impl<M: Copy> UdpTx<M> {
    pub fn new(v6_socket: bool, gso: bool, capacity: usize) -> UdpTx<M> {
        // SAFETY: an all-zero sockaddr_storage is valid.
        let zero_ss: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        UdpTx {
            v6_socket,
            gso,
            max_seg: [usize::MAX; 2],
            refused_logged: false,
            recs: Vec::with_capacity(capacity),
            runs: Vec::with_capacity(capacity),
            iovs: Vec::with_capacity(capacity),
            hdrs: Vec::with_capacity(capacity),
            addrs: vec![zero_ss; capacity],
            ctrl: vec![Cmsg([0; 64]); capacity],
        }
    }

    pub fn gso(&self) -> bool {
        self.gso
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Queues a record; false if the batch is full.
    pub fn push(&mut self, rec: TxRec<M>) -> bool {
        if self.recs.len() == self.recs.capacity() {
            return false;
        }
        self.recs.push(rec);
        true
    }

    fn limits(&self) -> RunLimits {
        RunLimits {
            max_segs: if self.gso { GSO_MAX_SEGMENTS } else { 1 },
            max_bytes: GSO_MAX_BYTES,
            max_seg: self.max_seg,
        }
    }

    /// Plans the queued records into runs and builds one message per run
    /// (`message`); returns how many. `slots` must be the buffers the
    /// records' `slot` indexes refer to, unchanged until `clear`.
    pub fn prepare(&mut self, slots: &[Vec<u8>]) -> usize {
        plan_runs(&self.recs, self.limits(), &mut self.runs);
        self.iovs.clear();
        for r in &self.recs {
            self.iovs.push(libc::iovec {
                iov_base: slots[r.slot][r.start..r.start + r.len].as_ptr() as *mut libc::c_void,
                iov_len: r.len,
            });
        }
        self.hdrs.clear();
        for (k, run) in self.runs.iter().enumerate() {
            // SAFETY: an all-zero mmsghdr is valid; the pointers set below
            // point into our own vectors, which do not move until `clear`.
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_namelen =
                to_sockaddr(self.recs[run.first].to, self.v6_socket, &mut self.addrs[k]);
            h.msg_hdr.msg_name = (&mut self.addrs[k] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_iov = self.iovs[run.first..].as_mut_ptr();
            h.msg_hdr.msg_iovlen = run.count as _;
            if run.count > 1 {
                put_segment_cmsg(&mut h.msg_hdr, &mut self.ctrl[k], run.seg as u16);
            }
            self.hdrs.push(h);
        }
        self.hdrs.len()
    }

    /// Message `k` of the prepared batch, valid until `clear`.
    pub fn message(&self, k: usize) -> *const libc::msghdr {
        &self.hdrs[k].msg_hdr
    }

    /// Records the outcome of message `k`: `Ok` calls `sent` for each of
    /// its records; a GSO train the kernel refused goes again one datagram
    /// each (and GSO is adjusted, see `refused`); any other error drops
    /// it. Returns how many records were dropped.
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
                for rec in &self.recs[run.first..run.first + run.count] {
                    sent(rec.meta);
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
                self.refused(e, run.seg, self.recs[run.first].to.is_ipv6());
                self.send_each(fd, k, sent)
            }
            Err(e) => {
                debug!(error = %io::Error::from_raw_os_error(e), to = %self.recs[run.first].to, "send failed");
                run.count
            }
        }
    }

    /// Records in message `k` and later (what is dropped when they cannot
    /// be sent at all).
    pub fn records_from(&self, k: usize) -> usize {
        self.runs[k..].iter().map(|r| r.count).sum()
    }

    /// Forgets the batch once every message is finished.
    pub fn clear(&mut self) {
        self.recs.clear();
    }

    /// Sends everything queued; `sent` is called with the `meta` of every
    /// record handed to the kernel. Returns how many records were dropped
    /// (refused, or the socket buffer stayed full). `slots` must be the
    /// buffers the records' `slot` indexes refer to.
    pub fn flush(&mut self, fd: RawFd, slots: &[Vec<u8>], mut sent: impl FnMut(M)) -> usize {
        if self.recs.is_empty() {
            return 0;
        }
        let total = self.prepare(slots);
        let mut dropped = 0;
        let mut waited = false;
        let mut k = 0;
        while k < total {
            // SAFETY: hdrs[k..] are valid and point into live buffers.
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
                    dropped += self.records_from(k);
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
    /// Anything else means no UDP GSO at all here (sendmmsg of single
    /// records from now on). Logged once.
    fn refused(&mut self, errno: i32, seg: usize, v6: bool) {
        let error = io::Error::from_raw_os_error(errno);
        if errno == libc::EINVAL || errno == libc::EMSGSIZE {
            self.max_seg[usize::from(v6)] = seg - 1;
            if !self.refused_logged {
                info!(%error, segment = seg, ipv6 = v6,
                    "UDP GSO refused for this segment size; those records go one datagram each");
            }
        } else {
            self.gso = false;
            if !self.refused_logged {
                warn!(%error, "UDP GSO refused by the kernel; falling back to sendmmsg of single records");
            }
        }
        self.refused_logged = true;
    }

    /// Sends the records of run `k` one datagram each; returns how many
    /// were dropped.
    fn send_each(&mut self, fd: RawFd, k: usize, sent: &mut impl FnMut(M)) -> usize {
        let run = self.runs[k];
        let mut dropped = 0;
        for j in run.first..run.first + run.count {
            // SAFETY: an all-zero msghdr is valid; its pointers are ours.
            let mut m: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            m.msg_name = (&mut self.addrs[k] as *mut libc::sockaddr_storage).cast();
            m.msg_namelen = self.hdrs[k].msg_hdr.msg_namelen;
            m.msg_iov = &mut self.iovs[j];
            m.msg_iovlen = 1;
            // SAFETY: m points into live buffers.
            if unsafe { libc::sendmsg(fd, &m, libc::MSG_DONTWAIT) } >= 0 {
                sent(self.recs[j].meta);
            } else {
                dropped += 1;
            }
        }
        dropped
    }
}

/// Fills `ctrl` with a SOL_UDP/UDP_SEGMENT cmsg and points `msg` at it.
fn put_segment_cmsg(msg: &mut libc::msghdr, ctrl: &mut Cmsg, seg: u16) {
    // SAFETY: CMSG_SPACE(2) = 24 bytes fit the 64-byte, 8-aligned buffer.
    unsafe {
        msg.msg_control = ctrl.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(2) as _;
        let c = libc::CMSG_FIRSTHDR(msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn rec(to: &str, len: usize) -> TxRec<()> {
        TxRec {
            slot: 0,
            start: 0,
            len,
            to: to.parse().unwrap(),
            meta: (),
        }
    }

    const A: &str = "198.51.100.1:4000";
    const B: &str = "198.51.100.2:4000";
    const V6: &str = "[2001:db8::1]:4000";

    fn lim() -> RunLimits {
        RunLimits {
            max_segs: GSO_MAX_SEGMENTS,
            max_bytes: GSO_MAX_BYTES,
            max_seg: [usize::MAX; 2],
        }
    }

    fn runs(recs: &[TxRec<()>], l: RunLimits) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        plan_runs(recs, l, &mut out);
        out.iter().map(|r| (r.first, r.count, r.seg)).collect()
    }

    #[test]
    fn segments_split_a_gro_train() {
        let s: Vec<_> = segments(1452 * 3 + 100, 1452).collect();
        assert_eq!(s, vec![0..1452, 1452..2904, 2904..4356, 4356..4456]);
        let s: Vec<_> = segments(1452 * 2, 1452).collect();
        assert_eq!(s, vec![0..1452, 1452..2904]);
        // No cmsg, or a segment size at least the length: one datagram.
        assert_eq!(segments(500, 0).collect::<Vec<_>>(), vec![0..500]);
        assert_eq!(segments(500, 1452).collect::<Vec<_>>(), vec![0..500]);
        assert_eq!(segments(0, 0).collect::<Vec<_>>(), vec![0..0]);
        assert_eq!(segments(0, 1452).collect::<Vec<_>>(), vec![0..0]);
        assert_eq!(segments(3, 1).count(), 3);
    }

    #[test]
    fn runs_group_equal_records_to_one_destination() {
        let recs = [rec(A, 1452), rec(A, 1452), rec(A, 1452), rec(A, 700)];
        assert_eq!(runs(&recs, lim()), vec![(0, 4, 1452)]);
    }

    #[test]
    fn runs_break_on_destination_and_longer_records() {
        let recs = [
            rec(A, 1452),
            rec(A, 1452),
            rec(B, 1452),
            rec(B, 600),
            rec(B, 1452), // longer than the run's last: new run
            rec(B, 1452),
            rec(A, 100),
        ];
        assert_eq!(
            runs(&recs, lim()),
            vec![(0, 2, 1452), (2, 2, 1452), (4, 2, 1452), (6, 1, 100)]
        );
    }

    #[test]
    fn a_shorter_record_ends_its_run() {
        let recs = [rec(A, 1000), rec(A, 500), rec(A, 500), rec(A, 500)];
        assert_eq!(runs(&recs, lim()), vec![(0, 2, 1000), (2, 2, 500)]);
    }

    #[test]
    fn runs_respect_segment_and_byte_limits() {
        let recs: Vec<_> = (0..100).map(|_| rec(A, 1460)).collect();
        // 64 KiB: at most 44 segments of 1460 (65507 / 1460 = 44.8).
        let r = runs(&recs, lim());
        assert_eq!(r, vec![(0, 44, 1460), (44, 44, 1460), (88, 12, 1460)]);
        let small: Vec<_> = (0..130).map(|_| rec(A, 100)).collect();
        assert_eq!(
            runs(&small, lim()),
            vec![(0, 64, 100), (64, 64, 100), (128, 2, 100)]
        );
        for (_, count, seg) in r {
            assert!(count * seg <= GSO_MAX_BYTES);
        }
    }

    #[test]
    fn without_gso_every_record_is_alone() {
        let recs = [rec(A, 1452), rec(A, 1452), rec(A, 1452)];
        let l = RunLimits {
            max_segs: 1,
            ..lim()
        };
        assert_eq!(
            runs(&recs, l),
            vec![(0, 1, 1452), (1, 1, 1452), (2, 1, 1452)]
        );
    }

    #[test]
    fn refused_sizes_go_alone_per_family() {
        let recs = [rec(V6, 1460), rec(V6, 1460), rec(A, 1460), rec(A, 1460)];
        let l = RunLimits {
            max_seg: [usize::MAX, 1459],
            ..lim()
        };
        assert_eq!(
            runs(&recs, l),
            vec![(0, 1, 1460), (1, 1, 1460), (2, 2, 1460)]
        );
    }

    #[test]
    fn empty_input_plans_nothing() {
        assert!(runs(&[], lim()).is_empty());
    }

    #[test]
    fn checksum_completion_matches_a_full_checksum() {
        // IPv4/UDP 10.0.0.1:1000 -> 10.0.0.2:2000, 4 bytes of payload.
        let mut pkt = vec![
            0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IP
            0x03, 0xe8, 0x07, 0xd0, 0, 12, 0, 0, // UDP
            1, 2, 3, 4,
        ];
        // The full checksum, computed the long way.
        let pseudo: [u8; 12] = [10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 12];
        let mut sum = tun_rs::checksum(&pseudo, 0);
        sum = tun_rs::checksum(&pkt[20..], u64::from(sum));
        let want = !sum;
        // What the kernel leaves for NEEDS_CSUM: the folded pseudo-header
        // sum, not inverted.
        let partial = tun_rs::checksum(&pseudo, 0);
        pkt[26..28].copy_from_slice(&partial.to_be_bytes());
        assert!(finish_checksum(&mut pkt, 20, 6));
        assert_eq!(u16::from_be_bytes([pkt[26], pkt[27]]), want);
        assert!(!finish_checksum(&mut pkt, 20, 40), "offset past the end");
    }

    #[test]
    fn plan_split_counts_segments_and_fixes_hdr_len() {
        // IPv4 + UDP header, 3000 bytes of payload, gso_size 1400.
        let mut pkt = vec![0u8; 28 + 3000];
        pkt[0] = 0x45;
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
            hdr_len: 9999,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 6,
        };
        let (h, n) = plan_split(&pkt, hdr).unwrap();
        let (h, v6) = h.unwrap();
        assert_eq!((n, h.hdr_len, v6), (3, 28, false));
        // TCP: hdr_len from the data offset.
        pkt[20 + 12] = 8 << 4; // 32-byte TCP header
        let tcp = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            csum_offset: 16,
            ..hdr
        };
        let (h, n) = plan_split(&pkt, tcp).unwrap();
        assert_eq!(
            (n, h.unwrap().0.hdr_len),
            ((28 + 3000 - 52usize).div_ceil(1400), 52)
        );
        // Garbage: bad version, zero gso_size, unknown type.
        pkt[0] = 0x15;
        assert!(plan_split(&pkt, hdr).is_none());
        pkt[0] = 0x45;
        assert!(plan_split(&pkt, VirtioNetHdr { gso_size: 0, ..hdr }).is_none());
        assert!(plan_split(&pkt, VirtioNetHdr { gso_type: 3, ..hdr }).is_none());
        assert!(matches!(
            plan_split(&pkt, VirtioNetHdr::default()),
            Some((None, 1))
        ));
    }

    /// UDP GSO out, UDP GRO in, over loopback: the records come back whole
    /// and in order, split at the segment size.
    #[test]
    fn gso_send_and_gro_receive_round_trip() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gro = udp::enable_gro(rx.as_raw_fd()).is_ok();
        let gso = udp::gso_supported(tx.as_raw_fd());
        let to = rx.local_addr().unwrap();
        // Ten slots: 9 records of 1000 bytes and one of 300, byte i of
        // record k = k.
        let slots: Vec<Vec<u8>> = (0..10u8).map(|k| vec![k; 1100]).collect();
        let mut out: UdpTx<usize> = UdpTx::new(false, gso, 16);
        for k in 0..10 {
            let len = if k == 9 { 300 } else { 1000 };
            assert!(out.push(TxRec {
                slot: k,
                start: 50,
                len,
                to,
                meta: k,
            }));
        }
        let mut sent = Vec::new();
        assert_eq!(out.flush(tx.as_raw_fd(), &slots, |m| sent.push(m)), 0);
        assert_eq!(sent, (0..10).collect::<Vec<_>>());

        let mut r = UdpRx::new(8);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut trains = 0;
        for _ in 0..200 {
            let n = r.recv(rx.as_raw_fd()).unwrap_or(0);
            for i in 0..n {
                let (from, seg, data) = r.get(i);
                assert_eq!(from, Some(tx.local_addr().unwrap()));
                if gro && gso {
                    assert!(seg == 0 || seg == 1000, "segment size {seg}");
                }
                if seg > 0 && data.len() > seg {
                    trains += 1;
                }
                for s in segments(data.len(), seg) {
                    got.push(data[s].to_vec());
                }
            }
            if got.len() >= 10 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got.len(), 10);
        if gro && gso {
            // One GSO send arrives as one GRO train on loopback.
            assert_eq!(trains, 1);
        }
        for (k, d) in got.iter().enumerate() {
            assert_eq!(d.len(), if k == 9 { 300 } else { 1000 });
            assert!(d.iter().all(|&b| b == k as u8), "record {k} mixed up");
        }
    }

    /// A GSO send whose segments exceed the path MTU is refused (IPv6:
    /// EMSGSIZE); the records then go one datagram each (fragmented, as a
    /// plain send would be) and later flushes skip GSO for that size.
    #[test]
    fn gso_refused_for_a_segment_size_falls_back_to_single_datagrams() {
        let (Ok(rx), Ok(tx)) = (UdpSocket::bind("[::1]:0"), UdpSocket::bind("[::1]:0")) else {
            return; // no IPv6 loopback here
        };
        if !udp::gso_supported(tx.as_raw_fd()) {
            return;
        }
        // IPV6_MTU on the sender caps the path MTU at 1280.
        let mtu: i32 = 1280;
        // SAFETY: `mtu` outlives the call; the length matches.
        let r = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU,
                &mtu as *const i32 as *const libc::c_void,
                4,
            )
        };
        assert_eq!(r, 0);
        let to = rx.local_addr().unwrap();
        let slots: Vec<Vec<u8>> = (0..4u8).map(|k| vec![k; 1300]).collect();
        let mut out: UdpTx<usize> = UdpTx::new(true, true, 8);
        for round in 0..2 {
            for k in 0..4 {
                out.push(TxRec {
                    slot: k,
                    start: 0,
                    len: 1300,
                    to,
                    meta: k,
                });
            }
            let mut sent = Vec::new();
            assert_eq!(out.flush(tx.as_raw_fd(), &slots, |m| sent.push(m)), 0);
            assert_eq!(sent, vec![0, 1, 2, 3], "round {round}");
            assert!(out.gso(), "GSO stays on for other sizes");
            assert_eq!(out.max_seg[1], 1299);
        }
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 4096];
        for _ in 0..8 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(n, 1300);
        }
    }

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
}
