//! Sans-IO DC logic: datagrams and times in, datagrams out.

use super::cross_domain::{FedPair, FedPending};
use super::direction::{self, Decision, View};
use super::federation::{FedEvent, Federation};
use super::routes;
use super::settings::{DcChange, DcSettings, FederationSpec, RelaySpec, RouteGrant};
use super::store::{EnrollError, NodeRecord, Store};
use crate::keys::{PrivateKey, PublicKey};
use crate::metrics::sample::Sample;
use crate::proto::handshake::Responder;
use crate::proto::link::{Gate, IndexAlloc, Verdict};
use crate::proto::name::Label;
use crate::proto::ratelimit::RateLimiter;
use crate::proto::relay as relay_frames;
use crate::proto::session::Session;
use crate::proto::signal::{
    self, FromDc, GrantedRoute, Path, PeerInfo, RefusedRoute, Register, RegisterReply, Registered,
    RelayGrant, Resolution, Target, ToDc, MAX_ADVERTISED_ROUTES,
};
use crate::proto::ticket::{Ticket, TicketKey};
use crate::proto::wire::{self, Datagram, Kind, TransportHeader};
use ipnet::Ipv4Net;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How often nodes are told to refresh (re-handshake) their registration.
pub const REFRESH_SECS: u32 = 20;
/// Relay tickets last this long; nodes ask for fresh ones well before.
pub const TICKET_SECS: u64 = 600;
/// Per-pair relay rate written into tickets (the relay may cap it lower).
const TICKET_RATE_BYTES: u64 = 1_000_000_000 / 8 * 10;
/// The DC pings each relay this often and declares it dead after
/// `RELAY_DEAD` without an answer.
const RELAY_PING: Duration = Duration::from_secs(1);
/// Most peers remembered per node for restart notices (`DcCore::met`).
const MAX_MET: usize = 4096;
const RELAY_DEAD: Duration = Duration::from_secs(3);

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

struct RelayState {
    spec: RelaySpec,
    key: TicketKey,
    last_ping: Option<Instant>,
    last_pong: Option<Instant>,
    /// Optimistic until proven otherwise, so the first pairs after a DC
    /// start can use it.
    alive: bool,
    since: Instant,
}

impl RelayState {
    fn new(dc_key: &PrivateKey, spec: RelaySpec, now: Instant) -> RelayState {
        RelayState {
            key: TicketKey::derive(dc_key, &spec.public_key),
            spec,
            last_ping: None,
            last_pong: None,
            alive: true,
            since: now,
        }
    }
}

/// The relay session a pair was given (kept so refreshes extend it).
pub(super) struct PairRelay {
    relay: usize,
    sid: u32,
    secrets: [[u8; 32]; 2],
    expires_unix: u64,
    /// Set when one side is a node of a federated domain: this DC gave the
    /// grant, so it re-directs the pair when the relay dies.
    pub(super) remote: Option<FedPair>,
}

/// A node that is currently registered.
pub(super) struct Online {
    pub(super) record: NodeRecord,
    session: Session,
    /// The session replaced by the latest refresh, kept so records the node
    /// sealed before it saw our response still open.
    previous: Option<Session>,
    pub(super) reflexive: SocketAddr,
    pub(super) local_endpoints: Vec<SocketAddr>,
    /// How a relay saw the node's data socket (second NAT observer).
    pub(super) relay_saw: Option<SocketAddr>,
    last_seen: Instant,
    /// Advertised prefixes its grants cover, and the refused rest.
    routes: Vec<Ipv4Net>,
    refused_routes: Vec<RefusedRoute>,
    /// The prefixes it advertised (the first `MAX_ADVERTISED_ROUTES`, as
    /// sent), authorised again on a reload exactly as at registration.
    advertised: Vec<Ipv4Net>,
    /// Its process (`Register::incarnation`): a new one is a restart.
    incarnation: u64,
}

impl Online {
    pub(super) fn view(&self) -> View {
        View {
            reflexive: self.reflexive,
            locals: self.local_endpoints.clone(),
            nat: direction::classify(self.reflexive, &self.local_endpoints, self.relay_saw),
        }
    }
}

/// Counters for logs and status.
#[derive(Debug, Default, Clone, Copy)]
pub struct DcStats {
    pub registrations: u64,
    pub refused: u64,
    pub resolves: u64,
    pub directions: u64,
    pub relayed_pairs: u64,
    pub dropped: u64,
    /// Advertised prefixes refused (counted when a node's refusals change).
    pub routes_refused: u64,
    /// Registration handshakes received, answered (a DH each), answered
    /// with a cookie reply under load, and dropped for a bad mac1.
    pub handshakes_received: u64,
    pub handshakes_answered: u64,
    pub cookie_replies: u64,
    pub bad_mac1: u64,
    /// Federation initiations answered with a cookie reply under load.
    pub fed_cookie_replies: u64,
}

