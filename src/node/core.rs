//! Sans-IO node logic: bytes and times go in; `Output`s and a new worker
//! table come out. This file holds the state, the dispatch of datagrams,
//! the DC channel and status; `tunnel` (handshakes, relays, endpoints),
//! `health` (per-peer timers) and `resolve` (DNS and first packets) add the
//! rest of `impl NodeCore`.

use super::counters::{bump, ControlCounters};
use super::dc_link::{DcEvent, DcIdentity, DcLink, DcState};
use super::dns::{DnsInterceptor, Resolution as DnsResolution};
use super::output::Output;
use super::peer::{DnsWaiter, Peer, Sink, ACTIVE_TICK};
use crate::dataplane::opened::{classify_opened, Opened, RxPeer};
use crate::dataplane::table::{Endpoint, PeerTable, Routes};
use crate::keys::{PrivateKey, PublicKey};
use crate::proto::link::{Gate, IndexAlloc};
use crate::proto::name::NodeName;
use crate::proto::ratelimit::RateLimiter;
use crate::proto::relay as relay_frames;
use crate::proto::signal::{
    FederatedDomain, FromDc, GrantedRoute, RefusedRoute, Registered, Resolution, Target, ToDc,
};
use crate::proto::wire::{self, Datagram, Kind};
use crate::reload::NodeChange;
use crate::status::{
    AdvertisedRoute, DcStatus, DnsStatus, PeerStatus, RefusedHandshakes, StatusReport, SubnetRoute,
};
use ipnet::Ipv4Net;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Resend a question to the DC after this long without an answer.
pub(super) const RESOLVE_RETRY: Duration = Duration::from_millis(700);
pub(super) const RESOLVE_ATTEMPTS: u32 = 4;
/// A DNS answer for a peer waits at most this long for the tunnel.
pub(super) const DNS_WAIT: Duration = Duration::from_millis(2500);
/// Forwarded DNS queries are forgotten after this long.
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const FORWARD_LIMIT: usize = 4096;
pub(super) const DNS_TTL: u32 = 60;
/// Virtual addresses with packets queued before the DC answered.
pub(super) const ORPHAN_LIMIT: usize = 64;

pub struct NodeSettings {
    pub name: String,
    pub key: PrivateKey,
    pub dc: Vec<SocketAddr>,
    pub dc_key: PublicKey,
    pub auth_key: String,
    pub keepalive: Option<Duration>,
    pub rekey: Duration,
    /// Resolvers whose queries are intercepted (empty: DNS interception off).
    pub resolvers: Vec<IpAddr>,
    /// Wall clock at `start`, for handshake timestamps; also this process's
    /// incarnation (`Register::incarnation`): a later start is a larger one.
    pub unix_nanos_at_start: u64,
    /// Seeds the random session indexes (`proto::link::IndexAlloc`).
    pub index_seed: u64,
}

pub(super) struct PendingResolve {
    pub target: Target,
    pub direct: bool,
    pub sent: Instant,
    pub attempts: u32,
    pub dns: Vec<DnsWaiter>,
}

pub(super) struct Forward {
    pub client: SocketAddr,
    pub resolver: SocketAddr,
    pub deadline: Instant,
}

/// A NAT probe to a relay in flight.
struct NatProbe {
    relay: SocketAddr,
    nonce: u64,
}

