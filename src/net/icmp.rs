//! ICMPv4 "fragmentation needed" written back into the TUN: when a packet
//! with DF set is larger than the path to its peer takes, the node answers
//! as a router would, and the sender's kernel lowers its path MTU for that
//! destination (TCP resegments, UDP fragments at the source). This works
//! even where the underlay's own routers drop ICMP.

use super::packet::{internet_checksum, parse_ipv4};

const IPPROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const IPV4_FLAG_DF: u8 = 0x40;
/// The largest message `frag_needed_v4` writes: our header, the ICMP
/// header, the offending header with options, and 8 bytes of its payload.
pub const FRAG_NEEDED_MAX: usize = 20 + 8 + 60 + 8;

/// ICMP types that are themselves errors: never answered with another
/// error (RFC 1122 3.2.2).
fn is_icmp_error(kind: u8) -> bool {
    matches!(kind, 3 | 4 | 5 | 11 | 12)
}

/// Whether `pkt` is an IPv4 packet with the don't-fragment bit set.
pub fn dont_fragment(pkt: &[u8]) -> bool {
    pkt.first().is_some_and(|b| b >> 4 == 4) && pkt.get(6).is_some_and(|f| f & IPV4_FLAG_DF != 0)
}

/// Writes into `out` the ICMP "fragmentation needed, next-hop MTU `mtu`"
/// answer to `pkt`, from `pkt`'s destination (the peer the path leads to)
/// to its source. Returns the answer's length, or None where no answer is
/// due: not IPv4, not the first fragment, or itself an ICMP error.
pub fn frag_needed_v4(pkt: &[u8], mtu: u16, out: &mut [u8; FRAG_NEEDED_MAX]) -> Option<usize> {
    let ip = parse_ipv4(pkt)?;
    let offset = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
    if offset != 0 {
        return None;
    }
    if ip.protocol == IPPROTO_ICMP && is_icmp_error(*pkt.get(ip.header_len)?) {
        return None;
    }
    let quoted = (ip.header_len + 8).min(ip.total_len);
    let len = 28 + quoted;
    out[..len].fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    out[8] = 64;
    out[9] = IPPROTO_ICMP;
    out[12..16].copy_from_slice(&ip.dst.octets());
    out[16..20].copy_from_slice(&ip.src.octets());
    let c = internet_checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out[20] = ICMP_DEST_UNREACH;
    out[21] = ICMP_FRAG_NEEDED;
    out[26..28].copy_from_slice(&mtu.to_be_bytes());
    out[28..len].copy_from_slice(&pkt[..quoted]);
    let c = internet_checksum(&out[20..len]);
    out[22..24].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::packet::{build_ipv4_udp, parse_ipv4};
    use std::net::SocketAddrV4;

    fn big_udp(df: bool) -> Vec<u8> {
        let mut p = Vec::new();
        build_ipv4_udp(
            "198.18.0.2:5000".parse::<SocketAddrV4>().expect("addr"),
            "198.18.0.3:5001".parse::<SocketAddrV4>().expect("addr"),
            &[7u8; 1400],
            &mut p,
        );
        if df {
            p[6] |= IPV4_FLAG_DF;
        } else {
            p[6] &= !IPV4_FLAG_DF;
        }
        p[10..12].fill(0);
        let c = internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn answer_goes_back_to_the_sender_with_the_mtu_and_the_quote() {
        let p = big_udp(true);
        assert!(dont_fragment(&p));
        let mut out = [0u8; FRAG_NEEDED_MAX];
        let n = frag_needed_v4(&p, 1200, &mut out).expect("answer");
        let a = &out[..n];
        let ip = parse_ipv4(a).expect("valid IPv4");
        assert_eq!(ip.src.to_string(), "198.18.0.3");
        assert_eq!(ip.dst.to_string(), "198.18.0.2");
        assert_eq!(ip.protocol, IPPROTO_ICMP);
        assert_eq!(internet_checksum(&a[..20]), 0, "IP header checksum");
        assert_eq!(internet_checksum(&a[20..]), 0, "ICMP checksum");
        assert_eq!((a[20], a[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([a[26], a[27]]), 1200);
        assert_eq!(&a[28..], &p[..28], "quotes the header and 8 bytes");
    }

    #[test]
    fn no_answer_to_errors_fragments_or_garbage() {
        let mut out = [0u8; FRAG_NEEDED_MAX];
        let p = big_udp(false);
        assert!(!dont_fragment(&p));
        let mut frag = p.clone();
        frag[7] = 10; // offset 80
        assert_eq!(frag_needed_v4(&frag, 1200, &mut out), None);
        let n = frag_needed_v4(&p, 1200, &mut out).expect("answer");
        let error = out[..n].to_vec();
        assert_eq!(frag_needed_v4(&error, 1200, &mut out), None);
        assert_eq!(frag_needed_v4(&[0x45, 0, 0], 1200, &mut out), None);
        assert_eq!(frag_needed_v4(&[], 1200, &mut out), None);
    }
}
