//! No tunnel inside itself (`node::loop_guard`): a gateway whose LAN address
//! is among its direct candidates, seen from a peer that routes that LAN
//! into its TUN. The peer never tries that address, and a datagram that
//! arrives from a virtual IP (our records come back through the tunnel) is
//! dropped and counted before it can move any endpoint.

use super::*;
use crate::proto::wire::Kind;
use std::sync::atomic::Ordering::Relaxed;

#[test]
fn a_gateways_lan_address_is_never_a_direct_endpoint() {
    let (mut net, [na, nb]) = Net::gateways(vec![RouteGrant {
        node: "gwb".into(),
        prefixes: vec!["192.0.2.160/27".parse().unwrap()],
    }]);
    let a = net.add_natted("gwa", "192.0.2.11:1000", na);
    let b = net.add_natted("gwb", "192.0.2.76:2000", nb);
    let lan_b: SocketAddr = "192.0.2.161:2000".parse().unwrap();
    net.nodes[b]
        .core
        .set_local_endpoints(vec!["192.0.2.76:2000".parse().unwrap(), lan_b]);
    net.nodes[b]
        .core
        .set_subnet_routes(vec!["192.0.2.160/27".parse().unwrap()], true);
    net.advance(Duration::from_millis(300));
    let (vip_a, vip_b) = (net.vip(a).unwrap(), net.vip(b).unwrap());

    let mut ping = Vec::new();
    packet::build_ipv4_udp(
        SocketAddrV4::new(vip_a, 5000),
        SocketAddrV4::new(vip_b, 5001),
        b"hello",
        &mut ping,
    );
    net.nodes[a].core.handle_tun(ping.clone(), net.now);
    net.advance(Duration::from_millis(1500));
    assert!(net.nodes[b].tun.contains(&ping), "not delivered");

    let peer = net.nodes[a]
        .core
        .peers
        .values()
        .next()
        .expect("gwa knows gwb");
    assert!(
        peer.offered().contains(&lan_b),
        "the DC offered {:?}; the test needs gwb's LAN address among them",
        peer.offered()
    );
    assert!(
        !peer.candidates().contains(&lan_b),
        "{:?}",
        peer.candidates()
    );
    assert!(peer.endpoint().is_some_and(|e| e.addr() != lan_b));

    // gwa's own records looping back to gwb through the tunnel arrive from
    // gwa's virtual IP: dropped before the handshake code sees them.
    let c = net.nodes[b].core.counters();
    let received = c.handshakes_received.load(Relaxed);
    let mut init = vec![Kind::HandshakeInit as u8; 148];
    let looped_from = SocketAddr::new(IpAddr::V4(vip_a), 1000);
    net.nodes[b]
        .core
        .handle_udp(looped_from, &mut init, net.now);
    assert_eq!(c.looped.load(Relaxed), 1);
    assert_eq!(c.handshakes_received.load(Relaxed), received);
}
