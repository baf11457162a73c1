//! The handshake flood defences in the sans-IO cores: under load an
//! initiation without a valid mac2 costs a hash and a cookie reply, never a
//! Diffie-Hellman; a legitimate initiator completes with the cookie; forged
//! cookie replies change nothing.

use super::*;
use crate::proto::cookie::{CookieMaker, COOKIE_REPLY_LEN};
use crate::proto::handshake::Initiator;
use crate::proto::signal::{self, PeerHello};
use crate::proto::wire::Kind;
use std::sync::atomic::Ordering::Relaxed;

const ATTACKER: &str = "198.51.100.67:9999";

/// An initiation at `to`'s key from a fresh random key: its mac1 is valid
/// (public keys are public), the rest is what a flooder would send.
fn stranger_initiation(to: &crate::keys::PublicKey, index: u32) -> Vec<u8> {
    let hello = signal::encode(&PeerHello {
        timestamp: 1,
        incarnation: 1,
    })
    .unwrap();
    Initiator::start(
        Kind::HandshakeInit,
        &PrivateKey::generate(),
        to,
        index,
        &hello,
    )
    .unwrap()
    .1
}

fn outputs(core: &mut NodeCore) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut v = Vec::new();
    while let Some(o) = core.poll_output() {
        if let Output::Udp { to, bytes } = o {
            v.push((to, bytes));
        }
    }
    v
}

/// Alice and bob with a tunnel (bob asked for alice).
fn connected_pair() -> Net {
    let mut net = registered_pair();
    assert!(net.dns(1, "alice.ntm.internal.", RecordType::A).is_some());
    net.advance(Duration::from_millis(200));
    net
}

#[test]
fn a_flood_turns_on_cookies_and_no_initiation_without_mac2_is_answered() {
    let mut net = registered_pair();
    let alice = net.nodes[0].core.public_key();
    let attacker: SocketAddr = ATTACKER.parse().unwrap();
    let c = net.nodes[0].core.counters();
    for i in 0..200u32 {
        let mut m1 = stranger_initiation(&alice, i + 1);
        net.nodes[0].core.handle_udp(attacker, &mut m1, net.now);
    }
    let out = outputs(&mut net.nodes[0].core);
    let load = super::super::core::HANDSHAKE_LOAD as u64;
    assert_eq!(c.handshakes_received.load(Relaxed), 200);
    assert_eq!(c.handshakes_cookie_replied.load(Relaxed), 200 - load);
    // Before the load set in, the per-source limit (burst 40) held the
    // rest; no stranger was answered (the DC never directed them).
    assert_eq!(c.handshakes_rate_limited.load(Relaxed), load - 40);
    assert_eq!(c.handshakes_answered.load(Relaxed), 0);
    assert_eq!(
        out.len() as u64,
        200 - load,
        "one cookie reply per initiation"
    );
    assert!(out.iter().all(|(to, b)| *to == attacker
        && b.len() == COOKIE_REPLY_LEN
        && b[0] == Kind::CookieReply as u8));
    // Under load even a Noise part that would not parse gets only a cookie
    // reply: the Noise code (and its Diffie-Hellman) never runs.
    let mut junk = stranger_initiation(&alice, 7);
    let body = junk.len() - 32;
    junk[20] ^= 0xff;
    // Recompute mac1 over the changed body so it passes the cheap check.
    let mac1 = crate::proto::ticket::mac(&mac1_key_bytes(&alice), &junk[..body]);
    junk[body..body + 16].copy_from_slice(&mac1);
    assert!(crate::proto::handshake::Mac1Key::for_responder(&alice).verify(&junk));
    let mut fixed = junk;
    net.nodes[0].core.handle_udp(attacker, &mut fixed, net.now);
    let out = outputs(&mut net.nodes[0].core);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[0], Kind::CookieReply as u8);
}

/// The mac1 key, as docs/protocol.md defines it.
fn mac1_key_bytes(responder: &crate::keys::PublicKey) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ntmtun/1 mac1");
    h.update(responder.0);
    h.finalize().into()
}

#[test]
fn a_legitimate_peer_completes_through_the_cookie_while_a_flood_goes_on() {
    let mut net = registered_pair();
    let alice = net.nodes[0].core.public_key();
    let attacker: SocketAddr = ATTACKER.parse().unwrap();
    for i in 0..100u32 {
        let mut m1 = stranger_initiation(&alice, i + 1);
        net.nodes[0].core.handle_udp(attacker, &mut m1, net.now);
    }
    outputs(&mut net.nodes[0].core);
    // Keep alice under load for the whole exchange (as a full queue would).
    net.nodes[0].core.set_backlog(true);
    let ans = net
        .dns(1, "alice.ntm.internal.", RecordType::A)
        .expect("no DNS answer under load");
    assert_eq!(a_record(&ans), net.vip(0));
    let (ca, cb) = (net.nodes[0].core.counters(), net.nodes[1].core.counters());
    assert_eq!(cb.cookies_received.load(Relaxed), 1, "bob got no cookie");
    assert_eq!(ca.handshakes_answered.load(Relaxed), 1);
    let bob = net.nodes[1].core.status(net.now);
    assert!(bob.peers[0].last_handshake_secs.is_some(), "no tunnel");
    assert!(net.deliver(1, 0, 0x55), "no data through the tunnel");
    // The next initiation (a rekey) carries mac2 from the start.
    let replied = ca.handshakes_cookie_replied.load(Relaxed);
    let key = net.nodes[1].core.peers.keys().next().copied().unwrap();
    net.nodes[1].core.initiate(key, net.now);
    net.settle();
    assert_eq!(ca.handshakes_cookie_replied.load(Relaxed), replied);
    assert_eq!(ca.handshakes_answered.load(Relaxed), 2);
}

