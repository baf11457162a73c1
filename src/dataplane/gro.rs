//! GRO for TUN writes, our own: IP packets bound for an offload TUN are
//! coalesced as they are queued, consecutive TCP segments of one flow (and
//! UDP datagrams of one flow where the TUN has USO) into one super-packet
//! with a virtio header (GSO type, `gso_size`, `NEEDS_CSUM` and the
//! pseudo-header checksum where the kernel finishes the sum). Everything
//! else goes out as it came, behind an all-zero header.
//!
//! The rules are the kernel's GRO rules (`inet_gro_receive`,
//! `ipv6_gro_receive`, `tcp_gro_receive`, `udp_gro_receive_segment`), kept
//! to what a virtio header can describe and the TUN reader's split
//! (`vnet::TunReader`, tun-rs's `gso_split`) gives back byte for byte:
//! - IPv4 without options or fragments, IPv6 without extension headers;
//!   every IP field equal but the lengths, the checksum and (IPv4) the ID,
//!   which counts up by one per segment; valid header and transport
//!   checksums (a bad one is written alone, for the kernel to drop);
//! - TCP: sequence numbers contiguous, ACK (and ECE) only, PSH allowed on
//!   the last segment, the same ack number, window and options; each
//!   payload at most the first one's, and a shorter one ends the packet;
//! - UDP: the same sizes rule, at most `GSO_MAX_SEGMENTS` datagrams (the
//!   kernel refuses more than 128 in one USO packet);
//! - at most `MAX_PACKET` bytes in all.
//!
//! A packet joins only the newest packet of its flow, so a flow's packets
//! keep their order. One copy per packet (whole into a new slot, or its
//! payload onto its flow's super-packet); the slots are allocated once.

use super::vnet::{MAX_PACKET, VNET_HDR_LEN};
use crate::net::batch::GSO_MAX_SEGMENTS;
use crate::net::packet::{IPPROTO_TCP as TCP, IPPROTO_UDP as UDP};

const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_ECE: u8 = 0x40;

/// The transport flow a packet belongs to: version, protocol, addresses,
/// ports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Flow {
    v6: bool,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u8; 4],
}

/// What a TCP or UDP packet offers: its flow, and whether it may be
/// coalesced at all (the rules that look at one packet only).
#[derive(Clone, Copy, Debug)]
struct Seg {
    flow: Flow,
    /// IP header length.
    l3: usize,
    /// Transport header length.
    l4: usize,
    candidate: bool,
}

impl Seg {
    fn payload(&self, pkt: &[u8]) -> usize {
        pkt.len() - self.l3 - self.l4
    }
}

/// One packet (plain or coalesced) waiting in a slot.
#[derive(Clone, Copy, Debug)]
struct Item {
    /// Bytes of IP packet in the slot (behind the header room).
    len: usize,
    /// TCP/UDP packets only: their flow joins them up.
    seg: Option<Seg>,
    /// Still takes segments.
    open: bool,
    /// Segments in it.
    segs: usize,
    /// The payload size of every segment but the last.
    gso_size: usize,
    /// TCP: the next segment's sequence number.
    next_seq: u32,
}

/// Queues IP packets for the TUN in preallocated slots, coalescing as
/// they come; `finish` then writes the headers, and `packet(i)` gives each
/// slot's bytes to write (virtio header included on an offload TUN).
pub struct Coalescer {
    /// Virtio headers and coalescing (an IFF_VNET_HDR TUN); false: plain
    /// packets, one per slot.
    offload: bool,
    /// The TUN takes UDP_L4 (USO) super-packets.
    uso: bool,
    buf: Vec<u8>,
    items: Vec<Item>,
    slots: usize,
}

/// Room in a slot: the virtio header and the largest IP packet.
const STRIDE: usize = VNET_HDR_LEN + MAX_PACKET;

impl Coalescer {
    pub fn new(slots: usize, offload: bool, uso: bool) -> Coalescer {
        Coalescer {
            offload,
            uso: offload && uso,
            buf: vec![0u8; slots * STRIDE],
            items: Vec::with_capacity(slots),
            slots,
        }
    }

    /// Slots still free: at least this many more packets are taken.
    pub fn room(&self) -> usize {
        self.slots - self.items.len()
    }