pub struct NodeCore {
    pub(super) s: NodeSettings,
    /// `s.key`'s public half.
    pub(super) public: PublicKey,
    pub(super) start: Instant,
    local_endpoints: Vec<SocketAddr>,
    pub(super) dc: DcLink,
    pub(super) dns: Option<DnsInterceptor>,
    pub(super) prefix: Option<Ipv4Net>,
    /// Other domains our DC federates with, and an interceptor for each
    /// (names there are asked of our DC too).
    pub(super) federated: Vec<FederatedDomain>,
    pub(super) fed_dns: Vec<DnsInterceptor>,
    pub(super) peers: HashMap<PublicKey, Peer>,
    pub(super) by_vip: HashMap<Ipv4Addr, PublicKey>,
    /// Our indexes (sessions and initiations in flight) -> peer; kept in
    /// step by `with_peer`.
    pub(super) owners: HashMap<u32, PublicKey>,
    pub(super) resolves: HashMap<u64, PendingResolve>,
    pub(super) next_resolve: u64,
    pub(super) forwards: HashMap<(SocketAddr, u16), Forward>,
    pub(super) orphans: HashMap<Ipv4Addr, VecDeque<Vec<u8>>>,
    /// Outputs for the shell, the table mark, asks from peers.
    pub(super) sink: Sink,
    pub(super) indexes: IndexAlloc,
    nat_probe: Option<NatProbe>,
    pub(super) next_ping: u64,
    /// `ntmtun ping NAME` for a name not yet resolved: (name, ping id).
    pending_ping_names: Vec<(String, u64)>,
    /// The responder's checks before any DH: mac1, cookies under load,
    /// initiations per source (`proto::link::Gate`).
    pub(super) gate: Gate,
    /// Valid initiations from keys the DC never directed to us (dropped).
    pub(super) undirected_handshakes: u64,
    /// Stub mode: DNS is answered on the stub address and forwarded to the
    /// resolvers; otherwise queries to the resolvers are captured.
    pub(super) dns_stub: bool,
    /// Stub mode: the routing domains last announced (`Output::StubDomains`).
    stub_domains: Vec<String>,
    /// Counters read by the metrics endpoint.
    pub(super) counters: Arc<ControlCounters>,
    /// The domain's granted subnet routes as the DC last announced them,
    /// and the lookup structure built from them for the workers.
    domain_routes: Vec<GrantedRoute>,
    pub(super) routes: Arc<Routes>,
    /// node.toml `accept_routes`.
    accept_routes: bool,
    /// Refusals already logged (the DC repeats them on every refresh).
    refused_routes: Vec<RefusedRoute>,
}

/// Handshake initiations a source may make per second, and in a burst.
const HANDSHAKES_PER_SEC: u32 = 20;
const HANDSHAKE_BURST: u32 = 40;
/// Above this many initiations per second (from everyone), a direct
/// initiation must carry a cookie's mac2 before we do a Diffie-Hellman.
pub(super) const HANDSHAKE_LOAD: u32 = 50;

impl NodeCore {
    pub fn new(s: NodeSettings, now: Instant) -> Self {
        let dc = DcLink::new(
            DcIdentity {
                key: s.key.clone(),
                dc_key: s.dc_key,
                addrs: s.dc.clone(),
                name: s.name.clone(),
                auth_key: s.auth_key.clone(),
                incarnation: s.unix_nanos_at_start,
            },
            now,
            s.index_seed.rotate_left(32),
        );
        let gate = Gate::new(
            &s.key,
            HANDSHAKE_LOAD,
            RateLimiter::new(HANDSHAKES_PER_SEC, HANDSHAKE_BURST, 4096),
            now,
        );
        let indexes = IndexAlloc::new(s.index_seed);
        let next_ping = s.index_seed << 32;
        NodeCore {
            public: s.key.public_key(),
            s,
            start: now,
            local_endpoints: Vec::new(),
            dc,
            dns: None,
            prefix: None,
            peers: HashMap::new(),
            by_vip: HashMap::new(),
            federated: Vec::new(),
            fed_dns: Vec::new(),
            owners: HashMap::new(),
            resolves: HashMap::new(),
            next_resolve: 1,
            forwards: HashMap::new(),
            orphans: HashMap::new(),
            sink: Sink {
                table_dirty: true,
                ..Sink::default()
            },
            indexes,
            nat_probe: None,
            next_ping,
            pending_ping_names: Vec::new(),
            gate,
            undirected_handshakes: 0,
            dns_stub: false,
            stub_domains: Vec::new(),
            counters: Arc::default(),
            domain_routes: Vec::new(),
            routes: Arc::new(Routes::default()),
            accept_routes: true,
            refused_routes: Vec::new(),
        }
    }

    /// Switches DNS handling to stub mode (true) or capture mode (false).
    pub fn set_dns_stub(&mut self, stub: bool) {
        self.dns_stub = stub;
        self.sink.table_dirty = true;
        self.stub_domains.clear();
        self.announce_stub_domains();
    }

    /// Stub mode's routing domains: our domain and each federated domain
    /// whose names we answer, with their reverse zones (none before the
    /// registration).
    fn stub_domains(&self) -> Vec<String> {
        let (Some(reg), Some(prefix)) = (&self.dc.registered, self.prefix) else {
            return Vec::new();
        };
        let own = std::iter::once((reg.domain.as_str(), prefix));
        let federated = self.fed_dns.iter().map(|d| (d.domain(), d.prefix()));
        super::split_dns::stub_routing_domains(own.chain(federated))
    }

