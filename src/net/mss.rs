//! TCP MSS clamping: a SYN leaving through the tunnel advertises a maximum
//! segment size that fits the path to the peer, so neither end ever sends a
//! segment the path would drop (routers that eat ICMP included).

use super::packet::{parse_ipv4, IPPROTO_TCP};

const TCP_MIN_HEADER_LEN: usize = 20;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_OPT_END: u8 = 0;
const TCP_OPT_NOP: u8 = 1;
const TCP_OPT_MSS: u8 = 2;

/// Lowers the MSS option of an IPv4 TCP SYN (or SYN-ACK) to `max` and fixes
/// the TCP checksum incrementally (RFC 1624). Returns whether the packet
/// changed; anything else (not TCP, not a SYN, a fragment, an MSS already
/// small enough, malformed options) is left alone.
pub fn clamp_mss_v4(pkt: &mut [u8], max: u16) -> bool {
    let Some(ip) = parse_ipv4(pkt) else {
        return false;
    };
    if ip.protocol != IPPROTO_TCP || ip.is_fragment {
        return false;
    }
    let tcp = &mut pkt[ip.header_len..ip.total_len];
    if tcp.len() < TCP_MIN_HEADER_LEN || tcp[13] & TCP_FLAG_SYN == 0 {
        return false;
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < TCP_MIN_HEADER_LEN || header_len > tcp.len() {
        return false;
    }
    let Some(at) = mss_value_offset(&tcp[..header_len]) else {
        return false;
    };
    let old = u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    if old <= max {
        return false;
    }
    // The checksum sums 16-bit words aligned to the TCP header; an MSS
    // value at an odd offset straddles two of them.
    let first = at & !1;
    let last = (at + 2).next_multiple_of(2).min(header_len);
    let mut before = [0u8; 4];
    let span = last - first;
    before[..span].copy_from_slice(&tcp[first..last]);
    tcp[at..at + 2].copy_from_slice(&max.to_be_bytes());
    let mut csum = u16::from_be_bytes([tcp[16], tcp[17]]);
    for w in (0..span).step_by(2) {
        let old_word = u16::from_be_bytes([before[w], before[w + 1]]);
        let new_word = u16::from_be_bytes([tcp[first + w], tcp[first + w + 1]]);
        csum = checksum_adjust(csum, old_word, new_word);
    }
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());
    true
}

/// Where the 2-byte MSS value sits in a TCP header's options, if present.
fn mss_value_offset(header: &[u8]) -> Option<usize> {
    let mut i = TCP_MIN_HEADER_LEN;
    while i < header.len() {
        match header[i] {
            TCP_OPT_END => return None,
            TCP_OPT_NOP => i += 1,
            kind => {
                let len = usize::from(*header.get(i + 1)?);
                if len < 2 || i + len > header.len() {
                    return None;
                }
                if kind == TCP_OPT_MSS {
                    return (len == 4).then_some(i + 2);
                }
                i += len;
            }
        }
    }
    None
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed.
fn checksum_adjust(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::packet::internet_checksum;

    /// An IPv4 TCP SYN from 198.18.0.2:40000 to 198.18.0.3:80 with `options`
    /// and a correct checksum.
    fn syn(options: &[u8], flags: u8) -> Vec<u8> {
        let tcp_len = TCP_MIN_HEADER_LEN + options.len();
        let total = 20 + tcp_len;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 18, 0, 3]);
        let c = internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = flags;
        t[20..].copy_from_slice(options);
        let c = tcp_checksum(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn tcp_checksum(p: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
        let mut seg = p[20..].to_vec();
        seg[16] = 0;
        seg[17] = 0;
        pseudo.extend_from_slice(&seg);
        internet_checksum(&pseudo)
    }

    fn mss(p: &[u8]) -> u16 {
        let at = mss_value_offset(&p[20..]).expect("mss option") + 20;
        u16::from_be_bytes([p[at], p[at + 1]])
    }

    fn checksum_ok(p: &[u8]) -> bool {
        u16::from_be_bytes([p[36], p[37]]) == tcp_checksum(p)
    }

    #[test]
    fn clamps_an_aligned_mss_and_keeps_the_checksum_right() {
        // MSS 1460, then SACK-permitted, timestamps padded: a Linux SYN.
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let mut p = syn(&opts, TCP_FLAG_SYN);
        assert!(clamp_mss_v4(&mut p, 1180));
        assert_eq!(mss(&p), 1180);
        assert!(checksum_ok(&p));
    }

    #[test]
    fn clamps_an_mss_at_an_odd_offset() {
        let opts = [1, 2, 4, 0x05, 0xb4, 1, 1, 1];
        let mut p = syn(&opts, TCP_FLAG_SYN | 0x10);
        assert!(clamp_mss_v4(&mut p, 1000));
        assert_eq!(mss(&p), 1000);
        assert!(checksum_ok(&p));
    }

    #[test]
    fn leaves_small_mss_non_syn_and_other_packets_alone() {
        let opts = [2, 4, 0x04, 0x00];
        let mut p = syn(&opts, TCP_FLAG_SYN);
        let before = p.clone();
        assert!(!clamp_mss_v4(&mut p, 1200), "MSS 1024 already fits");
        let mut ack = syn(&[2, 4, 0x05, 0xb4], 0x10);
        assert!(!clamp_mss_v4(&mut ack, 1200), "not a SYN");
        let mut none = syn(&[1, 1, 1, 1], TCP_FLAG_SYN);
        assert!(!clamp_mss_v4(&mut none, 1200), "no MSS option");
        let mut bad = syn(&[2, 9, 0x05, 0xb4], TCP_FLAG_SYN);
        assert!(!clamp_mss_v4(&mut bad, 1200), "option runs past the header");
        assert_eq!(p, before);
        let mut udp = syn(&[2, 4, 0x05, 0xb4], TCP_FLAG_SYN);
        udp[9] = 17;
        assert!(!clamp_mss_v4(&mut udp, 1200));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x1234_5678u32;
        for len in 0..120 {
            let mut p: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state >> 16) as u8
                })
                .collect();
            if len > 20 {
                p[0] = 0x45;
                p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                p[6] = 0;
                p[7] = 0;
                p[9] = IPPROTO_TCP;
            }
            let _ = clamp_mss_v4(&mut p, 1000);
        }
    }
}
