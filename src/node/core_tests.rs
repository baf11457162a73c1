//! The sans-IO cores working together: two nodes and a DC exchanging
//! datagrams through an in-memory network, with simulated time.

use super::core::{NodeCore, NodeSettings};
use super::output::Output;
use crate::dc::core::DcCore;
use crate::dc::settings::{DcChange, DcSettings, RelaySpec, RouteGrant};
use crate::dc::store::Store;
use crate::keys::PrivateKey;
use crate::net::packet;
use crate::proto::ticket::TicketKey;
use crate::proto::wire;
use crate::proto::wire::Kind;
use crate::relay::core::{Action as RelayAction, RelayCore};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

#[path = "core_tests_flood.rs"]
mod flood;
#[path = "core_tests_idle.rs"]
mod idle;
#[path = "core_tests_link.rs"]
mod link;
#[path = "core_tests_loop.rs"]
mod loop_guard;
#[path = "core_tests_path.rs"]
mod path;
#[path = "core_tests_simultaneous.rs"]
mod simultaneous;

const DC_ADDR: &str = "198.51.100.10:7446";
const RELAY_ADDR: &str = "198.51.100.20:7447";
const RELAY6_ADDR: &str = "[2001:db8:100::20]:7447";
const RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const TOKEN: &str = "token";
const UNIX_BASE: u64 = 1_700_000_000_000_000_000;

/// A NAT router in front of some nodes. Mapping is endpoint-independent
/// (`cone`) or per destination (symmetric); filtering is always per remote
/// address and port, like nftables masquerade and most home routers. Each
/// (public port, remote) pair is a conntrack entry: it lets the remote's
/// answers in while it lives (`timeouts`), and packets both ways refresh it.
struct Nat {
    public: IpAddr,
    cone: bool,
    /// A firewall that lets in only answers from the DC and the relay
    /// (punching cannot work).
    closed: bool,
    next_port: u16,
    /// (inner, destination or None for cone) -> public port.
    map: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// (public port, remote) -> the conntrack entry.
    flows: HashMap<(u16, SocketAddr), Flow>,
    /// None: entries never expire.
    timeouts: Option<Conntrack>,
}

/// Linux's UDP conntrack lifetimes: `nf_conntrack_udp_timeout` until an
/// entry has seen both directions and lived past 2 s, then
/// `nf_conntrack_udp_timeout_stream` (net/netfilter/nf_conntrack_proto_udp.c).
#[derive(Clone, Copy)]
struct Conntrack {
    unreplied: Duration,
    stream: Duration,
}

impl Conntrack {
    /// The defaults (30 s, 120 s), as in a home router running Linux.
    const LINUX: Conntrack = Conntrack {
        unreplied: Duration::from_secs(30),
        stream: Duration::from_secs(120),
    };
}

struct Flow {
    inner: SocketAddr,
    created: Instant,
    replied: bool,
    /// None while `timeouts` is None.
    expires: Option<Instant>,
}

impl Nat {
    /// Forgets entries whose time is up.
    fn expire(&mut self, now: Instant) {
        self.flows.retain(|_, f| f.expires.is_none_or(|e| now < e));
    }

    /// A packet of `flow` passed: its timer starts again, longer once it is
    /// a stream.
    fn refresh(timeouts: Option<Conntrack>, flow: &mut Flow, now: Instant) {
        flow.expires = timeouts.map(|t| {
            let stream = flow.replied && now > flow.created + Duration::from_secs(2);
            now + if stream { t.stream } else { t.unreplied }
        });
    }

    fn outbound(&mut self, inner: SocketAddr, to: SocketAddr, now: Instant) -> SocketAddr {
        self.expire(now);
        let key = (inner, (!self.cone).then_some(to));
        // A per-destination NAT picks a fresh port for a new entry
        // (masquerade fully-random); a cone keeps the inner's port.
        if let Some(port) = self.map.get(&key) {
            if !self.cone && !self.flows.contains_key(&(*port, to)) {
                self.map.remove(&key);
            }
        }
        let port = *self.map.entry(key).or_insert_with(|| {
            self.next_port += 1;
            self.next_port
        });
        let flow = self.flows.entry((port, to)).or_insert(Flow {
            inner,
            created: now,
            replied: false,
            expires: None,
        });
        Self::refresh(self.timeouts, flow, now);
        SocketAddr::new(self.public, port)
    }

    fn inbound(&mut self, from: SocketAddr, port: u16, now: Instant) -> Option<SocketAddr> {
        self.expire(now);
        let infrastructure = Net::is_dc(from)
            || from == RELAY_ADDR.parse().unwrap()
            || from == RELAY6_ADDR.parse().unwrap();
        if self.closed && !infrastructure {
            return None;
        }
        let flow = self.flows.get_mut(&(port, from))?;
        flow.replied = true;
        Self::refresh(self.timeouts, flow, now);
        Some(flow.inner)
    }
}

struct Node {
    addr: SocketAddr,
    /// A dual-stack node's IPv6 address (sources what it sends to IPv6).
    addr6: Option<SocketAddr>,
    /// Index into `Net::nats` when behind a NAT.
    nat: Option<usize>,
    core: NodeCore,
    /// Packets the node wrote into its TUN.
    tun: Vec<Vec<u8>>,
    /// A powered-off or unplugged node neither sends nor receives.
    online: bool,
}

impl Node {
    /// Names the node in the log lines of what it does next.
    fn span(&self) -> tracing::span::EnteredSpan {
        tracing::info_span!("node", name = %self.core.status_name()).entered()
    }
}

