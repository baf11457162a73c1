//! Federation end to end in memory: two DCs of two domains, a node on each,
//! relays of the first DC; datagrams delivered by address, simulated time.

use super::core::{NodeCore, NodeSettings};
use super::output::Output;
use crate::dc::core::DcCore;
use crate::dc::settings::{DcChange, DcSettings, FederationSpec, RelaySpec};
use crate::dc::store::Store;
use crate::keys::PrivateKey;
use crate::net::packet;
use crate::proto::cookie::COOKIE_REPLY_LEN;
use crate::proto::ticket::TicketKey;
use crate::proto::wire;
use crate::proto::wire::Kind;
use crate::relay::core::{Action as RelayAction, RelayCore};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use ipnet::Ipv4Net;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

const X_DC: &str = "198.51.100.10:7446";
const Y_DC: &str = "198.51.100.13:7446";
const RELAY: &str = "198.51.100.20:7447";
const RELAY2: &str = "198.51.100.21:7447";
const RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const UNIX_BASE: u64 = 1_700_000_000_000_000_000;

struct Fed {
    /// X's and Y's keys.
    keys: (PrivateKey, PrivateKey),
    epoch: Instant,
    now: Instant,
    /// (address, core): X then Y.
    dcs: Vec<(SocketAddr, DcCore)>,
    /// (address, core, packets written into its TUN).
    nodes: Vec<(SocketAddr, NodeCore, Vec<Vec<u8>>)>,
    /// X's relays: (address, core, answering).
    relays: Vec<(SocketAddr, RelayCore, bool)>,
    /// DCs that neither send nor receive (unreachable).
    dcs_down: Vec<SocketAddr>,
    /// Node-to-node datagrams are lost (only the relays connect nodes).
    direct_blocked: bool,
    /// Per node: the federated prefixes it last routed into its TUN.
    routed: Vec<Vec<Ipv4Net>>,
    /// Per node: every list of the stub's routing domains it announced,
    /// and whether its TUN was configured (which must come first).
    stub_domains: Vec<Vec<Vec<String>>>,
    configured: Vec<bool>,
    /// Datagrams the upstream resolver got (names not intercepted).
    upstream: usize,
    /// Answered pings: (node, ping id, the endpoint that answered).
    pongs: Vec<(usize, u64, String)>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
}

fn dc(
    key: &PrivateKey,
    domain: &str,
    prefix: &str,
    relays: Vec<RelaySpec>,
    now: Instant,
) -> DcCore {
    DcCore::new(
        DcSettings {
            key: key.clone(),
            domain: domain.into(),
            prefix: prefix.parse().unwrap(),
            auth_keys: vec!["t".into()],
            expiry: Duration::from_secs(90),
            relays,
        },
        Store::in_memory().unwrap(),
        3,
        now,
    )
}

impl Fed {
    /// X (x.ntm.internal, 198.18.0.0/16, a relay) knows Y's address; Y
    /// (`y_prefix`) knows X's. alice registers with X, bob with Y.
    fn new(y_prefix: &str) -> Fed {
        Fed::with_relays(y_prefix, &[RELAY])
    }

    /// Like `new`, with X's relays at `relays`.
    fn with_relays(y_prefix: &str, relays: &[&str]) -> Fed {
        let mut f = Fed::bare(y_prefix, relays);
        let (kx, ky) = f.keys.clone();
        f.add_node("alice", "198.51.100.11:1000", &kx);
        f.add_node("bob", "198.51.100.12:2000", &ky);
        f.advance(Duration::from_secs(2));
        f
    }

