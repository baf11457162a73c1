//! The rule for an opened record, written once: the workers apply it to
//! every record they open, and the control thread to the few that reach it
//! before the workers' table knows their index. It counts the receipt,
//! says what the payload is (keepalive, an IPv4 packet the peer may send
//! us, or a control message; `proto::control::Payload::of` reads the first
//! byte) and whether the owner should hear that the peer was seen at the
//! record's endpoint (roaming and key confirmation). No allocation: the
//! answer borrows the payload.

use super::table::{Endpoint, PeerStats, Routes};
use crate::net::packet;
use crate::proto::control::Payload;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// What the receiver knows of the peer a record was opened for.
#[derive(Clone, Copy)]
pub struct RxPeer<'a> {
    pub virtual_ip: Ipv4Addr,
    /// The endpoint we send to (None: the control thread knows none yet).
    pub endpoint: Option<Endpoint>,
    /// The session awaits its first record (key confirmation).
    pub unconfirmed: bool,
    pub stats: &'a PeerStats,
}

/// What an opened record carries, once admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened<'a> {
    /// Nothing: the record only shows the path is alive.
    Keepalive,
    /// An IPv4 packet from the peer (or its LAN) to us (or ours): for the TUN.
    Packet(&'a [u8]),
    /// An IPv4 packet with inner addresses the peer may not use: dropped.
    Spoofed,
    /// A control message for the owner, which drops what does not parse.
    Control(&'a [u8]),
}

/// The verdict on one opened record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified<'a> {
    pub payload: Opened<'a>,
    /// Tell the owner the peer was heard at the record's endpoint: it is
    /// not the one we send to, or it is the session's first record. Only
    /// authenticated records move an endpoint, and never a control message
    /// (probes carry their own endpoint rules).
    pub endpoint_seen: bool,
}

/// Counts the record opened for `peer` from `from` in the peer's stats
/// (path health reads them) and classifies its `payload`; `local_ip` and
/// `routes` say which inner addresses are ours.
pub fn classify_opened<'a>(
    payload: &'a [u8],
    from: Endpoint,
    peer: RxPeer<'_>,
    local_ip: Option<Ipv4Addr>,
    routes: &Routes,
    now: Instant,
) -> Classified<'a> {
    peer.stats.record_rx(payload.len(), !from.is_relay(), now);
    let on_route = peer.endpoint == Some(from);
    if on_route {
        peer.stats.record_route_rx(now);
    }
    let payload = match Payload::of(payload) {
        Payload::Keepalive => Opened::Keepalive,
        Payload::Ipv4(p) if admits(p, peer.virtual_ip, local_ip, routes) => Opened::Packet(p),
        Payload::Ipv4(_) => Opened::Spoofed,
        Payload::Control(p) => Opened::Control(p),
    };
    let endpoint_seen = (!on_route || peer.unconfirmed) && !matches!(payload, Opened::Control(_));
    Classified {
        payload,
        endpoint_seen,
    }
}