    /// Packets (plain or coalesced) queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `pkt`, onto its flow's newest packet where the rules allow,
    /// else into a free slot. False (nothing queued) if it is empty, larger
    /// than an IP packet, or needs a slot and none is free.
    pub fn push(&mut self, pkt: &[u8]) -> bool {
        if pkt.is_empty() || pkt.len() > MAX_PACKET {
            return false;
        }
        let seg = if self.offload {
            parse(pkt, self.uso)
        } else {
            None
        };
        if let Some(seg) = seg {
            if let Some(i) = self
                .items
                .iter()
                .rposition(|it| it.seg.is_some_and(|s| s.flow == seg.flow))
            {
                if self.append(i, pkt, seg) {
                    return true;
                }
            }
        }
        if self.items.len() == self.slots {
            return false;
        }
        let at = self.items.len() * STRIDE + VNET_HDR_LEN;
        self.buf[at..at + pkt.len()].copy_from_slice(pkt);
        let mut item = Item {
            len: pkt.len(),
            seg,
            open: false,
            segs: 1,
            gso_size: 0,
            next_seq: 0,
        };
        if let Some(s) = seg.filter(|s| s.candidate) {
            item.gso_size = s.payload(pkt);
            item.next_seq = tcp_seq(pkt, s).wrapping_add(item.gso_size as u32);
            item.open = !(s.flow.proto == TCP && pkt[s.l3 + 13] & TCP_PSH != 0);
        }
        self.items.push(item);
        true
    }

    /// Appends `pkt` (of flow `seg`) to item `i` if the rules allow.
    fn append(&mut self, i: usize, pkt: &[u8], seg: Seg) -> bool {
        let item = self.items[i];
        let Some(head_seg) = item.seg else {
            return false;
        };
        if !item.open || !seg.candidate {
            return false;
        }
        let payload = seg.payload(pkt);
        if payload > item.gso_size
            || item.len + payload > MAX_PACKET
            || (seg.flow.proto == UDP && item.segs >= GSO_MAX_SEGMENTS)
            || seg.l4 != head_seg.l4
        {
            return false;
        }
        let at = i * STRIDE + VNET_HDR_LEN;
        let head = &self.buf[at..at + item.len];
        if !ip_fields_match(head, pkt, seg, item.segs) {
            return false;
        }
        if seg.flow.proto == TCP
            && (tcp_seq(pkt, seg) != item.next_seq || !tcp_fields_match(head, pkt, seg))
        {
            return false;
        }
        if item.segs == 1 && !transport_checksum_ok(head, head_seg) {
            self.items[i].open = false;
            return false;
        }
        if !transport_checksum_ok(pkt, seg) {
            return false;
        }
        let data = &pkt[seg.l3 + seg.l4..];
        self.buf[at + item.len..at + item.len + payload].copy_from_slice(data);
        let psh = seg.flow.proto == TCP && pkt[seg.l3 + 13] & TCP_PSH != 0;
        if psh {
            self.buf[at + seg.l3 + 13] |= TCP_PSH;
        }
        let it = &mut self.items[i];
        it.len += payload;
        it.segs += 1;
        it.next_seq = it.next_seq.wrapping_add(payload as u32);
        it.open = !psh && payload == it.gso_size && it.len < MAX_PACKET;
        true
    }

