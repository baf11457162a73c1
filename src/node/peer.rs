//! What the node knows about one peer the DC directed it to: its identity,
//! the DC's route decision, candidate endpoints, an optional relay session,
//! sessions, a handshake in flight, path health, and what waits for the
//! tunnel (queued packets, DNS answers, pings).

use super::path_choice;
use super::pmtu::PathMtu;
use super::tun::TUN_MTU;
use crate::dataplane::table::{Endpoint, PeerStats};
use crate::keys::PublicKey;
use crate::node::dns::PendingQuery;
use crate::proto::link::{Backoff, Dialer, SessionPair};
use crate::proto::session::Session;
use crate::proto::signal::{Path, RelayGrant};
use crate::proto::wire::Kind;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets held per peer while its tunnel comes up.
pub const QUEUE_LIMIT: usize = 64;
/// Most direct endpoints we send a handshake initiation or probe to.
pub const MAX_ENDPOINTS: usize = 4;

/// A DNS query answered once the tunnel is up (or its deadline passes).
pub struct DnsWaiter {
    pub pending: PendingQuery,
    pub client: SocketAddr,
    pub resolver: SocketAddr,
    pub deadline: Instant,
}

/// Our side of a relay session for this peer.
pub struct RelayLink {
    pub grant: RelayGrant,
    /// The relay acknowledged our bind (with a MAC only it and we can make).
    pub bound: bool,
    pub last_bind: Option<Instant>,
    pub bind_timestamp: u64,
}

impl RelayLink {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Relay {
            relay: self.grant.address,
            sid: self.grant.sid,
        }
    }
}

pub struct Peer {
    pub name: String,
    pub virtual_ip: Ipv4Addr,
    pub key: PublicKey,
    /// The DC's decision and direct candidates (best first).
    pub path: Path,
    /// The candidates as the DC offered them; `candidates` leaves out those
    /// we route into our own TUN (`NodeCore::tunnelled`).
    pub offered: Vec<SocketAddr>,
    pub candidates: Vec<SocketAddr>,
    pub initiate: bool,
    pub relay: Option<RelayLink>,
    /// Where the last authenticated packet came from; where we send.
    pub endpoint: Option<Endpoint>,
    /// When an authenticated packet last moved us to (or found us on)
    /// `endpoint`, as the control thread saw it; the workers' count is
    /// `stats.last_route_rx`.
    pub endpoint_heard: Option<Instant>,
    /// Upgrade probes to better-ranked direct candidates sent without
    /// success while on this direct endpoint (`path_choice`).
    pub upgrade: Option<(Endpoint, u32)>,
    /// Current and previous session, key confirmation, reject-after.
    pub sessions: SessionPair,
    /// Our side of handshakes with this peer: the attempt in flight, its
    /// cookie and retries (`proto::link`).
    pub dialer: Dialer,
    /// Highest handshake timestamp accepted from this peer (replay guard).
    pub last_hello: u64,
    /// Our response to that initiation: the same initiation arriving over
    /// another path (the relay copy of a punch attempt) gets the same answer
    /// there, so the initiator completes on whichever path works.
    pub last_response: Option<Vec<u8>>,
    pub queue: VecDeque<Vec<u8>>,
    pub dns_waiters: Vec<DnsWaiter>,
    pub stats: Arc<PeerStats>,
    /// Path health: since when we have sent data without hearing back.
    pub awaiting_since: Option<Instant>,
    /// When path health last found the path not answering.
    pub suspected: Option<Instant>,
    /// After the direct path failed, direct endpoints are not trusted again
    /// until this time (no flapping between a half-open path and the relay).
    pub direct_banned_until: Option<Instant>,
    pub last_switch: Option<Instant>,
    /// When path health last re-probed the direct endpoint (once per quiet
    /// spell), and whether data was waiting for an answer then.
    pub reprobed: Option<(Instant, bool)>,
    /// When a pong to one of our pings last came: proof that the peer hears
    /// us, which hearing the peer is not.
    pub pong_at: Option<Instant>,
    /// Times the direct path failed and the pair moved to the relay (our
    /// path health, or the peer's fallback message).
    pub relay_fallbacks: u64,
    pub last_probe: Option<Instant>,
    pub last_redirect: Option<Instant>,
    /// Round-trip time of the last answered ping.
    pub rtt: Option<Duration>,
    /// Pings in flight: (id, sent).
    pub pings: Vec<(u64, Instant)>,
    /// Pings asked for before the tunnel was up.
    pub pending_pings: Vec<u64>,
    /// What fits the path to the peer (probed in the tunnel).
    pub pmtu: PathMtu,
}

