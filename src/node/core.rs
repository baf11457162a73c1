//! Sans-IO node logic: the DC channel, the peer table, handshakes, rekeys,
//! keepalives, DNS interception decisions and the packets that wait for a
//! tunnel. Bytes and times go in; `Output`s and a new worker table come out.

use super::dc_link::{DcEvent, DcIdentity, DcLink, DcState};
use super::dns::{DnsAction, DnsInterceptor, Resolution as DnsResolution, ResolveTarget};
use super::peer::{DnsWaiter, Initiation, Peer};
use super::table::{PeerStats, PeerTable, RxRoute, TxRoute};
use crate::keys::{PrivateKey, PublicKey};
use crate::net::packet;
use crate::proto::handshake::{Initiator, Responder};
use crate::proto::signal::{
    self, FromDc, PeerHello, PeerInfo, Registered, Resolution, Target, ToDc,
};
use crate::proto::wire;
use crate::status::{DcStatus, PeerStatus, StatusReport};
use ipnet::Ipv4Net;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Resend a handshake initiation after this long without a response.
const HANDSHAKE_RETRY: Duration = Duration::from_secs(1);
/// Give up on a handshake after this many initiations.
const HANDSHAKE_ATTEMPTS: u32 = 10;
/// Resend a question to the DC after this long without an answer.
const RESOLVE_RETRY: Duration = Duration::from_millis(700);
const RESOLVE_ATTEMPTS: u32 = 4;
/// A DNS answer for a peer waits at most this long for the tunnel.
const DNS_WAIT: Duration = Duration::from_millis(2500);
/// Forwarded DNS queries are forgotten after this long.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
const FORWARD_LIMIT: usize = 4096;
const DNS_TTL: u32 = 60;
/// Virtual addresses with packets queued before the DC answered.
const ORPHAN_LIMIT: usize = 64;

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
    /// Wall clock at `start`, for handshake timestamps.
    pub unix_nanos_at_start: u64,
    pub index_seed: u32,
}

/// Something the IO shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send through the data socket.
    Udp { to: SocketAddr, bytes: Vec<u8> },
    /// Write an IP packet into the TUN.
    Tun(Vec<u8>),
    /// Send a DNS query to a real resolver, bypassing the TUN.
    Upstream { to: SocketAddr, bytes: Vec<u8> },
    /// Registration accepted: give the TUN this address and routes.
    Configure(Registered),
}

struct PendingResolve {
    target: Target,
    direct: bool,
    sent: Instant,
    attempts: u32,
    dns: Vec<DnsWaiter>,
}

struct Forward {
    client: SocketAddrV4,
    resolver: SocketAddrV4,
    deadline: Instant,
}

pub struct NodeCore {
    s: NodeSettings,
    start: Instant,
    local_endpoints: Vec<SocketAddr>,
    dc: DcLink,
    dns: Option<DnsInterceptor>,
    prefix: Option<Ipv4Net>,
    peers: HashMap<PublicKey, Peer>,
    by_vip: HashMap<Ipv4Addr, PublicKey>,
    /// Our index of an initiation in flight -> peer.
    initiations: HashMap<u32, PublicKey>,
    resolves: HashMap<u64, PendingResolve>,
    next_resolve: u64,
    forwards: HashMap<(SocketAddr, u16), Forward>,
    orphans: HashMap<Ipv4Addr, VecDeque<Vec<u8>>>,
    out: VecDeque<Output>,
    table_dirty: bool,
    next_index: u32,
    last_hello_sent: u64,
}

