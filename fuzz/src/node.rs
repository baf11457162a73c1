//! Harness for `NodeCore`: a node (key A) whose DC and one peer (key B) are
//! played by the harness, so fuzzer bytes can arrive raw or sealed with the
//! real DC or peer session.
//!
//! Input: one setup byte, then records (see the crate docs). Setup bits:
//! bit 0 skips registration, bit 1 skips the DC's direction of peer B,
//! bit 2 gives the direction a relay grant (path Relay).

use crate::{key, public, sa, Reader, MAX_OPS, UNIX_BASE};
use ntmtun::net::packet;
use ntmtun::node::core::{NodeCore, NodeSettings};
use ntmtun::node::output::Output;
use ntmtun::node::dns::{self, DnsAction, DnsInterceptor};
use ntmtun::proto::handshake::{Initiator, Mac1Key, Responder};
use ntmtun::proto::relay as frames;
use ntmtun::proto::session::Session;
use ntmtun::proto::signal::{
    self, FromDc, Path, PeerHello, PeerInfo, Register, RegisterReply, Registered, RelayGrant, ToDc,
};
use ntmtun::proto::wire;
use ntmtun::proto::wire::Kind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Raw datagram on the data socket: `[source index][bytes]`.
pub const OP_UDP: u8 = 0;
/// Packet from the TUN: `[bytes]`.
pub const OP_TUN: u8 = 1;
/// Answer from a real resolver: `[source index][bytes]`.
pub const OP_UPSTREAM: u8 = 2;
/// Kind::DcData record sealed with the DC session: `[FromDc bytes]`.
pub const OP_FROM_DC: u8 = 3;
/// Handshake initiation from peer B (valid Noise): `[via relay][payload]`.
pub const OP_PEER_INIT: u8 = 4;
/// Kind::Data record sealed with peer B's session: `[via relay][payload]`.
pub const OP_PEER_DATA: u8 = 5;
/// Peer B answers the node's last initiation: `[via relay][payload]`.
pub const OP_PEER_RESPOND: u8 = 6;
/// Time passes: `[milliseconds u32]`, then `handle_timeout`.
pub const OP_TIME: u8 = 7;
/// The DC answers the node's last registration: `[RegisterReply bytes]`.
pub const OP_REG_REPLY: u8 = 8;
/// Kind::RelayBindAck MACed with the granted secret: `[side][timestamp u64][use last bind][addr]`.
pub const OP_BIND_ACK: u8 = 9;
/// Kind::RelayProbeReply from the relay: `[use last nonce][nonce u64][addr]`.
pub const OP_PROBE_REPLY: u8 = 10;
/// The host's addresses changed: `[count][addr]...`.
pub const OP_NETWORK: u8 = 11;
/// `ntmtun ping NAME`: `[name bytes]`.
pub const OP_PING: u8 = 12;

pub const NODE_ADDR: &str = "192.0.2.2:41641";
pub const PEER_ADDR: &str = "203.0.113.7:41641";
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const NODE_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const PEER_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
pub const GRANT_SID: u32 = 77;
pub const GRANT_SECRET: [u8; 32] = [7; 32];

/// Source addresses an op's index byte picks from.
pub fn sources() -> [SocketAddr; 6] {
    [
        sa(crate::DC_ADDR),
        sa(PEER_ADDR),
        sa(crate::RELAY_ADDR),
        SocketAddr::new(IpAddr::V4(RESOLVER), 53),
        sa("192.0.2.99:9999"),
        sa("[2001:db8::1]:7446"),
    ]
}

pub fn registered() -> Registered {
    Registered {
        virtual_ip: NODE_VIP,
        prefix_len: 15,
        domain: crate::DOMAIN.into(),
        reflexive: sa("203.0.113.1:40001"),
        refresh_secs: 20,
        relays: vec![sa(crate::RELAY_ADDR), sa(crate::RELAY6_ADDR)],
        routes: Vec::new(),
        refused_routes: Vec::new(),
    }
}