    /// In stub mode, tells the shell the routing domains when they changed
    /// (registration, a federated domain announced or withdrawn).
    pub(super) fn announce_stub_domains(&mut self) {
        if !self.dns_stub {
            return;
        }
        let domains = self.stub_domains();
        if domains.is_empty() || domains == self.stub_domains {
            return;
        }
        self.stub_domains.clone_from(&domains);
        self.sink.out.push_back(Output::StubDomains(domains));
    }

    /// The stub resolver's address, in stub mode once registered.
    pub fn stub_address(&self) -> Option<Ipv4Addr> {
        self.prefix
            .filter(|_| self.dns_stub)
            .map(super::split_dns::stub_address)
    }

    /// Addresses whose UDP port 53 traffic from the TUN is ours to handle.
    pub(super) fn dns_addresses(&self) -> Vec<IpAddr> {
        match self.stub_address() {
            Some(stub) => vec![IpAddr::V4(stub)],
            None if self.dns_stub => Vec::new(),
            None => self.s.resolvers.clone(),
        }
    }

    /// A setting reloaded on SIGHUP; tunnels and sessions stay.
    pub fn apply(&mut self, change: NodeChange) {
        match change {
            NodeChange::Resolvers(r) => {
                self.s.resolvers = r;
                self.sink.table_dirty = true;
            }
            NodeChange::Keepalive(k) => self.s.keepalive = k,
            NodeChange::RekeySecs(d) => self.s.rekey = d,
        }
    }

    /// Subnet routing (node.toml `advertise_routes`, `accept_routes`);
    /// before the first registration.
    pub fn set_subnet_routes(&mut self, advertise: Vec<Ipv4Net>, accept: bool) {
        self.dc.advertise_routes = advertise;
        self.accept_routes = accept;
    }