    /// Writes the virtio header of every slot, and the IP and transport
    /// headers of every coalesced packet (lengths, IPv4 header checksum,
    /// the pseudo-header sum where the kernel completes the checksum).
    /// Call once, after the last `push` and before `packet`.
    pub fn finish(&mut self) {
        if !self.offload {
            return;
        }
        for (i, item) in self.items.iter().enumerate() {
            let slot = &mut self.buf[i * STRIDE..i * STRIDE + VNET_HDR_LEN + item.len];
            let (hdr, pkt) = slot.split_at_mut(VNET_HDR_LEN);
            hdr.fill(0);
            let Some(seg) = item.seg.filter(|_| item.segs > 1) else {
                continue;
            };
            let l4_len = (item.len - seg.l3) as u16;
            if seg.flow.v6 {
                pkt[4..6].copy_from_slice(&l4_len.to_be_bytes());
            } else {
                pkt[2..4].copy_from_slice(&(item.len as u16).to_be_bytes());
                pkt[10..12].fill(0);
                let sum = !tun_rs::checksum(&pkt[..seg.l3], 0);
                pkt[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            let (gso_type, csum_offset) = match (seg.flow.proto, seg.flow.v6) {
                (TCP, false) => (GSO_TCPV4, 16),
                (TCP, true) => (GSO_TCPV6, 16),
                _ => (GSO_UDP_L4, 6),
            };
            if seg.flow.proto == UDP {
                pkt[seg.l3 + 4..seg.l3 + 6].copy_from_slice(&l4_len.to_be_bytes());
            }
            let psum = tun_rs::checksum(&[], pseudo_header(seg, l4_len));
            let at = seg.l3 + csum_offset;
            pkt[at..at + 2].copy_from_slice(&psum.to_be_bytes());
            // struct virtio_net_hdr, native byte order.
            hdr[0] = NEEDS_CSUM;
            hdr[1] = gso_type;
            hdr[2..4].copy_from_slice(&((seg.l3 + seg.l4) as u16).to_ne_bytes());
            hdr[4..6].copy_from_slice(&(item.gso_size as u16).to_ne_bytes());
            hdr[6..8].copy_from_slice(&(seg.l3 as u16).to_ne_bytes());
            hdr[8..10].copy_from_slice(&(csum_offset as u16).to_ne_bytes());
        }
    }

    /// Slot `i`'s bytes to write: after `finish`, the virtio header (on an
    /// offload TUN) and the packet.
    pub fn packet(&self, i: usize) -> &[u8] {
        let at = i * STRIDE + if self.offload { 0 } else { VNET_HDR_LEN };
        &self.buf[at..i * STRIDE + VNET_HDR_LEN + self.items[i].len]
    }

    /// Forgets every queued packet.
    pub fn clear(&mut self) {
        self.items.clear();
    }
}

/// The flow of a TCP or UDP packet and whether the one-packet rules let it
/// coalesce; None for anything else (other protocols, fragments past the
/// first, extension headers, malformed).
fn parse(pkt: &[u8], uso: bool) -> Option<Seg> {
    let mut flow = Flow {
        v6: false,
        proto: 0,
        src: [0; 16],
        dst: [0; 16],
        ports: [0; 4],
    };
    let (l3, mut candidate) = match pkt.first()? >> 4 {
        4 => {
            let l3 = usize::from(pkt[0] & 0x0f) * 4;
            if l3 < 20 || pkt.len() < l3 + 4 {
                return None;
            }
            let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
            if frag & 0x1fff != 0 {
                return None; // a later fragment: no ports
            }
            flow.proto = pkt[9];
            flow.src[..4].copy_from_slice(&pkt[12..16]);
            flow.dst[..4].copy_from_slice(&pkt[16..20]);
            let ok = l3 == 20
                && usize::from(u16::from_be_bytes([pkt[2], pkt[3]])) == pkt.len()
                && frag & 0x2000 == 0
                && tun_rs::checksum(&pkt[..20], 0) == 0xffff;
            (l3, ok)
        }
        6 => {
            if pkt.len() < 44 {
                return None;
            }
            flow.v6 = true;
            flow.proto = pkt[6];
            flow.src.copy_from_slice(&pkt[8..24]);
            flow.dst.copy_from_slice(&pkt[24..40]);
            let ok = usize::from(u16::from_be_bytes([pkt[4], pkt[5]])) == pkt.len() - 40;
            (40, ok)
        }
        _ => return None,
    };
    flow.ports.copy_from_slice(&pkt[l3..l3 + 4]);
    let l4 = match flow.proto {
        TCP => {
            let l4 = pkt.get(l3 + 12).map_or(0, |b| usize::from(b >> 4) * 4);
            let flags = pkt.get(l3 + 13).map_or(0, |f| f & !TCP_PSH);
            candidate &= (20..=60).contains(&l4)
                && pkt.len() > l3 + l4
                && (flags == TCP_ACK || flags == TCP_ACK | TCP_ECE);
            l4.max(20)
        }
        UDP => {
            let ulen = pkt
                .get(l3 + 4..l3 + 6)
                .map(|b| u16::from_be_bytes([b[0], b[1]]));
            let csum = pkt
                .get(l3 + 6..l3 + 8)
                .map(|b| u16::from_be_bytes([b[0], b[1]]));
            candidate &= uso
                && pkt.len() > l3 + 8
                && ulen.map(usize::from) == Some(pkt.len() - l3)
                && csum != Some(0);
            8
        }
        _ => return None,
    };
    Some(Seg {
        flow,
        l3,
        l4,
        candidate: candidate && pkt.len() > l3 + l4,
    })
}

/// The IP fields that must match between a flow's head packet and the
/// packet that would be its segment `n` (0-based): all but the lengths and
/// the checksum; the IPv4 ID must be the head's plus `n`.
fn ip_fields_match(head: &[u8], pkt: &[u8], seg: Seg, n: usize) -> bool {
    if seg.flow.v6 {
        return head[..4] == pkt[..4] && head[6..8] == pkt[6..8];
    }
    let id = u16::from_be_bytes([head[4], head[5]]).wrapping_add(n as u16);
    head[..2] == pkt[..2] && head[6..10] == pkt[6..10] && pkt[4..6] == id.to_be_bytes()
}

/// The TCP fields that must match: ack number, data offset, flags but PSH,
/// window, urgent pointer and options.
fn tcp_fields_match(head: &[u8], pkt: &[u8], seg: Seg) -> bool {
    let (h, p) = (
        &head[seg.l3..seg.l3 + seg.l4],
        &pkt[seg.l3..seg.l3 + seg.l4],
    );
    h[8..13] == p[8..13]
        && h[13] & !TCP_PSH == p[13] & !TCP_PSH
        && h[14..16] == p[14..16]
        && h[18..] == p[18..]
}

fn tcp_seq(pkt: &[u8], seg: Seg) -> u32 {
    if seg.flow.proto != TCP {
        return 0;
    }
    let s = &pkt[seg.l3 + 4..seg.l3 + 8];
    u32::from_be_bytes([s[0], s[1], s[2], s[3]])
}

/// The unfolded pseudo-header sum of flow `seg` for a transport length of
/// `l4_len`.
fn pseudo_header(seg: Seg, l4_len: u16) -> u64 {
    let n = if seg.flow.v6 { 16 } else { 4 };
    let sum = tun_rs::checksum_no_fold(&seg.flow.src[..n], 0);
    let sum = tun_rs::checksum_no_fold(&seg.flow.dst[..n], sum);
    let len = l4_len.to_be_bytes();
    tun_rs::checksum_no_fold(&[0, seg.flow.proto, len[0], len[1]], sum)
}

/// The transport checksum of a whole packet is right.
fn transport_checksum_ok(pkt: &[u8], seg: Seg) -> bool {
    let l4_len = (pkt.len() - seg.l3) as u16;
    tun_rs::checksum(&pkt[seg.l3..], pseudo_header(seg, l4_len)) == 0xffff
}

/// A TCP or UDP packet for `build` to make: tests, benches and the fuzz
/// target feed the coalescer with these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    pub v6: bool,
    pub udp: bool,
    /// Picks the source port (4000 + flow): one flow per value.
    pub flow: u8,
    /// IPv4 identification.
    pub id: u16,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP flags (ACK is 0x10).
    pub flags: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// TCP options: this many 4-byte words (NOP, NOP, timestamp-like
    /// bytes), each word's last byte the value.
    pub options: u8,
    /// Leave the transport checksum wrong.
    pub bad_checksum: bool,
}

/// Builds the packet `spec` describes, 198.18.0.2 -> 198.18.0.1 (or
/// 2001:db8:1::2 -> 2001:db8:1::1), port 4000 + flow -> 5001, with
/// `payload`, into `out` (cleared first); DF set, checksums right unless
/// `bad_checksum`.
pub fn build(spec: &Spec, payload: &[u8], out: &mut Vec<u8>) {
    let l3 = if spec.v6 { 40 } else { 20 };
    let opts = usize::from(spec.options.min(10)) * 4;
    let l4 = if spec.udp { 8 } else { 20 + opts };
    let len = l3 + l4 + payload.len();
    out.clear();
    out.resize(l3 + l4, 0);
    let proto = if spec.udp { UDP } else { TCP };
    let (src, dst): (&[u8], &[u8]) = if spec.v6 {
        (
            &[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        )
    } else {
        (&[198, 18, 0, 2], &[198, 18, 0, 1])
    };
    if spec.v6 {
        out[0] = 0x60 | spec.tos >> 4;
        out[1] = spec.tos << 4;
        out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        out[6] = proto;
        out[7] = spec.ttl;
        out[8..24].copy_from_slice(src);
        out[24..40].copy_from_slice(dst);
    } else {
        out[0] = 0x45;
        out[1] = spec.tos;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        out[4..6].copy_from_slice(&spec.id.to_be_bytes());
        out[6] = 0x40; // DF
        out[8] = spec.ttl;
        out[9] = proto;
        out[12..16].copy_from_slice(src);
        out[16..20].copy_from_slice(dst);
        let sum = !tun_rs::checksum(&out[..20], 0);
        out[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let t = &mut out[l3..];
    t[0..2].copy_from_slice(&(4000 + u16::from(spec.flow)).to_be_bytes());
    t[2..4].copy_from_slice(&5001u16.to_be_bytes());
    if spec.udp {
        t[4..6].copy_from_slice(&((len - l3) as u16).to_be_bytes());
    } else {
        t[4..8].copy_from_slice(&spec.seq.to_be_bytes());
        t[8..12].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        t[12] = ((l4 / 4) as u8) << 4;
        t[13] = spec.flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        for w in t[20..l4].chunks_mut(4) {
            w.copy_from_slice(&[1, 1, 8, spec.options]);
        }
    }
    out.extend_from_slice(payload);
    let mut flow = Flow {
        v6: spec.v6,
        proto,
        src: [0; 16],
        dst: [0; 16],
        ports: [0; 4],
    };
    flow.src[..src.len()].copy_from_slice(src);
    flow.dst[..dst.len()].copy_from_slice(dst);
    let seg = Seg {
        flow,
        l3,
        l4,
        candidate: true,
    };
    let at = l3 + if spec.udp { 6 } else { 16 };
    let mut sum = !tun_rs::checksum(&out[l3..], pseudo_header(seg, (len - l3) as u16));
    if spec.udp && sum == 0 {
        sum = 0xffff;
    }
    if spec.bad_checksum {
        sum = sum.wrapping_add(1).max(1);
    }
    out[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::vnet::TunReader;
    use proptest::prelude::*;

    const MSS: usize = 1388;

    fn tcp(seq: u32, id: u16) -> Spec {
        Spec {
            id,
            seq,
            flags: TCP_ACK,
            ttl: 64,
            ..Spec::default()
        }
    }

    fn pkt(spec: &Spec, len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len)
            .map(|i| (i as u32 ^ spec.seq ^ u32::from(spec.id)) as u8)
            .collect();
        let mut out = Vec::new();
        build(spec, &payload, &mut out);
        out
    }

    /// An in-order TCP stream of `n` segments of `len` bytes.
    fn stream(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|k| pkt(&tcp((k * len) as u32, k as u16), len))
            .collect()
    }

    /// Coalesces `pkts` (offload, USO) and returns what would be written.
    fn coalesce(pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut c = Coalescer::new(128, true, true);
        for p in pkts {
            assert!(c.push(p));
        }
        c.finish();
        (0..c.len()).map(|i| c.packet(i).to_vec()).collect()
    }

    /// The split of each written packet, as the TUN reader does it.
    fn split(written: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut r = TunReader::new(true, VNET_HDR_LEN, 0, 128);
        let mut out = Vec::new();
        for w in written {
            let mut w = w.clone();
            let n = r.plan(&mut w);
            assert!(n > 0, "the reader refused a written packet");
            assert_eq!(r.place_from(&mut w, 0), n);
            out.extend((0..n).map(|i| r.packet(i).to_vec()));
        }
        out
    }

    fn hdr(written: &[u8]) -> tun_rs::VirtioNetHdr {
        tun_rs::VirtioNetHdr::decode(written).unwrap()
    }

    /// Completes a written super-packet's checksum as the kernel does for
    /// NEEDS_CSUM (sum from csum_start, seeded with the stored pseudo-header
    /// sum) and checks the result is the whole packet's right checksum.
    fn kernel_checksum_ok(written: &[u8]) -> bool {
        let h = hdr(written);
        let mut p = written[VNET_HDR_LEN..].to_vec();
        let (start, at) = (
            usize::from(h.csum_start),
            usize::from(h.csum_start + h.csum_offset),
        );
        let seed = u16::from_be_bytes([p[at], p[at + 1]]);
        p[at..at + 2].fill(0);
        let sum = !tun_rs::checksum(&p[start..], u64::from(seed));
        p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        parse(&p, true).is_some_and(|s| transport_checksum_ok(&p, s))
    }

    #[test]
    fn in_order_segments_become_one_super_packet() {
        let pkts = stream(10, MSS);
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 1);
        let h = hdr(&out[0]);
        assert_eq!(
            (
                h.flags,
                h.gso_type,
                h.gso_size,
                h.hdr_len,
                h.csum_start,
                h.csum_offset
            ),
            (NEEDS_CSUM, GSO_TCPV4, MSS as u16, 40, 20, 16)
        );
        assert_eq!(out[0].len(), VNET_HDR_LEN + 40 + 10 * MSS);
        assert!(kernel_checksum_ok(&out[0]));
        assert_eq!(split(&out), pkts);
    }

    #[test]
    fn a_short_last_segment_and_psh_end_the_super_packet() {
        let mut pkts = stream(3, MSS);
        let mut last = tcp(3 * MSS as u32, 3);
        last.flags |= TCP_PSH;
        pkts.push(pkt(&last, 100));
        pkts.push(pkt(&tcp(3 * MSS as u32 + 100, 4), MSS));
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 2, "the PSH segment closes the first");
        assert_eq!(out[0].len(), VNET_HDR_LEN + 40 + 3 * MSS + 100);
        assert_eq!(out[0][VNET_HDR_LEN + 20 + 13], TCP_ACK | TCP_PSH);
        assert_eq!(split(&out), pkts);
        // Shorter then full size: two packets.
        let pkts = vec![
            pkt(&tcp(0, 0), MSS),
            pkt(&tcp(MSS as u32, 1), 500),
            pkt(&tcp(MSS as u32 + 500, 2), 500),
        ];
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 2);
        assert_eq!(split(&out), pkts);
    }