    /// The two DCs and X's relays, no nodes, nothing exchanged yet.
    fn bare(y_prefix: &str, relays: &[&str]) -> Fed {
        let now = Instant::now();
        let (kx, ky) = (PrivateKey::generate(), PrivateKey::generate());
        let relay_keys: Vec<PrivateKey> = relays.iter().map(|_| PrivateKey::generate()).collect();
        let specs = relays
            .iter()
            .zip(&relay_keys)
            .map(|(a, k)| RelaySpec {
                public_key: k.public_key(),
                addresses: vec![a.parse().unwrap()],
            })
            .collect();
        let relays = relays
            .iter()
            .zip(&relay_keys)
            .map(|(a, k)| {
                let key = TicketKey::derive(k, &kx.public_key());
                (a.parse().unwrap(), RelayCore::new(key, u64::MAX), true)
            })
            .collect();
        let mut x = dc(&kx, "x.ntm.internal", "198.18.0.0/16", specs, now);
        let mut y = dc(&ky, "y.ntm.internal", y_prefix, Vec::new(), now);
        x.federate(
            vec![FederationSpec {
                domain: "y.ntm.internal".into(),
                public_key: ky.public_key(),
                address: Some(Y_DC.parse().unwrap()),
            }],
            now,
        );
        y.federate(
            vec![FederationSpec {
                domain: "x.ntm.internal".into(),
                public_key: kx.public_key(),
                address: Some(X_DC.parse().unwrap()),
            }],
            now,
        );
        Fed {
            keys: (kx, ky),
            epoch: now,
            now,
            dcs: vec![(X_DC.parse().unwrap(), x), (Y_DC.parse().unwrap(), y)],
            nodes: Vec::new(),
            relays,
            dcs_down: Vec::new(),
            direct_blocked: false,
            routed: Vec::new(),
            stub_domains: Vec::new(),
            configured: Vec::new(),
            upstream: 0,
            pongs: Vec::new(),
            wire: VecDeque::new(),
        }
    }

    fn add_node(&mut self, name: &str, addr: &str, dc_key: &PrivateKey) {
        self.add_node_of(name, addr, self.nodes.len(), dc_key);
    }

    /// Adds node `name` at `addr`, registering with DC `dc` (0: X, 1: Y).
    fn add_node_of(&mut self, name: &str, addr: &str, dc: usize, dc_key: &PrivateKey) {
        let addr: SocketAddr = addr.parse().unwrap();
        let dc = self.dcs[dc].0;
        let mut core = NodeCore::new(
            NodeSettings {
                name: name.into(),
                key: PrivateKey::generate(),
                dc: vec![dc],
                dc_key: dc_key.public_key(),
                auth_key: "t".into(),
                keepalive: Some(Duration::from_secs(25)),
                rekey: Duration::from_secs(120),
                resolvers: vec![IpAddr::V4(RESOLVER)],
                unix_nanos_at_start: UNIX_BASE,
                index_seed: 1000 * (self.nodes.len() as u64 + 1),
            },
            self.now,
        );
        core.set_local_endpoints(vec![addr]);
        self.nodes.push((addr, core, Vec::new()));
        self.routed.push(Vec::new());
        self.stub_domains.push(Vec::new());
        self.configured.push(false);
    }

    fn unix(&self) -> u64 {
        (UNIX_BASE + (self.now - self.epoch).as_nanos() as u64) / 1_000_000_000
    }

    fn collect(&mut self) {
        for (i, (addr, core, tun)) in self.nodes.iter_mut().enumerate() {
            while let Some(o) = core.poll_output() {
                match o {
                    Output::Udp { to, bytes } => self.wire.push_back((*addr, to, bytes)),
                    Output::Tun(p) => tun.push(p),
                    Output::Upstream { .. } => self.upstream += 1,
                    Output::FederatedRoutes(p) => self.routed[i] = p,
                    Output::Configure(_) => self.configured[i] = true,
                    Output::StubDomains(d) => {
                        assert!(self.configured[i], "stub domains before the TUN's address");
                        self.stub_domains[i].push(d);
                    }
                    Output::Pong { id, endpoint, .. } => self.pongs.push((i, id, endpoint)),
                    _ => {}
                }
            }
        }
    }

