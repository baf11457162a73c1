//! The TUN's offloads (IFF_VNET_HDR with TSO/USO): the virtio header in
//! front of every read and write, super-packets read from the TUN split
//! into segments (`TunReader`), and packets for the TUN coalesced by our
//! GRO (`gro`) and written (`TunWriter`). The UDP side of the offloads
//! (GSO sends, GRO receives) is `net::batch`. The worker above sees plain
//! IP packets.
//!
//! Everything here is allocated once, in the `new` functions; the per-batch
//! paths only fill preallocated buffers.

use super::gro::Coalescer;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tracing::debug;
use tun_rs::{
    SyncDevice, VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN,
};

/// Length of the virtio header in front of every read and write on an
/// offload TUN.
pub const VNET_HDR_LEN: usize = VIRTIO_NET_HDR_LEN;
/// The largest IP packet, and the largest TUN super-packet.
pub const MAX_PACKET: usize = 65535;

const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