#[test]
fn forged_cookie_replies_are_ignored() {
    let mut net = connected_pair();
    let alice = net.nodes[0].core.public_key();
    let alice_addr = net.nodes[0].addr;
    let bob_core = &mut net.nodes[1].core;
    bob_core.initiate(alice, net.now);
    let out = outputs(bob_core);
    let m1 = out[0].1.clone();
    assert_eq!(&m1[m1.len() - 16..], &[0; 16], "no cookie yet, no mac2");
    let src: SocketAddr = "198.51.100.12:2000".parse().unwrap();
    // Sealed for another key (anyone can make these for their own key).
    let mallory = PrivateKey::generate().public_key();
    let wrong_key = CookieMaker::new(&mallory, net.now)
        .reply(Kind::CookieReply, &m1, src, net.now)
        .unwrap();
    // Alice's key, but bound to another initiation with the same index (an
    // off-path forger does not know our mac1).
    let mut other = stranger_initiation(&alice, 0);
    other[4..8].copy_from_slice(&m1[4..8]);
    let other_mac1 = CookieMaker::new(&alice, net.now)
        .reply(Kind::CookieReply, &other, src, net.now)
        .unwrap();
    // Random bytes of the right shape.
    let mut random = m1[..8].to_vec();
    random[0] = Kind::CookieReply as u8;
    random.extend((0..COOKIE_REPLY_LEN - 8).map(|i| (i * 7) as u8));
    // The DC's type at a peer.
    let mut dc_type = CookieMaker::new(&alice, net.now)
        .reply(Kind::DcCookieReply, &m1, src, net.now)
        .unwrap();
    dc_type[0] = Kind::DcCookieReply as u8;
    for mut forged in [wrong_key, other_mac1, random, dc_type] {
        bob_core.handle_udp(alice_addr, &mut forged, net.now);
    }
    assert!(
        outputs(bob_core).is_empty(),
        "a forged reply made bob resend"
    );
    assert_eq!(bob_core.counters().cookies_received.load(Relaxed), 0);
    assert!(!bob_core.peers[&alice].dialer().holds_cookie());
    // A genuine one is taken, and the initiation goes out once more with
    // a mac2 alice accepts.
    let mut maker = CookieMaker::new(&alice, net.now);
    let mut genuine = maker.reply(Kind::CookieReply, &m1, src, net.now).unwrap();
    bob_core.handle_udp(alice_addr, &mut genuine.clone(), net.now);
    let resent = outputs(bob_core);
    assert_eq!(resent.len(), 1);
    assert!(maker.check_mac2(&resent[0].1, src, net.now));
    // The same reply again does not make bob resend (no loops).
    bob_core.handle_udp(alice_addr, &mut genuine, net.now);
    assert!(outputs(bob_core).is_empty());
}

#[test]
fn registrations_complete_through_the_dc_cookie_under_load() {
    let mut net = Net::new();
    net.dc.set_backlog(true);
    net.add_node("alice", "198.51.100.11:1000", TOKEN);
    net.advance(Duration::from_millis(200));
    assert_eq!(net.nodes[0].core.status(net.now).dc.state, "registered");
    assert_eq!(net.dc.stats.cookie_replies, 1);
    assert_eq!(net.dc.stats.handshakes_answered, 1);
    let c = net.nodes[0].core.counters();
    assert_eq!(c.cookies_received.load(Relaxed), 1);
    // A flood of registrations from strangers (valid mac1) costs the DC no
    // Diffie-Hellman: every one gets a cookie reply.
    let dc = net.dc_key.public_key();
    let attacker: SocketAddr = ATTACKER.parse().unwrap();
    for i in 0..50u32 {
        let mut m1 = Initiator::start(
            Kind::DcHandshakeInit,
            &PrivateKey::generate(),
            &dc,
            i + 1,
            b"",
        )
        .unwrap()
        .1;
        let out = net.dc.handle(attacker, &mut m1, net.now, net.unix());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes[0], Kind::DcCookieReply as u8);
    }
    assert_eq!(net.dc.stats.handshakes_answered, 1);
    assert_eq!(net.dc.stats.cookie_replies, 51);
}