    /// Delivers datagrams until the network is quiet (bounded).
    fn settle(&mut self) {
        for _ in 0..5000 {
            self.collect();
            let Some((from, to, mut bytes)) = self.wire.pop_front() else {
                return;
            };
            let unix = self.unix();
            let is_node = |a: SocketAddr| self.nodes.iter().any(|n| n.0 == a);
            if self.dcs_down.contains(&to) || (self.direct_blocked && is_node(from) && is_node(to))
            {
                continue;
            }
            if let Some((_, dc)) = self.dcs.iter_mut().find(|(a, _)| *a == to) {
                for t in dc.handle(from, &mut bytes, self.now, unix) {
                    self.wire.push_back((to, t.to, t.bytes));
                }
            } else if let Some((_, relay, up)) = self.relays.iter_mut().find(|r| r.0 == to) {
                if !*up {
                    continue;
                }
                match relay.handle(from, &bytes, self.now, unix) {
                    RelayAction::Forward(dst) => self.wire.push_back((to, dst, bytes)),
                    RelayAction::Reply(r) => self.wire.push_back((to, from, r)),
                    RelayAction::Drop(_) => {}
                }
            } else if let Some((_, core, _)) = self.nodes.iter_mut().find(|(a, _, _)| *a == to) {
                core.handle_udp(from, &mut bytes, self.now);
            }
        }
        panic!("network never settled");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(100);
            for (_, core, _) in &mut self.nodes {
                core.handle_timeout(self.now);
            }
            let unix = self.unix();
            for (addr, dc) in &mut self.dcs {
                if self.dcs_down.contains(addr) {
                    continue;
                }
                for t in dc.handle_timeout(self.now, unix) {
                    self.wire.push_back((*addr, t.to, t.bytes));
                }
            }
            self.settle();
        }
    }

    /// A packet from node `a`'s TUN to node `b`: whether it came out of
    /// `b`'s TUN.
    fn deliver(&mut self, a: usize, b: usize, tag: u8) -> bool {
        let mut pkt = Vec::new();
        packet::build_ipv4_udp(
            SocketAddrV4::new(self.vip(a), 7000),
            SocketAddrV4::new(self.vip(b), 7001),
            &[tag; 40],
            &mut pkt,
        );
        self.nodes[b].2.clear();
        self.nodes[a].1.handle_tun(pkt.clone(), self.now);
        self.settle();
        self.nodes[b].2.contains(&pkt)
    }

    /// The relay address of node `i`'s grant for its one peer.
    fn grant(&self, i: usize) -> Option<SocketAddr> {
        let p = self.nodes[i].1.peers.values().next()?;
        p.relay_address()
    }

    fn vip(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].1.status(self.now).virtual_ip.unwrap()
    }

    /// An A query from node `i`'s TUN to the resolver; the answer, if one
    /// came.
    fn dns(&mut self, i: usize, name: &str) -> Option<Message> {
        self.dns_to(i, RESOLVER, name)
    }

    /// An A query from node `i`'s TUN to `server` (the resolver, or the
    /// stub's address in stub mode); the answer, if one came.
    fn dns_to(&mut self, i: usize, server: Ipv4Addr, name: &str) -> Option<Message> {
        self.ask_dns_to(i, server, name);
        for _ in 0..50 {
            self.settle();
            let ans = self.nodes[i].2.iter().find_map(|p| {
                let udp = packet::parse_ipv4_udp(p)?;
                (udp.src.port() == 53).then(|| Message::from_vec(udp.payload).ok())?
            });
            if ans.is_some() {
                return ans;
            }
            self.advance(Duration::from_millis(100));
        }
        None
    }

    /// `ntmtun ping NAME` on node `i`: the endpoint that answered, waiting
    /// (bounded, in simulated time) for the pong.
    fn ping(&mut self, i: usize, name: &str) -> String {
        let id = self.nodes[i].1.ping(name, self.now).unwrap();
        for _ in 0..50 {
            self.settle();
            if let Some(k) = self.pongs.iter().position(|p| (p.0, p.1) == (i, id)) {
                return self.pongs.swap_remove(k).2;
            }
            self.advance(Duration::from_millis(100));
        }
        panic!("node {i}: no answer to ping {name}");
    }

    /// Writes an A query for `name` into node `i`'s TUN, nothing delivered.
    fn ask_dns(&mut self, i: usize, name: &str) {
        self.ask_dns_to(i, RESOLVER, name);
    }

    /// Writes an A query for `name` to `server` into node `i`'s TUN.
    fn ask_dns_to(&mut self, i: usize, server: Ipv4Addr, name: &str) {
        let client = SocketAddrV4::new(self.vip(i), 40000);
        let pkt = super::core_tests::dns_query(client, server, name, RecordType::A);
        self.nodes[i].2.clear();
        self.nodes[i].1.handle_tun(pkt, self.now);
    }
}

