//! The handshake rules of `proto::link` as the node lives them: a forged
//! response cannot kill a handshake, a replayed initiation moves nothing
//! (key confirmation), and sessions do not outlive failed rekeys.

use super::*;
use crate::keys::PublicKey;
use crate::proto::link::REJECT_GRACE;
use crate::proto::wire::Kind;

fn peer_key(net: &Net, i: usize) -> PublicKey {
    *net.nodes[i].core.peers.keys().next().expect("no peer")
}

#[test]
fn a_forged_response_leaves_the_initiation_in_flight() {
    let mut net = registered_pair();
    // Node-to-node IPv4 is lost: bob's initiation (asked by a first
    // packet) waits unanswered.
    net.v4_down = true;
    let alice_vip = net.vip(0).unwrap();
    let mut pkt = Vec::new();
    let bob_vip = net.vip(1).unwrap();
    packet::build_ipv4_udp(
        SocketAddrV4::new(bob_vip, 7000),
        SocketAddrV4::new(alice_vip, 7001),
        b"first",
        &mut pkt,
    );
    net.nodes[1].core.handle_tun(pkt.clone(), net.now);
    net.settle();
    let alice = peer_key(&net, 1);
    let dialer = &net.nodes[1].core.peers[&alice].dialer();
    let index = dialer.index().expect("no initiation in flight");
    let message = dialer.message().unwrap().to_vec();
    // An off-path attacker who guessed the index answers first.
    let mut forged = wire::encode_resp_header(Kind::HandshakeResp, 77, index).to_vec();
    forged.extend_from_slice(&[0x5a; 48]);
    let alice_addr = net.nodes[0].addr;
    net.nodes[1]
        .core
        .handle_udp(alice_addr, &mut forged, net.now);
    assert_eq!(
        net.nodes[1].core.peers[&alice].dialer().index(),
        Some(index),
        "a forged response spent the initiation"
    );
    // The path heals and the very same initiation completes.
    net.v4_down = false;
    net.wire.push_back((net.nodes[1].addr, alice_addr, message));
    net.settle();
    let bob_side = &net.nodes[1].core.peers[&alice];
    assert_eq!(
        bob_side.sessions().newest().map(|s| s.local_index),
        Some(index)
    );
    assert!(net.nodes[0].tun.contains(&pkt), "the first packet was lost");
}

#[test]
fn a_replayed_initiation_moves_neither_the_endpoint_nor_the_session() {
    let mut net = registered_pair();
    // Record bob's initiation on the wire (node-to-node traffic lost for
    // a moment).
    net.v4_down = true;
    net.dns(1, "alice.ntm.internal.", RecordType::A);
    let alice = peer_key(&net, 1);
    let recorded = net.nodes[1].core.peers[&alice]
        .dialer()
        .message()
        .expect("no initiation in flight")
        .to_vec();
    net.v4_down = false;
    net.advance(Duration::from_secs(2));
    assert!(net.deliver(0, 1, 1) && net.deliver(1, 0, 2), "no tunnel");
    let bob = peer_key(&net, 0);
    let before = net.nodes[0].core.peers[&bob]
        .sessions()
        .sending()
        .map(|s| s.local_index);
    let endpoint = net.nodes[0].core.peers[&bob].endpoint();
    // Alice forgets bob's handshake timestamps (as after a restart), and
    // an attacker replays the recording from its own address.
    net.nodes[0]
        .core
        .peers
        .get_mut(&bob)
        .unwrap()
        .forget_last_hello();
    let attacker: SocketAddr = "203.0.113.66:4444".parse().unwrap();
    let mut replay = recorded;
    net.nodes[0].core.handle_udp(attacker, &mut replay, net.now);
    net.settle();
    let p = &net.nodes[0].core.peers[&bob];
    assert_eq!(p.endpoint(), endpoint, "a replay moved the endpoint");
    assert_eq!(
        p.sessions().sending().map(|s| s.local_index),
        before,
        "a replay changed the session alice sends on"
    );
    assert!(net.deliver(0, 1, 3), "the replay broke the tunnel");
}

#[test]
fn sessions_expire_when_rekeys_keep_failing() {
    let mut net = registered_pair();
    net.dns(1, "alice.ntm.internal.", RecordType::A);
    assert!(net.deliver(1, 0, 1));
    let bob = peer_key(&net, 0);
    // Bob vanishes: rekeys fail, and the old session must not live on.
    net.nodes[1].online = false;
    net.advance(Duration::from_secs(120) + REJECT_GRACE + Duration::from_secs(35));
    let p = &net.nodes[0].core.peers[&bob];
    assert!(
        p.sessions().newest().is_none() && p.sessions().sending().is_none(),
        "a session outlived rekey + grace"
    );
    let table = net.nodes[0].core.take_table();
    assert!(table.is_none_or(|t| t.by_vip.is_empty() && t.by_index.is_empty()));
}