    #[test]
    fn gaps_flag_changes_and_field_differences_are_refused() {
        let base = |k: u32| tcp(k * MSS as u32, k as u16);
        let mut cases: Vec<(&str, Spec)> = vec![
            (
                "sequence gap",
                Spec {
                    seq: 2 * MSS as u32 + 1,
                    ..base(1)
                },
            ),
            ("IP ID not counting up", Spec { id: 7, ..base(1) }),
            ("TTL", Spec { ttl: 63, ..base(1) }),
            ("TOS", Spec { tos: 4, ..base(1) }),
            (
                "FIN",
                Spec {
                    flags: TCP_ACK | 0x01,
                    ..base(1)
                },
            ),
            (
                "SYN",
                Spec {
                    flags: TCP_ACK | 0x02,
                    ..base(1)
                },
            ),
            (
                "URG",
                Spec {
                    flags: TCP_ACK | 0x20,
                    ..base(1)
                },
            ),
            (
                "CWR",
                Spec {
                    flags: TCP_ACK | 0x80,
                    ..base(1)
                },
            ),
            (
                "options",
                Spec {
                    options: 3,
                    ..base(1)
                },
            ),
            ("other flow", Spec { flow: 1, ..base(1) }),
            (
                "UDP, same ports",
                Spec {
                    udp: true,
                    ..base(1)
                },
            ),
            (
                "IPv6",
                Spec {
                    v6: true,
                    ..base(1)
                },
            ),
            (
                "bad checksum",
                Spec {
                    bad_checksum: true,
                    ..base(1)
                },
            ),
        ];
        cases.push(("retransmit", Spec { seq: 0, ..base(1) }));
        for (what, second) in cases {
            let pkts = vec![pkt(&base(0), MSS), pkt(&second, MSS)];
            let out = coalesce(&pkts);
            assert_eq!(out.len(), 2, "{what}: coalesced");
            for o in &out {
                assert_eq!(o[..VNET_HDR_LEN], [0; VNET_HDR_LEN], "{what}");
            }
            assert_eq!(split(&out), pkts, "{what}");
        }
        // A bad head is written alone; the next segment starts anew.
        let head = Spec {
            bad_checksum: true,
            ..base(0)
        };
        let pkts = vec![pkt(&head, MSS), pkt(&base(1), MSS), pkt(&base(2), MSS)];
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 2, "the bad head alone, then 1 + 2");
        assert_eq!(out[0][VNET_HDR_LEN..], pkts[0][..]);
        assert_eq!(hdr(&out[1]).gso_type, GSO_TCPV4);
        assert_eq!(split(&out), pkts);
        // Bigger after smaller, and a pure ACK, are not joined either.
        let pkts = vec![
            pkt(&base(0), 500),
            pkt(&tcp(500, 1), MSS),
            pkt(&tcp(500 + MSS as u32, 2), 0),
        ];
        assert_eq!(coalesce(&pkts).len(), 3);
    }

    #[test]
    fn a_refused_packet_keeps_its_flow_in_order() {
        // 0, 1, FIN-ish 2 (refused), 3: 3 must not join 0+1 ahead of 2.
        let mut pkts = stream(2, MSS);
        let fin = Spec {
            flags: TCP_ACK | 0x01,
            ..tcp(2 * MSS as u32, 2)
        };
        pkts.push(pkt(&fin, MSS));
        pkts.push(pkt(&tcp(3 * MSS as u32, 3), MSS));
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 3);
        assert_eq!(split(&out), pkts);
    }

    #[test]
    fn interleaved_flows_and_versions_coalesce_separately() {
        let mut pkts = Vec::new();
        for k in 0..6u32 {
            for (flow, v6) in [(0, false), (1, false), (0, true)] {
                let s = Spec {
                    flow,
                    v6,
                    ..tcp(k * MSS as u32, k as u16)
                };
                pkts.push(pkt(&s, MSS));
            }
        }
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 3);
        assert_eq!(hdr(&out[2]).gso_type, GSO_TCPV6);
        assert_eq!(hdr(&out[2]).csum_start, 40);
        assert!(out.iter().all(|o| kernel_checksum_ok(o)));
        let back = split(&out);
        for (i, flow) in back.chunks(6).enumerate() {
            let want: Vec<_> = pkts.iter().skip(i).step_by(3).cloned().collect();
            assert_eq!(flow, &want[..]);
        }
    }

    /// `n` UDP datagrams of one flow, `len` payload bytes each.
    fn udp_train(n: u16, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|k| {
                let spec = Spec {
                    udp: true,
                    id: k,
                    ttl: 64,
                    ..Spec::default()
                };
                pkt(&spec, len)
            })
            .collect()
    }

    #[test]
    fn udp_coalesces_only_with_uso() {
        let pkts = udp_train(5, 1000);
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 1);
        let h = hdr(&out[0]);
        assert_eq!(
            (h.gso_type, h.gso_size, h.hdr_len, h.csum_offset),
            (GSO_UDP_L4, 1000, 28, 6)
        );
        assert!(kernel_checksum_ok(&out[0]));
        assert_eq!(split(&out), pkts);
        let mut c = Coalescer::new(8, true, false);
        for p in &pkts {
            assert!(c.push(p));
        }
        assert_eq!(c.len(), 5, "no USO: one write each");
    }

    #[test]
    fn udp_trains_stop_at_the_segment_limit() {
        let pkts = udp_train(100, 100);
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 2);
        assert_eq!(split(&out), pkts);
    }

    #[test]
    fn nothing_grows_past_64_kib() {
        // 60 x 1388 bytes = 83 KiB: 47 segments fit in the first packet.
        let pkts = stream(60, MSS);
        let out = coalesce(&pkts);
        assert_eq!(out.len(), 2);
        let fits = (MAX_PACKET - 40) / MSS;
        assert_eq!(out[0].len(), VNET_HDR_LEN + 40 + fits * MSS);
        assert!(out.iter().all(|o| o.len() <= VNET_HDR_LEN + MAX_PACKET));
        assert_eq!(split(&out), pkts);
    }

    #[test]
    fn without_offload_packets_go_out_plain_and_alone() {
        let pkts = stream(4, MSS);
        let mut c = Coalescer::new(4, false, false);
        for p in &pkts {
            assert!(c.push(p));
        }
        assert!(!c.push(&pkts[0]), "full");
        assert_eq!(c.room(), 0);
        c.finish();
        let out: Vec<_> = (0..c.len()).map(|i| c.packet(i).to_vec()).collect();
        assert_eq!(out, pkts);
        c.clear();
        assert!(c.is_empty() && c.room() == 4);
    }

    #[test]
    fn odd_packets_pass_through_untouched() {
        let icmp = {
            let mut p = pkt(&tcp(0, 0), 40);
            p[9] = 1;
            p
        };
        let frag = {
            let mut p = pkt(&tcp(0, 0), 40);
            p[6] = 0x20; // MF
            p
        };
        let junk = vec![0x45u8, 0, 0];
        let pkts = vec![icmp, frag, junk, vec![0x60; 10]];
        let mut c = Coalescer::new(8, true, true);
        for p in &pkts {
            assert!(c.push(p));
        }
        assert!(!c.push(&[]));
        assert!(!c.push(&vec![0x45; MAX_PACKET + 1]));
        c.finish();
        for (i, p) in pkts.iter().enumerate() {
            assert_eq!(&c.packet(i)[VNET_HDR_LEN..], &p[..]);
            assert_eq!(c.packet(i)[..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
        }
    }

    /// The flow a packet belongs to, for grouping (None: no ports).
    fn flow_of(p: &[u8]) -> Option<Flow> {
        parse(p, true).map(|s| s.flow)
    }

    /// Stable grouping by flow: each flow's packets in their order.
    fn by_flow(pkts: &[Vec<u8>]) -> Vec<(Option<Flow>, Vec<Vec<u8>>)> {
        let mut groups: Vec<(Option<Flow>, Vec<Vec<u8>>)> = Vec::new();
        for p in pkts {
            let f = flow_of(p);
            match groups.iter_mut().find(|g| g.0 == f) {
                Some(g) => g.1.push(p.clone()),
                None => groups.push((f, vec![p.clone()])),
            }
        }
        groups
    }

    /// One step of a generated packet sequence: which of four flows, how
    /// long, and what (if anything) breaks the flow's rhythm.
    fn step() -> impl Strategy<Value = (usize, usize, u8)> {
        (0..4usize, prop_oneof![4 => Just(MSS), 1 => 1..MSS], 0..40u8)
    }

    proptest! {
        /// split(coalesce(packets)) gives back every packet byte for
        /// byte, each flow in its order.
        #[test]
        fn split_undoes_coalesce(steps in proptest::collection::vec(step(), 1..128)) {
            let flows = [
                Spec { ttl: 64, flags: TCP_ACK, ..Spec::default() },
                Spec { ttl: 64, flags: TCP_ACK, v6: true, options: 3, ..Spec::default() },
                Spec { ttl: 64, udp: true, flow: 2, ..Spec::default() },
                Spec { ttl: 64, udp: true, v6: true, flow: 3, ..Spec::default() },
            ];
            let mut state = flows;
            let mut pkts = Vec::new();
            for (f, len, twist) in steps {
                let mut s = state[f];
                match twist {
                    0 => s.flags |= TCP_PSH,
                    1 => s.seq = s.seq.wrapping_add(1),
                    2 => s.id = s.id.wrapping_add(5),
                    3 => s.ttl = 1,
                    4 => s.bad_checksum = true,
                    5 => s.flags |= 0x01,
                    6 => s.tos = 8,
                    _ => {}
                }
                pkts.push(pkt(&s, len));
                state[f].seq = s.seq.wrapping_add(len as u32);
                state[f].id = s.id.wrapping_add(1);
            }
            let out = coalesce(&pkts);
            prop_assert!(out.len() <= pkts.len());
            prop_assert_eq!(by_flow(&split(&out)), by_flow(&pkts));
        }
    }
}