struct Net {
    /// Simulated time; wall clock is `UNIX_BASE` at `epoch`.
    epoch: Instant,
    now: Instant,
    dc: DcCore,
    dc_key: PrivateKey,
    relay: Option<RelayCore>,
    /// The DC's relays: `with_relay`'s relay.
    relay_specs: Vec<RelaySpec>,
    nats: Vec<Nat>,
    nodes: Vec<Node>,
    /// Datagrams in flight: (from, to, bytes), addresses as on the wire.
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// When false, everything sent to the DC is lost.
    dc_up: bool,
    relay_up: bool,
    /// Datagrams the relay forwarded.
    relayed: usize,
    /// Larger UDP payloads are lost on the way (a narrow link whose
    /// router's ICMP never arrives).
    max_datagram: usize,
    /// Datagrams to IPv6 addresses are delivered before the others (a
    /// responder whose workers hand the IPv6 initiation over first).
    v6_first: bool,
    /// IPv4 between nodes is lost (the DC and the relay still answer).
    v4_down: bool,
    /// Datagrams in flight are delivered in an order this generator picks
    /// (None: first sent, first delivered).
    shuffle: Option<rand::rngs::StdRng>,
    /// Handshake messages between nodes (direct or relayed) are lost with
    /// this probability, drawn from this generator.
    loss: Option<(rand::rngs::StdRng, f64)>,
}

fn dc_core(key: &PrivateKey, store: Store, relays: Vec<RelaySpec>, now: Instant) -> DcCore {
    DcCore::new(
        DcSettings {
            key: key.clone(),
            domain: "ntm.internal".into(),
            prefix: "198.18.0.0/15".parse().unwrap(),
            auth_keys: vec![TOKEN.into()],
            expiry: Duration::from_secs(90),
            relays,
        },
        store,
        7,
        now,
    )
}

impl Net {
    fn new() -> Net {
        let dc_key = PrivateKey::generate();
        let now = Instant::now();
        Net {
            epoch: now,
            now,
            dc: dc_core(&dc_key, Store::in_memory().unwrap(), Vec::new(), now),
            dc_key,
            relay: None,
            relay_specs: Vec::new(),
            nats: Vec::new(),
            nodes: Vec::new(),
            wire: VecDeque::new(),
            dc_up: true,
            relay_up: true,
            relayed: 0,
            max_datagram: usize::MAX,
            v6_first: false,
            v4_down: false,
            shuffle: None,
            loss: None,
        }
    }

    /// A network with a dual-stack relay the DC knows.
    fn with_relay() -> Net {
        let mut net = Net::new();
        let relay_key = PrivateKey::generate();
        let spec = RelaySpec {
            public_key: relay_key.public_key(),
            addresses: vec![RELAY_ADDR.parse().unwrap(), RELAY6_ADDR.parse().unwrap()],
        };
        net.dc = dc_core(
            &net.dc_key,
            Store::in_memory().unwrap(),
            vec![spec.clone()],
            net.now,
        );
        net.relay_specs = vec![spec];
        net.relay = Some(RelayCore::new(
            TicketKey::derive(&relay_key, &net.dc_key.public_key()),
            u64::MAX,
        ));
        net
    }

    fn add_nat(&mut self, public: &str, cone: bool) -> usize {
        self.nats.push(Nat {
            public: public.parse().unwrap(),
            cone,
            closed: false,
            next_port: 40000 + 1000 * self.nats.len() as u16,
            map: HashMap::new(),
            flows: HashMap::new(),
            timeouts: None,
        });
        self.nats.len() - 1
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
        self.add_node_full(name, addr, auth_key, key, None)
    }

    fn add_natted(&mut self, name: &str, addr: &str, nat: usize) -> usize {
        self.add_node_full(name, addr, TOKEN, PrivateKey::generate(), Some(nat))
    }

