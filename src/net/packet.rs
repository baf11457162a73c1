//! IPv4/IPv6 and UDP header parsing and building for packets read from and
//! written to the TUN device.
//!
//! Parsers borrow from the input and never allocate or panic: every packet
//! they see comes from the kernel on behalf of arbitrary local applications,
//! so any byte sequence must be handled. Checksums of received packets are not
//! verified, because the TUN device hands us locally generated packets that
//! never crossed a wire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// IP protocol numbers of TCP and UDP.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Largest UDP payload that fits in one IPv4 packet built by [`build_ipv4_udp`]
/// (65535 minus the 20-byte IPv4 and 8-byte UDP headers).
pub const MAX_IPV4_UDP_PAYLOAD: usize = u16::MAX as usize - IPV4_MIN_HEADER_LEN - UDP_HEADER_LEN;

/// TTL for packets we synthesize; they are delivered locally through the TUN
/// device, so the usual default is plenty.
const DEFAULT_TTL: u8 = 64;
/// "Don't fragment" flag in the IPv4 flags/fragment-offset field.
const IPV4_FLAG_DF: u16 = 0x4000;
/// "More fragments" flag in the IPv4 flags/fragment-offset field.
const IPV4_FLAG_MF: u16 = 0x2000;
/// Fragment offset mask in the IPv4 flags/fragment-offset field.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The fields of an IPv4 header the node needs to route and intercept packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number of the payload (17 = UDP).
    pub protocol: u8,
    /// Header length in bytes, options included (IHL * 4).
    pub header_len: usize,
    /// Total packet length from the header; bytes past it in the buffer are padding.
    pub total_len: usize,
    /// True if this is any fragment of a fragmented datagram (MF set or offset
    /// non-zero); such packets carry no complete transport payload.
    pub is_fragment: bool,
}

/// A UDP datagram carried in a single, unfragmented IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// UDP payload, as delimited by the UDP length field.
    pub payload: &'a [u8],
}

/// Reads a big-endian u16 at `at`, or `None` if the buffer is too short.
fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Reads an IPv4 address at `at`, or `None` if the buffer is too short.
fn ipv4_at(buf: &[u8], at: usize) -> Option<Ipv4Addr> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(bytes))
}

/// Reads an IPv6 address at `at`, or `None` if the buffer is too short.
fn ipv6_at(buf: &[u8], at: usize) -> Option<Ipv6Addr> {
    let bytes: [u8; 16] = buf.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(Ipv6Addr::from(bytes))
}

/// IP version (4 or 6) from the first nibble, so callers can dispatch a TUN
/// packet without parsing it; `None` for empty buffers and other versions.
pub fn ip_version(pkt: &[u8]) -> Option<u8> {
    match pkt.first()? >> 4 {
        v @ (4 | 6) => Some(v),
        _ => None,
    }
}

/// Parses and validates an IPv4 header.
///
/// Returns `None` unless the version is 4, IHL >= 5, the header fits in
/// `pkt`, and `header_len <= total_len <= pkt.len()`.
pub fn parse_ipv4(pkt: &[u8]) -> Option<Ipv4Header> {
    let first = *pkt.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN || header_len > pkt.len() {
        return None;
    }
    let total_len = usize::from(be16(pkt, 2)?);
    if total_len < header_len || total_len > pkt.len() {
        return None;
    }
    let frag = be16(pkt, 6)?;
    Some(Ipv4Header {
        src: ipv4_at(pkt, 12)?,
        dst: ipv4_at(pkt, 16)?,
        protocol: *pkt.get(9)?,
        header_len,
        total_len,
        is_fragment: frag & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK) != 0,
    })
}

/// Destination address of an IPv4 or IPv6 packet, for routing TUN packets to
/// peers. IPv6 uses the fixed 40-byte header only.
pub fn destination(pkt: &[u8]) -> Option<IpAddr> {
    match ip_version(pkt)? {
        4 => parse_ipv4(pkt).map(|h| IpAddr::V4(h.dst)),
        _ if pkt.len() >= IPV6_HEADER_LEN => ipv6_at(pkt, 24).map(IpAddr::V6),
        _ => None,
    }
}