fn a_record(m: &Message) -> Option<Ipv4Addr> {
    m.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

#[test]
fn a_node_resolves_and_reaches_a_node_of_the_federated_domain() {
    let mut f = Fed::new("198.19.0.0/16");
    let (alice_vip, bob_vip) = (f.vip(0), f.vip(1));
    assert!("198.19.0.0/16"
        .parse::<ipnet::Ipv4Net>()
        .unwrap()
        .contains(&bob_vip));
    let ans = f.dns(0, "Bob.Y.ntm.internal.").expect("no DNS answer");
    assert_eq!(ans.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_record(&ans), Some(bob_vip));
    assert_eq!(f.upstream, 0, "the federated name was not intercepted");

    // Both sides know the other under its qualified name, with a session.
    let alice = f.nodes[0].1.status(f.now);
    let bob = f.nodes[1].1.status(f.now);
    assert_eq!(alice.peers.len(), 1);
    assert_eq!(alice.peers[0].name, "bob.y.ntm.internal");
    assert_eq!(alice.peers[0].fqdn, "bob.y.ntm.internal");
    assert!(alice.peers[0].last_handshake_secs.is_some());
    assert_eq!(bob.peers.len(), 1);
    assert_eq!(bob.peers[0].name, "alice.x.ntm.internal");
    assert_eq!(bob.peers[0].virtual_ip, alice_vip);

    // Data sealed with bob's table opens with alice's.
    let bob_table = f.nodes[1].1.take_table().unwrap();
    let alice_table = f.nodes[0].1.take_table().unwrap();
    assert_eq!(
        alice_table.federated,
        vec!["198.19.0.0/16".parse().unwrap()]
    );
    let route = bob_table.by_vip.get(&alice_vip).expect("no route to alice");
    let mut rec = route
        .session
        .seal_to_vec(Kind::Data, b"across domains")
        .unwrap();
    let h = wire::TransportHeader::decode(&rec).unwrap();
    let rx = alice_table
        .by_index
        .get(&h.receiver)
        .expect("alice has no matching session");
    let r = rx.session.open(&mut rec).unwrap();
    assert_eq!(&rec[r], b"across domains");
}

/// `ntmtun ping NAME` (issue 11): the full name of a node of the federated
/// domain pings that node, even where our own domain has a node with the
/// same label, as a DNS query for the name would reach it; the bare label
/// (or the label qualified with our own domain) is our own domain's node.
#[test]
fn ping_by_full_name_reaches_the_federated_node_and_a_bare_label_our_own() {
    let mut f = Fed::new("198.19.0.0/16");
    let ky = f.keys.1.clone();
    f.add_node_of("alice", "198.51.100.14:3000", 1, &ky);
    f.advance(Duration::from_secs(2));
    let (x_alice, y_alice) = (f.nodes[0].0.to_string(), f.nodes[2].0.to_string());

    assert_eq!(f.ping(1, "alice.x.ntm.internal"), x_alice);
    assert_eq!(f.ping(1, "Alice.X.NTM.internal"), x_alice);
    assert_eq!(f.ping(1, "alice"), y_alice);
    assert_eq!(f.ping(1, "alice.y.ntm.internal"), y_alice);
    // And alice of x reaches bob by his full name, with no DNS query first.
    assert_eq!(f.ping(0, "bob.y.ntm.internal"), f.nodes[1].0.to_string());

    let bob = f.nodes[1].1.status(f.now);
    let names: Vec<(&str, &str)> = bob
        .peers
        .iter()
        .map(|p| (p.name.as_str(), p.fqdn.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("alice", "alice.y.ntm.internal"),
            ("alice.x.ntm.internal", "alice.x.ntm.internal")
        ]
    );

    // A domain that is neither ours nor federated, and a name that is no
    // name, are refused at once, saying why.
    let err = f.nodes[1]
        .1
        .ping("alice.z.ntm.internal", f.now)
        .unwrap_err();
    for part in [
        "alice.z.ntm.internal",
        "(y.ntm.internal)",
        "(x.ntm.internal)",
    ] {
        assert!(err.contains(part), "{err:?} lacks {part:?}");
    }
    let err = f.nodes[1].1.ping("al_ice", f.now).unwrap_err();
    assert!(
        err.contains("\"al_ice\"") && err.contains("contains '_'"),
        "{err:?}"
    );
}

#[test]
fn the_asking_dcs_relay_grant_reaches_both_nodes() {
    let mut f = Fed::new("198.19.0.0/16");
    f.dns(0, "bob.y.ntm.internal").expect("no DNS answer");
    let relay: SocketAddr = RELAY.parse().unwrap();
    // The relay is the fallback here (both public): each side holds a
    // grant for it, bob's passed on by his DC.
    for i in 0..2 {
        let granted = f.nodes[i]
            .1
            .peers
            .values()
            .all(|p| p.relay_address() == Some(relay));
        assert!(granted, "node {i} has no grant for X's relay");
    }
    let sid = |i: usize| {
        f.nodes[i]
            .1
            .peers
            .values()
            .next()
            .and_then(|p| p.relay_grant())
            .map(|g| (g.sid, g.side))
    };
    let (a, b) = (sid(0).unwrap(), sid(1).unwrap());
    assert_eq!(a.0, b.0, "one relay session for the pair");
    assert_ne!(a.1, b.1, "one side each");
}

#[test]
fn unknown_names_in_the_federated_domain_are_nxdomain() {
    let mut f = Fed::new("198.19.0.0/16");
    let ans = f.dns(0, "carol.y.ntm.internal").expect("no DNS answer");
    assert_eq!(ans.metadata.response_code, ResponseCode::NXDomain);
    // And a name in a domain nobody federates with goes upstream.
    f.dns(0, "bob.z.ntm.internal");
    assert_eq!(f.upstream, 1);
}

#[test]
fn overlapping_prefixes_keep_the_domains_apart() {
    let mut f = Fed::new("198.18.128.0/17");
    assert!(f.nodes[0].1.take_table().unwrap().federated.is_empty());
    f.dns(0, "bob.y.ntm.internal");
    assert_eq!(f.upstream, 1, "the name was not treated as federated");
    assert!(f.nodes[0].1.status(f.now).peers.is_empty());
}

#[test]
fn a_pair_across_domains_moves_off_a_dead_relay_directed_by_the_granting_dc() {
    let mut f = Fed::with_relays("198.19.0.0/16", &[RELAY, RELAY2]);
    f.direct_blocked = true;
    f.dns(0, "bob.y.ntm.internal").expect("no DNS answer");
    f.advance(Duration::from_secs(5));
    assert!(
        f.deliver(0, 1, 1) && f.deliver(1, 0, 2),
        "no data through X's relay"
    );
    let first = f.grant(0).expect("alice has no relay grant");
    assert_eq!(f.grant(1), Some(first), "one relay for the pair");
    let status = f.nodes[0].1.status(f.now);
    assert_eq!(status.peers[0].path, "relay");
    assert_eq!(status.peers[0].endpoint, Some(first));

    // The relay dies. No data flows, so neither node notices by itself:
    // X (whose relay it was) moves the pair, through Y for bob.
    f.relays.iter_mut().find(|r| r.0 == first).unwrap().2 = false;
    f.advance(Duration::from_secs(5));
    let second = f.grant(0).expect("alice lost her relay grant");
    assert_ne!(
        second, first,
        "alice still holds a grant for the dead relay"
    );
    assert_eq!(f.grant(1), Some(second), "bob was not moved with alice");
    assert!(
        f.deliver(0, 1, 3) && f.deliver(1, 0, 4),
        "no data through the new relay"
    );
    for i in 0..2 {
        assert_eq!(f.nodes[i].1.status(f.now).peers[0].endpoint, Some(second));
    }
}

#[test]
fn a_domain_whose_dc_stays_unreachable_loses_its_route_and_gets_it_back() {
    let mut f = Fed::new("198.19.0.0/16");
    let y_prefix: Ipv4Net = "198.19.0.0/16".parse().unwrap();
    assert_eq!(f.routed[0], vec![y_prefix]);
    let y: SocketAddr = Y_DC.parse().unwrap();
    f.dcs_down.push(y);
    // A short outage changes nothing for the nodes.
    f.advance(Duration::from_secs(60));
    assert_eq!(f.routed[0], vec![y_prefix], "withdrawn too early");
    f.advance(crate::dc::federation::WITHDRAW_AFTER);
    assert!(
        f.routed[0].is_empty(),
        "Y's prefix still routed into the TUN"
    );
    assert!(f.nodes[0].1.take_table().unwrap().federated.is_empty());
    let before = f.upstream;
    f.dns(0, "bob.y.ntm.internal");
    assert_eq!(f.upstream, before + 1, "Y's names still intercepted");

    // Y answers again: the route and the names come back.
    f.dcs_down.clear();
    f.advance(Duration::from_secs(35));
    assert_eq!(f.routed[0], vec![y_prefix]);
    let bob_vip = f.vip(1);
    let ans = f.dns(0, "bob.y.ntm.internal").expect("no DNS answer");
    assert_eq!(a_record(&ans), Some(bob_vip));
}

#[test]
fn in_stub_mode_the_federated_domains_are_routed_to_the_stub_which_answers_them() {
    let mut f = Fed::bare("198.19.0.0/16", &[RELAY]);
    let (kx, ky) = f.keys.clone();
    f.add_node("alice", "198.51.100.11:1000", &kx);
    f.nodes[0].1.set_dns_stub(true);
    f.add_node("bob", "198.51.100.12:2000", &ky);
    f.advance(Duration::from_secs(2));
    let own = ["~x.ntm.internal", "~18.198.in-addr.arpa"];
    let with_y = [own[0], own[1], "~y.ntm.internal", "~19.198.in-addr.arpa"];
    // Our domain at registration, then with Y's once X announces it.
    assert_eq!(f.stub_domains[0], vec![own.to_vec(), with_y.to_vec()]);
    assert!(f.stub_domains[1].is_empty(), "bob captures: no stub");

    // A name of Y, asked of alice's stub (as systemd-resolved does once
    // Y's domain is routed to it), is answered from Y's DC.
    let stub = f.nodes[0].1.stub_address().expect("no stub address");
    let bob_vip = f.vip(1);
    let ans = f
        .dns_to(0, stub, "bob.y.ntm.internal.")
        .expect("the stub did not answer");
    assert_eq!(a_record(&ans), Some(bob_vip));
    assert_eq!(f.upstream, 0, "the federated name went upstream");

    // Y stays unreachable: its domain is withdrawn from the registration.
    f.dcs_down.push(Y_DC.parse().unwrap());
    f.advance(Duration::from_secs(60));
    assert_eq!(f.stub_domains[0].len(), 2, "withdrawn too early");
    f.advance(crate::dc::federation::WITHDRAW_AFTER);
    assert_eq!(f.stub_domains[0].last().unwrap(), &own);

    // Y answers again: its domain is routed to the stub again.
    f.dcs_down.clear();
    f.advance(Duration::from_secs(35));
    assert_eq!(f.stub_domains[0].len(), 4);
    assert_eq!(f.stub_domains[0].last().unwrap(), &with_y);
    let ans = f
        .dns_to(0, stub, "bob.y.ntm.internal")
        .expect("the stub did not answer");
    assert_eq!(a_record(&ans), Some(bob_vip));
}

/// `ntmtun_dc_federation_up` of a DC (its one federated domain).
fn federation_up(dc: &DcCore) -> u64 {
    dc.metrics()
        .iter()
        .find(|m| m.name == "ntmtun_dc_federation_up")
        .map_or(0, |m| m.value)
}

#[test]
fn under_load_federation_initiations_meet_a_cookie_first() {
    let mut f = Fed::bare("198.19.0.0/16", &[]);
    for (_, dc) in &mut f.dcs {
        dc.set_backlog(true);
    }
    let unix = f.unix();
    let init = f.dcs[0]
        .1
        .handle_timeout(f.now, unix)
        .into_iter()
        .find(|t| t.bytes[0] == Kind::FedHandshakeInit as u8)
        .expect("X dials Y");
    // A copy from a spoofed source (valid mac1, no mac2): a cookie reply
    // to that source, before any Diffie-Hellman.
    let spoofed: SocketAddr = "198.51.100.99:7446".parse().unwrap();
    let out = f.dcs[1]
        .1
        .handle(spoofed, &mut init.bytes.clone(), f.now, unix);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].to, spoofed);
    assert_eq!(out[0].bytes[0], Kind::FedCookieReply as u8);
    assert_eq!(out[0].bytes.len(), COOKIE_REPLY_LEN);
    assert_eq!(f.dcs[1].1.stats.fed_cookie_replies, 1);
    assert_eq!(federation_up(&f.dcs[1].1), 0);

    // The real initiations (X's, and Y's own) meet the cookie, come back
    // with mac2, and the DCs federate while both stay under load.
    f.wire.push_back((f.dcs[0].0, init.to, init.bytes));
    f.advance(Duration::from_secs(3));
    assert_eq!(federation_up(&f.dcs[0].1), 1);
    assert_eq!(federation_up(&f.dcs[1].1), 1);
    assert!(f.dcs[1].1.stats.fed_cookie_replies >= 2);
    assert!(f.dcs[0].1.stats.fed_cookie_replies >= 1);
}