impl NodeCore {
    pub fn new(s: NodeSettings, now: Instant) -> Self {
        let dc = DcLink::new(
            DcIdentity {
                key: s.key.clone(),
                dc_key: s.dc_key,
                addrs: s.dc.clone(),
                name: s.name.clone(),
                auth_key: s.auth_key.clone(),
            },
            now,
            s.index_seed.rotate_left(16),
        );
        let next_index = s.index_seed;
        NodeCore {
            s,
            start: now,
            local_endpoints: Vec::new(),
            dc,
            dns: None,
            prefix: None,
            peers: HashMap::new(),
            by_vip: HashMap::new(),
            initiations: HashMap::new(),
            resolves: HashMap::new(),
            next_resolve: 1,
            forwards: HashMap::new(),
            orphans: HashMap::new(),
            out: VecDeque::new(),
            table_dirty: true,
            next_index,
            last_hello_sent: 0,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.s.key.public_key()
    }

    /// The addresses our data socket can be reached on, sent to the DC.
    pub fn set_local_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.local_endpoints = endpoints;
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A new snapshot for the workers, if anything changed since the last.
    pub fn take_table(&mut self) -> Option<PeerTable> {
        if !std::mem::take(&mut self.table_dirty) {
            return None;
        }
        let mut t = PeerTable {
            local_ip: self.dc.registered.as_ref().map(|r| r.virtual_ip),
            prefix: self.prefix,
            resolvers: self
                .s
                .resolvers
                .iter()
                .filter_map(|r| match r {
                    IpAddr::V4(v4) if self.dns.is_some() => Some(*v4),
                    _ => None,
                })
                .collect(),
            ..Default::default()
        };
        for p in self.peers.values() {
            let Some(endpoint) = p.endpoint else { continue };
            if let Some(cur) = &p.current {
                t.by_vip.insert(
                    p.virtual_ip,
                    TxRoute {
                        virtual_ip: p.virtual_ip,
                        session: cur.clone(),
                        endpoint,
                        stats: p.stats.clone(),
                    },
                );
            }
            for s in [&p.current, &p.previous].into_iter().flatten() {
                t.by_index.insert(
                    s.local_index,
                    RxRoute {
                        virtual_ip: p.virtual_ip,
                        session: s.clone(),
                        endpoint,
                        stats: p.stats.clone(),
                    },
                );
            }
        }
        Some(t)
    }

    fn unix_nanos(&self, now: Instant) -> u64 {
        self.s.unix_nanos_at_start + now.saturating_duration_since(self.start).as_nanos() as u64
    }

    fn alloc_index(&mut self) -> u32 {
        loop {
            self.next_index = self.next_index.wrapping_add(0x9e37_79b9);
            let i = self.next_index;
            if i != 0
                && !self.dc.owns_index(i)
                && !self.initiations.contains_key(&i)
                && !self.peers.values().any(|p| p.owns_index(i))
            {
                return i;
            }
        }
    }

    // ----- UDP from the data socket -------------------------------------

    /// A datagram the workers did not handle themselves (everything but
    /// data records of known sessions).
    pub fn handle_udp(&mut self, from: SocketAddr, datagram: &mut [u8], now: Instant) {
        match wire::kind(datagram) {
            Ok(wire::DC_HANDSHAKE_RESP) => {
                if let Some(ev) = self.dc.handle_response(from, datagram, now) {
                    self.on_dc_event(ev, now);
                }
            }
            Ok(wire::DC_DATA) => match self.dc.open(datagram) {
                Some(msg) => self.on_dc_message(msg, now),
                None => debug!(%from, "DC record rejected"),
            },
            Ok(wire::HANDSHAKE_INIT) => self.on_handshake_init(from, datagram, now),
            Ok(wire::HANDSHAKE_RESP) => self.on_handshake_resp(from, datagram, now),
            Ok(wire::DATA) => debug!(%from, "data record for an unknown session dropped"),
            Ok(k) => debug!(%from, kind = k, "unexpected message type dropped"),
            Err(e) => debug!(%from, error = %e, "malformed datagram dropped"),
        }
    }

    /// A worker saw an authenticated record for `index` arrive from `from`,
    /// which is not the endpoint it knew: the peer moved (roaming).
    pub fn handle_endpoint_seen(&mut self, index: u32, from: SocketAddr) {
        if let Some(p) = self.peers.values_mut().find(|p| p.owns_index(index)) {
            if p.endpoint != Some(from) {
                info!(peer = %p.name, old = ?p.endpoint, new = %from, "peer endpoint changed");
                p.endpoint = Some(from);
                self.table_dirty = true;
            }
        }
    }

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
                    self.out.push_back(Output::Configure(reg));
                    self.table_dirty = true;
                }
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
            FromDc::Direction(info) => {
                debug!(peer = %info.name, "DC directed a peer to us");
                self.upsert_peer(&info);
            }
            FromDc::Resolved { id, result } => {
                let Some(pending) = self.resolves.remove(&id) else {
                    return;
                };
                self.on_resolved(pending, result, now);
            }
        }
    }

    fn upsert_peer(&mut self, info: &PeerInfo) -> PublicKey {
        let key = PublicKey(info.public_key);
        // A virtual address now held by another key: forget the old peer.
        if let Some(old) = self.by_vip.get(&info.virtual_ip).copied() {
            if old != key {
                self.peers.remove(&old);
                self.table_dirty = true;
            }
        }
        self.by_vip.insert(info.virtual_ip, key);
        let stats_epoch = self.start;
        let peer = self.peers.entry(key).or_insert_with(|| {
            Peer::new(
                info.name.clone(),
                info.virtual_ip,
                key,
                Vec::new(),
                Arc::new(PeerStats::new(stats_epoch)),
            )
        });
        peer.name = info.name.clone();
        peer.virtual_ip = info.virtual_ip;
        peer.endpoints = info.endpoints.clone();
        key
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
                let key = self.upsert_peer(&info);
                if let Some(queued) = self.orphans.remove(&info.virtual_ip) {
                    if let Some(p) = self.peers.get_mut(&key) {
                        for pkt in queued {
                            p.enqueue(pkt);
                        }
                    }
                }
                if let Some(p) = self.peers.get_mut(&key) {
                    p.dns_waiters.extend(pending.dns);
                }
                self.ensure_tunnel(key, now);
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

    // ----- node <-> node handshakes ---------------------------------------

    /// Starts a handshake unless a session exists or one is in flight; then
    /// delivers whatever waits if the tunnel is already up.
    fn ensure_tunnel(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if p.current.is_some() {
            self.flush_peer(key, now);
        } else if p.initiation.is_none() {
            self.initiate(key, now, 1);
        }
    }

    fn initiate(&mut self, key: PublicKey, now: Instant, attempts: u32) {
        let index = self.alloc_index();
        let ts = self.unix_nanos(now).max(self.last_hello_sent + 1);
        self.last_hello_sent = ts;
        let Ok(payload) = signal::encode(&PeerHello { timestamp: ts }) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(old) = p.initiation.take() {
            self.initiations.remove(&old.initiator.local_index);
        }
        match Initiator::start(wire::HANDSHAKE_INIT, &self.s.key, &key, index, &payload) {
            Ok((initiator, bytes)) => {
                let targets = p.targets();
                debug!(peer = %p.name, ?targets, attempts, "sending handshake initiation");
                for to in targets {
                    self.out.push_back(Output::Udp {
                        to,
                        bytes: bytes.clone(),
                    });
                }
                p.initiation = Some(Initiation {
                    initiator,
                    sent: now,
                    attempts,
                });
                self.initiations.insert(index, key);
            }
            Err(e) => warn!(peer = %p.name, error = %e, "cannot start handshake"),
        }
    }

    fn on_handshake_init(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let resp = match Responder::read(&self.s.key, datagram) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, error = %e, "handshake initiation rejected");
                return;
            }
        };
        let key = resp.remote_key;
        let hello: PeerHello = match signal::decode(&resp.payload) {
            Ok(h) => h,
            Err(_) => return,
        };
        let index = self.alloc_index();
        let Some(p) = self.peers.get_mut(&key) else {
            debug!(%from, peer = %key.short(), "handshake from a key the DC has not directed to us: dropped");
            return;
        };
        if hello.timestamp <= p.last_hello {
            debug!(peer = %p.name, "replayed handshake initiation dropped");
            return;
        }
        match resp.reply(wire::HANDSHAKE_RESP, index, &[]) {
            Ok((session, bytes)) => {
                p.last_hello = hello.timestamp;
                info!(peer = %p.name, endpoint = %from, "tunnel up (responder)");
                p.install(session, from, now, false);
                self.table_dirty = true;
                self.out.push_back(Output::Udp { to: from, bytes });
                self.flush_peer(key, now);
            }
            Err(e) => warn!(error = %e, "cannot answer handshake"),
        }
    }

    fn on_handshake_resp(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let Ok((sender, receiver, noise)) = wire::decode_resp(datagram) else {
            return;
        };
        let Some(key) = self.initiations.get(&receiver).copied() else {
            debug!(%from, "handshake response for no initiation in flight");
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(init) = p.initiation.take() else {
            return;
        };
        let attempts = init.attempts;
        self.initiations.remove(&receiver);
        match init.initiator.finish(sender, noise) {
            Ok((session, _)) => {
                info!(peer = %p.name, endpoint = %from, "tunnel up (initiator)");
                p.install(session, from, now, true);
                self.table_dirty = true;
                self.flush_peer(key, now);
            }
            Err(e) => {
                // The Noise state is spent; start over rather than stall.
                debug!(%from, error = %e, "handshake response rejected; initiating again");
                self.initiate(key, now, attempts + 1);
            }
        }
    }

    /// Sends packets queued for the peer and answers DNS queries waiting on it.
    fn flush_peer(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let (Some(session), Some(endpoint)) = (p.current.clone(), p.endpoint) else {
            return;
        };
        let answer = DnsResolution::Found {
            name: p.name.clone(),
            virtual_ip: p.virtual_ip,
        };
        let waiters = std::mem::take(&mut p.dns_waiters);
        let queued: Vec<Vec<u8>> = p.queue.drain(..).collect();
        let stats = p.stats.clone();
        for w in waiters {
            self.reply_dns(&w, &answer);
        }
        for pkt in queued {
            if let Ok(bytes) = session.seal_to_vec(wire::DATA, &pkt) {
                stats.record_tx(pkt.len(), now);
                self.out.push_back(Output::Udp {
                    to: endpoint,
                    bytes,
                });
            }
        }
    }

    // ----- packets from the TUN -------------------------------------------

    /// A packet from the TUN that the workers handed over: a DNS query to a
    /// captured resolver, or a packet for a virtual IP with no tunnel yet.
    pub fn handle_tun(&mut self, pkt: Vec<u8>, now: Instant) {
        if let Some(udp) = packet::parse_ipv4_udp(&pkt) {
            if udp.dst.port() == 53 && self.dns.is_some() && self.is_resolver(udp.dst.ip()) {
                let (client, resolver, query) = (udp.src, udp.dst, udp.payload.to_vec());
                self.handle_dns(client, resolver, &query, now);
                return;
            }
        }
        let Some(IpAddr::V4(dst)) = packet::destination(&pkt) else {
            return;
        };
        if !self.prefix.is_some_and(|p| p.contains(&dst)) {
            return;
        }
        if let Some(key) = self.by_vip.get(&dst).copied() {
            if let Some(p) = self.peers.get_mut(&key) {
                if let (Some(s), Some(ep)) = (p.current.clone(), p.endpoint) {
                    // The table just had not caught up yet.
                    if let Ok(bytes) = s.seal_to_vec(wire::DATA, &pkt) {
                        p.stats.record_tx(pkt.len(), now);
                        self.out.push_back(Output::Udp { to: ep, bytes });
                    }
                    return;
                }
                p.enqueue(pkt);
            }
            self.ensure_tunnel(key, now);
            return;
        }
        // Unknown address (the app cached DNS): ask the DC, hold the packet.
        if self.orphans.len() >= ORPHAN_LIMIT && !self.orphans.contains_key(&dst) {
            return;
        }
        let q = self.orphans.entry(dst).or_default();
        if q.len() >= super::peer::QUEUE_LIMIT {
            q.pop_front();
        }
        q.push_back(pkt);
        self.resolve(Target::Address(dst), true, None, now);
    }

    fn is_resolver(&self, ip: &Ipv4Addr) -> bool {
        self.s.resolvers.contains(&IpAddr::V4(*ip))
    }

    fn handle_dns(
        &mut self,
        client: SocketAddrV4,
        resolver: SocketAddrV4,
        query: &[u8],
        now: Instant,
    ) {
        let Some(dns) = &self.dns else { return };
        match dns.classify(query) {
            DnsAction::Forward => self.forward_dns(client, resolver, query, now),
            DnsAction::Reply(bytes) => self.write_dns(client, resolver, &bytes),
            DnsAction::Resolve { pending, target } => {
                let waiter = DnsWaiter {
                    pending,
                    client,
                    resolver,
                    deadline: now + DNS_WAIT,
                };
                let (target, direct) = match target {
                    ResolveTarget::Name(n) => (Target::Name(n), true),
                    ResolveTarget::Address(a) => (Target::Address(a), false),
                };
                self.answer_or_resolve(target, direct, waiter, now);
            }
        }
    }

    /// Answers from what we know when we can; otherwise asks the DC.
    fn answer_or_resolve(&mut self, target: Target, direct: bool, waiter: DnsWaiter, now: Instant) {
        if let Some(reg) = &self.dc.registered {
            let own = match &target {
                Target::Name(n) => *n == self.s.name,
                Target::Address(a) => *a == reg.virtual_ip,
            };
            if own {
                let ans = DnsResolution::Found {
                    name: self.s.name.clone(),
                    virtual_ip: reg.virtual_ip,
                };
                self.reply_dns(&waiter, &ans);
                return;
            }
        }
        let known = self.peers.values().find(|p| match &target {
            Target::Name(n) => p.name == *n,
            Target::Address(a) => p.virtual_ip == *a,
        });
        if let Some(p) = known {
            let key = p.key;
            let ans = DnsResolution::Found {
                name: p.name.clone(),
                virtual_ip: p.virtual_ip,
            };
            if !direct || p.current.is_some() {
                self.reply_dns(&waiter, &ans);
                if direct {
                    self.ensure_tunnel(key, now);
                }
            } else if let Some(p) = self.peers.get_mut(&key) {
                p.dns_waiters.push(waiter);
                self.ensure_tunnel(key, now);
            }
            return;
        }
        if !self.dc.is_up() {
            // Fail fast and clearly rather than hang the application.
            debug!(?target, "DC unreachable: SERVFAIL");
            self.reply_dns(&waiter, &DnsResolution::Failed);
            return;
        }
        self.resolve(target, direct, Some(waiter), now);
    }

    /// Asks the DC about `target`, joining a question already in flight.
    fn resolve(&mut self, target: Target, direct: bool, waiter: Option<DnsWaiter>, now: Instant) {
        if let Some(p) = self
            .resolves
            .values_mut()
            .find(|p| p.target == target && p.direct == direct)
        {
            p.dns.extend(waiter);
            return;
        }
        let id = self.next_resolve;
        self.next_resolve += 1;
        self.resolves.insert(
            id,
            PendingResolve {
                target,
                direct,
                sent: now,
                attempts: 0,
                dns: waiter.into_iter().collect(),
            },
        );
        self.send_resolve(id, now);
    }

    fn send_resolve(&mut self, id: u64, now: Instant) {
        let Some(p) = self.resolves.get_mut(&id) else {
            return;
        };
        p.sent = now;
        p.attempts += 1;
        let msg = ToDc::Resolve {
            id,
            target: p.target.clone(),
            direct: p.direct,
        };
        if let Some((to, bytes)) = self.dc.seal(&msg) {
            self.out.push_back(Output::Udp { to, bytes });
        }
    }

    fn reply_dns(&mut self, w: &DnsWaiter, res: &DnsResolution) {
        let Some(dns) = &self.dns else { return };
        let bytes = dns.answer(&w.pending, res);
        self.write_dns(w.client, w.resolver, &bytes);
    }

    /// Writes a DNS reply into the TUN as if the resolver had sent it.
    fn write_dns(&mut self, client: SocketAddrV4, resolver: SocketAddrV4, payload: &[u8]) {
        let mut pkt = Vec::with_capacity(payload.len() + 28);
        packet::build_ipv4_udp(resolver, client, payload, &mut pkt);
        self.out.push_back(Output::Tun(pkt));
    }

    fn forward_dns(
        &mut self,
        client: SocketAddrV4,
        resolver: SocketAddrV4,
        query: &[u8],
        now: Instant,
    ) {
        if query.len() < 2 {
            return;
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        let to = SocketAddr::V4(resolver);
        if self.forwards.len() >= FORWARD_LIMIT && !self.forwards.contains_key(&(to, id)) {
            warn!("too many DNS queries in flight; answering SERVFAIL");
            if let Some(bytes) = super::dns::servfail_for(query) {
                self.write_dns(client, resolver, &bytes);
            }
            return;
        }
        self.forwards.insert(
            (to, id),
            Forward {
                client,
                resolver,
                deadline: now + FORWARD_TIMEOUT,
            },
        );
        self.out.push_back(Output::Upstream {
            to,
            bytes: query.to_vec(),
        });
    }

    /// An answer from a real resolver: back to the application, unchanged.
    pub fn handle_upstream(&mut self, from: SocketAddr, answer: &[u8]) {
        if answer.len() < 2 {
            return;
        }
        let id = u16::from_be_bytes([answer[0], answer[1]]);
        if let Some(f) = self.forwards.remove(&(from, id)) {
            self.write_dns(f.client, f.resolver, answer);
        }
    }

    // ----- timers -----------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant) {
        let unix = self.unix_nanos(now);
        if let Some((to, bytes)) = self.dc.poll(now, unix, &self.local_endpoints) {
            self.out.push_back(Output::Udp { to, bytes });
        }

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
            self.out.push_back(Output::Udp { to, bytes });
        }

        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.peer_timers(key, now);
        }

        self.forwards.retain(|_, f| f.deadline > now);
    }

    fn peer_timers(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        // DNS answers that waited long enough go out with the address: the
        // first packets will find the tunnel or trigger it again.
        if p.dns_waiters.iter().any(|w| w.deadline <= now) {
            let answer = DnsResolution::Found {
                name: p.name.clone(),
                virtual_ip: p.virtual_ip,
            };
            let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut p.dns_waiters)
                .into_iter()
                .partition(|w| w.deadline <= now);
            p.dns_waiters = keep;
            for w in late {
                self.reply_dns(&w, &answer);
            }
        }
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(init) = &p.initiation {
            if now.saturating_duration_since(init.sent) >= HANDSHAKE_RETRY {
                let attempts = init.attempts;
                if attempts >= HANDSHAKE_ATTEMPTS {
                    warn!(peer = %p.name, attempts, "handshake failed: no response");
                    if let Some(i) = p.initiation.take() {
                        self.initiations.remove(&i.initiator.local_index);
                    }
                    p.queue.clear();
                } else {
                    self.initiate(key, now, attempts + 1);
                }
            }
            return;
        }
        // Rekey: the initiator of the current session renews it on time; the
        // responder steps in later in case the initiator went quiet.
        if let Some(est) = p.established {
            let due = if p.we_initiated {
                self.s.rekey
            } else {
                self.s.rekey + Duration::from_secs(30)
            };
            if now.saturating_duration_since(est) >= due {
                debug!(peer = %p.name, "rekeying");
                self.initiate(key, now, 1);
                return;
            }
        }
        if let (Some(interval), Some(s), Some(ep)) =
            (self.s.keepalive, p.current.clone(), p.endpoint)
        {
            let idle = p
                .stats
                .last_tx()
                .is_none_or(|t| now.saturating_duration_since(t) >= interval);
            if idle {
                if let Ok(bytes) = s.seal_to_vec(wire::DATA, &[]) {
                    p.stats.record_tx(0, now);
                    self.out.push_back(Output::Udp { to: ep, bytes });
                }
            }
        }
    }

    /// When `handle_timeout` next has work; the shell never sleeps past it.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let mut t = self.dc.next_deadline();
        for p in self.resolves.values() {
            t = t.min(p.sent + RESOLVE_RETRY);
        }
        for p in self.peers.values() {
            for w in &p.dns_waiters {
                t = t.min(w.deadline);
            }
            if let Some(i) = &p.initiation {
                t = t.min(i.sent + HANDSHAKE_RETRY);
            } else if let Some(est) = p.established {
                t = t.min(est + self.s.rekey);
            }
            if let (Some(k), Some(_)) = (self.s.keepalive, &p.current) {
                t = t.min(p.stats.last_tx().map_or(now, |l| l + k));
            }
        }
        // Forward-table expiry is lazy; a coarse bound keeps it tidy.
        t.min(now + Duration::from_secs(1)).max(now)
    }

    // ----- status -----------------------------------------------------------

    pub fn status(&self, now: Instant) -> StatusReport {
        let reg = self.dc.registered.as_ref();
        let fqdn = |name: &str| {
            reg.map(|r| format!("{name}.{}", r.domain))
                .unwrap_or_else(|| name.to_string())
        };
        let mut peers: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|p| PeerStatus {
                name: p.name.clone(),
                fqdn: fqdn(&p.name),
                virtual_ip: p.virtual_ip,
                public_key: p.key.to_base64(),
                path: "direct".into(),
                endpoint: p.endpoint,
                last_handshake_secs: p
                    .established
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                last_rx_secs: p
                    .stats
                    .last_rx()
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                rx_bytes: p.stats.rx_bytes.load(std::sync::atomic::Ordering::Relaxed),
                tx_bytes: p.stats.tx_bytes.load(std::sync::atomic::Ordering::Relaxed),
                rx_packets: p
                    .stats
                    .rx_packets
                    .load(std::sync::atomic::Ordering::Relaxed),
                tx_packets: p
                    .stats
                    .tx_packets
                    .load(std::sync::atomic::Ordering::Relaxed),
            })
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
        }
    }
}