pub fn peer_info(relay: bool) -> PeerInfo {
    PeerInfo {
        name: "bob".into(),
        virtual_ip: PEER_VIP,
        public_key: public(crate::KEY_NODE_B).0,
        endpoints: vec![sa(PEER_ADDR)],
        path: if relay { Path::Relay } else { Path::Direct },
        initiate: false,
        incarnation: 1,
        relay: relay.then(|| RelayGrant {
            address: sa(crate::RELAY_ADDR),
            sid: GRANT_SID,
            side: 1,
            secret: GRANT_SECRET,
            ticket: vec![0x5a; ntmtun::proto::ticket::TICKET_LEN],
            expires_unix: UNIX_BASE + 3600,
        }),
    }
}

struct Harness {
    node: NodeCore,
    now: Instant,
    /// The DC's side of the node's DC channel.
    dc_session: Option<Session>,
    /// The node's last registration initiation (Kind::DcHandshakeInit).
    last_register: Option<Vec<u8>>,
    /// Peer B's side of the tunnel.
    peer_session: Option<Session>,
    /// Peer B's initiation in flight.
    peer_initiator: Option<Initiator>,
    /// The node's last handshake initiation to peer B.
    last_node_init: Option<Vec<u8>>,
    last_bind: Option<(u8, u64)>,
    last_probe: Option<u64>,
    peer_index: u32,
}

impl Harness {
    fn new() -> Harness {
        let now = Instant::now();
        let mut node = NodeCore::new(
            NodeSettings {
                name: "alice".into(),
                key: key(crate::KEY_NODE_A),
                dc: vec![sa(crate::DC_ADDR), sa(crate::DC6_ADDR)],
                dc_key: public(crate::KEY_DC),
                auth_key: crate::AUTH.into(),
                keepalive: Some(Duration::from_secs(25)),
                rekey: Duration::from_secs(120),
                resolvers: vec![IpAddr::V4(RESOLVER)],
                unix_nanos_at_start: UNIX_BASE * 1_000_000_000,
                index_seed: 1000,
            },
            now,
        );
        node.set_local_endpoints(vec![sa(NODE_ADDR)]);
        Harness {
            node,
            now,
            dc_session: None,
            last_register: None,
            peer_session: None,
            peer_initiator: None,
            last_node_init: None,
            last_bind: None,
            last_probe: None,
            peer_index: 0x7000,
        }
    }

    fn udp(&mut self, from: SocketAddr, bytes: &[u8]) {
        let mut b = bytes.to_vec();
        self.node.handle_udp(from, &mut b, self.now);
        self.drain();
    }

    /// From peer B, directly or through the relay.
    fn deliver_from_peer(&mut self, via_relay: bool, bytes: &[u8]) {
        if via_relay {
            let mut b = vec![0u8; wire::RELAYED_HEADER_LEN];
            wire::put_relayed_header(&mut b, GRANT_SID);
            b.extend_from_slice(bytes);
            self.udp(sa(crate::RELAY_ADDR), &b);
        } else {
            self.udp(sa(PEER_ADDR), bytes);
        }
    }

    fn deliver_from_dc(&mut self, payload: &[u8]) {
        let Some(s) = &self.dc_session else { return };
        let Ok(rec) = s.seal_to_vec(Kind::DcData, payload) else {
            return;
        };
        self.udp(sa(crate::DC_ADDR), &rec);
    }