impl Fed {
    /// X's `[[federation]]` replaced by a SIGHUP reload: Y's entry with
    /// `key` (None: removed).
    fn reload_x(&mut self, key: Option<crate::keys::PublicKey>) -> usize {
        let specs = key
            .into_iter()
            .map(|public_key| FederationSpec {
                domain: "y.ntm.internal".into(),
                public_key,
                address: Some(Y_DC.parse().unwrap()),
            })
            .collect();
        let unix = self.unix();
        let (addr, x) = &mut self.dcs[0];
        let out = x.apply(DcChange::Federation(specs), self.now, unix);
        let sent = out.len();
        for t in out {
            self.wire.push_back((*addr, t.to, t.bytes));
        }
        self.settle();
        sent
    }
}

#[test]
fn a_reload_without_federation_changes_sends_nothing_and_keeps_the_session() {
    let mut f = Fed::new("198.19.0.0/16");
    let ky = f.keys.1.public_key();
    assert_eq!(federation_up(&f.dcs[0].1), 1);
    assert_eq!(f.reload_x(Some(ky)), 0, "a no-op reload sent something");
    let unix = f.unix();
    let t = f.dcs[0].1.handle_timeout(f.now, unix);
    assert!(
        !t.iter().any(|t| t.bytes[0] == Kind::FedHandshakeInit as u8),
        "re-handshake after a no-op reload"
    );
    assert_eq!(federation_up(&f.dcs[0].1), 1);
}

