//! The sans-IO cores working together: two nodes and a DC exchanging
//! datagrams through an in-memory network, with simulated time.

use super::core::{NodeCore, NodeSettings, Output};
use crate::dc::core::{DcCore, DcSettings};
use crate::dc::store::Store;
use crate::keys::PrivateKey;
use crate::net::packet;
use crate::proto::wire;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

const DC_ADDR: &str = "198.51.100.10:7446";
const RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const TOKEN: &str = "token";
const UNIX_BASE: u64 = 1_700_000_000_000_000_000;

struct Node {
    addr: SocketAddr,
    core: NodeCore,
    /// Packets the node wrote into its TUN.
    tun: Vec<Vec<u8>>,
}

struct Net {
    /// Simulated time; wall clock is `UNIX_BASE` at `epoch`.
    epoch: Instant,
    now: Instant,
    dc: DcCore,
    dc_key: PrivateKey,
    nodes: Vec<Node>,
    /// Datagrams in flight: (from, to, bytes).
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// When false, everything sent to the DC is lost.
    dc_up: bool,
}

fn dc_core(key: &PrivateKey, store: Store) -> DcCore {
    DcCore::new(
        DcSettings {
            key: key.clone(),
            domain: "ntm.internal".into(),
            prefix: "198.18.0.0/15".parse().unwrap(),
            auth_keys: vec![TOKEN.into()],
            expiry: Duration::from_secs(90),
        },
        store,
        7,
    )
}

impl Net {
    fn new() -> Net {
        let dc_key = PrivateKey::generate();
        let now = Instant::now();
        Net {
            epoch: now,
            now,
            dc: dc_core(&dc_key, Store::in_memory().unwrap()),
            dc_key,
            nodes: Vec::new(),
            wire: VecDeque::new(),
            dc_up: true,
        }
    }

    fn add_node(&mut self, name: &str, addr: &str, auth_key: &str) -> usize {
        self.add_node_with_key(name, addr, auth_key, PrivateKey::generate())
    }

    fn add_node_with_key(
        &mut self,
        name: &str,
        addr: &str,
        auth_key: &str,
        key: PrivateKey,
    ) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut core = NodeCore::new(
            NodeSettings {
                name: name.into(),
                key,
                dc: vec![DC_ADDR.parse().unwrap()],
                dc_key: self.dc_key.public_key(),
                auth_key: auth_key.into(),
                keepalive: Some(Duration::from_secs(25)),
                rekey: Duration::from_secs(120),
                resolvers: vec![IpAddr::V4(RESOLVER)],
                unix_nanos_at_start: UNIX_BASE + (self.now - self.epoch).as_nanos() as u64,
                index_seed: 1000 * (self.nodes.len() as u32 + 1),
            },
            self.now,
        );
        core.set_local_endpoints(vec![addr]);
        self.nodes.push(Node {
            addr,
            core,
            tun: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn collect(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        while let Some(out) = node.core.poll_output() {
            match out {
                Output::Udp { to, bytes } => self.wire.push_back((node.addr, to, bytes)),
                Output::Tun(p) => node.tun.push(p),
                Output::Upstream { .. } | Output::Configure(_) => {}
            }
        }
    }

    /// Delivers datagrams until the network is quiet (bounded).
    fn settle(&mut self) {
        for _ in 0..1000 {
            for i in 0..self.nodes.len() {
                self.collect(i);
            }
            let Some((from, to, mut bytes)) = self.wire.pop_front() else {
                return;
            };
            if to == DC_ADDR.parse().unwrap() {
                if self.dc_up {
                    for t in self.dc.handle(from, &mut bytes, self.now, 1_700_000_000) {
                        self.wire.push_back((to, t.to, t.bytes));
                    }
                }
            } else if let Some(i) = self.nodes.iter().position(|n| n.addr == to) {
                self.nodes[i].core.handle_udp(from, &mut bytes, self.now);
            }
        }
        panic!("network never settled");
    }

    /// Advances time by `d` in small steps, running every timer.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(100);
            for i in 0..self.nodes.len() {
                self.nodes[i].core.handle_timeout(self.now);
            }
            self.dc.handle_timeout(self.now);
            self.settle();
        }
    }

    fn vip(&self, i: usize) -> Option<Ipv4Addr> {
        self.nodes[i].core.status(self.now).virtual_ip
    }

