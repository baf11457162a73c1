//! One peer the DC directed this node to, as a state machine: its
//! identity, the DC's route decision, candidate endpoints, an optional
//! relay session, sessions, a handshake in flight, path health, and what
//! waits for the tunnel (queued packets, DNS answers, pings).
//!
//! The state is private to this module. `NodeCore` routes events to a peer
//! (a handshake message, an authenticated record, the DC's direction, a
//! timer) and the peer's handlers answer through an [`Env`]: datagrams and
//! TUN writes, the workers' table marked for republishing, and what only
//! the node can do (answer DNS, ask the DC). The handlers live beside this
//! file: `direction` (the DC's word and relay binding), `handshake`,
//! `path` (endpoints, probes, fallback, path MTU), `control` (peer control
//! messages) and `timers` (retries, rekeys, keepalives, path health).

mod control;
mod direction;
mod env;
mod handshake;
mod path;
mod timers;

pub use env::{Ask, Env, Ids, Sink};
pub use timers::{ACTIVE_TICK, PATH_TIMEOUT};

use super::dns::PendingQuery;
use super::pmtu::PathMtu;
use super::tun::TUN_MTU;
use crate::dataplane::table::{Endpoint, PeerStats, RxRoute, TxRoute};
use crate::keys::PublicKey;
use crate::proto::link::{Backoff, Dialer, SessionPair};
use crate::proto::signal::{Path, RelayGrant};
use crate::proto::wire::Kind;
use crate::status::PeerStatus;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets held per peer while its tunnel comes up.
pub const QUEUE_LIMIT: usize = 64;
/// Most direct endpoints we send a handshake initiation or probe to.
const MAX_ENDPOINTS: usize = 4;

/// A DNS query answered once the tunnel is up (or its deadline passes).
pub struct DnsWaiter {
    pub pending: PendingQuery,
    pub client: SocketAddr,
    pub resolver: SocketAddr,
    pub deadline: Instant,
}

/// Our side of a relay session for this peer.
struct RelayLink {
    grant: RelayGrant,
    /// The relay acknowledged our bind (with a MAC only it and we can make).
    bound: bool,
    last_bind: Option<Instant>,
    bind_timestamp: u64,
}

impl RelayLink {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Relay {
            relay: self.grant.address,
            sid: self.grant.sid,
        }
    }
}

pub struct Peer {
    name: String,
    virtual_ip: Ipv4Addr,
    key: PublicKey,
    /// The peer's process our sessions are with, as its handshakes said
    /// (`Register::incarnation`, its start time; 0: none yet).
    incarnation: u64,
    /// The DC's decision and direct candidates (best first).
    path: Path,
    /// The candidates as the DC offered them; `candidates` leaves out those
    /// we route into our own TUN (`loop_guard`).
    offered: Vec<SocketAddr>,
    candidates: Vec<SocketAddr>,
    relay: Option<RelayLink>,
    /// Where the last authenticated packet came from; where we send.
    endpoint: Option<Endpoint>,
    /// When an authenticated packet last moved us to (or found us on)
    /// `endpoint`, as the control thread saw it; the workers' count is
    /// `stats.last_route_rx`.
    endpoint_heard: Option<Instant>,
    /// Upgrade probes to better-ranked direct candidates sent without
    /// success while on this direct endpoint (`path_choice`).
    upgrade: Option<(Endpoint, u32)>,
    /// Current and previous session, key confirmation, reject-after.
    sessions: SessionPair,
    /// Our side of handshakes with this peer: the attempt in flight, its
    /// cookie and retries (`proto::link`).
    dialer: Dialer,
    /// Highest handshake timestamp accepted from this peer (replay guard).
    last_hello: u64,
    /// Our response to that initiation: the same initiation arriving over
    /// another path (the relay copy of a punch attempt) gets the same answer
    /// there, so the initiator completes on whichever path works.
    last_response: Option<Vec<u8>>,
    queue: VecDeque<Vec<u8>>,
    dns_waiters: Vec<DnsWaiter>,
    stats: Arc<PeerStats>,
    /// Path health: since when we have sent data without hearing back.
    awaiting_since: Option<Instant>,
    /// When path health last found the path not answering.
    suspected: Option<Instant>,
    /// After the direct path failed, direct endpoints are not trusted again
    /// until this time (no flapping between a half-open path and the relay).
    direct_banned_until: Option<Instant>,
    last_switch: Option<Instant>,
    /// When path health last re-probed the direct endpoint (once per quiet
    /// spell), and whether data was waiting for an answer then.
    reprobed: Option<(Instant, bool)>,
    /// When a pong to one of our pings last came: proof that the peer hears
    /// us, which hearing the peer is not.
    pong_at: Option<Instant>,
    /// Times the direct path failed and the pair moved to the relay (our
    /// path health, or the peer's fallback message).
    relay_fallbacks: u64,
    last_probe: Option<Instant>,
    last_redirect: Option<Instant>,
    /// Round-trip time of the last answered ping.
    rtt: Option<Duration>,
    /// Pings in flight: (id, sent).
    pings: Vec<(u64, Instant)>,
    /// Pings asked for before the tunnel was up.
    pending_pings: Vec<u64>,
    /// What fits the path to the peer (probed in the tunnel).
    pmtu: PathMtu,
}