pub struct DcCore {
    pub(super) settings: DcSettings,
    pub(super) store: Store,
    pub(super) online: HashMap<PublicKey, Online>,
    /// Each node's peers: the pairs directed since this DC started (at most
    /// `MAX_MET` per node). A restarted node's peers hear of it from here.
    met: HashMap<PublicKey, HashSet<PublicKey>>,
    /// Our session index -> node key, for current and previous sessions.
    by_index: HashMap<u32, PublicKey>,
    /// Highest registration timestamp seen per key (replay guard).
    last_timestamp: HashMap<PublicKey, u64>,
    indexes: IndexAlloc,
    relays: Vec<RelayState>,
    /// Keyed by the pair's keys in sorted order (side 0 is the smaller).
    pub(super) pairs: HashMap<(PublicKey, PublicKey), PairRelay>,
    /// The responder's checks before any DH, for registrations and
    /// federation handshakes alike (`proto::link::Gate`): mac1, cookies
    /// while more than `HANDSHAKE_LOAD` arrive per second, and a
    /// per-source limit, generous since many nodes can share one NAT
    /// address (each registration costs a DH and a store lookup).
    gate: Gate,
    /// dc.toml `[[route_grants]]`: who may route for which LAN prefixes.
    route_grants: Vec<RouteGrant>,
    pub stats: DcStats,
    /// Sessions with the DCs of other domains.
    pub(super) fed: Federation,
    /// Lookups sent to other DCs, by the id we gave them.
    pub(super) fed_pending: HashMap<u64, FedPending>,
    pub(super) next_fed_id: u64,
}

/// Above this many registrations per second, a registration must carry a
/// cookie's mac2 before the DC does a Diffie-Hellman (every node refreshes
/// every `REFRESH_SECS`: 200/s is 4,000 nodes).
pub const HANDSHAKE_LOAD: u32 = 200;