    /// The DC answers the node's last registration with `payload`.
    fn reg_reply(&mut self, payload: &[u8]) {
        let Some(init) = self.last_register.take() else {
            return;
        };
        let Ok(r) = Responder::read(
            &key(crate::KEY_DC),
            &Mac1Key::for_responder(&public(crate::KEY_DC)),
            &init,
        ) else {
            panic!("the node's registration does not open with the DC's key");
        };
        assert_eq!(r.remote_key, public(crate::KEY_NODE_A));
        signal::decode::<Register>(&r.payload).expect("the node's Register decodes");
        if let Ok((s, bytes)) = r.reply(Kind::DcHandshakeResp, 0x5000, payload) {
            self.dc_session = Some(s);
            self.udp(sa(crate::DC_ADDR), &bytes);
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.node.handle_timeout(self.now);
        let _ = self.node.poll_timeout(self.now);
        self.drain();
    }

    /// Takes everything the node emitted, checks it, and remembers what the
    /// DC, peer or relay would answer.
    fn drain(&mut self) {
        let _ = self.node.take_table();
        let mut budget = 256;
        while let Some(out) = self.node.poll_output() {
            budget -= 1;
            if budget == 0 {
                break;
            }
            match out {
                Output::Udp { to, bytes } => self.sent(to, bytes),
                Output::Tun(pkt) => {
                    assert!(
                        packet::source(&pkt).is_some() && packet::destination(&pkt).is_some(),
                        "the node wrote an unparsable packet into the TUN: {pkt:02x?}"
                    );
                }
                Output::Upstream { .. }
                | Output::Configure(_)
                | Output::Pong { .. }
                | Output::SubnetRoutes(_)
                | Output::FederatedRoutes(_)
                | Output::StubDomains(_) => {}
            }
        }
    }

    fn sent(&mut self, to: SocketAddr, mut bytes: Vec<u8>) {
        let relays = [sa(crate::RELAY_ADDR), sa(crate::RELAY6_ADDR)];
        if to == sa(crate::DC_ADDR) || to == sa(crate::DC6_ADDR) {
            match Kind::of(&bytes).ok() {
                Some(Kind::DcHandshakeInit) => self.last_register = Some(bytes),
                Some(Kind::DcData) => {
                    if let Some(s) = &self.dc_session {
                        if let Ok(r) = s.open(&mut bytes) {
                            signal::decode::<ToDc>(&bytes[r])
                                .expect("the node sealed an undecodable ToDc");
                        }
                    }
                }
                // A fuzzed direction may name the DC's address as a peer.
                _ => {}
            }
            return;
        }
        if relays.contains(&to) {
            match Kind::of(&bytes).ok() {
                Some(Kind::RelayBind) => {
                    // Fuzzed directions may grant other secrets on this relay.
                    if let Some(b) = frames::Bind::parse(&bytes).filter(|b| b.verify(&GRANT_SECRET))
                    {
                        self.last_bind = Some((b.side, b.timestamp));
                    }
                }
                Some(Kind::RelayProbe) => self.last_probe = frames::parse_probe(&bytes),
                Some(Kind::Relayed) => {
                    if let Ok((_, inner)) = wire::decode_relayed(&bytes) {
                        let inner = inner.to_vec();
                        self.arrive_at_peer(inner);
                    }
                }
                _ => {}
            }
            return;
        }
        if to == sa(PEER_ADDR) {
            self.arrive_at_peer(bytes);
        }
    }

    fn arrive_at_peer(&mut self, mut bytes: Vec<u8>) {
        match Kind::of(&bytes).ok() {
            Some(Kind::HandshakeInit) => self.last_node_init = Some(bytes),
            Some(Kind::HandshakeResp) => {
                let Ok((sender, receiver, noise)) = wire::decode_resp(&bytes) else {
                    panic!("the node sent a malformed handshake response");
                };
                if let Some(mut init) = self.peer_initiator.take_if(|i| i.local_index == receiver) {
                    if let Ok((s, _)) = init.read_response(sender, noise) {
                        self.peer_session = Some(s);
                    }
                }
            }
            Some(Kind::Data) => {
                if let Some(s) = &self.peer_session {
                    let _ = s.open(&mut bytes);
                }
            }
            _ => {}
        }
    }

    fn peer_init(&mut self, via_relay: bool, payload: &[u8]) {
        self.peer_index = self.peer_index.wrapping_add(1);
        let Ok((init, bytes)) = Initiator::start(
            Kind::HandshakeInit,
            &key(crate::KEY_NODE_B),
            &public(crate::KEY_NODE_A),
            self.peer_index,
            payload,
        ) else {
            return;
        };
        self.peer_initiator = Some(init);
        self.deliver_from_peer(via_relay, &bytes);
    }

    fn peer_respond(&mut self, via_relay: bool, payload: &[u8]) {
        let Some(init) = self.last_node_init.take() else {
            return;
        };
        // Fuzzed directions may send other peers' initiations to this address.
        let Ok(r) = Responder::read(
            &key(crate::KEY_NODE_B),
            &Mac1Key::for_responder(&public(crate::KEY_NODE_B)),
            &init,
        ) else {
            return;
        };
        signal::decode::<PeerHello>(&r.payload).expect("the node's PeerHello decodes");
        self.peer_index = self.peer_index.wrapping_add(1);
        if let Ok((s, bytes)) = r.reply(Kind::HandshakeResp, self.peer_index, payload) {
            self.peer_session = Some(s);
            self.deliver_from_peer(via_relay, &bytes);
        }
    }
}

/// Registers the node and directs peer B to it, as the setup byte says.
fn setup(h: &mut Harness, flags: u8) {
    h.tick(0);
    if flags & 1 != 0 {
        return;
    }
    let reply = signal::encode(&RegisterReply::Accepted(registered())).expect("encode");
    h.reg_reply(&reply);
    assert!(
        h.dc_session.is_some(),
        "harness out of date: the node did not register"
    );
    if flags & 2 == 0 {
        let msg = signal::encode(&FromDc::Direction(peer_info(flags & 4 != 0))).expect("encode");
        h.deliver_from_dc(&msg);
    }
}

pub fn run(data: &[u8]) {
    run_harness(data);
}

fn run_harness(data: &[u8]) -> Harness {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let mut h = Harness::new();
    setup(&mut h, flags);
    let sources = sources();
    for _ in 0..MAX_OPS {
        let Some((op, mut b)) = r.record() else { break };
        match op % 13 {
            OP_UDP => {
                let from = sources[b.u8() as usize % sources.len()];
                h.udp(from, b.rest());
            }
            OP_TUN => {
                h.node.handle_tun(b.rest().to_vec(), h.now);
                h.drain();
            }
            OP_UPSTREAM => {
                let from = sources[b.u8() as usize % sources.len()];
                h.node.handle_upstream(from, b.rest());
                h.drain();
            }
            OP_FROM_DC => h.deliver_from_dc(b.rest()),
            OP_PEER_INIT => {
                let relay = b.u8() & 1 == 1;
                h.peer_init(relay, b.rest());
            }
            OP_PEER_DATA => {
                let relay = b.u8() & 1 == 1;
                if let Some(s) = &h.peer_session {
                    if let Ok(rec) = s.seal_to_vec(Kind::Data, b.rest()) {
                        h.deliver_from_peer(relay, &rec);
                    }
                }
            }
            OP_PEER_RESPOND => {
                let relay = b.u8() & 1 == 1;
                h.peer_respond(relay, b.rest());
            }
            OP_TIME => {
                let ms = u64::from(b.u32()) % (3_600_000);
                h.tick(ms);
            }
            OP_REG_REPLY => h.reg_reply(b.rest()),
            OP_BIND_ACK => {
                let (mut side, mut ts) = (b.u8(), b.u64());
                if b.u8() & 1 == 1 {
                    if let Some((s, t)) = h.last_bind {
                        (side, ts) = (s, t);
                    }
                }
                let observed = b.addr();
                let ack = frames::bind_ack(side, GRANT_SID, ts, observed, &GRANT_SECRET);
                h.udp(sa(crate::RELAY_ADDR), &ack);
            }
            OP_PROBE_REPLY => {
                let use_last = b.u8() & 1 == 1;
                let mut nonce = b.u64();
                if use_last {
                    nonce = h.last_probe.unwrap_or(nonce);
                }
                let reply = frames::probe_reply(nonce, b.addr());
                h.udp(sa(crate::RELAY_ADDR), &reply);
            }
            OP_NETWORK => {
                let n = b.u8() % 4;
                let eps = (0..n).map(|_| b.addr()).collect();
                h.node.handle_network_change(eps, h.now);
                h.drain();
            }
            _ => {
                let name = String::from_utf8_lossy(b.rest()).into_owned();
                let _ = h.node.ping(&name, h.now);
                h.drain();
            }
        }
        let _ = h.node.status(h.now);
    }
    h
}

/// A DNS query for `name` (type A), for seeds.
pub fn dns_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// The same query inside IPv4/UDP from an app to the captured resolver.
pub fn dns_packet(name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::new();
    packet::build_ipv4_udp(
        std::net::SocketAddrV4::new(NODE_VIP, 50000),
        std::net::SocketAddrV4::new(RESOLVER, 53),
        &dns_query(name, qtype),
        &mut out,
    );
    out
}

/// Checks the interceptor's outputs for one query (shared with the `dns`
/// target): nothing may panic, and every reply must parse as DNS.
pub fn dns_check(dns: &DnsInterceptor, query: &[u8], vip: Ipv4Addr) {
    use hickory_proto::op::Message;
    let parses = |what: &str, b: &[u8]| {
        if let Err(e) = Message::from_vec(b) {
            panic!("{what} does not parse as DNS ({e}): {b:02x?}");
        }
    };
    match dns.classify(query) {
        DnsAction::Forward => {}
        DnsAction::Reply(b) => parses("a direct reply", &b),
        DnsAction::Resolve { pending, target } => {
            let _ = pending.id();
            let name = match target {
                dns::ResolveTarget::Name(n) => n.to_string(),
                dns::ResolveTarget::Address(_) => "bob".into(),
            };
            for res in [
                dns::Resolution::Found {
                    name,
                    virtual_ip: vip,
                },
                dns::Resolution::NotFound,
                dns::Resolution::Failed,
            ] {
                parses("an answer", &dns.answer(&pending, &res));
            }
        }
    }
    if let Some(b) = dns::servfail_for(query) {
        parses("a SERVFAIL", &b);
    }
}

/// An IPv4/UDP packet between two virtual addresses (tunnel payload).
pub fn vip_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    packet::build_ipv4_udp(
        std::net::SocketAddrV4::new(src, 40000),
        std::net::SocketAddrV4::new(dst, 5201),
        payload,
        &mut out,
    );
    out
}