impl Fed {
    /// After a reload restored Y's entry: the link is up again within 2 s,
    /// alice routes Y's prefix and resolves bob.
    fn assert_y_back(&mut self, y_prefix: Ipv4Net) {
        self.advance(Duration::from_secs(2));
        assert_eq!(federation_up(&self.dcs[0].1), 1);
        assert_eq!(self.routed[0], vec![y_prefix]);
        let bob_vip = self.vip(1);
        let ans = self.dns(0, "bob.y.ntm.internal").expect("no DNS answer");
        assert_eq!(a_record(&ans), Some(bob_vip));
    }
}

#[test]
fn a_removed_domain_is_withdrawn_from_the_nodes_and_comes_back_when_added() {
    let mut f = Fed::new("198.19.0.0/16");
    let y_prefix: Ipv4Net = "198.19.0.0/16".parse().unwrap();
    assert_eq!(f.routed[0], vec![y_prefix]);
    assert_eq!(f.reload_x(None), 1, "alice hears the withdrawal");
    assert!(f.routed[0].is_empty(), "Y's prefix still routed");
    assert!(f.dcs[0]
        .1
        .metrics()
        .iter()
        .all(|m| m.name != "ntmtun_dc_federation_up"));
    let before = f.upstream;
    f.dns(0, "bob.y.ntm.internal");
    assert_eq!(f.upstream, before + 1, "Y's names still intercepted");

    // Added back: X dials Y and alice gets the route and the names again.
    let ky = f.keys.1.public_key();
    f.reload_x(Some(ky));
    f.assert_y_back(y_prefix);
}