/// Source address of an IPv4 or IPv6 packet. IPv6 uses the fixed 40-byte
/// header only.
pub fn source(pkt: &[u8]) -> Option<IpAddr> {
    match ip_version(pkt)? {
        4 => parse_ipv4(pkt).map(|h| IpAddr::V4(h.src)),
        _ if pkt.len() >= IPV6_HEADER_LEN => ipv6_at(pkt, 8).map(IpAddr::V6),
        _ => None,
    }
}

/// Parses an unfragmented IPv4/UDP packet, borrowing the payload.
///
/// Returns `None` for non-UDP packets, fragments (the payload would be
/// incomplete), or a UDP length that is below 8 or overruns the IP payload.
pub fn parse_ipv4_udp(pkt: &[u8]) -> Option<UdpDatagram<'_>> {
    let ip = parse_ipv4(pkt)?;
    if ip.protocol != IPPROTO_UDP || ip.is_fragment {
        return None;
    }
    // parse_ipv4 guarantees header_len <= total_len <= pkt.len().
    let segment = pkt.get(ip.header_len..ip.total_len)?;
    let src_port = be16(segment, 0)?;
    let dst_port = be16(segment, 2)?;
    let udp_len = usize::from(be16(segment, 4)?);
    if udp_len < UDP_HEADER_LEN {
        return None;
    }
    let payload = segment.get(UDP_HEADER_LEN..udp_len)?;
    Some(UdpDatagram {
        src: SocketAddrV4::new(ip.src, src_port),
        dst: SocketAddrV4::new(ip.dst, dst_port),
        payload,
    })
}

/// Builds an IPv4/UDP packet into `out` (cleared first), reusing its buffer
/// so the hot path does not allocate once `out` has grown.
///
/// The IPv4 header has TTL 64, DF set, ID 0 (allowed for atomic datagrams by
/// RFC 6864) and a correct header checksum; the UDP checksum covers the
/// pseudo-header. A payload larger than [`MAX_IPV4_UDP_PAYLOAD`] cannot be
/// expressed in the 16-bit length fields, so `out` is left empty instead.
pub fn build_ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if payload.len() > MAX_IPV4_UDP_PAYLOAD {
        return;
    }
    let udp_len = UDP_HEADER_LEN + payload.len();
    let total_len = IPV4_MIN_HEADER_LEN + udp_len;
    // Both fit in u16 because of the length check above.
    let udp_len16 = udp_len as u16;
    let total_len16 = total_len as u16;
    out.reserve(total_len);

    let src_ip = src.ip().octets();
    let dst_ip = dst.ip().octets();

    // IPv4 header.
    out.push(0x45); // version 4, IHL 5
    out.push(0); // DSCP/ECN
    out.extend_from_slice(&total_len16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // identification
    out.extend_from_slice(&IPV4_FLAG_DF.to_be_bytes());
    out.push(DEFAULT_TTL);
    out.push(IPPROTO_UDP);
    out.extend_from_slice(&0u16.to_be_bytes()); // header checksum placeholder
    out.extend_from_slice(&src_ip);
    out.extend_from_slice(&dst_ip);
    let ip_csum = internet_checksum(&out[..IPV4_MIN_HEADER_LEN]);
    out[10..12].copy_from_slice(&ip_csum.to_be_bytes());

    // UDP header and payload.
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&udp_len16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // checksum placeholder
    out.extend_from_slice(payload);

    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src_ip);
    pseudo[4..8].copy_from_slice(&dst_ip);
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&udp_len16.to_be_bytes());
    let sum = ones_complement_sum(&pseudo, 0);
    let sum = ones_complement_sum(&out[IPV4_MIN_HEADER_LEN..], sum);
    let mut udp_csum = !fold(sum);
    // RFC 768: a computed checksum of zero is sent as all ones, since zero
    // means "no checksum".
    if udp_csum == 0 {
        udp_csum = 0xffff;
    }
    out[IPV4_MIN_HEADER_LEN + 6..IPV4_MIN_HEADER_LEN + 8].copy_from_slice(&udp_csum.to_be_bytes());
}