/// Seeds: typical conversations.
pub fn seeds() -> Vec<Vec<u8>> {
    use crate::Records;
    let enc = |m: &FromDc| signal::encode(m).expect("encode");
    let ctl = |kind: u8, id: u64| {
        let mut m = vec![0, kind];
        m.extend_from_slice(&id.to_le_bytes());
        m
    };
    let hello = |ts: u64| {
        let mut b = vec![0];
        b.extend(signal::encode(&PeerHello {
            timestamp: ts,
            incarnation: 1,
        }).expect("encode"));
        b
    };
    let mut out = Vec::new();

    // DNS for bob -> the DC resolves it -> the node initiates -> bob answers
    // -> data both ways.
    let mut s = Records::new(&[2]);
    s.push(OP_TUN, &dns_packet("bob.ntm.internal", 1));
    s.push(
        OP_FROM_DC,
        &enc(&FromDc::Resolved {
            id: 1,
            result: signal::Resolution::Found(peer_info(false)),
        }),
    );
    s.push(OP_PEER_RESPOND, &[0]);
    let mut data = vec![0];
    data.extend(vip_packet(PEER_VIP, NODE_VIP, b"hello"));
    s.push(OP_PEER_DATA, &data);
    s.push(OP_TUN, &vip_packet(NODE_VIP, PEER_VIP, b"world"));
    s.push(OP_TIME, &30_000u32.to_le_bytes());
    out.push(s.into_bytes());

    // bob initiates, then control messages, then time for keepalive/rekey.
    let mut s = Records::new(&[0]);
    s.push(OP_PEER_INIT, &hello(UNIX_BASE * 1_000_000_000 + 5));
    for (kind, id) in [(1u8, 7u64), (2, 1000u64 << 32 | 1), (3, 9), (4, 9), (5, 0)] {
        s.push(OP_PEER_DATA, &ctl(kind, id));
    }
    s.push(OP_PEER_INIT, &hello(UNIX_BASE * 1_000_000_000 + 5));
    s.push(OP_PEER_INIT, &hello(1));
    s.push(OP_TIME, &130_000u32.to_le_bytes());
    s.push(OP_PEER_RESPOND, &[0]);
    s.push(OP_PING, b"bob");
    out.push(s.into_bytes());

    // Relayed pair: bind, probe, relayed handshake and data.
    let mut s = Records::new(&[4]);
    s.push(
        OP_BIND_ACK,
        &[1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 203, 0, 113, 1, 0x41, 0x9c],
    );
    s.push(
        OP_PROBE_REPLY,
        &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 203, 0, 113, 9, 0x42, 0x9c],
    );
    let mut init = hello(UNIX_BASE * 1_000_000_000 + 9);
    init[0] = 1;
    s.push(OP_PEER_INIT, &init);
    let mut data = vec![1];
    data.extend(vip_packet(PEER_VIP, NODE_VIP, b"via relay"));
    s.push(OP_PEER_DATA, &data);
    s.push(OP_TIME, &5_000u32.to_le_bytes());
    out.push(s.into_bytes());

    // DNS: PTR, AAAA, SOA, outside the domain (forwarded and answered).
    let mut s = Records::new(&[0]);
    s.push(OP_TUN, &dns_packet("9.0.18.198.in-addr.arpa", 12));
    s.push(
        OP_FROM_DC,
        &enc(&FromDc::Resolved {
            id: 1,
            result: signal::Resolution::NotFound,
        }),
    );
    s.push(OP_TUN, &dns_packet("bob.ntm.internal", 28));
    s.push(OP_TUN, &dns_packet("ntm.internal", 6));
    s.push(OP_TUN, &dns_packet("a.b.ntm.internal", 1));
    s.push(OP_TUN, &dns_packet("example.com", 1));
    let mut answer = vec![3];
    let mut a = dns_query("example.com", 1);
    a[2] = 0x81;
    a[3] = 0x80;
    answer.extend(a);
    s.push(OP_UPSTREAM, &answer);
    s.push(
        OP_TUN,
        &vip_packet(NODE_VIP, Ipv4Addr::new(198, 18, 0, 77), b"orphan"),
    );
    s.push(OP_TIME, &3_000u32.to_le_bytes());
    out.push(s.into_bytes());

    // Unregistered: refused, then accepted late; network change.
    let mut s = Records::new(&[1]);
    s.push(
        OP_REG_REPLY,
        &signal::encode(&RegisterReply::Refused {
            reason: "no".into(),
        })
        .expect("encode"),
    );
    s.push(OP_TIME, &61_000u32.to_le_bytes());
    s.push(
        OP_REG_REPLY,
        &signal::encode(&RegisterReply::Accepted(registered())).expect("encode"),
    );
    let mut net = vec![2];
    crate::put_addr(&mut net, sa("192.0.2.50:41641"));
    crate::put_addr(&mut net, sa("[2001:db8::50]:41641"));
    s.push(OP_NETWORK, &net);
    s.push(OP_FROM_DC, &enc(&FromDc::Direction(peer_info(true))));
    out.push(s.into_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness still drives the node where the seeds mean to go (a
    /// change in the node's protocol would otherwise leave the fuzzer at
    /// the door): the first three seeds each end with a tunnel to peer B.
    #[test]
    fn seeds_bring_tunnels_up() {
        for (i, seed) in seeds().iter().enumerate().take(3) {
            let h = run_harness(seed);
            assert!(h.peer_session.is_some(), "seed {i}: no tunnel to peer B");
        }
    }
}