/// Compares two byte strings in time that depends only on their lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl DcCore {
    pub fn new(settings: DcSettings, store: Store, index_seed: u64, now: Instant) -> Self {
        let relays = settings
            .relays
            .iter()
            .map(|spec| RelayState::new(&settings.key, spec.clone(), now))
            .collect();
        let gate = Gate::new(
            &settings.key,
            HANDSHAKE_LOAD,
            RateLimiter::new(100, 200, 65536),
            now,
        );
        let fed = Federation::new(
            settings.key.clone(),
            settings.domain.clone(),
            settings.prefix,
            Vec::new(),
            index_seed.rotate_left(32),
            now,
        );
        DcCore {
            fed,
            fed_pending: HashMap::new(),
            next_fed_id: 1,
            gate,
            relays,
            pairs: HashMap::new(),
            settings,
            store,
            online: HashMap::new(),
            met: HashMap::new(),
            by_index: HashMap::new(),
            last_timestamp: HashMap::new(),
            indexes: IndexAlloc::new(index_seed),
            route_grants: Vec::new(),
            stats: DcStats::default(),
        }
    }

    /// Sets the subnet route grants (dc.toml `[[route_grants]]`, already
    /// validated: no two overlap).
    pub fn with_route_grants(mut self, grants: Vec<RouteGrant>) -> Self {
        self.route_grants = grants;
        self
    }

    /// Every granted route of the online nodes, `except` one of them, in a
    /// stable order.
    fn domain_routes(&self, except: Option<&PublicKey>) -> Vec<GrantedRoute> {
        let mut routes: Vec<GrantedRoute> = self
            .online
            .iter()
            .filter(|(k, _)| Some(*k) != except)
            .flat_map(|(_, n)| {
                n.routes.iter().map(|&prefix| GrantedRoute {
                    prefix,
                    gateway: n.record.virtual_ip,
                })
            })
            .collect();
        routes.sort_by_key(|r| (r.prefix, r.gateway));
        routes
    }

    /// Tells every online node but `except` the domain's routes (after a
    /// gateway came, went or changed what it advertises).
    fn push_routes(&self, except: Option<&PublicKey>) -> Vec<Transmit> {
        let msg = FromDc::Routes(self.domain_routes(None));
        self.online
            .keys()
            .filter(|k| Some(*k) != except)
            .filter_map(|k| self.send(k, &msg))
            .collect()
    }

    /// Federates with the DCs of `specs` (`[[federation]]`): sessions come
    /// up from `handle_timeout` on.
    pub fn federate(&mut self, specs: Vec<FederationSpec>, now: Instant) {
        let seed = (u64::from(self.indexes.next(|_| false)) << 32)
            | u64::from(self.indexes.next(|_| false));
        self.fed = Federation::new(
            self.settings.key.clone(),
            self.settings.domain.clone(),
            self.settings.prefix,
            specs,
            seed,
            now,
        );
    }

    /// Domains whose DC address must be looked up (DNS SRV) by the shell.
    pub fn wanted_lookups(&mut self, now: Instant) -> Vec<String> {
        self.fed.wanted_lookups(now)
    }

    /// The shell's answer to a lookup from [`DcCore::wanted_lookups`].
    pub fn set_federation_addresses(
        &mut self,
        domain: &str,
        addrs: Vec<SocketAddr>,
        ttl: Duration,
        now: Instant,
    ) {
        self.fed.set_addresses(domain, addrs, ttl, now);
    }

    /// The IO shell could not drain its sockets in one pass: treat
    /// registrations as under load until it can.
    pub fn set_backlog(&mut self, backlog: bool) {
        self.gate.set_backlog(backlog);
    }

    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    /// Counters and gauges for the metrics endpoint.
    pub fn metrics(&self) -> Vec<Sample> {
        let s = &self.stats;
        let mut m = vec![
            Sample::gauge(
                "ntmtun_dc_nodes_online",
                "Nodes currently registered.",
                self.online.len() as u64,
            ),
            Sample::counter(
                "ntmtun_dc_registrations",
                "Registrations and refreshes accepted.",
                s.registrations,
            ),
            Sample::counter(
                "ntmtun_dc_registrations_refused",
                "Registrations refused (auth key, name taken).",
                s.refused,
            ),
            Sample::counter(
                "ntmtun_dc_resolves",
                "Name and address lookups answered.",
                s.resolves,
            ),
            Sample::counter(
                "ntmtun_dc_directions",
                "Pairs directed at each other.",
                s.directions,
            ),
            Sample::counter(
                "ntmtun_dc_relayed_pairs",
                "Pairs given a relay session.",
                s.relayed_pairs,
            ),
            Sample::counter(
                "ntmtun_dc_dropped",
                "Datagrams dropped (malformed, unauthenticated, replayed).",
                s.dropped,
            ),
            Sample::counter(
                "ntmtun_dc_rate_limited",
                "Registrations refused by the per-source rate limit.",
                self.gate.rate_limited(),
            ),
            Sample::counter(
                "ntmtun_dc_routes_refused",
                "Advertised subnet routes refused (not covered by the node's route_grants).",
                s.routes_refused,
            ),
            Sample::gauge(
                "ntmtun_dc_routes_granted",
                "Subnet routes of online gateways currently granted.",
                self.online.values().map(|n| n.routes.len() as u64).sum(),
            ),
            Sample::counter(
                "ntmtun_dc_handshakes_received",
                "Registration handshakes received.",
                s.handshakes_received,
            ),
            Sample::counter(
                "ntmtun_dc_handshakes_answered",
                "Registration handshakes answered with a response (a Diffie-Hellman each).",
                s.handshakes_answered,
            ),
            Sample::counter(
                "ntmtun_dc_handshakes_cookie_replied",
                "Registration handshakes without a valid mac2 answered with a cookie reply under load.",
                s.cookie_replies,
            ),
            Sample::counter(
                "ntmtun_dc_handshakes_bad_mac1",
                "Registration handshakes dropped for a mac1 not made for the DC's key.",
                s.bad_mac1,
            ),
            Sample::counter(
                "ntmtun_dc_federation_cookie_replied",
                "Federation handshakes without a valid mac2 answered with a cookie reply under load.",
                s.fed_cookie_replies,
            ),
            Sample::gauge(
                "ntmtun_dc_relay_pairs",
                "Pairs currently holding a relay session.",
                self.pairs.len() as u64,
            ),
        ];
        m.extend(self.fed.metrics());
        for r in &self.relays {
            let name = r
                .spec
                .addresses
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default();
            m.push(
                Sample::gauge(
                    "ntmtun_dc_relay_up",
                    "1 while the relay answers the DC's pings.",
                    u64::from(r.alive),
                )
                .label("relay", name),
            );
        }
        m
    }

    fn alloc_index(&mut self) -> u32 {
        let by_index = &self.by_index;
        self.indexes.next(|i| by_index.contains_key(&i))
    }

    /// Handles one datagram from `from`; `unix_now` is wall-clock seconds.
    pub fn handle(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        let kind = match wire::parse(datagram) {
            Ok(Datagram::Relay {
                kind: Kind::RelayPong,
                ..
            }) => return self.handle_pong(from, datagram, now, unix_now),
            Ok(Datagram::CookieReply {
                kind: Kind::FedCookieReply,
                bytes,
            }) => {
                return self
                    .fed
                    .handle_cookie_reply(bytes, now)
                    .into_iter()
                    .collect()
            }
            Ok(Datagram::Init { kind, .. }) => kind,
            Ok(Datagram::Resp { kind, .. }) => kind,
            Ok(Datagram::Record(h)) => h.kind,
            Ok(other) => {
                debug!(%from, datagram = ?other, "dropping message not meant for the DC");
                self.stats.dropped += 1;
                return Vec::new();
            }
            Err(e) => {
                debug!(%from, error = %e, "dropping malformed datagram");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        match kind {
            Kind::DcHandshakeInit => self.handle_register(from, datagram, now, unix_now),
            Kind::DcData => self.handle_data(from, datagram, now, unix_now),
            Kind::FedHandshakeInit if !self.fed.is_empty() => {
                if let Err(reply) = self.through_gate(kind, from, datagram, now) {
                    return reply;
                }
                let (mut out, events) = self.fed.handle_init(self.gate.mac1(), from, datagram, now);
                out.extend(self.on_fed_events(events, now, unix_now));
                out
            }
            Kind::FedHandshakeResp => {
                let (mut out, events) = self.fed.handle_resp(from, datagram, now);
                out.extend(self.on_fed_events(events, now, unix_now));
                out
            }
            Kind::FedData => match self.fed.handle_data(from, datagram, now) {
                Some(ev) => self.on_fed_events(vec![ev], now, unix_now),
                None => {
                    self.stats.dropped += 1;
                    Vec::new()
                }
            },
            k => {
                debug!(%from, kind = ?k, "dropping message not meant for the DC");
                self.stats.dropped += 1;
                Vec::new()
            }
        }
    }

    /// The responder's gate (`proto::link::Gate`) for a registration or a
    /// federation initiation (`init`): Ok to go on to the Noise read, else
    /// what to send back (a cookie reply, or nothing), counted.
    fn through_gate(
        &mut self,
        init: Kind,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<(), Vec<Transmit>> {
        let fed = init == Kind::FedHandshakeInit;
        let cookie_kind = if fed {
            Kind::FedCookieReply
        } else {
            Kind::DcCookieReply
        };
        match self.gate.check(cookie_kind, datagram, Some(from), now) {
            Verdict::Proceed => Ok(()),
            Verdict::Cookie(bytes) => {
                if fed {
                    self.stats.fed_cookie_replies += 1;
                } else {
                    self.stats.cookie_replies += 1;
                }
                Err(vec![Transmit { to: from, bytes }])
            }
            verdict => {
                debug!(%from, kind = ?init, ?verdict, "handshake initiation dropped before any Diffie-Hellman");
                if verdict == Verdict::BadMac1 && !fed {
                    self.stats.bad_mac1 += 1;
                }
                self.stats.dropped += 1;
                Err(Vec::new())
            }
        }
    }

    fn handle_register(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        self.stats.handshakes_received += 1;
        if let Err(reply) = self.through_gate(Kind::DcHandshakeInit, from, datagram, now) {
            return reply;
        }
        let responder = match Responder::read(&self.settings.key, self.gate.mac1(), datagram) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, error = %e, "handshake initiation rejected");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        let key = responder.remote_key;
        let reg: Register = match signal::decode(&responder.payload) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, node = %key.short(), error = %e, "bad registration payload");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        if self
            .last_timestamp
            .get(&key)
            .is_some_and(|&t| reg.timestamp <= t)
        {
            debug!(%from, node = %key.short(), "replayed or stale registration ignored");
            self.stats.dropped += 1;
            return Vec::new();
        }
        self.last_timestamp.insert(key, reg.timestamp);

        let (granted, refusals) =
            routes::authorise(&self.route_grants, &reg.name, &reg.advertise_routes);
        let refused_routes: Vec<RefusedRoute> = refusals.iter().map(|r| r.route.clone()).collect();
        let reply = match self.admit(&key, &reg, unix_now) {
            Ok(record) => RegisterReply::Accepted(Registered {
                virtual_ip: record.virtual_ip,
                prefix_len: self.settings.prefix.prefix_len(),
                domain: self.settings.domain.clone(),
                reflexive: from,
                refresh_secs: REFRESH_SECS,
                relays: self.relay_addresses(),
                routes: {
                    let mut all = self.domain_routes(Some(&key));
                    all.extend(granted.iter().map(|&prefix| GrantedRoute {
                        prefix,
                        gateway: record.virtual_ip,
                    }));
                    all.sort_by_key(|r| (r.prefix, r.gateway));
                    all
                },
                refused_routes: refused_routes.clone(),
            }),
            Err(reason) => {
                warn!(%from, node = %key.short(), name = %reg.name, %reason, "registration refused");
                self.stats.refused += 1;
                RegisterReply::Refused { reason }
            }
        };
        let payload = match signal::encode(&reply) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot encode registration reply");
                return Vec::new();
            }
        };
        let index = self.alloc_index();
        let (session, bytes) = match responder.reply(Kind::DcHandshakeResp, index, &payload) {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot build handshake response");
                return Vec::new();
            }
        };
        self.stats.handshakes_answered += 1;
        if let RegisterReply::Accepted(reg_ok) = reply {
            self.stats.registrations += 1;
            let record = match self.store.by_key(&key) {
                Ok(Some(r)) => r,
                _ => return vec![Transmit { to: from, bytes }],
            };
            let old = self.online.remove(&key);
            let routes_changed = old
                .as_ref()
                .map_or(!granted.is_empty(), |o| o.routes != granted);
            if old
                .as_ref()
                .is_none_or(|o| o.refused_routes != refused_routes)
            {
                for r in &refusals {
                    warn!(
                        node = %record.name,
                        prefix = %r.route.prefix,
                        owner = r.owner.as_deref().unwrap_or("-"),
                        reason = %r.route.reason,
                        "advertised route refused"
                    );
                }
                self.stats.routes_refused += refusals.len() as u64;
            }
            if routes_changed {
                info!(node = %record.name, routes = ?granted, "granted routes");
            }
            let restarted = old
                .as_ref()
                .is_some_and(|o| o.incarnation != 0 && reg.incarnation > o.incarnation);
            let previous = match old {
                Some(old) => {
                    if let Some(p) = &old.previous {
                        self.by_index.remove(&p.local_index);
                    }
                    if old.reflexive != from {
                        info!(name = %record.name, old = %old.reflexive, new = %from, "node moved");
                    }
                    Some(old.session)
                }
                None => {
                    info!(name = %record.name, vip = %reg_ok.virtual_ip, %from, "node registered");
                    None
                }
            };
            self.by_index.insert(index, key);
            let domains = self.fed.domains();
            self.online.insert(
                key,
                Online {
                    record,
                    session,
                    previous,
                    reflexive: from,
                    local_endpoints: reg.local_endpoints.into_iter().take(8).collect(),
                    relay_saw: None,
                    last_seen: now,
                    routes: granted,
                    refused_routes,
                    advertised: reg
                        .advertise_routes
                        .into_iter()
                        .take(MAX_ADVERTISED_ROUTES)
                        .collect(),
                    incarnation: reg.incarnation,
                },
            );
            let mut out = vec![Transmit { to: from, bytes }];
            if restarted {
                out.extend(self.redirect_peers_of(key, unix_now));
            }
            if routes_changed {
                out.extend(self.push_routes(Some(&key)));
            }
            // Always, when federating: a node that missed a withdrawal
            // learns it here.
            if !self.fed.is_empty() {
                out.extend(self.send(&key, &FromDc::Federation(domains)));
            }
            return out;
        }
        vec![Transmit { to: from, bytes }]
    }

    /// Enrols or re-admits a node; Err carries a reason for the node's log.
    fn admit(
        &mut self,
        key: &PublicKey,
        reg: &Register,
        unix_now: u64,
    ) -> Result<NodeRecord, String> {
        if let Err(why) = Label::parse(&reg.name) {
            return Err(format!(
                "name {:?} is not a valid node name: it {why}; use 1-63 lowercase letters, digits or '-'",
                reg.name
            ));
        }
        let known = self
            .store
            .by_key(key)
            .map_err(|e| format!("DC store error: {e}"))?
            .is_some();
        // Once enrolled, the static key is the identity; the auth key is
        // only needed to join.
        if !known
            && !self
                .settings
                .auth_keys
                .iter()
                .any(|k| ct_eq(k.as_bytes(), reg.auth_key.as_bytes()))
        {
            return Err("auth key not accepted by the DC: check auth_key in node.toml against auth_keys in dc.toml".into());
        }
        self.store
            .enroll(key, &reg.name, self.settings.prefix, unix_now)
            .map_err(|e| match e {
                EnrollError::NameTaken { name, .. } => format!(
                    "name {name:?} is already held by another node's key in domain {}: choose another name",
                    self.settings.domain
                ),
                other => other.to_string(),
            })
    }

    fn handle_data(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        let Ok(header) = TransportHeader::decode(datagram) else {
            self.stats.dropped += 1;
            return Vec::new();
        };
        let Some(key) = self.by_index.get(&header.receiver).copied() else {
            debug!(%from, index = header.receiver, "record for unknown DC session");
            self.stats.dropped += 1;
            return Vec::new();
        };
        let Some(node) = self.online.get_mut(&key) else {
            self.stats.dropped += 1;
            return Vec::new();
        };
        let session = if node.session.local_index == header.receiver {
            &node.session
        } else {
            match &node.previous {
                Some(p) => p,
                None => return Vec::new(),
            }
        };
        let range = match session.open(datagram) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, error = %e, "DC record rejected");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        node.last_seen = now;
        let msg: ToDc = match signal::decode(&datagram[range]) {
            Ok(m) => m,
            Err(e) => {
                debug!(%from, error = %e, "undecodable signaling message");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        match msg {
            ToDc::Resolve { id, target, direct } => {
                self.resolve(key, id, target, direct, now, unix_now)
            }
            ToDc::Observed { relay, seen_as } => {
                let ours = self
                    .relays
                    .iter()
                    .any(|r| r.spec.addresses.contains(&relay));
                if let (true, Some(node)) = (ours, self.online.get_mut(&key)) {
                    if node.relay_saw != Some(seen_as) {
                        node.relay_saw = Some(seen_as);
                        let nat = node.view().nat;
                        debug!(name = %node.record.name, ?nat, reflexive = %node.reflexive, %seen_as, "NAT observed");
                    }
                }
                Vec::new()
            }
        }
    }

    /// Relay addresses of live relays, for nodes to probe.
    fn relay_addresses(&self) -> Vec<SocketAddr> {
        self.relays
            .iter()
            .filter(|r| r.alive)
            .flat_map(|r| r.spec.addresses.iter().copied())
            .collect()
    }

    /// A plain answer about `node`, without direction (PTR lookups).
    pub(super) fn lookup_info(node: &Online) -> PeerInfo {
        PeerInfo {
            name: node.record.name.clone(),
            virtual_ip: node.record.virtual_ip,
            public_key: node.record.public_key.0,
            endpoints: Vec::new(),
            path: Path::Direct,
            initiate: false,
            relay: None,
            incarnation: node.incarnation,
        }
    }

    /// Decides the route for a pair and returns what each side is told:
    /// (for `a`, about b) and (for `b`, about a).
    fn direct_pair(
        &mut self,
        a: PublicKey,
        b: PublicKey,
        unix_now: u64,
    ) -> Option<(PeerInfo, PeerInfo)> {
        let (na, nb) = (self.online.get(&a)?, self.online.get(&b)?);
        let d = direction::decide(&na.view(), &nb.view());
        let (fam_a, fam_b) = (na.reflexive.is_ipv4(), nb.reflexive.is_ipv4());
        let (mut info_b, mut info_a) = directed(&d, Self::lookup_info(nb), Self::lookup_info(na));
        let (name_a, name_b) = (na.record.name.clone(), nb.record.name.clone());
        if let Some((grant_a, grant_b)) = self.grants(a, b, fam_a, fam_b, unix_now) {
            info_b.relay = Some(grant_a);
            info_a.relay = Some(grant_b);
        } else if d.path == Path::Relay {
            warn!(a = %name_a, b = %name_b, "pair needs a relay but none is configured and alive: trying direct anyway");
        }
        info!(a = %name_a, b = %name_b, path = ?d.path, relay = info_b.relay.as_ref().map(|g| g.address.to_string()), "directing pair");
        self.stats.directions += 1;
        for (x, y) in [(a, b), (b, a)] {
            let met = self.met.entry(x).or_default();
            if met.len() < MAX_MET {
                met.insert(y);
            }
        }
        Some((info_b, info_a))
    }

    /// A node restarted (a new incarnation): its sessions are gone, so
    /// every online peer it was directed to gets a fresh direction about it
    /// (new endpoint, new incarnation: the peer forgets its sessions with
    /// it), and the node one about each of them, so punching pairs start
    /// again from both ends. Their next packets build a new tunnel instead
    /// of going out on sessions nobody can open.
    fn redirect_peers_of(&mut self, key: PublicKey, unix_now: u64) -> Vec<Transmit> {
        let peers: Vec<PublicKey> = self
            .met
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|p| self.online.contains_key(p))
            .copied()
            .collect();
        if let Some(node) = self.online.get(&key) {
            info!(name = %node.record.name, peers = peers.len(), "node restarted: directing its peers to it again");
        }
        let mut out = Vec::new();
        for peer in peers {
            if let Some((for_node, for_peer)) = self.direct_pair(key, peer, unix_now) {
                out.extend(self.send(&peer, &FromDc::Direction(for_peer)));
                out.extend(self.send(&key, &FromDc::Direction(for_node)));
            }
        }
        out
    }

    /// Relay grants for a pair: (a's, b's). Reuses the pair's session while
    /// its relay lives (extending the ticket); otherwise picks a live relay
    /// that has an address in each side's family.
    pub(super) fn grants(
        &mut self,
        a: PublicKey,
        b: PublicKey,
        a_v4: bool,
        b_v4: bool,
        unix_now: u64,
    ) -> Option<(RelayGrant, RelayGrant)> {
        let pair = if a < b { (a, b) } else { (b, a) };
        let fits = |r: &RelayState| {
            r.alive
                && r.spec.addresses.iter().any(|x| x.is_ipv4() == a_v4)
                && r.spec.addresses.iter().any(|x| x.is_ipv4() == b_v4)
        };
        let reuse = self
            .pairs
            .get(&pair)
            .is_some_and(|p| self.relays.get(p.relay).is_some_and(fits));
        if !reuse {
            // Spread pairs over the live relays.
            let candidates: Vec<usize> = (0..self.relays.len())
                .filter(|&i| fits(&self.relays[i]))
                .collect();
            if candidates.is_empty() {
                self.pairs.remove(&pair);
                return None;
            }
            let pick =
                candidates[(pair.0 .0[0] as usize ^ pair.1 .0[0] as usize) % candidates.len()];
            // A sid already used on that relay would make it refuse the
            // second pair's ticket: draw until unique (bounded).
            let mut sid: u32 = rand::random();
            for _ in 0..16 {
                if !self.pairs.values().any(|p| p.relay == pick && p.sid == sid) {
                    break;
                }
                sid = rand::random();
            }
            self.pairs.insert(
                pair,
                PairRelay {
                    relay: pick,
                    sid,
                    secrets: [rand::random(), rand::random()],
                    expires_unix: 0,
                    remote: None,
                },
            );
            self.stats.relayed_pairs += 1;
        }
        let p = self.pairs.get_mut(&pair)?;
        p.expires_unix = unix_now + TICKET_SECS;
        let relay = self.relays.get(p.relay)?;
        let ticket = relay.key.seal(
            &Ticket {
                sid: p.sid,
                expires_unix: p.expires_unix,
                rate_bytes: TICKET_RATE_BYTES,
                secrets: p.secrets,
            },
            rand::random(),
        );
        let grant = |side: usize, v4: bool| -> Option<RelayGrant> {
            Some(RelayGrant {
                address: *relay.spec.addresses.iter().find(|x| x.is_ipv4() == v4)?,
                sid: p.sid,
                side: side as u8,
                secret: p.secrets[side],
                ticket: ticket.to_vec(),
                expires_unix: p.expires_unix,
            })
        };
        let (side_a, side_b) = if a == pair.0 { (0, 1) } else { (1, 0) };
        Some((grant(side_a, a_v4)?, grant(side_b, b_v4)?))
    }

    fn resolve(
        &mut self,
        asker: PublicKey,
        id: u64,
        target: Target,
        direct: bool,
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        self.stats.resolves += 1;
        if let Some(peer) = self.remote_owner(&target) {
            return self.resolve_remote(asker, id, target, direct, peer, now);
        }
        let target = self.local_target(target);
        let found = match &target {
            Target::Name(n) => self.store.by_name(n),
            Target::Address(ip) => self.store.by_ip(*ip),
        };
        let mut out = Vec::new();
        let result = match found {
            Ok(None) => Resolution::NotFound,
            Err(e) => {
                warn!(error = %e, "DC store lookup failed");
                Resolution::Offline
            }
            Ok(Some(rec)) => {
                let peer_key = rec.public_key;
                match self.online.get(&peer_key) {
                    None => Resolution::Offline,
                    Some(peer) if !direct || peer_key == asker => {
                        Resolution::Found(Self::lookup_info(peer))
                    }
                    Some(_) => match self.direct_pair(asker, peer_key, unix_now) {
                        Some((for_asker, for_peer)) => {
                            out.extend(self.send(&peer_key, &FromDc::Direction(for_peer)));
                            Resolution::Found(for_asker)
                        }
                        None => Resolution::Offline,
                    },
                }
            }
        };
        debug!(node = %asker.short(), ?target, "resolve answered");
        out.extend(self.send(&asker, &FromDc::Resolved { id, result }));
        out
    }

    pub(super) fn send(&self, to: &PublicKey, msg: &FromDc) -> Option<Transmit> {
        let node = self.online.get(to)?;
        let payload = signal::encode(msg).ok()?;
        let bytes = node.session.seal_to_vec(Kind::DcData, &payload).ok()?;
        Some(Transmit {
            to: node.reflexive,
            bytes,
        })
    }

    /// Expires nodes that stopped refreshing (their addresses stay
    /// reserved in the store), pings relays, and moves pairs off relays
    /// that stopped answering. Returns datagrams to send.
    pub fn handle_timeout(&mut self, now: Instant, unix_now: u64) -> Vec<Transmit> {
        let expiry = self.settings.expiry;
        let expired: Vec<PublicKey> = self
            .online
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.last_seen) > expiry)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        let mut routes_changed = false;
        for key in expired {
            if let Some(node) = self.online.remove(&key) {
                routes_changed |= !node.routes.is_empty();
                info!(name = %node.record.name, vip = %node.record.virtual_ip, "node expired (no refresh)");
                self.by_index.remove(&node.session.local_index);
                if let Some(p) = node.previous {
                    self.by_index.remove(&p.local_index);
                }
            }
        }
        self.pairs.retain(|_, p| p.expires_unix > unix_now);
        if routes_changed {
            out.extend(self.push_routes(None));
        }

        let (fed_out, fed_events) = self
            .fed
            .handle_timeout(now, unix_now.saturating_mul(1_000_000_000));
        out.extend(fed_out);
        out.extend(self.on_fed_events(fed_events, now, unix_now));
        out.extend(self.expire_fed_lookups(now));
        let mut died = Vec::new();
        for (i, r) in self.relays.iter_mut().enumerate() {
            if r.last_ping
                .is_none_or(|t| now.saturating_duration_since(t) >= RELAY_PING)
            {
                r.last_ping = Some(now);
                for &addr in &r.spec.addresses {
                    out.push(Transmit {
                        to: addr,
                        bytes: relay_frames::ping(Kind::RelayPing, unix_now, &r.key),
                    });
                }
            }
            let heard = r.last_pong.unwrap_or(r.since);
            if r.alive && now.saturating_duration_since(heard) > RELAY_DEAD {
                warn!(relay = ?r.spec.addresses, "relay stopped answering; moving its pairs");
                r.alive = false;
                died.push(i);
            }
        }
        for i in died {
            out.extend(self.move_pairs(|p| p.relay == i, now, unix_now));
        }
        out
    }

    /// Drops the relay sessions of the pairs `off` selects and directs those
    /// pairs again (to another relay, or a direct path). A pair across
    /// domains is directed again through the other DC.
    fn move_pairs(
        &mut self,
        off: impl Fn(&PairRelay) -> bool,
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        let moved: Vec<(PublicKey, PublicKey)> = self
            .pairs
            .iter()
            .filter(|(_, p)| off(p))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for (a, b) in moved {
            let Some(pair) = self.pairs.remove(&(a, b)) else {
                continue;
            };
            if let Some(remote) = pair.remote {
                out.extend(self.redirect_remote(remote, now));
            } else if let Some((for_a, for_b)) = self.direct_pair(a, b, unix_now) {
                out.extend(self.send(&a, &FromDc::Direction(for_a)));
                out.extend(self.send(&b, &FromDc::Direction(for_b)));
            }
        }
        out
    }

    /// A setting reloaded on SIGHUP. Registrations and tunnels stay; only
    /// pairs whose relay left the list are directed again.
    pub fn apply(&mut self, change: DcChange, now: Instant, unix_now: u64) -> Vec<Transmit> {
        match change {
            DcChange::AuthKeys(keys) => {
                info!(count = keys.len(), "auth_keys reloaded");
                self.settings.auth_keys = keys;
                Vec::new()
            }
            DcChange::Relays(specs) => self.replace_relays(specs, now, unix_now),
            DcChange::RouteGrants(grants) => self.replace_route_grants(grants),
            DcChange::Federation(specs) => self.refederate(specs, now),
        }
    }

    /// Installs a new `[[federation]]` list: unchanged domains keep their
    /// sessions, changed ones are dialled again (from `handle_timeout`), and
    /// removed ones leave the nodes as a withdrawal does.
    fn refederate(&mut self, specs: Vec<FederationSpec>, now: Instant) -> Vec<Transmit> {
        let r = self.fed.reconfigure(specs, now);
        let mut out = self.renumber_fed_peers(&r.renumber);
        if r.withdrawn {
            out.extend(self.announce_federation());
        }
        out
    }

    /// Installs new route grants: every online gateway's advertised
    /// prefixes are authorised again. If a granted set changed, every node
    /// hears the domain's routes; a gateway whose refusals changed also
    /// hears its own (`FromDc::RefusedRoutes`), so its status is right at
    /// once rather than at its next refresh.
    fn replace_route_grants(&mut self, grants: Vec<RouteGrant>) -> Vec<Transmit> {
        info!(count = grants.len(), "route_grants reloaded");
        self.route_grants = grants;
        let mut routes_changed = false;
        let mut refusals_changed = Vec::new();
        for (key, n) in self.online.iter_mut() {
            let (granted, refusals) =
                routes::authorise(&self.route_grants, &n.record.name, &n.advertised);
            let refused: Vec<RefusedRoute> = refusals.iter().map(|r| r.route.clone()).collect();
            if refused != n.refused_routes {
                for r in &refusals {
                    warn!(node = %n.record.name, prefix = %r.route.prefix, owner = r.owner.as_deref().unwrap_or("-"), reason = %r.route.reason, "advertised route refused after reload");
                }
                self.stats.routes_refused += refusals.len() as u64;
                n.refused_routes = refused.clone();
                refusals_changed.push((*key, refused));
            }
            if granted != n.routes {
                info!(node = %n.record.name, routes = ?granted, "granted routes after reload");
                n.routes = granted;
                routes_changed = true;
            }
        }
        let mut out = if routes_changed {
            self.push_routes(None)
        } else {
            Vec::new()
        };
        for (key, refused) in refusals_changed {
            out.extend(self.send(&key, &FromDc::RefusedRoutes(refused)));
        }
        out
    }

    /// Installs a new relay list. A relay with the same key and addresses
    /// keeps its state and its pairs; the pairs of any other are moved.
    fn replace_relays(
        &mut self,
        specs: Vec<RelaySpec>,
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        let mut old: Vec<Option<RelayState>> = std::mem::take(&mut self.relays)
            .into_iter()
            .map(Some)
            .collect();
        // Old index -> new index of the relays that stay.
        let mut kept: HashMap<usize, usize> = HashMap::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let same = old.iter().position(|r| {
                r.as_ref().is_some_and(|r| {
                    r.spec.public_key == spec.public_key && r.spec.addresses == spec.addresses
                })
            });
            let state = match same.and_then(|j| old[j].take().map(|r| (j, r))) {
                Some((j, r)) => {
                    kept.insert(j, i);
                    r
                }
                None => RelayState::new(&self.settings.key, spec, now),
            };
            self.relays.push(state);
        }
        let out = self.move_pairs(|p| !kept.contains_key(&p.relay), now, unix_now);
        for p in self.pairs.values_mut() {
            if let Some(&i) = kept.get(&p.relay) {
                p.relay = i;
            }
        }
        info!(
            relays = self.relays.len(),
            kept = kept.len(),
            "relays reloaded"
        );
        out
    }

    fn handle_pong(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        for r in &mut self.relays {
            // The nonce is the ping's send time: an old Kind::RelayPong replayed by
            // someone on the path must not keep a dead relay alive.
            // (Saturating: a relay holding the key could send any nonce.)
            let fresh = |nonce: u64| {
                nonce.saturating_add(RELAY_DEAD.as_secs()) >= unix_now
                    && nonce <= unix_now.saturating_add(2)
            };
            if r.spec.addresses.contains(&from)
                && relay_frames::parse_ping(Kind::RelayPong, datagram, &r.key).is_some_and(fresh)
            {
                if !r.alive {
                    info!(relay = %from, "relay answers again");
                }
                r.alive = true;
                r.last_pong = Some(now);
                return Vec::new();
            }
        }
        self.stats.dropped += 1;
        Vec::new()
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.online
            .values()
            .map(|n| n.last_seen + self.settings.expiry)
            .chain(self.fed.poll_timeout())
            .chain(self.fed_pending.values().map(|p| p.deadline))
            .min()
    }

    fn on_fed_events(
        &mut self,
        events: Vec<FedEvent>,
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        let mut out = Vec::new();
        for ev in events {
            match ev {
                FedEvent::Up(_) | FedEvent::Withdrawn(_) => out.extend(self.announce_federation()),
                FedEvent::Message(peer, msg) => {
                    out.extend(self.on_fed_message(peer, *msg, now, unix_now))
                }
            }
        }
        out
    }

    /// Tells every online node the federated domains now announced (after
    /// one came up, was withdrawn or removed): nodes learn the change now,
    /// not at their next refresh.
    fn announce_federation(&self) -> Vec<Transmit> {
        let msg = FromDc::Federation(self.fed.domains());
        self.online
            .keys()
            .filter_map(|key| self.send(key, &msg))
            .collect()
    }
}