    /// Sends an A (or other) query from node `i`'s TUN; returns the answer.
    fn dns(&mut self, i: usize, name: &str, rtype: RecordType) -> Option<Message> {
        let mut q = Message::new(0x1234, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        q.metadata.recursion_desired = true;
        let client = SocketAddrV4::new(self.vip(i).unwrap(), 40000);
        let mut pkt = Vec::new();
        packet::build_ipv4_udp(
            client,
            SocketAddrV4::new(RESOLVER, 53),
            &q.to_vec().unwrap(),
            &mut pkt,
        );
        self.nodes[i].tun.clear();
        self.nodes[i].core.handle_tun(pkt, self.now);
        self.settle();
        for _ in 0..50 {
            if let Some(ans) = self.nodes[i].tun.iter().find_map(|p| {
                let udp = packet::parse_ipv4_udp(p)?;
                (udp.src.port() == 53 && udp.dst == client)
                    .then(|| Message::from_vec(udp.payload).ok())?
            }) {
                return Some(ans);
            }
            self.advance(Duration::from_millis(100));
        }
        None
    }
}

fn a_record(m: &Message) -> Option<Ipv4Addr> {
    m.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

fn registered_pair() -> Net {
    let mut net = Net::new();
    net.add_node("alice", "198.51.100.11:1000", TOKEN);
    net.add_node("bob", "198.51.100.12:2000", TOKEN);
    net.advance(Duration::from_millis(200));
    net
}

#[test]
fn nodes_register_and_get_distinct_virtual_ips() {
    let net = registered_pair();
    let (a, b) = (net.vip(0).unwrap(), net.vip(1).unwrap());
    assert_ne!(a, b);
    let prefix: ipnet::Ipv4Net = "198.18.0.0/15".parse().unwrap();
    assert!(prefix.contains(&a) && prefix.contains(&b));
    let st = net.nodes[0].core.status(net.now);
    assert_eq!(st.dc.state, "registered");
    assert_eq!(st.fqdn.as_deref(), Some("alice.ntm.internal"));
}

#[test]
fn dns_query_builds_tunnel_then_answers_with_virtual_ip() {
    let mut net = registered_pair();
    let alice_vip = net.vip(0).unwrap();
    let ans = net
        .dns(1, "Alice.ntm.internal.", RecordType::A)
        .expect("no DNS answer");
    assert_eq!(ans.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_record(&ans), Some(alice_vip));
    // The tunnel was up before the answer: both sides have a session.
    let bob_st = net.nodes[1].core.status(net.now);
    let alice_st = net.nodes[0].core.status(net.now);
    assert_eq!(bob_st.peers.len(), 1);
    assert_eq!(bob_st.peers[0].name, "alice");
    assert!(bob_st.peers[0].last_handshake_secs.is_some());
    assert_eq!(alice_st.peers[0].name, "bob");
    assert_eq!(bob_st.peers[0].endpoint, Some(net.nodes[0].addr));

    // Data sealed with bob's table opens with alice's table.
    let bob_table = net.nodes[1].core.take_table().unwrap();
    let alice_table = net.nodes[0].core.take_table().unwrap();
    let route = bob_table.by_vip.get(&alice_vip).expect("no route to alice");
    let mut rec = route
        .session
        .seal_to_vec(wire::DATA, b"inner ip packet")
        .unwrap();
    let h = wire::TransportHeader::decode(&rec).unwrap();
    let rx = alice_table
        .by_index
        .get(&h.receiver)
        .expect("alice has no rx route");
    let r = rx.session.open(&mut rec).unwrap();
    assert_eq!(&rec[r], b"inner ip packet");
}

#[test]
fn unknown_names_nxdomain_aaaa_empty_ptr_answered() {
    let mut net = registered_pair();
    let ans = net.dns(1, "nosuch.ntm.internal.", RecordType::A).unwrap();
    assert_eq!(ans.metadata.response_code, ResponseCode::NXDomain);
    let ans = net.dns(1, "alice.ntm.internal.", RecordType::AAAA).unwrap();
    assert_eq!(ans.metadata.response_code, ResponseCode::NoError);
    assert!(ans.answers.is_empty());
    let vip = net.vip(0).unwrap().octets();
    let ptr = format!("{}.{}.{}.{}.in-addr.arpa.", vip[3], vip[2], vip[1], vip[0]);
    let ans = net.dns(1, &ptr, RecordType::PTR).unwrap();
    let target = ans.answers.iter().find_map(|r| match &r.data {
        RData::PTR(p) => Some(p.0.to_ascii()),
        _ => None,
    });
    assert_eq!(target.as_deref(), Some("alice.ntm.internal."));
}

#[test]
fn other_names_are_forwarded_unchanged_and_answers_return() {
    let mut net = registered_pair();
    let mut q = Message::new(0x4242, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(
        Name::from_ascii("www.example.test.").unwrap(),
        RecordType::A,
    ));
    let query = q.to_vec().unwrap();
    let client = SocketAddrV4::new(net.vip(1).unwrap(), 41000);
    let mut pkt = Vec::new();
    packet::build_ipv4_udp(client, SocketAddrV4::new(RESOLVER, 53), &query, &mut pkt);
    let core = &mut net.nodes[1].core;
    core.handle_tun(pkt, net.now);
    let up = std::iter::from_fn(|| core.poll_output()).find_map(|o| match o {
        Output::Upstream { to, bytes } => Some((to, bytes)),
        _ => None,
    });
    let (to, bytes) = up.expect("query not forwarded");
    assert_eq!(to, SocketAddr::from((RESOLVER, 53)));
    assert_eq!(bytes, query, "forwarded query must be unchanged");
    let answer = b"\x42\x42rest-of-an-answer".to_vec();
    core.handle_upstream(to, &answer);
    let back = std::iter::from_fn(|| core.poll_output()).find_map(|o| match o {
        Output::Tun(p) => Some(p),
        _ => None,
    });
    let back = back.expect("answer not written to the TUN");
    let udp = packet::parse_ipv4_udp(&back).unwrap();
    assert_eq!(udp.payload, &answer[..]);
    assert_eq!(
        (udp.src, udp.dst),
        (SocketAddrV4::new(RESOLVER, 53), client)
    );
}

#[test]
fn packet_to_virtual_ip_without_tunnel_triggers_direction_and_is_delivered() {
    let mut net = registered_pair();
    let (alice_vip, bob_vip) = (net.vip(0).unwrap(), net.vip(1).unwrap());
    let mut pkt = Vec::new();
    packet::build_ipv4_udp(
        SocketAddrV4::new(bob_vip, 5000),
        SocketAddrV4::new(alice_vip, 6000),
        b"hi",
        &mut pkt,
    );
    net.nodes[1].core.handle_tun(pkt.clone(), net.now);
    net.settle();
    net.advance(Duration::from_millis(300));
    // Alice received the queued packet as a data record; open it with her table.
    let st = net.nodes[1].core.status(net.now);
    assert_eq!(st.peers.len(), 1, "no peer after first packet");
    assert!(
        st.peers[0].tx_bytes >= pkt.len() as u64,
        "queued packet not sent: {st:?}"
    );
}

#[test]
fn wrong_auth_key_is_refused_and_names_are_unique() {
    let mut net = Net::new();
    net.add_node("alice", "198.51.100.11:1000", TOKEN);
    net.add_node("mallory", "198.51.100.66:1000", "guess");
    net.add_node("alice", "198.51.100.67:1000", TOKEN);
    net.advance(Duration::from_millis(200));
    assert_eq!(net.nodes[0].core.status(net.now).dc.state, "registered");
    let m = net.nodes[1].core.status(net.now);
    assert_eq!(m.dc.state, "refused");
    assert!(m.dc.error.unwrap().contains("auth key"));
    let dup = net.nodes[2].core.status(net.now);
    assert_eq!(dup.dc.state, "refused");
    assert!(dup.dc.error.unwrap().contains("already held"));
    assert_eq!(dup.virtual_ip, None);
}

#[test]
fn handshakes_from_undirected_keys_are_dropped() {
    let mut net = registered_pair();
    net.add_node("carol", "198.51.100.13:3000", TOKEN);
    net.advance(Duration::from_millis(200));
    // Someone who knows alice's public key, but whom the DC never directed
    // to her, initiates a handshake.
    let init = crate::proto::handshake::Initiator::start(
        wire::HANDSHAKE_INIT,
        &PrivateKey::generate(),
        &net.nodes[0].core.public_key(),
        99,
        &crate::proto::signal::encode(&crate::proto::signal::PeerHello { timestamp: 1 }).unwrap(),
    )
    .unwrap()
    .1;
    let mut bytes = init;
    net.nodes[0]
        .core
        .handle_udp("198.51.100.13:3000".parse().unwrap(), &mut bytes, net.now);
    assert!(
        net.nodes[0].core.poll_output().is_none(),
        "alice answered an undirected key"
    );
    assert!(net.nodes[0].core.status(net.now).peers.is_empty());
}

#[test]
fn dc_unreachable_gives_servfail_not_a_hang_and_tunnels_keep_working() {
    let mut net = registered_pair();
    assert!(net.dns(1, "alice.ntm.internal.", RecordType::A).is_some());
    net.add_node("carol", "198.51.100.13:3000", TOKEN);
    net.advance(Duration::from_millis(200));
    net.dc_up = false;
    let ans = net
        .dns(1, "carol.ntm.internal.", RecordType::A)
        .expect("no answer while the DC is down");
    assert_eq!(ans.metadata.response_code, ResponseCode::ServFail);
    // A known peer still resolves and its tunnel stays.
    let ans = net.dns(1, "alice.ntm.internal.", RecordType::A).unwrap();
    assert_eq!(a_record(&ans), net.vip(0));
    // When the DC returns, the node registers again and new names work.
    net.dc_up = true;
    net.advance(Duration::from_secs(40));
    let ans = net.dns(1, "carol.ntm.internal.", RecordType::A).unwrap();
    assert_eq!(a_record(&ans), net.vip(2));
}

#[test]
fn dc_restart_keeps_virtual_ips() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new();
    net.dc = dc_core(&net.dc_key, Store::open(dir.path()).unwrap());
    net.add_node("alice", "198.51.100.11:1000", TOKEN);
    net.add_node("bob", "198.51.100.12:2000", TOKEN);
    net.advance(Duration::from_millis(200));
    let before = (net.vip(0), net.vip(1));
    // Restart: a fresh core on the same state directory. The old core (and
    // its file lock) must go first.
    net.dc = dc_core(&net.dc_key, Store::in_memory().unwrap());
    net.dc = dc_core(&net.dc_key, Store::open(dir.path()).unwrap());
    // Register in the opposite order this time.
    net.nodes.swap(0, 1);
    net.advance(Duration::from_secs(25));
    assert_eq!((net.vip(1), net.vip(0)), before);
    assert_eq!(net.nodes[0].core.status(net.now).dc.state, "registered");
}

#[test]
fn rekey_replaces_session_and_old_records_still_open() {
    let mut net = registered_pair();
    let alice_vip = net.vip(0).unwrap();
    net.dns(1, "alice.ntm.internal.", RecordType::A).unwrap();
    let old = net.nodes[1].core.take_table().unwrap();
    let old_route = old.by_vip.get(&alice_vip).unwrap();
    let mut in_flight = old_route.session.seal_to_vec(wire::DATA, b"late").unwrap();
    net.advance(Duration::from_secs(125));
    let new = net.nodes[1].core.take_table().unwrap();
    let new_route = new.by_vip.get(&alice_vip).unwrap();
    assert_ne!(
        new_route.session.local_index, old_route.session.local_index,
        "no rekey happened"
    );
    let alice_table = net.nodes[0].core.take_table().unwrap();
    let h = wire::TransportHeader::decode(&in_flight).unwrap();
    let rx = alice_table
        .by_index
        .get(&h.receiver)
        .expect("old session dropped too early");
    assert!(rx.session.open(&mut in_flight).is_ok());
}

#[test]
fn silent_nodes_expire_but_keep_their_address() {
    let mut net = Net::new();
    let alice_key = PrivateKey::generate();
    net.add_node_with_key("alice", "198.51.100.11:1000", TOKEN, alice_key.clone());
    net.add_node("bob", "198.51.100.12:2000", TOKEN);
    net.advance(Duration::from_millis(200));
    let alice_vip = net.vip(0);
    // Alice goes silent (powered off): she stops refreshing.
    let gone = net.nodes.remove(0);
    drop(gone);
    net.advance(Duration::from_secs(100));
    assert_eq!(net.dc.online_count(), 1);
    let ans = net.dns(0, "alice.ntm.internal.", RecordType::A).unwrap();
    assert_eq!(
        ans.metadata.response_code,
        ResponseCode::ServFail,
        "offline node must not resolve"
    );
    // She comes back from another address with the same key: same address.
    let i = net.add_node_with_key("alice", "203.0.113.11:1000", TOKEN, alice_key);
    net.advance(Duration::from_millis(200));
    assert_eq!(net.vip(i), alice_vip);
    let ans = net.dns(0, "alice.ntm.internal.", RecordType::A).unwrap();
    assert_eq!(a_record(&ans), alice_vip);
}

#[test]
fn replayed_registration_is_ignored_by_the_dc() {
    let mut net = Net::new();
    net.add_node("alice", "198.51.100.11:1000", TOKEN);
    net.nodes[0].core.handle_timeout(net.now);
    let Some(Output::Udp { to, bytes }) = net.nodes[0].core.poll_output() else {
        panic!("no registration sent")
    };
    let from = net.nodes[0].addr;
    let first = net.dc.handle(from, &mut bytes.clone(), net.now, 1);
    assert_eq!(first.len(), 1, "DC did not answer the registration");
    let again = net.dc.handle(from, &mut bytes.clone(), net.now, 1);
    assert!(again.is_empty(), "DC answered a replayed registration");
    assert_eq!(to, DC_ADDR.parse().unwrap());
}