impl Peer {
    pub fn new(name: String, virtual_ip: Ipv4Addr, key: PublicKey, stats: Arc<PeerStats>) -> Self {
        Peer {
            name,
            virtual_ip,
            key,
            path: Path::Direct,
            offered: Vec::new(),
            candidates: Vec::new(),
            initiate: false,
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

    /// Holds a packet until the tunnel is up; the oldest goes when full
    /// (true then, for the drop counter).
    pub fn enqueue(&mut self, packet: Vec<u8>) -> bool {
        let full = self.queue.len() >= QUEUE_LIMIT;
        if full {
            self.queue.pop_front();
        }
        self.queue.push_back(packet);
        full
    }

    /// Installs the session of a handshake we initiated, completed by an
    /// authenticated response over `offered`: that proves the path, so the
    /// pair moves there unless its current endpoint ranks better and still
    /// answers (`path_choice`). The old session stays for records in
    /// flight.
    pub fn install_initiated(&mut self, session: Session, offered: Endpoint, now: Instant) {
        if !self.keeps_endpoint(offered, now) {
            self.move_to(offered, now);
        }
        self.sessions.install(session, now, true);
        self.awaiting_since = None;
    }

    /// Installs the session of a handshake the peer initiated. Neither the
    /// endpoint nor the session we send on changes until the first
    /// authentic record on it (`SessionPair`: key confirmation), so a
    /// replayed initiation moves nothing.
    pub fn install_answered(&mut self, session: Session, now: Instant) {
        self.sessions.install(session, now, false);
    }

    /// The session to send on (confirmed), if the tunnel is up.
    pub fn sending(&self) -> Option<Arc<Session>> {
        self.sessions.sending().cloned()
    }

    /// Whether an authenticated packet over `offered` leaves the pair on
    /// its current endpoint: a better-ranked direct one that is not dead.
    pub fn keeps_endpoint(&self, offered: Endpoint, now: Instant) -> bool {
        let Some(current) = self.endpoint else {
            return false;
        };
        let heard = self.stats.last_route_rx().max(self.endpoint_heard);
        let liveness = path_choice::Liveness {
            heard,
            last_rx: self.stats.last_rx(),
            suspected: self.suspected,
        };
        let dead = liveness.dead(now, super::health::PATH_TIMEOUT);
        path_choice::keeps(&self.candidates, current, offered, dead)
    }

    /// Sends to `ep` from now on: an authenticated packet just came from
    /// it (or a handshake completed over it).
    pub fn move_to(&mut self, ep: Endpoint, now: Instant) {
        self.endpoint = Some(ep);
        self.endpoint_heard = Some(now);
    }

    /// Moves a pair whose direct path failed to the relay `relay`:
    /// counted, and direct endpoints are distrusted until `banned_until`
    /// (no flapping between a half-open path and the relay).
    pub fn fall_back(&mut self, relay: Endpoint, now: Instant, banned_until: Instant) {
        self.endpoint = Some(relay);
        self.direct_banned_until = Some(banned_until);
        self.last_switch = Some(now);
        self.relay_fallbacks += 1;
    }

    /// The last re-probe, while no pong has answered it.
    pub fn reprobe_unanswered(&self) -> Option<(Instant, bool)> {
        self.reprobed
            .filter(|&(at, _)| self.pong_at.is_none_or(|t| t < at))
    }

    /// Where upgrade probes go: every direct candidate while relayed; the
    /// candidates of better-ranked families while on a direct endpoint.
    pub fn probe_targets(&self) -> Vec<Endpoint> {
        match self.endpoint {
            Some(Endpoint::Direct(current)) => path_choice::better(&self.candidates, current)
                .iter()
                .take(MAX_ENDPOINTS)
                .map(|&c| Endpoint::Direct(c))
                .collect(),
            _ => self.direct_targets(),
        }
    }

    /// Upgrade probes sent in vain from the current endpoint.
    pub fn upgrade_misses(&self) -> u32 {
        match self.upgrade {
            Some((ep, misses)) if Some(ep) == self.endpoint => misses,
            _ => 0,
        }
    }

    /// The bound relay endpoint, if any.
    pub fn relay_endpoint(&self) -> Option<Endpoint> {
        self.relay
            .as_ref()
            .filter(|r| r.bound)
            .map(RelayLink::endpoint)
    }

    /// Direct endpoints worth trying: the known-good one first.
    pub fn direct_targets(&self) -> Vec<Endpoint> {
        let mut t: Vec<Endpoint> = self
            .endpoint
            .into_iter()
            .filter(|e| !e.is_relay())
            .collect();
        for c in &self.candidates {
            let e = Endpoint::Direct(*c);
            if !t.contains(&e) {
                t.push(e);
            }
        }
        t.truncate(MAX_ENDPOINTS);
        t
    }

    /// Where a handshake initiation goes on attempt `attempts`: the direct
    /// candidates (unless the DC said only a relay can work), and the relay
    /// once bound if the DC chose it or direct attempts are not answering.
    pub fn initiation_targets(&self, attempts: u32) -> Vec<Endpoint> {
        // Only a relay can work for a `Relay` pair, but without one (none
        // configured or alive) direct is still worth a try.
        let relay_only = self.path == Path::Relay && self.relay.is_some();
        let mut t = if relay_only {
            Vec::new()
        } else {
            self.direct_targets()
        };
        if let Some(r) = self.relay_endpoint() {
            if self.path == Path::Relay || attempts >= 3 || t.is_empty() {
                t.push(r);
            }
        }
        t
    }

    pub fn owns_index(&self, index: u32) -> bool {
        self.sessions.owns(index)
    }

    /// The path label `ntmtun status` shows.
    pub fn path_label(&self) -> &'static str {
        match (self.endpoint, self.path) {
            (Some(Endpoint::Relay { .. }), _) => "relay",
            (_, Path::Punch) | (_, Path::Relay) => "punched",
            _ => "direct",
        }
    }
}
