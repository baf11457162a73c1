//! Fitting outbound packets to the path to their peer (`node::pmtu`): TCP
//! SYNs get an MSS that fits, and a packet too big for the path with DF set
//! is answered with ICMP "fragmentation needed" instead of being sent into
//! a black hole.

use crate::net::icmp::{dont_fragment, frag_needed_v4, FRAG_NEEDED_MAX};
use crate::net::mss::clamp_mss_v4;

/// IPv4 (20) + TCP (20) headers: MSS = MTU - 40.
const TCP_IPV4_HEADERS: u16 = 40;

/// What to do with an outbound packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Fit {
    /// Send it (possibly with its MSS clamped in place).
    Send,
    /// Drop it and write the first `n` bytes of the answer buffer into the TUN.
    TooBig(usize),
}

/// Applies the path MTU `mtu` to the IPv4 packet `pkt` (one segment, as
/// sealed): clamps a SYN's MSS and refuses a DF packet larger than `mtu`.
/// A larger packet without DF is sent: the underlay fragments it.
pub fn fit(pkt: &mut [u8], mtu: u16, answer: &mut [u8; FRAG_NEEDED_MAX]) -> Fit {
    if pkt.len() > usize::from(mtu) && dont_fragment(pkt) {
        return match frag_needed_v4(pkt, mtu, answer) {
            Some(n) => Fit::TooBig(n),
            None => Fit::Send,
        };
    }
    clamp_mss_v4(pkt, mtu.saturating_sub(TCP_IPV4_HEADERS));
    Fit::Send
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::packet::build_ipv4_udp;

    fn udp(len: usize, df: bool) -> Vec<u8> {
        let mut p = Vec::new();
        build_ipv4_udp(
            "198.18.0.2:5000".parse().expect("addr"),
            "198.18.0.3:5001".parse().expect("addr"),
            &vec![1u8; len - 28],
            &mut p,
        );
        // The header checksum does not matter here.
        if df {
            p[6] |= 0x40;
        } else {
            p[6] &= !0x40;
        }
        p
    }

    #[test]
    fn too_big_with_df_is_answered_and_the_rest_is_sent() {
        let mut answer = [0u8; FRAG_NEEDED_MAX];
        assert_eq!(fit(&mut udp(1300, true), 1300, &mut answer), Fit::Send);
        assert!(matches!(fit(&mut udp(1301, true), 1300, &mut answer), Fit::TooBig(n) if n == 56));
        assert_eq!(u16::from_be_bytes([answer[26], answer[27]]), 1300);
        assert_eq!(fit(&mut udp(1400, false), 1300, &mut answer), Fit::Send);
    }
}
