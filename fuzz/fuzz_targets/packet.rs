//! IP/UDP headers: `parse_ipv4`, `parse_ipv4_udp`, `parse_ipv6_udp`,
//! `parse_udp`, `destination` and `source` on arbitrary packets, with
//! consistency checks between them, and build/parse round trips; TCP
//! headers through MSS clamping and ICMP fragmentation-needed answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::net::{icmp, mss, packet};
use ntmtun_fuzz::Reader;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    let v = packet::ip_version(data);
    let v4 = packet::parse_ipv4(data);
    if let Some(h) = &v4 {
        assert_eq!(v, Some(4));
        assert!(h.header_len >= packet::IPV4_MIN_HEADER_LEN);
        assert!(h.header_len <= h.total_len && h.total_len <= data.len());
        assert_eq!(packet::source(data), Some(IpAddr::V4(h.src)));
        assert_eq!(packet::destination(data), Some(IpAddr::V4(h.dst)));
    }
    if let Some(u) = packet::parse_ipv4_udp(data) {
        let h = v4.as_ref().expect("IPv4/UDP implies IPv4");
        assert_eq!(h.protocol, packet::IPPROTO_UDP);
        assert!(!h.is_fragment);
        assert_eq!((*u.src.ip(), *u.dst.ip()), (h.src, h.dst));
        assert!(u.payload.len() + packet::UDP_HEADER_LEN <= h.total_len - h.header_len);
    }
    if let Some((s, d, p)) = packet::parse_ipv6_udp(data) {
        assert_eq!(v, Some(6));
        assert!(p.len() + packet::IPV6_HEADER_LEN + packet::UDP_HEADER_LEN <= data.len());
        assert_eq!(packet::source(data), Some(IpAddr::V6(*s.ip())));
        assert_eq!(packet::destination(data), Some(IpAddr::V6(*d.ip())));
    }
    let _ = packet::parse_udp(data);
    let _ = packet::internet_checksum(data);

    // MSS clamping changes at most the MSS and the checksum, and keeps a
    // valid TCP checksum valid (the sum over the segment is unchanged).
    let mut clamped = data.to_vec();
    let max = data.first().map_or(536, |b| 536 + u16::from(*b) * 4);
    if mss::clamp_mss_v4(&mut clamped, max) {
        let h = v4.as_ref().expect("clamping implies IPv4");
        assert_eq!(clamped.len(), data.len());
        assert_eq!(clamped[..h.header_len + 16], data[..h.header_len + 16]);
        let changed = clamped.iter().zip(data).filter(|(a, b)| a != b).count();
        assert!(changed <= 4, "clamping changed {changed} bytes");
    }
    let mut answer = [0u8; icmp::FRAG_NEEDED_MAX];
    if let Some(n) = icmp::frag_needed_v4(data, max, &mut answer) {
        let a = &answer[..n];
        let h = packet::parse_ipv4(a).expect("the answer is IPv4");
        assert_eq!(packet::internet_checksum(&a[..h.header_len]), 0);
        assert_eq!(packet::internet_checksum(&a[h.header_len..]), 0);
    }

    // Build from the input, parse back.
    let mut r = Reader::new(data);
    let (src, dst) = (r.addr(), r.addr());
    let dst = SocketAddr::new(
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(_), IpAddr::V6(d)) => {
                IpAddr::V4(d.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
            }
            (IpAddr::V6(_), IpAddr::V4(d)) => IpAddr::V6(d.to_ipv6_mapped()),
            (_, d) => d,
        },
        dst.port(),
    );
    let payload = r.rest();
    let mut out = Vec::new();
    packet::build_udp(src, dst, payload, &mut out);
    let too_big = if src.is_ipv4() {
        payload.len() > packet::MAX_IPV4_UDP_PAYLOAD
    } else {
        payload.len() + packet::UDP_HEADER_LEN > usize::from(u16::MAX)
    };
    if too_big {
        assert!(out.is_empty());
        return;
    }
    assert_eq!(packet::parse_udp(&out), Some((src, dst, payload)));
    if src.is_ipv4() {
        assert_eq!(
            packet::internet_checksum(&out[..packet::IPV4_MIN_HEADER_LEN]),
            0
        );
    }
});