impl Peer {
    pub fn new(name: String, virtual_ip: Ipv4Addr, key: PublicKey, stats: Arc<PeerStats>) -> Self {
        Peer {
            name,
            virtual_ip,
            key,
            incarnation: 0,
            path: Path::Direct,
            offered: Vec::new(),
            candidates: Vec::new(),
            relay: None,
            endpoint: None,
            endpoint_heard: None,
            upgrade: None,
            sessions: SessionPair::default(),
            dialer: Dialer::new(Kind::HandshakeInit, Kind::CookieReply, key, Backoff::TUNNEL),
            last_hello: 0,
            last_response: None,
            queue: VecDeque::new(),
            dns_waiters: Vec::new(),
            stats,
            awaiting_since: None,
            suspected: None,
            direct_banned_until: None,
            last_switch: None,
            reprobed: None,
            pong_at: None,
            relay_fallbacks: 0,
            last_probe: None,
            last_redirect: None,
            rtt: None,
            pings: Vec::new(),
            pending_pings: Vec::new(),
            pmtu: PathMtu::new(TUN_MTU),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn virtual_ip(&self) -> Ipv4Addr {
        self.virtual_ip
    }

    pub fn key(&self) -> PublicKey {
        self.key
    }

    pub fn stats(&self) -> &Arc<PeerStats> {
        &self.stats
    }

    /// Where we send to this peer, if anywhere yet.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.endpoint
    }

    /// Whether the tunnel is up: a confirmed session to send on.
    pub fn is_up(&self) -> bool {
        self.sessions.sending().is_some()
    }

    /// Our indexes that route to this peer: the initiation in flight and
    /// the sessions records may arrive on. `NodeCore` keeps its index map
    /// in step after each handler.
    pub fn indexes(&self) -> [Option<u32>; 4] {
        let mut sessions = self.sessions.receiving().map(|s| s.local_index);
        [
            self.dialer.index(),
            sessions.next(),
            sessions.next(),
            sessions.next(),
        ]
    }

    /// Our session `index` with this peer, if it is one.
    pub fn session(&self, index: u32) -> Option<&Arc<crate::proto::session::Session>> {
        self.sessions.find(index)
    }

    /// Whether `index` is a session the peer initiated and has not yet
    /// confirmed with a record (`SessionPair`).
    pub fn awaits_confirmation(&self, index: u32) -> bool {
        self.sessions.awaits_confirmation(index)
    }

    /// The workers' routes to and from this peer: where to send (once up)
    /// and every session a record may arrive on.
    pub fn routes(&self) -> (Option<TxRoute>, Vec<RxRoute>) {
        let Some(endpoint) = self.endpoint else {
            return (None, Vec::new());
        };
        let tx = self.sessions.sending().map(|session| TxRoute {
            name: self.name.clone(),
            virtual_ip: self.virtual_ip,
            session: session.clone(),
            endpoint,
            stats: self.stats.clone(),
            mtu: self.pmtu.mtu_for(endpoint),
            path: self.path_label(),
        });
        let rx = self
            .sessions
            .receiving()
            .map(|s| RxRoute {
                virtual_ip: self.virtual_ip,
                session: s.clone(),
                endpoint,
                stats: self.stats.clone(),
                unconfirmed: self.sessions.awaits_confirmation(s.local_index),
            })
            .collect();
        (tx, rx)
    }

    /// The peer's line in `ntmtun status`; `fqdn` is its full name.
    pub fn status(&self, now: Instant, fqdn: String) -> PeerStatus {
        let secs = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs());
        let p = self;
        PeerStatus {
            name: p.name.clone(),
            fqdn,
            virtual_ip: p.virtual_ip,
            public_key: p.key.to_base64(),
            path: p.path_label().into(),
            endpoint: p.endpoint.map(|e| e.addr()),
            relay: p.endpoint.filter(Endpoint::is_relay).map(|e| e.addr()),
            rtt_ms: p.rtt.map(|r| r.as_secs_f64() * 1000.0),
            path_mtu: p.endpoint.map_or(p.pmtu.mtu(), |e| p.pmtu.mtu_for(e)),
            last_handshake_secs: secs(p.sessions.last_handshake()),
            last_rx_secs: secs(p.stats.last_rx()),
            rx_bytes: p.stats.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: p.stats.tx_bytes.load(Ordering::Relaxed),
            rx_packets: p.stats.rx_packets.load(Ordering::Relaxed),
            tx_packets: p.stats.tx_packets.load(Ordering::Relaxed),
            relay_fallbacks: p.relay_fallbacks,
        }
    }