#[test]
fn a_changed_key_drops_the_link_and_the_right_key_brings_it_back() {
    let mut f = Fed::new("198.19.0.0/16");
    let y_prefix: Ipv4Net = "198.19.0.0/16".parse().unwrap();
    // A wrong key: the link goes at once and cannot come back.
    f.reload_x(Some(PrivateKey::generate().public_key()));
    assert_eq!(federation_up(&f.dcs[0].1), 0, "old link kept");
    f.advance(Duration::from_secs(40));
    assert_eq!(
        federation_up(&f.dcs[0].1),
        0,
        "federated with the wrong key"
    );
    assert_eq!(
        f.routed[0],
        vec![y_prefix],
        "withdrawn before WITHDRAW_AFTER"
    );
    // The right key: a new handshake, the domain never left the nodes.
    let ky = f.keys.1.public_key();
    f.reload_x(Some(ky));
    f.assert_y_back(y_prefix);
}

#[test]
fn a_lookup_pending_at_a_removed_domain_is_answered_at_once() {
    let mut f = Fed::new("198.19.0.0/16");
    // Y stops answering (its session still counts as up): alice's lookup
    // waits at X for Y's answer.
    f.dcs_down.push(Y_DC.parse().unwrap());
    f.ask_dns(0, "bob.y.ntm.internal");
    f.settle();
    // Removing y: alice hears the withdrawal and, at once, that the
    // lookup failed (not after LOOKUP_TIMEOUT).
    assert_eq!(f.reload_x(None), 2, "withdrawal and the lookup's answer");
}