    fn add_node_full(
        &mut self,
        name: &str,
        addr: &str,
        auth_key: &str,
        key: PrivateKey,
        nat: Option<usize>,
    ) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        let dc: SocketAddr = if addr.is_ipv4() {
            DC_ADDR.parse().unwrap()
        } else {
            "[2001:db8:100::10]:7446".parse().unwrap()
        };
        let mut core = NodeCore::new(
            NodeSettings {
                name: name.into(),
                key,
                dc: vec![dc],
                dc_key: self.dc_key.public_key(),
                auth_key: auth_key.into(),
                keepalive: Some(Duration::from_secs(crate::config::DEFAULT_KEEPALIVE_SECS)),
                rekey: Duration::from_secs(120),
                resolvers: vec![IpAddr::V4(RESOLVER)],
                unix_nanos_at_start: UNIX_BASE + (self.now - self.epoch).as_nanos() as u64,
                index_seed: 1000 * (self.nodes.len() as u64 + 1),
            },
            self.now,
        );
        core.set_local_endpoints(vec![addr]);
        self.nodes.push(Node {
            addr,
            addr6: None,
            nat,
            core,
            tun: Vec::new(),
            online: true,
        });
        self.nodes.len() - 1
    }

    fn collect(&mut self, i: usize) {
        let mut outs = Vec::new();
        while let Some(o) = self.nodes[i].core.poll_output() {
            outs.push(o);
        }
        for o in outs {
            match o {
                Output::Udp { to, bytes } if self.nodes[i].online => {
                    // Leaving the LAN through the node's NAT, unless the
                    // destination is on the same LAN.
                    let inner = match self.nodes[i].addr6 {
                        Some(a6) if to.is_ipv6() => a6,
                        _ => self.nodes[i].addr,
                    };
                    let from = match self.nodes[i].nat {
                        Some(k) if !self.nodes.iter().any(|n| n.nat == Some(k) && n.addr == to) => {
                            self.nats[k].outbound(inner, to, self.now)
                        }
                        _ => inner,
                    };
                    self.wire.push_back((from, to, bytes));
                }
                Output::Tun(p) => self.nodes[i].tun.push(p),
                _ => {}
            }
        }
    }

    fn is_dc(to: SocketAddr) -> bool {
        to == DC_ADDR.parse().unwrap() || to == "[2001:db8:100::10]:7446".parse().unwrap()
    }

    fn unix(&self) -> u64 {
        (UNIX_BASE + (self.now - self.epoch).as_nanos() as u64) / 1_000_000_000
    }

    fn deliver_to_node(&mut self, from: SocketAddr, to: SocketAddr, mut bytes: Vec<u8>) {
        if let Some((rng, p)) = &mut self.loss {
            let handshake = match wire::parse(&bytes) {
                Ok(wire::Datagram::Relayed { inner, .. }) => Kind::of(inner),
                _ => Kind::of(&bytes),
            }
            .is_ok_and(|k| {
                [Kind::HandshakeInit, Kind::HandshakeResp, Kind::CookieReply].contains(&k)
            });
            if handshake && rand::Rng::gen_bool(rng, *p) {
                return;
            }
        }
        let sender_nat = self
            .nodes
            .iter()
            .find(|n| n.addr == from)
            .and_then(|n| n.nat);
        if self.v4_down && to.is_ipv4() && self.nodes.iter().any(|n| n.addr == from) {
            return;
        }
        let direct = self.nodes.iter().position(|n| {
            n.online
                && (n.addr == to || n.addr6 == Some(to))
                && (n.nat.is_none() || (sender_nat.is_some() && n.nat == sender_nat))
        });
        let target = direct.or_else(|| {
            let k = self.nats.iter().position(|n| n.public == to.ip())?;
            let inner = self.nats[k].inbound(from, to.port(), self.now)?;
            self.nodes
                .iter()
                .position(|n| n.online && n.nat == Some(k) && n.addr == inner)
        });
        if let Some(i) = target {
            let _node = self.nodes[i].span();
            self.nodes[i].core.handle_udp(from, &mut bytes, self.now);
        }
    }

    /// Delivers datagrams until the network is quiet (bounded).
    fn settle(&mut self) {
        let (relay4, relay6): (SocketAddr, SocketAddr) =
            (RELAY_ADDR.parse().unwrap(), RELAY6_ADDR.parse().unwrap());
        for _ in 0..5000 {
            for i in 0..self.nodes.len() {
                self.collect(i);
            }
            let next = match (
                self.wire.iter().position(|d| d.1.is_ipv6()),
                &mut self.shuffle,
            ) {
                (Some(k), _) if self.v6_first => self.wire.remove(k),
                (_, Some(rng)) if !self.wire.is_empty() => {
                    let k = rand::Rng::gen_range(rng, 0..self.wire.len());
                    self.wire.remove(k)
                }
                _ => self.wire.pop_front(),
            };
            let Some((from, to, mut bytes)) = next else {
                return;
            };
            if bytes.len() > self.max_datagram {
                continue;
            }
            let unix = self.unix();
            if Self::is_dc(to) {
                if self.dc_up {
                    for t in self.dc.handle(from, &mut bytes, self.now, unix) {
                        self.wire.push_back((to, t.to, t.bytes));
                    }
                }
            } else if to == relay4 || to == relay6 {
                let Some(relay) = self.relay.as_mut().filter(|_| self.relay_up) else {
                    continue;
                };
                match relay.handle(from, &bytes, self.now, unix) {
                    RelayAction::Forward(dst) => {
                        self.relayed += 1;
                        let src = if dst.is_ipv4() { relay4 } else { relay6 };
                        self.wire.push_back((src, dst, bytes));
                    }
                    RelayAction::Reply(r) => self.wire.push_back((to, from, r)),
                    RelayAction::Drop(_) => {}
                }
            } else {
                self.deliver_to_node(from, to, bytes);
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
                let _node = self.nodes[i].span();
                self.nodes[i].core.handle_timeout(self.now);
            }
            let unix = self.unix();
            for t in self.dc.handle_timeout(self.now, unix) {
                let from: SocketAddr = DC_ADDR.parse().unwrap();
                self.wire.push_back((from, t.to, t.bytes));
            }
            self.settle();
        }
    }

    /// Node `i`'s app asks `dns_server` (port 53) for www.example.test
    /// with DNS id `id`: returns the query and what the node forwarded
    /// upstream, if anything.
    fn forward_other_name(
        &mut self,
        i: usize,
        dns_server: Ipv4Addr,
        id: u16,
    ) -> (Vec<u8>, Option<(SocketAddr, Vec<u8>)>) {
        let mut q = Message::new(id, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        ));
        let query = q.to_vec().unwrap();
        let client = SocketAddrV4::new(self.vip(i).unwrap(), 41000);
        let mut pkt = Vec::new();
        packet::build_ipv4_udp(client, SocketAddrV4::new(dns_server, 53), &query, &mut pkt);
        let core = &mut self.nodes[i].core;
        core.handle_tun(pkt, self.now);
        let up = std::iter::from_fn(|| core.poll_output()).find_map(|o| match o {
            Output::Upstream { to, bytes } => Some((to, bytes)),
            _ => None,
        });
        (query, up)
    }

    fn vip(&self, i: usize) -> Option<Ipv4Addr> {
        self.nodes[i].core.status(self.now).virtual_ip
    }

    /// Sends an A (or other) query from node `i`'s TUN; returns the answer.
    fn dns(&mut self, i: usize, name: &str, rtype: RecordType) -> Option<Message> {
        self.dns_via(i, RESOLVER, name, rtype)
    }

    /// Like `dns`, to the resolver address `server`; the answer must come
    /// from it.
    fn dns_via(
        &mut self,
        i: usize,
        server: Ipv4Addr,
        name: &str,
        rtype: RecordType,
    ) -> Option<Message> {
        let client = SocketAddrV4::new(self.vip(i).unwrap(), 40000);
        let pkt = dns_query(client, server, name, rtype);
        self.nodes[i].tun.clear();
        self.nodes[i].core.handle_tun(pkt, self.now);
        self.settle();
        for _ in 0..50 {
            if let Some(ans) = self.nodes[i].tun.iter().find_map(|p| {
                let udp = packet::parse_ipv4_udp(p)?;
                (udp.src == SocketAddrV4::new(server, 53) && udp.dst == client)
                    .then(|| Message::from_vec(udp.payload).ok())?
            }) {
                return Some(ans);
            }
            self.advance(Duration::from_millis(100));
        }
        None
    }
}