/// What each side of a pair is told about the other, given the DC's
/// decision: (for A about B, for B about A).
pub(super) fn directed(
    d: &Decision,
    mut about_b: PeerInfo,
    mut about_a: PeerInfo,
) -> (PeerInfo, PeerInfo) {
    about_b.endpoints = d.a_to_b.clone();
    about_b.path = d.path;
    about_b.initiate = d.a_initiates;
    about_a.endpoints = d.b_to_a.clone();
    about_a.path = d.path;
    about_a.initiate = d.b_initiates;
    (about_b, about_a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the dc_core fuzz target: a Kind::RelayPong whose nonce is near
    /// u64::MAX overflowed the freshness check.
    #[test]
    fn pong_with_extreme_nonce_is_dropped_not_a_panic() {
        let dc_key = PrivateKey::generate();
        let relay_key = PrivateKey::generate();
        let relay_addr: SocketAddr = "198.51.100.20:7447".parse().unwrap();
        let now = Instant::now();
        let mut dc = DcCore::new(
            DcSettings {
                key: dc_key.clone(),
                domain: "ntm.internal".into(),
                prefix: "198.18.0.0/15".parse().unwrap(),
                auth_keys: vec!["t".into()],
                expiry: Duration::from_secs(90),
                relays: vec![RelaySpec {
                    public_key: relay_key.public_key(),
                    addresses: vec![relay_addr],
                }],
            },
            Store::in_memory().unwrap(),
            1,
            now,
        );
        let k = TicketKey::derive(&relay_key, &dc_key.public_key());
        for nonce in [u64::MAX, 5_000] {
            let mut pong = relay_frames::ping(Kind::RelayPong, nonce, &k);
            assert!(dc.handle(relay_addr, &mut pong, now, 1_000).is_empty());
        }
        assert_eq!(
            dc.stats.dropped, 2,
            "a future or overflowing nonce is not a sign of life"
        );
        let mut pong = relay_frames::ping(Kind::RelayPong, 999, &k);
        dc.handle(relay_addr, &mut pong, now, 1_000);
        assert_eq!(dc.stats.dropped, 2, "a fresh Kind::RelayPong counts");
    }
}