/// Whether a decrypted packet may enter the TUN: the tunnel authenticated
/// the peer, so its inner source must be that peer's virtual address or
/// inside a LAN prefix the DC granted to that peer (or a peer could spoof
/// another), and it must be addressed to us or to a LAN granted to us.
fn admits(payload: &[u8], peer_vip: Ipv4Addr, local_ip: Option<Ipv4Addr>, routes: &Routes) -> bool {
    let (Some(IpAddr::V4(src)), Some(IpAddr::V4(dst))) =
        (packet::source(payload), packet::destination(payload))
    else {
        return false;
    };
    let from_peer = src == peer_vip || routes.owner(src) == Some(peer_vip);
    let to_us = local_ip.is_some_and(|ip| dst == ip) || routes.is_own(dst);
    from_peer && to_us
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::table::tests::{ip, routes, GWA, GWC, US};
    use crate::net::packet::build_ipv4_udp;
    use std::net::{SocketAddr, SocketAddrV4};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn pkt(src: &str, dst: &str) -> Vec<u8> {
        let mut out = Vec::new();
        build_ipv4_udp(
            SocketAddrV4::new(ip(src), 5000),
            SocketAddrV4::new(ip(dst), 5001),
            b"x",
            &mut out,
        );
        out
    }

    #[test]
    fn admits_sources_in_the_peers_granted_lan_only() {
        let r = routes(true);
        let us = Some(ip(US));
        // The peer itself, to us or to our LAN.
        assert!(admits(&pkt(GWA, US), ip(GWA), us, &r));
        assert!(admits(&pkt(GWA, "192.0.2.170"), ip(GWA), us, &r));
        // A host of the peer's LAN (longest match decides the owner).
        assert!(admits(&pkt("192.0.2.150", "192.0.2.170"), ip(GWA), us, &r));
        assert!(admits(&pkt("192.0.2.130", US), ip(GWC), us, &r));
        assert!(
            !admits(&pkt("192.0.2.130", US), ip(GWA), us, &r),
            "that /28 belongs to another gateway"
        );
        // Spoofed sources, and destinations that are not ours.
        assert!(!admits(&pkt("203.0.113.5", US), ip(GWA), us, &r));
        assert!(
            !admits(&pkt("192.0.2.165", US), ip(GWA), us, &r),
            "our own LAN"
        );
        assert!(!admits(&pkt(GWA, "192.0.2.150"), ip(GWA), us, &r));
        assert!(!admits(&pkt(GWA, "198.18.0.9"), ip(GWA), us, &r));
        assert!(!admits(&pkt(GWA, US), ip(GWA), None, &Routes::default()));
    }

    fn direct(port: u16) -> Endpoint {
        Endpoint::Direct(SocketAddr::from(([192, 0, 2, 7], port)))
    }

    #[test]
    fn classifies_the_payload_and_whether_the_endpoint_is_news() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_secs(1);
        let stats = PeerStats::new(epoch);
        let peer = RxPeer {
            virtual_ip: ip(GWA),
            endpoint: Some(direct(1)),
            unconfirmed: false,
            stats: &stats,
        };
        let unconfirmed = RxPeer {
            unconfirmed: true,
            ..peer
        };
        let unknown = RxPeer {
            endpoint: None,
            ..peer
        };
        let good = pkt(GWA, US);
        let spoofed = pkt("203.0.113.5", US);
        let ping = [0x01; 9];
        let cases: [(&[u8], Endpoint, RxPeer, Opened, bool); 9] = [
            // From the route's endpoint: nothing to tell the owner.
            (&[], direct(1), peer, Opened::Keepalive, false),
            (&good, direct(1), peer, Opened::Packet(&good), false),
            (&spoofed, direct(1), peer, Opened::Spoofed, false),
            (&ping, direct(1), peer, Opened::Control(&ping), false),
            // From elsewhere (roaming), or the first record on a session,
            // or no endpoint yet: news, except for control messages.
            (&[], direct(2), peer, Opened::Keepalive, true),
            (&good, direct(2), peer, Opened::Packet(&good), true),
            (&ping, direct(2), peer, Opened::Control(&ping), false),
            (&[], direct(1), unconfirmed, Opened::Keepalive, true),
            (&[], direct(1), unknown, Opened::Keepalive, true),
        ];
        for (payload, from, peer, opened, seen) in cases {
            let c = classify_opened(payload, from, peer, Some(ip(US)), &routes(true), now);
            assert_eq!(
                (c.payload, c.endpoint_seen),
                (opened, seen),
                "{payload:?} from {from}"
            );
        }
        // Every record counts as a receipt, payloads (5 of them) as data.
        assert_eq!(stats.last_rx(), Some(now));
        assert_eq!(stats.rx_packets.load(Ordering::Relaxed), 5);

        // Through a relay that is not the route: a receipt, but neither
        // direct nor on the route.
        let relayed = PeerStats::new(epoch);
        let relay = Endpoint::Relay {
            relay: SocketAddr::from(([192, 0, 2, 9], 7447)),
            sid: 5,
        };
        let via_relay = RxPeer {
            stats: &relayed,
            ..peer
        };
        let c = classify_opened(&[], relay, via_relay, Some(ip(US)), &routes(true), now);
        assert!(c.endpoint_seen);
        assert_eq!(relayed.last_rx(), Some(now));
        assert_eq!(relayed.last_direct_rx(), None);
        assert_eq!(relayed.last_route_rx(), None);
        assert_eq!(relayed.last_data_rx(), None);
        assert_eq!(stats.last_route_rx(), Some(now), "the route's records");
    }
}