    /// The path label `ntmtun status` shows.
    fn path_label(&self) -> &'static str {
        match (self.endpoint, self.path) {
            (Some(Endpoint::Relay { .. }), _) => "relay",
            (_, Path::Punch) | (_, Path::Relay) => "punched",
            _ => "direct",
        }
    }

    /// The relay session this peer uses, matched by the relay's address
    /// and session id.
    pub fn relay_session(&self, relay: SocketAddr, sid: u32) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|r| r.grant.sid == sid && r.grant.address == relay)
    }

    /// The secret of our relay session `sid` as side `side` with `relay`,
    /// to check the relay's bind acknowledgement.
    pub fn relay_secret(&self, relay: SocketAddr, sid: u32, side: u8) -> Option<[u8; 32]> {
        let r = self.relay.as_ref()?;
        (r.grant.sid == sid && r.grant.side == side && r.grant.address == relay)
            .then_some(r.grant.secret)
    }

    /// Holds a packet until the tunnel is up; the oldest goes when full
    /// (counted).
    fn enqueue(&mut self, packet: Vec<u8>, env: &mut Env) {
        if self.queue.len() >= QUEUE_LIMIT {
            self.queue.pop_front();
            env.count(|c| &c.peer_queue_full);
        }
        self.queue.push_back(packet);
    }

    /// A packet from the TUN for this peer that the workers could not
    /// send (their table had not caught up, or the tunnel is not up):
    /// sent now, or queued while the tunnel comes up.
    pub fn send_or_queue(&mut self, packet: Vec<u8>, env: &mut Env) {
        if let (Some(s), Some(ep)) = (self.sessions.sending(), self.endpoint) {
            if let Ok(bytes) = s.seal_to_vec(Kind::Data, &packet) {
                self.stats.record_tx(packet.len(), env.now);
                env.send(ep, &bytes);
            }
            return;
        }
        self.enqueue(packet, env);
        self.ensure_tunnel(env);
    }

    /// The DC answered a question about this peer: packets held for its
    /// address and DNS queries for its name wait on the tunnel now.
    pub fn on_resolved(&mut self, queued: VecDeque<Vec<u8>>, dns: Vec<DnsWaiter>, env: &mut Env) {
        for packet in queued {
            self.enqueue(packet, env);
        }
        self.dns_waiters.extend(dns);
        self.ensure_tunnel(env);
    }

    /// A DNS query for this peer's name or address: answered at once when
    /// the tunnel is up (or none is wanted: `direct` false), else once it
    /// is.
    pub fn answer_dns(&mut self, waiter: DnsWaiter, direct: bool, env: &mut Env) {
        if !direct || self.is_up() {
            env.ask(Ask::Dns(Box::new(waiter), self.dns_answer()));
        } else {
            self.dns_waiters.push(waiter);
        }
        if direct {
            self.ensure_tunnel(env);
        }
    }

    fn dns_answer(&self) -> super::dns::Resolution {
        super::dns::Resolution::Found {
            name: self.name.clone(),
            virtual_ip: self.virtual_ip,
        }
    }

    /// When this peer's timers next have work.
    pub fn next_deadline(
        &self,
        now: Instant,
        rekey: Duration,
        keepalive: Option<Duration>,
    ) -> Option<Instant> {
        let waiters = self.dns_waiters.iter().map(|w| w.deadline);
        let expiry = self.sessions.next_expiry(rekey);
        let rekey = self.sessions.established().map(|(est, _)| est + rekey);
        let keepalive = keepalive
            .filter(|_| self.is_up())
            .map(|k| self.stats.last_tx().map_or(now, |l| l + k));
        waiters.chain(rekey).chain(expiry).chain(keepalive).min()
    }

    #[cfg(test)]
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    #[cfg(test)]
    pub fn sessions(&self) -> &SessionPair {
        &self.sessions
    }

    #[cfg(test)]
    pub fn offered(&self) -> &[SocketAddr] {
        &self.offered
    }

    #[cfg(test)]
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// The relay the DC granted for this pair.
    #[cfg(test)]
    pub fn relay_address(&self) -> Option<SocketAddr> {
        self.relay_grant().map(|g| g.address)
    }

    #[cfg(test)]
    pub fn relay_grant(&self) -> Option<&RelayGrant> {
        self.relay.as_ref().map(|r| &r.grant)
    }

    /// Forgets the replay guard's timestamp, as a restarted node would.
    #[cfg(test)]
    pub fn forget_last_hello(&mut self) {
        self.last_hello = 0;
    }
}