/// A recursive DNS query for `name` from `client` to `server`, as an IPv4
/// packet written into a TUN.
pub(super) fn dns_query(
    client: SocketAddrV4,
    server: Ipv4Addr,
    name: &str,
    rtype: RecordType,
) -> Vec<u8> {
    let mut q = Message::new(0x1234, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    q.metadata.recursion_desired = true;
    let mut pkt = Vec::new();
    packet::build_ipv4_udp(
        client,
        SocketAddrV4::new(server, 53),
        &q.to_vec().unwrap(),
        &mut pkt,
    );
    pkt
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
        .seal_to_vec(Kind::Data, b"inner ip packet")
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
    let (query, up) = net.forward_other_name(1, RESOLVER, 0x4242);
    let (to, bytes) = up.expect("query not forwarded");
    assert_eq!(to, SocketAddr::from((RESOLVER, 53)));
    assert_eq!(bytes, query, "forwarded query must be unchanged");
    let answer = b"\x42\x42rest-of-an-answer".to_vec();
    let client = SocketAddrV4::new(net.vip(1).unwrap(), 41000);
    let core = &mut net.nodes[1].core;
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
        Kind::HandshakeInit,
        &PrivateKey::generate(),
        &net.nodes[0].core.public_key(),
        99,
        &crate::proto::signal::encode(&crate::proto::signal::PeerHello {
            timestamp: 1,
            incarnation: 1,
        })
        .unwrap(),
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
    let status = net.nodes[0].core.status(net.now);
    assert!(status.peers.is_empty());
    assert_eq!(status.refused_handshakes.undirected, 1);
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
    net.dc = dc_core(
        &net.dc_key,
        Store::open(dir.path()).unwrap(),
        Vec::new(),
        net.now,
    );
    net.add_node("alice", "198.51.100.11:1000", TOKEN);
    net.add_node("bob", "198.51.100.12:2000", TOKEN);
    net.advance(Duration::from_millis(200));
    let before = (net.vip(0), net.vip(1));
    // Restart: a fresh core on the same state directory. The old core (and
    // its file lock) must go first.
    net.dc = dc_core(
        &net.dc_key,
        Store::in_memory().unwrap(),
        Vec::new(),
        net.now,
    );
    net.dc = dc_core(
        &net.dc_key,
        Store::open(dir.path()).unwrap(),
        Vec::new(),
        net.now,
    );
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
    let mut in_flight = old_route.session.seal_to_vec(Kind::Data, b"late").unwrap();
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

// ----- connectivity: NATs, relay, IPv4/IPv6, mobility ---------------------

impl Net {
    /// Alice and bob each behind their own NAT (cone or per destination);
    /// `closed`: bob's NAT lets nothing in but the DC and the relay.
    fn two_nats(cone: bool, closed: bool) -> Net {
        let mut net = Net::with_relay();
        let (na, nb) = (
            net.add_nat("198.51.100.101", cone),
            net.add_nat("198.51.100.102", cone),
        );
        net.nats[nb].closed = closed; // nats[1]: bob's
        net.add_natted("alice", "192.0.2.2:5000", na);
        net.add_natted("bob", "192.0.2.66:5000", nb);
        net
    }

    /// Sends one IP packet from node `a`'s TUN to node `b`; true if it came
    /// out of `b`'s TUN.
    fn deliver(&mut self, a: usize, b: usize, tag: u8) -> bool {
        let (va, vb) = (self.vip(a).unwrap(), self.vip(b).unwrap());
        let mut pkt = Vec::new();
        packet::build_ipv4_udp(
            SocketAddrV4::new(va, 7000),
            SocketAddrV4::new(vb, 7001),
            &[tag; 40],
            &mut pkt,
        );
        self.nodes[b].tun.clear();
        self.nodes[a].core.handle_tun(pkt.clone(), self.now);
        self.settle();
        self.nodes[b].tun.contains(&pkt)
    }

    fn peer_path(&self, i: usize) -> (String, Option<SocketAddr>) {
        let st = self.nodes[i].core.status(self.now);
        let p = &st.peers[0];
        (p.path.clone(), p.endpoint)
    }

    /// Alice (node 0) looks up bob (node 1) by name: the trigger.
    fn connect(&mut self) {
        self.advance(Duration::from_millis(300));
        let ans = self
            .dns(0, "bob.ntm.internal.", RecordType::A)
            .expect("no DNS answer");
        assert_eq!(a_record(&ans), self.vip(1));
        self.advance(Duration::from_secs(5));
    }
}

#[test]
fn two_cone_nats_punch_a_direct_path() {
    let mut net = Net::two_nats(true, false);
    net.connect();
    assert!(
        net.deliver(0, 1, 1) && net.deliver(1, 0, 2),
        "no data through the punched path"
    );
    let (path, ep) = net.peer_path(0);
    assert_eq!(path, "punched");
    assert_eq!(
        ep.unwrap().ip(),
        "198.51.100.102".parse::<IpAddr>().unwrap(),
        "alice must send to bob's NAT directly"
    );
    assert_eq!(
        net.relayed, 0,
        "the relay carried traffic although punching worked"
    );
}

#[test]
fn symmetric_nats_go_through_the_relay() {
    let mut net = Net::two_nats(false, false);
    net.connect();
    assert!(
        net.deliver(0, 1, 1) && net.deliver(1, 0, 2),
        "no data through the relay"
    );
    let (path, ep) = net.peer_path(0);
    assert_eq!(path, "relay");
    assert_eq!(ep, Some(RELAY_ADDR.parse().unwrap()));
    assert!(net.relayed > 0);
    // Upgrade probes keep failing against symmetric NATs: still relayed.
    net.advance(Duration::from_secs(12));
    assert!(net.deliver(0, 1, 3));
    assert_eq!(net.peer_path(0).0, "relay");
}

#[test]
fn public_node_and_natted_node_talk_directly_both_ways_of_asking() {
    for natted_asks in [false, true] {
        let mut net = Net::with_relay();
        let nb = net.add_nat("198.51.100.102", false);
        if natted_asks {
            net.add_natted("alice", "192.0.2.66:5000", nb);
            net.add_node("bob", "198.51.100.12:5000", TOKEN);
        } else {
            net.add_node("alice", "198.51.100.11:5000", TOKEN);
            net.add_natted("bob", "192.0.2.66:5000", nb);
        }
        net.connect();
        assert!(
            net.deliver(0, 1, 1) && net.deliver(1, 0, 2),
            "natted_asks={natted_asks}"
        );
        assert_eq!(net.peer_path(0).0, "direct", "natted_asks={natted_asks}");
        assert_eq!(net.relayed, 0, "natted_asks={natted_asks}");
    }
}

#[test]
fn same_nat_uses_local_addresses() {
    let mut net = Net::with_relay();
    let n = net.add_nat("198.51.100.101", false);
    net.add_natted("alice", "192.0.2.2:5000", n);
    net.add_natted("bob", "192.0.2.3:5000", n);
    net.connect();
    assert!(net.deliver(0, 1, 1) && net.deliver(1, 0, 2));
    assert_eq!(
        net.peer_path(0),
        (
            "direct".to_string(),
            Some("192.0.2.3:5000".parse().unwrap())
        )
    );
}

#[test]
fn ipv4_only_and_ipv6_only_nodes_meet_through_the_relay() {
    let mut net = Net::with_relay();
    net.add_node("alice", "198.51.100.11:5000", TOKEN);
    net.add_node("bob", "[2001:db8:100::12]:5000", TOKEN);
    net.connect();
    assert!(net.deliver(0, 1, 1) && net.deliver(1, 0, 2));
    assert_eq!(
        net.peer_path(0),
        ("relay".to_string(), Some(RELAY_ADDR.parse().unwrap()))
    );
    assert_eq!(
        net.peer_path(1),
        ("relay".to_string(), Some(RELAY6_ADDR.parse().unwrap()))
    );
}

#[test]
fn failed_punch_falls_back_to_the_relay() {
    let mut net = Net::two_nats(true, true);
    net.connect();
    assert!(
        net.deliver(0, 1, 1) && net.deliver(1, 0, 2),
        "no fallback to the relay"
    );
    assert_eq!(net.peer_path(0).0, "relay");
}

#[test]
fn relayed_pair_upgrades_to_direct_when_a_path_opens() {
    let mut net = Net::two_nats(true, true);
    net.connect();
    assert_eq!(net.peer_path(0).0, "relay");
    net.nats[1].closed = false;
    // A direct path that failed is not retried for 30 s (no flapping).
    for _ in 0..45 {
        net.advance(Duration::from_secs(1));
        assert!(net.deliver(0, 1, 9), "traffic lost during the upgrade");
    }
    assert_eq!(net.peer_path(0).0, "punched", "never upgraded to direct");
    assert_eq!(net.peer_path(1).0, "punched");
}

#[test]
fn dead_direct_path_falls_back_to_the_relay_within_seconds() {
    let mut net = Net::two_nats(true, false);
    net.connect();
    assert_eq!(net.peer_path(0).0, "punched");
    // Bob's router starts dropping everything from outside.
    net.nats[1].closed = true;
    let mut recovered = None;
    for step in 0..40 {
        net.advance(Duration::from_millis(250));
        let mut p = Vec::new();
        let (va, vb) = (net.vip(0).unwrap(), net.vip(1).unwrap());
        packet::build_ipv4_udp(
            SocketAddrV4::new(va, 1),
            SocketAddrV4::new(vb, 2),
            b"stream",
            &mut p,
        );
        let now = net.now;
        net.nodes[0].core.handle_tun(p, now);
        if net.peer_path(0).0 == "relay" && net.deliver(0, 1, 5) {
            recovered = Some(step);
            break;
        }
    }
    let steps = recovered.expect("never fell back to the relay");
    assert!(steps <= 24, "took {} ms", steps * 250);
}

#[test]
fn roaming_node_keeps_its_tunnel() {
    let mut net = Net::with_relay();
    net.add_node("alice", "198.51.100.11:5000", TOKEN);
    net.add_node("bob", "198.51.100.12:5000", TOKEN);
    net.connect();
    assert!(net.deliver(0, 1, 1));
    // Bob moves to another network.
    let new: SocketAddr = "203.0.113.12:5000".parse().unwrap();
    net.nodes[1].addr = new;
    net.nodes[1].core.handle_network_change(vec![new], net.now);
    net.settle();
    assert_eq!(
        net.peer_path(0).1,
        Some(new),
        "alice did not learn bob's new address"
    );
    assert!(net.deliver(0, 1, 2) && net.deliver(1, 0, 3));
    net.advance(Duration::from_secs(25));
    assert_eq!(net.nodes[1].core.status(net.now).dc.reflexive, Some(new));
}

#[test]
fn restarted_peer_gets_a_fresh_handshake_within_seconds() {
    let mut net = Net::with_relay();
    let bob_key = PrivateKey::generate();
    net.add_node("alice", "198.51.100.11:5000", TOKEN);
    net.add_node_with_key("bob", "198.51.100.12:5000", TOKEN, bob_key.clone());
    net.connect();
    assert!(net.deliver(0, 1, 1));
    // Bob restarts: same key and name, new process, new port.
    net.nodes.remove(1);
    net.add_node_with_key("bob", "198.51.100.12:6000", TOKEN, bob_key);
    net.advance(Duration::from_millis(500));
    let mut back = None;
    for step in 0..40 {
        net.advance(Duration::from_millis(250));
        if net.deliver(0, 1, 2) {
            back = Some(step);
            break;
        }
    }
    let steps = back.expect("alice never reached the restarted bob");
    assert!(steps <= 32, "took {} ms", steps * 250);
    assert_eq!(
        net.peer_path(0).1,
        Some("198.51.100.12:6000".parse().unwrap())
    );
}

#[test]
fn probing_finds_a_narrow_path_and_the_workers_get_it() {
    let mut net = Net::two_nats(true, false);
    net.connect();
    assert_eq!(net.peer_path(0).0, "punched");
    let mtu = |net: &Net, i: usize| net.nodes[i].core.status(net.now).peers[0].path_mtu;
    assert_eq!(
        (mtu(&net, 0), mtu(&net, 1)),
        (1432, 1432),
        "a 1500-byte IPv4 path"
    );
    // A 1280-byte IPv4 link that eats ICMP: UDP payloads above 1252 bytes
    // vanish, so inner packets above 1220 do.
    // The path narrows later: the next round (at most `REPROBE` on, while
    // traffic flows) finds out.
    net.max_datagram = 1280 - 28;
    let rounds = crate::node::pmtu::REPROBE.as_millis() / 250 + 20;
    for tag in 0..rounds {
        assert!(net.deliver(0, 1, tag as u8), "small packets keep flowing");
        net.advance(Duration::from_millis(250));
        if mtu(&net, 0) == 1220 && mtu(&net, 1) == 1220 {
            break;
        }
    }
    assert_eq!((mtu(&net, 0), mtu(&net, 1)), (1220, 1220));
    let table = net.nodes[0]
        .core
        .take_table()
        .expect("a new table for the workers");
    let route = table
        .by_vip
        .get(&net.vip(1).unwrap())
        .expect("route to bob");
    assert_eq!(route.mtu, 1220);
}

#[test]
fn a_narrow_path_from_the_start_is_found_within_seconds() {
    let mut net = Net::two_nats(true, false);
    net.max_datagram = 1280 - 28;
    net.connect();
    let st = net.nodes[0].core.status(net.now);
    assert_eq!(st.peers[0].path, "punched");
    assert_eq!(st.peers[0].path_mtu, 1220);
}

#[test]
fn stub_mode_never_forwards_to_a_loopback_resolver() {
    let mut net = registered_pair();
    net.nodes[1].core.set_dns_stub(true);
    let stub = Ipv4Addr::new(198, 18, 0, 0);
    let resolved = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));
    // systemd-resolved's own address first: skipped for the real one.
    net.nodes[1]
        .core
        .apply(crate::reload::NodeChange::Resolvers(vec![
            resolved,
            IpAddr::V4(RESOLVER),
        ]));
    let (_, up) = net.forward_other_name(1, stub, 0x4444);
    assert_eq!(up.map(|u| u.0), Some(SocketAddr::from((RESOLVER, 53))));
    // Only resolved's address: SERVFAIL at once, nothing sent back to it.
    net.nodes[1]
        .core
        .apply(crate::reload::NodeChange::Resolvers(vec![resolved]));
    let (_, up) = net.forward_other_name(1, stub, 0x4545);
    assert!(up.is_none(), "forwarded to {up:?}");
    let c = net.nodes[1].core.counters();
    assert_eq!(c.dns_failed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn stub_mode_answers_on_the_prefix_network_and_forwards_the_rest() {
    let mut net = registered_pair();
    net.nodes[1].core.set_dns_stub(true);
    let stub = Ipv4Addr::new(198, 18, 0, 0);
    assert_eq!(net.nodes[1].core.stub_address(), Some(stub));
    let table = net.nodes[1].core.take_table().unwrap();
    assert_eq!(table.resolvers, vec![IpAddr::V4(stub)]);
    let st = net.nodes[1].core.status(net.now).dns.unwrap();
    assert_eq!((st.mode.as_str(), st.stub_address), ("stub", Some(stub)));

    let alice_vip = net.vip(0).unwrap();
    let ans = net
        .dns_via(1, stub, "alice.ntm.internal.", RecordType::A)
        .expect("the stub did not answer");
    assert_eq!(a_record(&ans), Some(alice_vip));

    // Other names go to the configured resolver; the answer comes back
    // from the stub's address.
    let (query, up) = net.forward_other_name(1, stub, 0x4343);
    let (to, bytes) = up.expect("query not forwarded");
    assert_eq!(
        (to, bytes),
        (SocketAddr::from((RESOLVER, 53)), query.clone())
    );
    let client = SocketAddrV4::new(net.vip(1).unwrap(), 41000);
    let core = &mut net.nodes[1].core;
    core.handle_upstream(to, b"\x43\x43answer");
    let back = std::iter::from_fn(|| core.poll_output())
        .find_map(|o| match o {
            Output::Tun(p) => Some(p),
            _ => None,
        })
        .expect("answer not written to the TUN");
    let udp = packet::parse_ipv4_udp(&back).unwrap();
    assert_eq!((udp.src, udp.dst), (SocketAddrV4::new(stub, 53), client));

    // Queries to the real resolver are not captured in stub mode.
    let mut direct = Vec::new();
    packet::build_ipv4_udp(client, SocketAddrV4::new(RESOLVER, 53), &query, &mut direct);
    core.handle_tun(direct, net.now);
    assert!(
        !std::iter::from_fn(|| core.poll_output()).any(|o| matches!(o, Output::Upstream { .. })),
        "a query to the resolver was captured in stub mode"
    );
    let c = core.counters();
    assert!(c.dns_answered.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(
        c.dns_forwarded.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn reloaded_auth_keys_let_a_new_node_enrol_and_keep_tunnels() {
    let mut net = registered_pair();
    let alice_vip = net.vip(0).unwrap();
    assert_eq!(
        a_record(&net.dns(1, "alice.ntm.internal.", RecordType::A).unwrap()),
        Some(alice_vip)
    );
    let (now, unix) = (net.now, net.unix());
    let sent = net
        .dc
        .apply(DcChange::AuthKeys(vec!["rotated".into()]), now, unix);
    assert!(sent.is_empty());
    let carol = net.add_node("carol", "198.51.100.13:3000", "rotated");
    let mallory = net.add_node("mallory", "198.51.100.14:3000", TOKEN);
    net.advance(Duration::from_millis(500));
    assert_eq!(net.nodes[carol].core.status(net.now).dc.state, "registered");
    assert_eq!(net.nodes[mallory].core.status(net.now).dc.state, "refused");
    // Registered nodes keep their sessions and reach each other.
    assert_eq!(net.nodes[0].core.status(net.now).dc.state, "registered");
    let bob_st = net.nodes[1].core.status(net.now);
    assert!(bob_st.peers[0].last_handshake_secs.is_some());
    assert_eq!(
        a_record(&net.dns(1, "carol.ntm.internal.", RecordType::A).unwrap()),
        net.vip(carol)
    );
}

#[test]
fn reloaded_timers_apply_and_rekeys_are_counted() {
    let mut net = registered_pair();
    net.dns(1, "alice.ntm.internal.", RecordType::A).unwrap();
    for i in 0..2 {
        net.nodes[i]
            .core
            .apply(crate::reload::NodeChange::RekeySecs(Duration::from_secs(
                10,
            )));
    }
    net.advance(Duration::from_secs(15));
    let rekeys = |net: &Net| {
        (0..2)
            .map(|i| {
                net.nodes[i]
                    .core
                    .counters()
                    .rekeys
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum::<u64>()
    };
    // At the configured 120 s nothing would have rekeyed yet.
    assert!(
        rekeys(&net) >= 1,
        "the reloaded rekey interval was not used"
    );
}

#[test]
fn reloaded_relay_list_keeps_unchanged_relays_and_moves_pairs_off_removed_ones() {
    let mut net = Net::two_nats(false, false);
    net.connect();
    assert!(net.deliver(0, 1, 1), "no data through the relay");
    let relay_pairs = |net: &Net| {
        net.dc
            .metrics()
            .into_iter()
            .find(|m| m.name == "ntmtun_dc_relay_pairs")
            .map(|m| m.value)
    };
    assert_eq!(relay_pairs(&net), Some(1));
    let (now, unix) = (net.now, net.unix());
    let same = DcChange::Relays(net.relay_specs.clone());
    assert!(
        net.dc.apply(same, now, unix).is_empty(),
        "an unchanged relay moved its pairs"
    );
    assert_eq!(relay_pairs(&net), Some(1));
    assert!(
        net.deliver(0, 1, 2),
        "the relayed pair broke on a no-op reload"
    );
    let sent = net.dc.apply(DcChange::Relays(Vec::new()), now, unix);
    assert_eq!(relay_pairs(&net), Some(0));
    assert_eq!(sent.len(), 2, "both sides of the pair are directed again");
}

impl Net {
    /// A network whose DC grants `grants`.
    fn with_grants(grants: Vec<RouteGrant>) -> Net {
        let mut net = Net::new();
        net.dc = dc_core(
            &net.dc_key,
            Store::in_memory().unwrap(),
            Vec::new(),
            net.now,
        )
        .with_route_grants(grants);
        net
    }

    /// A DC that grants `grants`, and two cone NATs for the gateways
    /// (198.51.100.101 and .102).
    fn gateways(grants: Vec<RouteGrant>) -> (Net, [usize; 2]) {
        let mut net = Net::with_grants(grants);
        let nats = [
            net.add_nat("198.51.100.101", true),
            net.add_nat("198.51.100.102", true),
        ];
        (net, nats)
    }
}

/// Two gateways behind NATs, each granted its LAN: a LAN host's packet for
/// the other LAN builds the tunnel on its own (no DNS) and arrives; the
/// reply comes back; a refused prefix is neither routed nor admitted.
#[test]
fn gateways_route_granted_lans_and_refuse_the_rest() {
    let (mut net, [na, nb]) = Net::gateways(vec![
        RouteGrant {
            node: "gwa".into(),
            prefixes: vec!["192.0.2.128/27".parse().unwrap()],
        },
        RouteGrant {
            node: "gwb".into(),
            prefixes: vec![
                "192.0.2.160/27".parse().unwrap(),
                "198.51.100.0/28".parse().unwrap(),
            ],
        },
    ]);
    let a = net.add_natted("gwa", "192.0.2.11:1000", na);
    net.nodes[a].core.set_subnet_routes(
        vec![
            "192.0.2.128/27".parse().unwrap(),
            "192.0.2.192/27".parse().unwrap(),
        ],
        true,
    );
    net.advance(Duration::from_millis(300));
    // gwb registers later: gwa learns its route from a push.
    let b = net.add_natted("gwb", "192.0.2.76:2000", nb);
    net.nodes[b].core.set_subnet_routes(
        // The second holds the DC (198.51.100.10): granted, never routed.
        vec![
            "192.0.2.160/27".parse().unwrap(),
            "198.51.100.0/28".parse().unwrap(),
        ],
        true,
    );
    net.advance(Duration::from_millis(300));
    let (vip_a, vip_b) = (net.vip(a).unwrap(), net.vip(b).unwrap());

    let sa = net.nodes[a].core.status(net.now);
    let states: Vec<(String, String)> = sa
        .advertised_routes
        .iter()
        .map(|r| (r.prefix.to_string(), r.state.clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("192.0.2.128/27".into(), "granted".into()),
            ("192.0.2.192/27".into(), "refused".into())
        ]
    );
    assert!(sa.advertised_routes[1]
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("route_grants")));
    assert_eq!(net.dc.stats.routes_refused, 1);
    let routes_of = |net: &Net, i: usize| -> Vec<(String, Ipv4Addr)> {
        net.nodes[i]
            .core
            .status(net.now)
            .routes
            .iter()
            .map(|r| (r.prefix.to_string(), r.gateway))
            .collect()
    };
    assert_eq!(routes_of(&net, a), vec![("192.0.2.160/27".into(), vip_b)]);
    assert_eq!(routes_of(&net, b), vec![("192.0.2.128/27".into(), vip_a)]);

    let udp = |src: &str, dst: &str| {
        let mut p = Vec::new();
        packet::build_ipv4_udp(
            SocketAddrV4::new(src.parse().unwrap(), 5000),
            SocketAddrV4::new(dst.parse().unwrap(), 5001),
            b"lan",
            &mut p,
        );
        p
    };
    // hostb -> hosta: no tunnel yet, and no DNS query asked for one.
    let there = udp("192.0.2.162", "192.0.2.130");
    net.nodes[b].core.handle_tun(there.clone(), net.now);
    net.advance(Duration::from_millis(1500));
    assert!(
        net.nodes[a].tun.contains(&there),
        "not delivered to gwa's LAN"
    );
    let back = udp("192.0.2.130", "192.0.2.162");
    net.nodes[a].core.handle_tun(back.clone(), net.now);
    net.advance(Duration::from_millis(300));
    assert!(net.nodes[b].tun.contains(&back), "reply not delivered");

    // The refused prefix: gwb has no route to it, and gwb drops packets
    // gwa sends from it.
    let refused = udp("192.0.2.162", "192.0.2.200");
    net.nodes[b].core.handle_tun(refused, net.now);
    let spoofed = udp("192.0.2.200", "192.0.2.162");
    net.nodes[a].core.handle_tun(spoofed.clone(), net.now);
    net.advance(Duration::from_millis(300));
    assert!(!net.nodes[b].tun.contains(&spoofed));
    assert!(net.nodes[a]
        .tun
        .iter()
        .all(|p| packet::destination(p) != Some(IpAddr::V4("192.0.2.200".parse().unwrap()))));
}

/// A `[[route_grants]]` reload that grants, then withdraws, a gateway's
/// refused prefix reaches the gateway's own status (and the other nodes'
/// routes) at once, well inside the 20 s refresh interval.
#[test]
fn reloaded_route_grants_reach_the_gateway_without_a_refresh() {
    use ipnet::Ipv4Net;
    let lan: Ipv4Net = "192.0.2.128/27".parse().unwrap();
    let extra: Ipv4Net = "192.0.2.192/27".parse().unwrap();
    let grants = |prefixes: Vec<Ipv4Net>| {
        vec![RouteGrant {
            node: "gwa".into(),
            prefixes,
        }]
    };
    let mut net = Net::with_grants(grants(vec![lan]));
    let a = net.add_node("gwa", "198.51.100.11:1000", TOKEN);
    net.nodes[a].core.set_subnet_routes(vec![lan, extra], false);
    let b = net.add_node("bob", "198.51.100.12:2000", TOKEN);
    net.nodes[b].core.set_subnet_routes(Vec::new(), true);
    net.advance(Duration::from_millis(300));
    let vip_a = net.vip(a).unwrap();
    let registrations = net.dc.stats.registrations;

    let state = |net: &Net| -> Vec<(Ipv4Net, String, bool)> {
        net.nodes[a]
            .core
            .status(net.now)
            .advertised_routes
            .iter()
            .map(|r| (r.prefix, r.state.clone(), r.reason.is_some()))
            .collect()
    };
    let routes_of_b = |net: &Net| -> Vec<(Ipv4Net, Ipv4Addr)> {
        net.nodes[b]
            .core
            .status(net.now)
            .routes
            .iter()
            .map(|r| (r.prefix, r.gateway))
            .collect()
    };
    let reload = |net: &mut Net, prefixes: Vec<Ipv4Net>| {
        let (now, unix) = (net.now, net.unix());
        let from: SocketAddr = DC_ADDR.parse().unwrap();
        let sent = net
            .dc
            .apply(DcChange::RouteGrants(grants(prefixes)), now, unix);
        let n = sent.len();
        for t in sent {
            net.wire.push_back((from, t.to, t.bytes));
        }
        // One step of 100 ms: far from the refresh at 20 s.
        net.advance(Duration::from_millis(100));
        n
    };
    assert_eq!(
        state(&net),
        vec![
            (lan, "granted".into(), false),
            (extra, "refused".into(), true)
        ]
    );
    assert_eq!(net.dc.stats.routes_refused, 1);

    // Granted by reload: both nodes hear the routes, gwa its (empty)
    // refusals.
    assert_eq!(reload(&mut net, vec![lan, extra]), 3);
    assert_eq!(
        state(&net),
        vec![
            (lan, "granted".into(), false),
            (extra, "granted".into(), false)
        ]
    );
    assert_eq!(routes_of_b(&net), vec![(lan, vip_a), (extra, vip_a)]);

    // An unchanged reload tells nobody anything.
    assert_eq!(reload(&mut net, vec![lan, extra]), 0);

    // Withdrawn by reload: refused again, with its reason, at once.
    assert_eq!(reload(&mut net, vec![lan]), 3);
    assert_eq!(
        state(&net),
        vec![
            (lan, "granted".into(), false),
            (extra, "refused".into(), true)
        ]
    );
    assert_eq!(routes_of_b(&net), vec![(lan, vip_a)]);
    assert_eq!(net.dc.stats.routes_refused, 2);
    assert_eq!(
        net.dc.stats.registrations, registrations,
        "a refresh, not the push, carried the change"
    );

    // The next refresh repeats the same refusals: nothing new to count.
    net.advance(Duration::from_secs(21));
    assert!(net.dc.stats.registrations > registrations);
    assert_eq!(net.dc.stats.routes_refused, 2);
    assert_eq!(state(&net)[1].1, "refused");
}