/// A UDP datagram inside an IPv6 packet with no extension headers (what a
/// resolver query from a local application looks like).
pub fn parse_ipv6_udp(pkt: &[u8]) -> Option<(SocketAddrV6, SocketAddrV6, &[u8])> {
    if ip_version(pkt)? != 6 || *pkt.get(6)? != IPPROTO_UDP {
        return None;
    }
    let payload_len = be16(pkt, 4)? as usize;
    let end = IPV6_HEADER_LEN.checked_add(payload_len)?;
    let (src, dst) = (ipv6_at(pkt, 8)?, ipv6_at(pkt, 24)?);
    let udp = pkt.get(IPV6_HEADER_LEN..end)?;
    let udp_len = be16(udp, 4)? as usize;
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return None;
    }
    let sport = be16(udp, 0)?;
    let dport = be16(udp, 2)?;
    Some((
        SocketAddrV6::new(src, sport, 0, 0),
        SocketAddrV6::new(dst, dport, 0, 0),
        &udp[UDP_HEADER_LEN..udp_len],
    ))
}

/// Builds an IPv6/UDP packet (hop limit 64, checksum over the pseudo-header).
pub fn build_ipv6_udp(src: SocketAddrV6, dst: SocketAddrV6, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let udp_len = UDP_HEADER_LEN + payload.len();
    let Ok(udp_len16) = u16::try_from(udp_len) else {
        return;
    };
    out.reserve(IPV6_HEADER_LEN + udp_len);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&udp_len16.to_be_bytes());
    out.push(IPPROTO_UDP);
    out.push(DEFAULT_TTL);
    out.extend_from_slice(&src.ip().octets());
    out.extend_from_slice(&dst.ip().octets());
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&udp_len16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(payload);
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&src.ip().octets());
    pseudo[16..32].copy_from_slice(&dst.ip().octets());
    pseudo[32..36].copy_from_slice(&(udp_len as u32).to_be_bytes());
    pseudo[39] = IPPROTO_UDP;
    let sum = ones_complement_sum(&pseudo, 0);
    let sum = ones_complement_sum(&out[IPV6_HEADER_LEN..], sum);
    let mut csum = !fold(sum);
    if csum == 0 {
        csum = 0xffff; // zero is not allowed for UDP over IPv6
    }
    out[IPV6_HEADER_LEN + 6..IPV6_HEADER_LEN + 8].copy_from_slice(&csum.to_be_bytes());
}

/// (source, destination, payload) of a UDP datagram over IPv4 or IPv6.
pub fn parse_udp(pkt: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    match ip_version(pkt)? {
        4 => parse_ipv4_udp(pkt).map(|u| (SocketAddr::V4(u.src), SocketAddr::V4(u.dst), u.payload)),
        _ => parse_ipv6_udp(pkt).map(|(s, d, p)| (SocketAddr::V6(s), SocketAddr::V6(d), p)),
    }
}

/// Builds a UDP packet of the addresses' family (both must match; a mixed
/// pair leaves `out` empty).
pub fn build_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8], out: &mut Vec<u8>) {
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => build_ipv4_udp(s, d, payload, out),
        (SocketAddr::V6(s), SocketAddr::V6(d)) => build_ipv6_udp(s, d, payload, out),
        _ => out.clear(),
    }
}

/// RFC 1071 Internet checksum: the ones' complement of the ones' complement
/// sum of `data` as big-endian 16-bit words (an odd final byte is padded with
/// zero). Verifying a header that contains its checksum yields 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(ones_complement_sum(data, 0))
}