    /// Takes the DC's list of granted routes: a new table for the workers
    /// and the prefixes to route into the TUN, if anything changed.
    fn set_domain_routes(&mut self, mut routes: Vec<GrantedRoute>, now: Instant) {
        let local = self.dc.registered.as_ref().map(|r| r.virtual_ip);
        // A LAN prefix holding the DC or a relay would pull our own
        // signaling into the tunnel (a loop): never route those.
        let relays = self.dc.registered.as_ref().map(|r| r.relays.clone());
        let infra: Vec<Ipv4Addr> = self
            .s
            .dc
            .iter()
            .chain(relays.iter().flatten())
            .filter_map(|a| match a.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        routes.retain(|r| {
            let hit = infra.iter().find(|ip| r.prefix.contains(*ip));
            if let Some(ip) = hit {
                warn!(prefix = %r.prefix, gateway = %r.gateway, address = %ip, "subnet route not used: it holds the DC's or a relay's address");
            }
            hit.is_none()
        });
        let built = Routes::new(&routes, local, self.accept_routes);
        self.domain_routes = routes;
        if *self.routes == built {
            return;
        }
        info!(routes = ?self.domain_routes, "subnet routes");
        self.sink
            .out
            .push_back(Output::SubnetRoutes(built.installed()));
        self.routes = Arc::new(built);
        self.refresh_candidates(now);
        self.sink.table_dirty = true;
    }

    /// Logs the DC's refusals of our advertised prefixes when they change.
    fn note_refused_routes(&mut self, refused: &[RefusedRoute]) {
        if self.refused_routes == refused {
            return;
        }
        for r in refused {
            warn!(prefix = %r.prefix, reason = %r.reason, "the DC refused an advertised route; it is not routed");
        }
        self.refused_routes = refused.to_vec();
    }

    /// The counters this core keeps, for the metrics endpoint.
    pub fn counters(&self) -> Arc<ControlCounters> {
        self.counters.clone()
    }

    /// The IO shell's queue into the core is more than half full: treat
    /// handshakes as under load until it drains.
    pub fn set_backlog(&mut self, backlog: bool) {
        self.gate.set_backlog(backlog);
    }

    /// This node's name, as configured.
    #[cfg(test)]
    pub fn status_name(&self) -> &str {
        &self.s.name
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The addresses our data socket can be reached on, sent to the DC.
    pub fn set_local_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.local_endpoints = endpoints;
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.sink.out.pop_front()
    }

    /// A new snapshot for the workers, if anything changed since the last.
    pub fn take_table(&mut self) -> Option<PeerTable> {
        if !std::mem::take(&mut self.sink.table_dirty) {
            return None;
        }
        let mut t = PeerTable {
            local_ip: self.dc.registered.as_ref().map(|r| r.virtual_ip),
            prefix: self.prefix,
            routes: self.routes.clone(),
            federated: self.federated.iter().map(|f| f.prefix).collect(),
            resolvers: if self.dns.is_some() {
                self.dns_addresses()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        for p in self.peers.values() {
            let (tx, rx) = p.routes();
            if let Some(tx) = tx {
                t.by_vip.insert(tx.virtual_ip, tx);
            }
            for r in rx {
                t.by_index.insert(r.session.local_index, r);
            }
        }
        Some(t)
    }

    pub(super) fn unix_nanos(&self, now: Instant) -> u64 {
        self.s.unix_nanos_at_start + now.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// The peer named `name` (as the DC names it), if we know it.
    pub(super) fn peer_named(&self, name: &str) -> Option<PublicKey> {
        self.peers
            .values()
            .find(|p| p.name() == name)
            .map(Peer::key)
    }

    pub(super) fn next_ping(&mut self) -> u64 {
        self.next_ping = self.next_ping.wrapping_add(1);
        self.next_ping
    }

    // ----- datagrams from the data socket ------------------------------------

    /// A datagram the workers did not handle themselves (everything but
    /// data records of known sessions).
    pub fn handle_udp(&mut self, from: SocketAddr, datagram: &mut [u8], now: Instant) {
        match wire::parse(datagram) {
            Ok(Datagram::Relayed { sid, inner }) => {
                let mut inner = inner.to_vec();
                self.handle_peer_datagram(Endpoint::Relay { relay: from, sid }, &mut inner, now);
            }
            Ok(Datagram::Relay {
                kind: Kind::RelayBindAck,
                bytes,
            }) => self.on_bind_ack(from, bytes, now),
            Ok(Datagram::Relay {
                kind: Kind::RelayProbeReply,
                bytes,
            }) => self.on_probe_reply(from, bytes),
            Ok(Datagram::CookieReply {
                kind: Kind::DcCookieReply,
                bytes,
            }) => {
                if let Some((to, bytes)) = self.dc.handle_cookie_reply(bytes, now) {
                    bump(&self.counters.cookies_received);
                    self.sink.out.push_back(Output::Udp { to, bytes });
                }
            }
            Ok(Datagram::Resp {
                kind: Kind::DcHandshakeResp,
                ..
            }) => {
                if let Some(ev) = self.dc.handle_response(from, datagram, now) {
                    self.on_dc_event(ev, now);
                }
            }
            Ok(Datagram::Record(h)) if h.kind == Kind::DcData => match self.dc.open(datagram) {
                Some(msg) => self.on_dc_message(msg, now),
                None => debug!(%from, "DC record rejected"),
            },
            _ if self.looped(from) => {}
            _ => self.handle_peer_datagram(Endpoint::Direct(from), datagram, now),
        }
    }

    /// A node-to-node datagram, direct or unwrapped from a relay.
    fn handle_peer_datagram(&mut self, from: Endpoint, datagram: &mut [u8], now: Instant) {
        match wire::parse(datagram) {
            Ok(Datagram::CookieReply {
                kind: Kind::CookieReply,
                bytes,
            }) => self.on_cookie_reply(from, bytes, now),
            Ok(Datagram::Init {
                kind: Kind::HandshakeInit,
                bytes,
            }) => self.on_handshake_init(from, bytes, now),
            Ok(Datagram::Resp {
                kind: Kind::HandshakeResp,
                sender,
                receiver,
                noise,
            }) => self.on_handshake_resp(from, sender, receiver, noise, now),
            Ok(Datagram::Record(h)) if h.kind == Kind::Data => self.open_data(from, datagram, now),
            Ok(other) => debug!(%from, datagram = ?other, "unexpected message type dropped"),
            Err(e) => debug!(%from, error = %e, "malformed datagram dropped"),
        }
    }

    /// A data record the workers could not place (a table not yet
    /// published, or a relayed record in a test without workers): open it
    /// here so nothing authentic is lost.
    fn open_data(&mut self, from: Endpoint, datagram: &mut [u8], now: Instant) {
        let Ok(h) = wire::TransportHeader::decode(datagram) else {
            return;
        };
        let p = self
            .peer_of_index(h.receiver)
            .and_then(|k| self.peers.get(&k));
        let Some(p) = p else {
            debug!(%from, "data record for an unknown session dropped");
            return;
        };
        let Some(session) = p.session(h.receiver).cloned() else {
            return;
        };
        let Ok(range) = session.open(datagram) else {
            return;
        };
        let index = session.local_index;
        let peer = RxPeer {
            virtual_ip: p.virtual_ip(),
            endpoint: p.endpoint(),
            unconfirmed: p.awaits_confirmation(index),
            stats: p.stats(),
        };
        let local = self.dc.registered.as_ref().map(|r| r.virtual_ip);
        let opened = classify_opened(&datagram[range], from, peer, local, &self.routes, now);
        if opened.endpoint_seen {
            self.handle_endpoint_seen(index, from, now);
        }
        match opened.payload {
            Opened::Keepalive | Opened::Spoofed => {}
            Opened::Packet(packet) => self.sink.out.push_back(Output::Tun(packet.to_vec())),
            Opened::Control(payload) => self.handle_peer_control(index, from, payload, now),
        }
    }

    // ----- the DC channel ---------------------------------------------------

    fn on_dc_event(&mut self, ev: DcEvent, now: Instant) {
        match ev {
            DcEvent::Registered(reg) => {
                let prefix = Ipv4Net::new(reg.virtual_ip, reg.prefix_len)
                    .map(|n| n.trunc())
                    .ok();
                let changed = self.prefix != prefix
                    || self.dns.as_ref().map(|d| d.domain()) != Some(reg.domain.as_str());
                if changed {
                    self.prefix = prefix;
                    self.dns = match (prefix, self.s.resolvers.is_empty()) {
                        (Some(p), false) => match DnsInterceptor::new(&reg.domain, p, DNS_TTL) {
                            Ok(d) => Some(d),
                            Err(e) => {
                                warn!(domain = %reg.domain, error = %e, "cannot intercept DNS for this domain");
                                None
                            }
                        },
                        _ => None,
                    };
                    self.sink.out.push_back(Output::Configure(reg.clone()));
                    self.announce_stub_domains();
                    self.refresh_candidates(now);
                    self.sink.table_dirty = true;
                }
                self.set_domain_routes(reg.routes.clone(), now);
                self.note_refused_routes(&reg.refused_routes);
                self.probe_nat(&reg);
                // Questions asked while the channel was down go out now.
                let ids: Vec<u64> = self.resolves.keys().copied().collect();
                for id in ids {
                    self.send_resolve(id, now);
                }
            }
            DcEvent::Refused(_) => {}
        }
    }

    fn on_dc_message(&mut self, msg: FromDc, now: Instant) {
        match msg {
            FromDc::Routes(routes) => self.set_domain_routes(routes, now),
            FromDc::RefusedRoutes(refused) => {
                // Our grants changed between refreshes (a DC reload): the
                // status reads the registration's list, so update it.
                if let Some(reg) = self.dc.registered.as_mut() {
                    reg.refused_routes.clone_from(&refused);
                }
                self.note_refused_routes(&refused);
            }
            FromDc::Direction(info) => {
                debug!(peer = %info.name, path = ?info.path, "DC directed a peer to us");
                self.upsert_peer(&info, now);
            }
            FromDc::Resolved { id, result } => {
                let Some(pending) = self.resolves.remove(&id) else {
                    return;
                };
                self.on_resolved(pending, result, now);
            }
            FromDc::Federation(domains) => self.set_federation(domains),
        }
    }

    fn on_resolved(&mut self, pending: PendingResolve, result: Resolution, now: Instant) {
        match result {
            Resolution::Found(info) => {
                let own =
                    self.dc.registered.as_ref().map(|r| r.virtual_ip) == Some(info.virtual_ip);
                let answer = DnsResolution::Found {
                    name: info.name.clone(),
                    virtual_ip: info.virtual_ip,
                };
                if own || !pending.direct {
                    for w in pending.dns {
                        self.reply_dns(&w, &answer);
                    }
                    return;
                }
                let key = self.upsert_peer(&info, now);
                let queued = self.orphans.remove(&info.virtual_ip).unwrap_or_default();
                self.with_peer(key, now, |p, env| p.on_resolved(queued, pending.dns, env));
            }
            Resolution::NotFound | Resolution::Offline => {
                let answer = if result == Resolution::NotFound {
                    DnsResolution::NotFound
                } else {
                    DnsResolution::Failed
                };
                debug!(target = ?pending.target, ?result, "DC could not resolve");
                if let Target::Address(ip) = pending.target {
                    self.orphans.remove(&ip);
                }
                for w in pending.dns {
                    self.reply_dns(&w, &answer);
                }
            }
        }
    }

    /// Asks a relay how it sees our data socket; the DC compares that with
    /// its own view to learn whether our NAT maps per destination.
    fn probe_nat(&mut self, reg: &Registered) {
        let Some(&relay) = reg
            .relays
            .iter()
            .find(|r| r.is_ipv4() == reg.reflexive.is_ipv4())
        else {
            return;
        };
        let nonce = rand::random();
        self.nat_probe = Some(NatProbe { relay, nonce });
        self.sink.out.push_back(Output::Udp {
            to: relay,
            bytes: relay_frames::probe(nonce),
        });
    }

    fn on_probe_reply(&mut self, from: SocketAddr, datagram: &[u8]) {
        let Some((nonce, seen_as)) = relay_frames::parse_probe_reply(datagram) else {
            return;
        };
        let Some(probe) = self
            .nat_probe
            .take_if(|p| p.relay == from && p.nonce == nonce)
        else {
            return;
        };
        debug!(relay = %probe.relay, %seen_as, "relay observed our address");
        if let Some((to, bytes)) = self.dc.seal(&ToDc::Observed {
            relay: probe.relay,
            seen_as,
        }) {
            self.sink.out.push_back(Output::Udp { to, bytes });
        }
    }

    // ----- mobility and tools -----------------------------------------------

    /// The host's addresses or routes changed (netlink, or polling). On a
    /// real change: register from the new address and ask for fresh
    /// directions; in any case tell every peer where we are now (an
    /// authenticated packet from the new address is what moves them).
    pub fn handle_network_change(&mut self, endpoints: Vec<SocketAddr>, now: Instant) {
        let moved = endpoints != self.local_endpoints;
        if moved {
            info!(old = ?self.local_endpoints, new = ?endpoints, "local addresses changed");
            self.local_endpoints = endpoints;
            self.dc.expedite(now);
        }
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.with_peer(key, now, |p, env| p.on_network_change(moved, env));
        }
    }

    /// Starts a ping to the node named `name` (`alice`: of our own domain;
    /// `alice.<domain>`: of that domain; any case); the answer comes back
    /// as `Output::Pong` with this id. A peer with no tunnel gets one
    /// first, asked for as a DNS question for the name would ask.
    pub fn ping(&mut self, name: &str, now: Instant) -> Result<u64, String> {
        let name = self.ping_name(name)?;
        let name = name.as_str();
        let id = self.next_ping();
        if let Some(key) = self.peer_named(name) {
            self.with_peer(key, now, |p, env| {
                p.ping(id, env);
                p.ensure_tunnel(env);
            });
            return Ok(id);
        }
        if !self.dc.is_up() {
            return Err(format!(
                "{name} is not a known peer and the DC is unreachable"
            ));
        }
        // Resolve first; the ping waits on the peer once it exists.
        self.resolve(Target::Name(name.to_string()), true, None, now);
        self.pending_ping_names.push((name.to_string(), id));
        Ok(id)
    }

    // ----- timers -----------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant) {
        let unix = self.unix_nanos(now);
        // Questions to the DC: retry, then give up with SERVFAIL.
        let due: Vec<u64> = self
            .resolves
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) >= RESOLVE_RETRY)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let give_up = self
                .resolves
                .get(&id)
                .is_some_and(|p| p.attempts >= RESOLVE_ATTEMPTS);
            if give_up || !self.dc.is_up() {
                if let Some(p) = self.resolves.remove(&id) {
                    debug!(target = ?p.target, "no answer from the DC");
                    if let Target::Address(ip) = p.target {
                        self.orphans.remove(&ip);
                    }
                    for w in p.dns {
                        self.reply_dns(&w, &DnsResolution::Failed);
                    }
                }
            } else {
                // A restarted DC does not know our session: re-register
                // rather than wait out the refresh period.
                self.dc.expedite(now);
                self.send_resolve(id, now);
            }
        }
        if let Some((to, bytes)) = self.dc.poll(now, unix, &self.local_endpoints) {
            self.sink.out.push_back(Output::Udp { to, bytes });
        }
        // Pings asked for by name before the peer existed.
        if !self.pending_ping_names.is_empty() {
            let waiting = std::mem::take(&mut self.pending_ping_names);
            for (name, id) in waiting {
                match self.peer_named(&name) {
                    Some(key) => {
                        self.with_peer(key, now, |p, env| p.ping(id, env));
                    }
                    None if self
                        .resolves
                        .values()
                        .any(|r| r.target == Target::Name(name.clone())) =>
                    {
                        self.pending_ping_names.push((name, id))
                    }
                    None => {}
                }
            }
        }
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.with_peer(key, now, Peer::on_timer);
        }
        let before = self.forwards.len();
        self.forwards.retain(|_, f| f.deadline > now);
        let unanswered = (before - self.forwards.len()) as u64;
        self.counters
            .dns_failed
            .fetch_add(unanswered, Ordering::Relaxed);
    }

    /// When `handle_timeout` next has work; the shell never sleeps past it.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let mut t = self.dc.next_deadline();
        for p in self.resolves.values() {
            t = t.min(p.sent + RESOLVE_RETRY);
        }
        for p in self.peers.values() {
            if let Some(d) = p.next_deadline(now, self.s.rekey, self.s.keepalive) {
                t = t.min(d);
            }
        }
        // Traffic, handshakes or binds in flight: look often (health checks
        // and retries are sub-second); otherwise once a second at least.
        let active = self.peers.values().any(|p| p.active(now));
        let cap = if active || !self.pending_ping_names.is_empty() {
            ACTIVE_TICK
        } else {
            Duration::from_secs(1)
        };
        t.min(now + cap).max(now)
    }

    // ----- status -----------------------------------------------------------

    pub fn status(&self, now: Instant) -> StatusReport {
        let reg = self.dc.registered.as_ref();
        // Peers of federated domains are already named `label.domain`.
        let fqdn = |name: &str| match (reg, NodeName::parse(name)) {
            (Some(r), Ok(n)) if n.domain().is_none() => format!("{n}.{}", r.domain),
            _ => name.to_string(),
        };
        let mut peers: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|p| p.status(now, fqdn(p.name())))
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        StatusReport {
            name: self.s.name.clone(),
            fqdn: reg.map(|r| format!("{}.{}", self.s.name, r.domain)),
            virtual_ip: reg.map(|r| r.virtual_ip),
            dc: DcStatus {
                state: self.dc.state.label().to_string(),
                address: self.dc.address(),
                reflexive: reg.map(|r| r.reflexive),
                last_registered_secs: self.dc.since_registered(now),
                error: match &self.dc.state {
                    DcState::Refused(r) => Some(r.clone()),
                    _ => None,
                },
            },
            peers,
            refused_handshakes: RefusedHandshakes {
                undirected: self.undirected_handshakes,
                rate_limited: self.gate.rate_limited(),
            },
            dns: Some(DnsStatus {
                mode: if self.dns_stub {
                    "stub"
                } else if self.s.resolvers.is_empty() {
                    "off"
                } else {
                    "capture"
                }
                .into(),
                stub_address: self.stub_address(),
            }),
            advertised_routes: self.advertised_status(),
            routes: self
                .domain_routes
                .iter()
                .filter(|r| reg.map(|g| g.virtual_ip) != Some(r.gateway))
                .map(|r| SubnetRoute {
                    prefix: r.prefix,
                    gateway: r.gateway,
                    installed: self.accept_routes,
                })
                .collect(),
            dataplane: Default::default(),
        }
    }

    /// Each advertised prefix: granted, refused (and why) or pending.
    fn advertised_status(&self) -> Vec<AdvertisedRoute> {
        let reg = self.dc.registered.as_ref().filter(|_| self.dc.is_up());
        self.dc
            .advertise_routes
            .iter()
            .map(|&prefix| {
                let refused =
                    reg.and_then(|g| g.refused_routes.iter().find(|r| r.prefix == prefix));
                let (state, reason) = match (reg, refused) {
                    (None, _) => ("pending", None),
                    (Some(_), Some(r)) => ("refused", Some(r.reason.to_string())),
                    (Some(_), None) => ("granted", None),
                };
                AdvertisedRoute {
                    prefix,
                    state: state.into(),
                    reason,
                }
            })
            .collect()
    }
}