/// Adds `data` to a running ones' complement accumulator.
///
/// Sums 32-bit big-endian words into a u64: since 2^16 ≡ 1 (mod 2^16 - 1),
/// this equals the 16-bit word sum after folding, at half the additions.
/// Chaining calls is only correct when every slice but the last has even
/// length, which holds for the pseudo-header/segment split used here.
fn ones_complement_sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut rest = words.remainder().chunks_exact(2);
    for w in &mut rest {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a wide ones' complement accumulator into 16 bits with end-around carry.
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod v6_tests {
    use super::*;

    #[test]
    fn ipv6_udp_roundtrip_and_checksum() {
        let src: SocketAddrV6 = "[2001:db8:100::12]:5353".parse().unwrap();
        let dst: SocketAddrV6 = "[2001:db8:100::53]:53".parse().unwrap();
        let mut out = Vec::new();
        build_ipv6_udp(src, dst, b"hello dns", &mut out);
        let (s, d, p) = parse_ipv6_udp(&out).unwrap();
        assert_eq!((s, d, p), (src, dst, &b"hello dns"[..]));
        // Verifying the checksum: the sum over pseudo-header + UDP is all ones.
        let mut pseudo = [0u8; 40];
        pseudo[0..16].copy_from_slice(&src.ip().octets());
        pseudo[16..32].copy_from_slice(&dst.ip().octets());
        pseudo[32..36].copy_from_slice(&((out.len() - 40) as u32).to_be_bytes());
        pseudo[39] = IPPROTO_UDP;
        let sum = ones_complement_sum(&out[40..], ones_complement_sum(&pseudo, 0));
        assert_eq!(fold(sum), 0xffff);
        assert_eq!(
            parse_udp(&out).map(|(s, _, _)| s),
            Some(SocketAddr::V6(src))
        );
        assert!(parse_ipv6_udp(&out[..45]).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A DNS query for `example.com` A from 192.168.1.2:53000 to 8.8.8.8:53.
    /// Checksums (IP 0x68fa, UDP 0x7d0a) were computed independently with a
    /// straightforward Python RFC 1071 implementation, not with this module.
    const DNS_QUERY_PKT: [u8; 57] = [
        0x45, 0x00, 0x00, 0x39, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x68, 0xfa, 0xc0, 0xa8, 0x01,
        0x02, 0x08, 0x08, 0x08, 0x08, // IPv4 header
        0xcf, 0x08, 0x00, 0x35, 0x00, 0x25, 0x7d, 0x0a, // UDP header
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DNS header
        0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x03, b'c', b'o', b'm', 0x00, 0x00, 0x01,
        0x00, 0x01, // question
    ];

    fn dns_payload() -> &'static [u8] {
        &DNS_QUERY_PKT[28..]
    }

    #[test]
    fn rfc_header_checksum_vector() {
        // Well-known IPv4 header example (checksum 0xb861).
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&hdr), 0xb861);
        let mut with = hdr;
        with[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(internet_checksum(&with), 0);
    }

    #[test]
    fn checksum_odd_length_and_empty() {
        assert_eq!(internet_checksum(&[]), 0xffff);
        // 0x0102 + 0x0300 = 0x0402 -> !0x0402
        assert_eq!(internet_checksum(&[1, 2, 3]), !0x0402);
        // Carry wraps around: 0xffff + 0x0001 = 0x1_0000 -> 0x0001.
        assert_eq!(internet_checksum(&[0xff, 0xff, 0x00, 0x01]), !0x0001);
    }

    #[test]
    fn build_matches_known_packet() {
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 53000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 53);
        let mut out = Vec::new();
        build_ipv4_udp(src, dst, dns_payload(), &mut out);
        assert_eq!(out.as_slice(), &DNS_QUERY_PKT[..]);
    }

    #[test]
    fn parse_known_packet() {
        let h = parse_ipv4(&DNS_QUERY_PKT).unwrap();
        assert_eq!(h.src, Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(h.dst, Ipv4Addr::new(8, 8, 8, 8));
        assert_eq!(h.protocol, IPPROTO_UDP);
        assert_eq!(h.header_len, 20);
        assert_eq!(h.total_len, 57);
        assert!(!h.is_fragment);

        let d = parse_ipv4_udp(&DNS_QUERY_PKT).unwrap();
        assert_eq!(d.src, "192.168.1.2:53000".parse().unwrap());
        assert_eq!(d.dst, "8.8.8.8:53".parse().unwrap());
        assert_eq!(d.payload, dns_payload());

        assert_eq!(ip_version(&DNS_QUERY_PKT), Some(4));
        assert_eq!(source(&DNS_QUERY_PKT), Some("192.168.1.2".parse().unwrap()));
        assert_eq!(
            destination(&DNS_QUERY_PKT),
            Some("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn verify_udp_checksum_with_pseudo_header() {
        // Summing pseudo-header + UDP segment including its checksum gives 0.
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&DNS_QUERY_PKT[12..16]);
        pseudo[4..8].copy_from_slice(&DNS_QUERY_PKT[16..20]);
        pseudo[9] = IPPROTO_UDP;
        pseudo[10..12].copy_from_slice(&DNS_QUERY_PKT[24..26]);
        let sum = ones_complement_sum(&DNS_QUERY_PKT[20..], ones_complement_sum(&pseudo, 0));
        assert_eq!(!fold(sum), 0);
        assert_eq!(internet_checksum(&DNS_QUERY_PKT[..20]), 0);
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let mut padded = DNS_QUERY_PKT.to_vec();
        padded.extend_from_slice(&[0xaa; 7]);
        let d = parse_ipv4_udp(&padded).unwrap();
        assert_eq!(d.payload, dns_payload());
        assert_eq!(parse_ipv4(&padded).unwrap().total_len, 57);
    }

    #[test]
    fn rejects_malformed() {
        let pkt = DNS_QUERY_PKT;
        // Truncated below total_len.
        assert!(parse_ipv4(&pkt[..56]).is_none());
        assert!(parse_ipv4(&pkt[..19]).is_none());
        assert!(parse_ipv4(&[]).is_none());
        // Wrong version.
        let mut p = pkt;
        p[0] = 0x65;
        assert!(parse_ipv4(&p).is_none());
        // IHL < 5.
        let mut p = pkt;
        p[0] = 0x44;
        assert!(parse_ipv4(&p).is_none());
        // IHL larger than the buffer.
        let mut p = pkt;
        p[0] = 0x4f;
        assert!(parse_ipv4(&p).is_none());
        // total_len < header_len.
        let mut p = pkt;
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(parse_ipv4(&p).is_none());
        // Not UDP.
        let mut p = pkt;
        p[9] = 6;
        assert!(parse_ipv4(&p).is_some());
        assert!(parse_ipv4_udp(&p).is_none());
        // UDP length too small / too large.
        let mut p = pkt;
        p[24..26].copy_from_slice(&7u16.to_be_bytes());
        assert!(parse_ipv4_udp(&p).is_none());
        let mut p = pkt;
        p[24..26].copy_from_slice(&38u16.to_be_bytes());
        assert!(parse_ipv4_udp(&p).is_none());
        // IP payload shorter than a UDP header.
        let mut p = pkt;
        p[2..4].copy_from_slice(&27u16.to_be_bytes());
        assert!(parse_ipv4_udp(&p).is_none());
        // Unknown version nibble.
        assert_eq!(ip_version(&[0x50]), None);
        assert_eq!(destination(&[0x60; 39]), None);
    }

    #[test]
    fn fragments_are_not_udp() {
        // More-fragments set.
        let mut p = DNS_QUERY_PKT;
        p[6] = 0x20;
        p[7] = 0x00;
        assert!(parse_ipv4(&p).unwrap().is_fragment);
        assert!(parse_ipv4_udp(&p).is_none());
        // Non-zero offset, last fragment.
        let mut p = DNS_QUERY_PKT;
        p[6] = 0x00;
        p[7] = 0x10;
        assert!(parse_ipv4(&p).unwrap().is_fragment);
        assert!(parse_ipv4_udp(&p).is_none());
        // DF alone is not a fragment.
        assert!(!parse_ipv4(&DNS_QUERY_PKT).unwrap().is_fragment);
    }

    #[test]
    fn ipv4_options_are_skipped() {
        // IHL 6 with a 4-byte NOP option block.
        let mut p = DNS_QUERY_PKT[..20].to_vec();
        p[0] = 0x46;
        p.extend_from_slice(&[1, 1, 1, 0]);
        p.extend_from_slice(&DNS_QUERY_PKT[20..]);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let d = parse_ipv4_udp(&p).unwrap();
        assert_eq!(d.payload, dns_payload());
        assert_eq!(parse_ipv4(&p).unwrap().header_len, 24);
    }

    #[test]
    fn ipv6_addresses() {
        let mut p = [0u8; 40];
        p[0] = 0x60;
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        assert_eq!(ip_version(&p), Some(6));
        assert_eq!(source(&p), Some(IpAddr::V6(src)));
        assert_eq!(destination(&p), Some(IpAddr::V6(dst)));
        assert!(parse_ipv4(&p).is_none());
        assert_eq!(source(&p[..39]), None);
    }

    #[test]
    fn build_reuses_and_clears_buffer() {
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 53);
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000);
        let mut out = vec![0xee; 100];
        build_ipv4_udp(src, dst, b"", &mut out);
        assert_eq!(out.len(), 28);
        let d = parse_ipv4_udp(&out).unwrap();
        assert_eq!((d.src, d.dst, d.payload), (src, dst, &b""[..]));
    }

    #[test]
    fn oversized_payload_leaves_buffer_empty() {
        let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let mut out = vec![1, 2, 3];
        build_ipv4_udp(src, src, &vec![0; MAX_IPV4_UDP_PAYLOAD + 1], &mut out);
        assert!(out.is_empty());
        build_ipv4_udp(src, src, &vec![0; MAX_IPV4_UDP_PAYLOAD], &mut out);
        assert_eq!(out.len(), usize::from(u16::MAX));
        assert_eq!(
            parse_ipv4_udp(&out).unwrap().payload.len(),
            MAX_IPV4_UDP_PAYLOAD
        );
    }

    /// Reference 16-bit-at-a-time RFC 1071 sum, to check the 32-bit fast path.
    fn reference_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for chunk in data.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = ip_version(&bytes);
            let _ = parse_ipv4(&bytes);
            let _ = destination(&bytes);
            let _ = source(&bytes);
            let _ = parse_ipv4_udp(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_ipv4ish(
            ihl in 0u8..16,
            total_len in any::<u16>(),
            udp_len in any::<u16>(),
            frag in any::<u16>(),
            rest in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            // Bias towards inputs that pass the early checks.
            let mut bytes = vec![0x40 | ihl, 0];
            bytes.extend_from_slice(&total_len.to_be_bytes());
            bytes.extend_from_slice(&[0, 0]);
            bytes.extend_from_slice(&frag.to_be_bytes());
            bytes.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]);
            bytes.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            bytes.extend_from_slice(&[0, 53, 0, 53]);
            bytes.extend_from_slice(&udp_len.to_be_bytes());
            bytes.extend_from_slice(&rest);
            for cut in [0, 1, 19, 20, 27, 28, bytes.len()] {
                let b = &bytes[..cut.min(bytes.len())];
                let _ = parse_ipv4(b);
                let _ = parse_ipv4_udp(b);
                let _ = destination(b);
                let _ = source(b);
            }
        }

        #[test]
        fn build_parse_roundtrip(
            src_ip in any::<[u8; 4]>(),
            dst_ip in any::<[u8; 4]>(),
            sport in any::<u16>(),
            dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..=1400),
        ) {
            let src = SocketAddrV4::new(Ipv4Addr::from(src_ip), sport);
            let dst = SocketAddrV4::new(Ipv4Addr::from(dst_ip), dport);
            let mut out = Vec::new();
            build_ipv4_udp(src, dst, &payload, &mut out);
            prop_assert_eq!(out.len(), 28 + payload.len());
            let d = parse_ipv4_udp(&out).unwrap();
            prop_assert_eq!(d.src, src);
            prop_assert_eq!(d.dst, dst);
            prop_assert_eq!(d.payload, &payload[..]);
            let h = parse_ipv4(&out).unwrap();
            prop_assert!(!h.is_fragment);
            prop_assert_eq!(out[8], DEFAULT_TTL);
            prop_assert_eq!(internet_checksum(&out[..20]), 0);
            // UDP checksum verifies over pseudo-header + segment and is never 0.
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&src_ip);
            pseudo[4..8].copy_from_slice(&dst_ip);
            pseudo[9] = IPPROTO_UDP;
            pseudo[10..12].copy_from_slice(&out[24..26]);
            let mut whole = pseudo.to_vec();
            whole.extend_from_slice(&out[20..]);
            prop_assert_eq!(reference_checksum(&whole), 0);
            prop_assert_ne!(&out[26..28], &[0u8, 0][..]);
        }

        #[test]
        fn fast_checksum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert_eq!(internet_checksum(&data), reference_checksum(&data));
        }
    }
}
