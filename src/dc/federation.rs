//! Sans-IO DC-to-DC channel for federation (docs/protocol.md, "DC
//! federation"): one Noise IK session per federated DC, identified by the
//! public key configured for its domain, kept alive, rekeyed and
//! re-established on failure. What travels over it (lookups across
//! domains) is `cross_domain.rs`; this file only moves `DcToDc` messages.

use super::core::Transmit;
use super::settings::FederationSpec;
use crate::keys::PrivateKey;
use crate::metrics::sample::Sample;
use crate::proto::cookie;
use crate::proto::handshake::{Mac1Key, Responder};
use crate::proto::link::{Backoff, CookieOutcome, Dialer, IndexAlloc, Response, SessionPair};
use crate::proto::session::Session;
use crate::proto::signal::{self, DcToDc, FedHello, FedReply, FederatedDomain};
use crate::proto::wire::Kind;
use crate::proto::wire::{self, TransportHeader};
use ipnet::Ipv4Net;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Send a keepalive when nothing was sent for this long.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// A session that carried nothing for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(30);
/// The DC with the smaller key re-handshakes this often (rekey).
pub const REKEY: Duration = Duration::from_secs(120);
/// After a refusal (or a reply we refuse), dial again this much later.
const REFUSED_RETRY: Duration = Duration::from_secs(30);
/// A domain whose DC session stays down this long is withdrawn from the
/// nodes (their routes to its prefix go away). Shorter outages (a DC
/// restart, a partition between the DCs only) leave the nodes' tunnels to
/// that domain alone: they do not need the DCs once set up.
pub const WITHDRAW_AFTER: Duration = Duration::from_secs(300);
/// DNS answers are kept at least this long (a TTL of 0 would mean a lookup
/// per handshake attempt).
pub const MIN_ADDRESS_TTL: Duration = Duration::from_secs(30);

/// Something the DC core has to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FedEvent {
    /// A message from federated DC number `peer`.
    Message(usize, Box<DcToDc>),
    /// A session with `peer` came up and its domain (or its prefix) is new
    /// to the nodes: announce it.
    Up(usize),
    /// `peer`'s session stayed down for [`WITHDRAW_AFTER`]: its domain is
    /// withdrawn from the nodes.
    Withdrawn(usize),
}

struct Peer {
    spec: FederationSpec,
    /// Where to dial: the static address, or the last DNS answer.
    addrs: Vec<SocketAddr>,
    addrs_expire: Option<Instant>,
    /// A DNS lookup was handed to the shell and has not come back.
    lookup_pending: bool,
    /// Our handshakes with this DC (`proto::link`): attempt, cookie,
    /// backoff; and where the attempt in flight went.
    dialer: Dialer,
    dialled: Option<SocketAddr>,
    /// Current and previous session (records sealed before the other side
    /// switched still open), key confirmation.
    sessions: SessionPair,
    /// Where the other DC's records came from (replies go there).
    to: Option<SocketAddr>,
    /// The other DC's virtual prefix, learned (and checked) at handshake.
    prefix: Option<Ipv4Net>,
    last_heard: Instant,
    last_sent: Instant,
    /// When to dial while no attempt is in flight (rekey, or after a
    /// refusal).
    next_attempt: Instant,
    /// Highest handshake timestamp seen from this DC (replay guard).
    remote_timestamp: u64,
    /// The prefix the nodes were told for this domain, while announced.
    announced: Option<Ipv4Net>,
    /// When the session last went down (cleared when it comes back).
    down_since: Option<Instant>,
}

impl Peer {
    fn new(spec: FederationSpec, now: Instant) -> Peer {
        Peer {
            addrs: spec.address.into_iter().collect(),
            addrs_expire: None,
            lookup_pending: false,
            dialer: Dialer::new(
                Kind::FedHandshakeInit,
                Kind::FedCookieReply,
                spec.public_key,
                Backoff::COORDINATOR,
            ),
            spec,
            dialled: None,
            sessions: SessionPair::default(),
            to: None,
            prefix: None,
            last_heard: now,
            last_sent: now,
            next_attempt: now,
            remote_timestamp: 0,
            announced: None,
            down_since: None,
        }
    }

    /// A peer whose `[[federation]]` entry changed (address or key): its
    /// link is dropped and dialled again at once with the new values. Its
    /// domain stays announced as through an outage: withdrawn after
    /// [`WITHDRAW_AFTER`] unless the new link comes up first.
    fn replaced(old: Peer, spec: FederationSpec, now: Instant) -> Peer {
        let same_key = old.spec.public_key == spec.public_key;
        let mut p = Peer::new(spec, now);
        if same_key {
            // The same DC: its old handshakes stay replays.
            p.remote_timestamp = old.remote_timestamp;
        }
        if old.announced.is_some() {
            p.announced = old.announced;
            p.prefix = old.prefix;
            p.down_since = Some(old.down_since.unwrap_or(now));
        }
        p
    }

    /// A session exists (it may still await the other DC's first record).
    fn up(&self) -> bool {
        self.sessions.newest().is_some()
    }
}

/// What a reload of `[[federation]]` did, for the DC core to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    /// Old peer number -> new number of the same domain; `None`: removed.
    pub renumber: Vec<Option<usize>>,
    /// A removed domain had been announced to the nodes: they must hear
    /// the shorter list, as after a withdrawal.
    pub withdrawn: bool,
}

pub struct Federation {
    key: PrivateKey,
    domain: String,
    prefix: Ipv4Net,
    peers: Vec<Peer>,
    indexes: IndexAlloc,
}

/// True if the two prefixes share an address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Federation {
    pub fn new(
        key: PrivateKey,
        domain: String,
        prefix: Ipv4Net,
        specs: Vec<FederationSpec>,
        index_seed: u64,
        now: Instant,
    ) -> Self {
        let peers = specs.into_iter().map(|spec| Peer::new(spec, now)).collect();
        Federation {
            key,
            domain,
            prefix,
            peers,
            indexes: IndexAlloc::new(index_seed),
        }
    }

    /// Takes a new `[[federation]]` list (SIGHUP), matched to the running
    /// one by domain: an unchanged entry keeps its session untouched, a
    /// changed one (address or key) is dropped and dialled again, a new
    /// one is dialled, a removed one is forgotten (its session ends; the
    /// other DC sees it go silent).
    pub fn reconfigure(&mut self, specs: Vec<FederationSpec>, now: Instant) -> Reconfigured {
        let mut old: Vec<Option<Peer>> = std::mem::take(&mut self.peers)
            .into_iter()
            .map(Some)
            .collect();
        let mut renumber = vec![None; old.len()];
        for (i, spec) in specs.into_iter().enumerate() {
            let same_domain = old.iter().position(|p| {
                p.as_ref()
                    .is_some_and(|p| p.spec.domain.eq_ignore_ascii_case(&spec.domain))
            });
            let peer = match same_domain.and_then(|j| old[j].take().map(|p| (j, p))) {
                Some((j, p)) => {
                    renumber[j] = Some(i);
                    if p.spec == spec {
                        p
                    } else {
                        info!(domain = %spec.domain, address = ?spec.address, public_key = %spec.public_key, "federation entry changed: dialling again");
                        Peer::replaced(p, spec, now)
                    }
                }
                None => {
                    info!(domain = %spec.domain, address = ?spec.address, public_key = %spec.public_key, "federation entry added");
                    Peer::new(spec, now)
                }
            };
            self.peers.push(peer);
        }
        let mut withdrawn = false;
        for p in old.into_iter().flatten() {
            info!(domain = %p.spec.domain, announced = p.announced.is_some(), "federation entry removed: session dropped");
            withdrawn |= p.announced.is_some();
        }
        Reconfigured {
            renumber,
            withdrawn,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Domains announced to the nodes, with their prefixes: those whose DC
    /// has a session, or lost it less than [`WITHDRAW_AFTER`] ago.
    pub fn domains(&self) -> Vec<FederatedDomain> {
        self.peers
            .iter()
            .filter_map(|p| {
                Some(FederatedDomain {
                    domain: p.spec.domain.clone(),
                    prefix: p.announced?,
                })
            })
            .collect()
    }

    pub fn domain(&self, peer: usize) -> Option<&str> {
        self.peers.get(peer).map(|p| p.spec.domain.as_str())
    }

    pub fn prefix(&self, peer: usize) -> Option<Ipv4Net> {
        self.peers.get(peer).and_then(|p| p.prefix)
    }

    /// The peer configured for `domain`, whether or not it is up.
    pub fn peer_for_domain(&self, domain: &str) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.spec.domain.eq_ignore_ascii_case(domain))
    }

    /// The peer whose (learned) prefix holds `ip`.
    pub fn peer_for_address(&self, ip: Ipv4Addr) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.prefix.is_some_and(|n| n.contains(&ip)))
    }

    pub fn is_up(&self, peer: usize) -> bool {
        self.peers.get(peer).is_some_and(Peer::up)
    }

    /// Domains that need a DNS SRV lookup now (no static address, and the
    /// last answer expired or never came). Each is returned once until
    /// [`Federation::set_addresses`] answers it.
    pub fn wanted_lookups(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for p in &mut self.peers {
            let stale = p.addrs_expire.is_none_or(|t| now >= t);
            if p.spec.address.is_none() && stale && !p.lookup_pending && !p.up() {
                p.lookup_pending = true;
                out.push(p.spec.domain.clone());
            }
        }
        out
    }

    /// The answer to a lookup: addresses (maybe none) and how long to trust
    /// them.
    pub fn set_addresses(
        &mut self,
        domain: &str,
        addrs: Vec<SocketAddr>,
        ttl: Duration,
        now: Instant,
    ) {
        let Some(i) = self.peer_for_domain(domain) else {
            return;
        };
        let p = &mut self.peers[i];
        if p.spec.address.is_some() {
            // Asked before a reload gave the domain a static address.
            return;
        }
        p.lookup_pending = false;
        p.addrs_expire = Some(now + ttl.max(MIN_ADDRESS_TTL));
        if p.addrs != addrs {
            info!(%domain, ?addrs, ttl = ttl.as_secs(), "federated DC address from DNS SRV");
            p.addrs = addrs;
        }
    }

    fn alloc_index(&mut self) -> u32 {
        let peers = &self.peers;
        self.indexes.next(|i| {
            peers
                .iter()
                .any(|p| p.dialer.index() == Some(i) || p.sessions.owns(i))
        })
    }

    /// Why a federated DC's hello cannot be accepted, if it cannot.
    fn check_remote(&self, peer: usize, domain: &str, prefix: Ipv4Net) -> Result<(), String> {
        let spec = &self.peers[peer].spec;
        if !domain.eq_ignore_ascii_case(&spec.domain) {
            return Err(format!(
                "the DC with key {} says its domain is {domain:?}, but [[federation]] configures that key for {:?}",
                spec.public_key.short(),
                spec.domain
            ));
        }
        if overlaps(prefix, self.prefix) {
            return Err(format!(
                "virtual_prefix {prefix} of {domain} overlaps ours ({} of {}): federated DCs need disjoint virtual_prefix values, change one of them",
                self.prefix, self.domain
            ));
        }
        Ok(())
    }

    fn install(
        &mut self,
        peer: usize,
        session: Session,
        we_initiated: bool,
        to: SocketAddr,
        prefix: Ipv4Net,
        now: Instant,
    ) -> Vec<FedEvent> {
        let p = &mut self.peers[peer];
        let was_up = p.up();
        p.sessions.install(session, now, we_initiated);
        p.to = Some(to);
        p.prefix = Some(prefix);
        p.last_heard = now;
        p.down_since = None;
        if was_up {
            debug!(domain = %p.spec.domain, "federation session rekeyed");
        } else {
            info!(domain = %p.spec.domain, %prefix, dc = %to, "federation session up");
        }
        if p.announced.replace(prefix) == Some(prefix) {
            Vec::new()
        } else {
            vec![FedEvent::Up(peer)]
        }
    }

    /// A Kind::FedHandshakeInit from another DC (the caller rate-limits).
    pub fn handle_init(
        &mut self,
        mac1: &Mac1Key,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> (Vec<Transmit>, Vec<FedEvent>) {
        let none = (Vec::new(), Vec::new());
        let responder = match Responder::read(&self.key, mac1, datagram) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, error = %e, "federation handshake rejected");
                return none;
            }
        };
        let Some(peer) = self
            .peers
            .iter()
            .position(|p| p.spec.public_key == responder.remote_key)
        else {
            warn!(%from, key = %responder.remote_key, "federation handshake from a key not in [[federation]]: ignored");
            return none;
        };
        let hello: FedHello = match signal::decode(&responder.payload) {
            Ok(h) => h,
            Err(e) => {
                debug!(%from, error = %e, "undecodable federation hello");
                return none;
            }
        };
        if hello.timestamp <= self.peers[peer].remote_timestamp {
            debug!(%from, "replayed or stale federation handshake ignored");
            return none;
        }
        self.peers[peer].remote_timestamp = hello.timestamp;
        let verdict = self.check_remote(peer, &hello.domain, hello.prefix);
        let reply = match &verdict {
            Ok(()) => FedReply::Accepted {
                domain: self.domain.clone(),
                prefix: self.prefix,
            },
            Err(reason) => {
                warn!(%from, %reason, "federation refused");
                FedReply::Refused {
                    reason: reason.clone(),
                }
            }
        };
        let Ok(payload) = signal::encode(&reply) else {
            return none;
        };
        let index = self.alloc_index();
        let (session, bytes) = match responder.reply(Kind::FedHandshakeResp, index, &payload) {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot build federation handshake response");
                return none;
            }
        };
        let events = match verdict {
            Ok(()) => self.install(peer, session, false, from, hello.prefix, now),
            Err(_) => Vec::new(),
        };
        self.peers[peer].last_sent = now;
        (vec![Transmit { to: from, bytes }], events)
    }

    /// A Kind::FedHandshakeResp to one of our initiations.
    pub fn handle_resp(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> (Vec<Transmit>, Vec<FedEvent>) {
        let Ok((sender, receiver, noise)) = wire::decode_resp(datagram) else {
            return (Vec::new(), Vec::new());
        };
        let Some(peer) = self
            .peers
            .iter()
            .position(|p| p.dialer.index() == Some(receiver))
        else {
            return (Vec::new(), Vec::new());
        };
        let (session, payload) = match self.peers[peer].dialer.on_response(sender, receiver, noise)
        {
            Response::Done(session, payload) => (*session, payload),
            Response::NotOurs => return (Vec::new(), Vec::new()),
            Response::Rejected(e) => {
                warn!(%from, error = %e, "federation handshake response rejected (forged, or a wrong public_key in [[federation]]?); still waiting");
                return (Vec::new(), Vec::new());
            }
        };
        let retry = |p: &mut Peer| p.next_attempt = now + REFUSED_RETRY;
        match signal::decode::<FedReply>(&payload) {
            Ok(FedReply::Accepted { domain, prefix }) => {
                match self.check_remote(peer, &domain, prefix) {
                    Ok(()) => {
                        let events = self.install(peer, session, true, from, prefix, now);
                        // Key confirmation: the other DC sends on this
                        // session only after a record on it.
                        let confirm = self.send(peer, &DcToDc::Keepalive, now);
                        (confirm.into_iter().collect(), events)
                    }
                    Err(reason) => {
                        warn!(%from, %reason, "federation refused");
                        retry(&mut self.peers[peer]);
                        (Vec::new(), Vec::new())
                    }
                }
            }
            Ok(FedReply::Refused { reason }) => {
                warn!(%from, domain = %self.peers[peer].spec.domain, %reason, "the federated DC refused us");
                retry(&mut self.peers[peer]);
                (Vec::new(), Vec::new())
            }
            Err(e) => {
                warn!(%from, error = %e, "undecodable federation reply");
                retry(&mut self.peers[peer]);
                (Vec::new(), Vec::new())
            }
        }
    }

    /// A Kind::FedCookieReply: the other DC is under load. Keeps its cookie and
    /// returns our initiation again at once, with mac2 (once per attempt).
    /// None for a forged reply, or none in flight.
    pub fn handle_cookie_reply(&mut self, datagram: &[u8], now: Instant) -> Option<Transmit> {
        let receiver = cookie::reply_receiver(datagram)?;
        let p = self
            .peers
            .iter_mut()
            .find(|p| p.dialer.index() == Some(receiver))?;
        match p.dialer.on_cookie_reply(datagram, now) {
            CookieOutcome::Resend(bytes) => {
                debug!(domain = %p.spec.domain, "the federated DC is under load: retrying with its cookie");
                Some(Transmit {
                    to: p.dialled?,
                    bytes,
                })
            }
            CookieOutcome::Kept | CookieOutcome::Ignored => None,
        }
    }

    /// A Kind::FedData record: the message, and which DC sent it.
    pub fn handle_data(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
    ) -> Option<FedEvent> {
        let header = TransportHeader::decode(datagram).ok()?;
        let peer = self
            .peers
            .iter()
            .position(|p| p.sessions.owns(header.receiver))?;
        let p = &mut self.peers[peer];
        let session = p.sessions.find(header.receiver)?;
        let range = match session.open(datagram) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, error = %e, "federation record rejected");
                return None;
            }
        };
        p.last_heard = now;
        p.to = Some(from);
        p.sessions.confirm(header.receiver);
        match signal::decode::<DcToDc>(&datagram[range]) {
            Ok(msg) => Some(FedEvent::Message(peer, Box::new(msg))),
            Err(e) => {
                debug!(%from, error = %e, "undecodable federation message");
                None
            }
        }
    }

    /// Seals `msg` for federated DC `peer`, if its session is up.
    pub fn send(&mut self, peer: usize, msg: &DcToDc, now: Instant) -> Option<Transmit> {
        let p = self.peers.get_mut(peer)?;
        let (session, to) = (p.sessions.sending()?, p.to?);
        let payload = match signal::encode(msg) {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot encode a federation message");
                return None;
            }
        };
        let bytes = session.seal_to_vec(Kind::FedData, &payload).ok()?;
        p.last_sent = now;
        Some(Transmit { to, bytes })
    }

    /// Handshakes that are due, keepalives, dead sessions, and domains
    /// down long enough to withdraw.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        unix_nanos: u64,
    ) -> (Vec<Transmit>, Vec<FedEvent>) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let ours = self.key.public_key();
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            if p.up() && now.saturating_duration_since(p.last_heard) > DEAD_AFTER {
                warn!(domain = %p.spec.domain, "federated DC stopped answering; re-establishing");
                p.sessions.clear();
                p.next_attempt = now;
                p.down_since = Some(now);
            }
            if p.announced.is_some()
                && p.down_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= WITHDRAW_AFTER)
            {
                warn!(domain = %p.spec.domain, down_secs = WITHDRAW_AFTER.as_secs(), "federated DC unreachable for long: domain withdrawn from the nodes");
                p.announced = None;
                events.push(FedEvent::Withdrawn(i));
            }
            if p.dialer.timed_out(now) {
                p.dialer.abandon();
                p.next_attempt = now;
                // A DNS answer may be stale: look again before the next try.
                if p.spec.address.is_none() {
                    p.addrs_expire = Some(now);
                }
                debug!(domain = %p.spec.domain, attempts = p.dialer.attempts(), "federation handshake unanswered");
            }
            // Rekey: the DC with the smaller key renews the session, whichever
            // side dialled it (well before the reject-after bound).
            let rekey =
                ours < p.spec.public_key && p.sessions.rekey_due(now, REKEY, Duration::ZERO);
            if p.sessions.expire(now, REKEY) {
                debug!(domain = %p.spec.domain, "federation session expired");
            }
            let due = !p.dialer.in_flight() && now >= p.next_attempt && (!p.up() || rekey);
            if due {
                if let Some(t) = self.initiate(i, now, unix_nanos) {
                    out.push(t);
                }
            }
            let p = &mut self.peers[i];
            if p.up() && now.saturating_duration_since(p.last_sent) >= KEEPALIVE {
                out.extend(self.send(i, &DcToDc::Keepalive, now));
            }
        }
        (out, events)
    }

    fn initiate(&mut self, peer: usize, now: Instant, unix_nanos: u64) -> Option<Transmit> {
        let to = {
            let p = &self.peers[peer];
            // Rekeys go where the session is; first contact to the address.
            p.to.filter(|_| p.up()).or_else(|| {
                let n = p.addrs.len().max(1);
                p.addrs.get(p.dialer.attempts() as usize % n).copied()
            })?
        };
        let index = self.alloc_index();
        let p = &mut self.peers[peer];
        let hello = FedHello {
            timestamp: p.dialer.timestamp(unix_nanos),
            domain: self.domain.clone(),
            prefix: self.prefix,
        };
        let payload = signal::encode(&hello).ok()?;
        match p.dialer.start(&self.key, index, &payload, now) {
            Ok(bytes) => {
                let bytes = bytes.to_vec();
                p.dialled = Some(to);
                p.next_attempt = now + REKEY;
                debug!(domain = %p.spec.domain, dc = %to, "federation handshake");
                Some(Transmit { to, bytes })
            }
            Err(e) => {
                warn!(error = %e, "cannot start a federation handshake");
                None
            }
        }
    }

    /// One gauge per federated domain: 1 while its session is up.
    pub fn metrics(&self) -> Vec<Sample> {
        self.peers
            .iter()
            .map(|p| {
                Sample::gauge(
                    "ntmtun_dc_federation_up",
                    "1 while the session with the federated domain's DC is up.",
                    u64::from(p.up()),
                )
                .label("domain", p.spec.domain.clone())
            })
            .collect()
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .map(|p| {
                let mut t = p.dialer.retry_at().unwrap_or(p.next_attempt);
                if p.up() {
                    t = t
                        .min(p.last_sent + KEEPALIVE)
                        .min(p.last_heard + DEAD_AFTER);
                }
                if let (Some(down), Some(_)) = (p.down_since, p.announced) {
                    t = t.min(down + WITHDRAW_AFTER);
                }
                t
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;

    /// A federation handshake initiation through the DC's gate's mac1.
    fn answer(
        f: &mut Federation,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> (Vec<Transmit>, Vec<FedEvent>) {
        let mac1 = Mac1Key::for_responder(&f.key.public_key());
        f.handle_init(&mac1, from, bytes, now)
    }

    const X_ADDR: &str = "198.51.100.10:7446";
    const Y_ADDR: &str = "198.51.100.13:7446";

    fn pair(prefix_y: &str, y_address_known: bool) -> (Federation, Federation, Instant) {
        let (kx, ky) = (PrivateKey::generate(), PrivateKey::generate());
        let now = Instant::now();
        let x = Federation::new(
            kx.clone(),
            "x.ntm.internal".into(),
            "198.18.0.0/16".parse().unwrap(),
            vec![FederationSpec {
                domain: "y.ntm.internal".into(),
                public_key: ky.public_key(),
                address: y_address_known.then(|| Y_ADDR.parse().unwrap()),
            }],
            1,
            now,
        );
        let y = Federation::new(
            ky,
            "y.ntm.internal".into(),
            prefix_y.parse().unwrap(),
            vec![FederationSpec {
                domain: "x.ntm.internal".into(),
                public_key: kx.public_key(),
                address: Some(X_ADDR.parse().unwrap()),
            }],
            2,
            now,
        );
        (x, y, now)
    }

    /// x's first dial at `now`, tagged as sent by x, for `exchange`.
    fn dials_from_x(x: &mut Federation, now: Instant) -> Vec<(bool, Transmit)> {
        x.handle_timeout(now, 1)
            .0
            .into_iter()
            .map(|t| (true, t))
            .collect()
    }

    /// Delivers every datagram between the two until both are quiet.
    fn exchange(
        x: &mut Federation,
        y: &mut Federation,
        mut out: Vec<(bool, Transmit)>,
        now: Instant,
    ) -> Vec<(bool, FedEvent)> {
        let mut events = Vec::new();
        for _ in 0..20 {
            let Some((from_x, t)) = out.pop() else { break };
            let (me, from) = if from_x {
                (&mut *y, X_ADDR)
            } else {
                (&mut *x, Y_ADDR)
            };
            let from: SocketAddr = from.parse().unwrap();
            let mut bytes = t.bytes;
            match Kind::of(&bytes) {
                Ok(Kind::FedHandshakeInit) => {
                    let (tx, ev) = answer(me, from, &bytes, now);
                    out.extend(tx.into_iter().map(|t| (!from_x, t)));
                    events.extend(ev.into_iter().map(|e| (!from_x, e)));
                }
                Ok(Kind::FedHandshakeResp) => {
                    let (tx, ev) = me.handle_resp(from, &bytes, now);
                    out.extend(tx.into_iter().map(|t| (!from_x, t)));
                    events.extend(ev.into_iter().map(|e| (!from_x, e)));
                }
                _ => events.extend(me.handle_data(from, &mut bytes, now).map(|e| (!from_x, e))),
            }
        }
        events
    }

    #[test]
    fn both_dial_and_the_sessions_carry_messages_both_ways() {
        let (mut x, mut y, now) = pair("198.19.0.0/16", true);
        let mut out = dials_from_x(&mut x, now);
        out.extend(y.handle_timeout(now, 1).0.into_iter().map(|t| (false, t)));
        assert_eq!(out.len(), 2, "each side dials the other");
        let events = exchange(&mut x, &mut y, out, now);
        assert!(
            events.contains(&(true, FedEvent::Up(0))) && events.contains(&(false, FedEvent::Up(0))),
            "{events:?}"
        );
        assert_eq!(
            x.domains(),
            vec![FederatedDomain {
                domain: "y.ntm.internal".into(),
                prefix: "198.19.0.0/16".parse().unwrap()
            }]
        );
        assert_eq!(x.peer_for_address(Ipv4Addr::new(198, 19, 0, 5)), Some(0));
        assert_eq!(x.peer_for_address(Ipv4Addr::new(198, 18, 0, 5)), None);
        assert_eq!(x.metrics().len(), 1);
        assert_eq!(x.metrics()[0].value, 1, "ntmtun_dc_federation_up");
        let msg = DcToDc::Keepalive;
        let t = x.send(0, &msg, now).unwrap();
        let ev = exchange(&mut x, &mut y, vec![(true, t)], now);
        assert_eq!(
            ev,
            vec![(false, FedEvent::Message(0, Box::new(DcToDc::Keepalive)))]
        );
        let t = y.send(0, &msg, now).unwrap();
        let ev = exchange(&mut x, &mut y, vec![(false, t)], now);
        assert_eq!(
            ev,
            vec![(true, FedEvent::Message(0, Box::new(DcToDc::Keepalive)))]
        );
    }

    #[test]
    fn overlapping_prefixes_are_refused_on_both_sides() {
        let (mut x, mut y, now) = pair("198.18.128.0/17", true);
        let out = dials_from_x(&mut x, now);
        let events = exchange(&mut x, &mut y, out, now);
        assert!(events.is_empty(), "{events:?}");
        assert!(!x.is_up(0) && !y.is_up(0));
        assert!(x.domains().is_empty());
    }

    /// Ten minutes of timers, keepalives and rekeys: the session never
    /// drops, whichever DC dialled first (in one of the two runs it is the
    /// one with the larger key, which never rekeys itself).
    #[test]
    fn the_session_stays_up_across_rekeys_whoever_dialled() {
        for x_dials in [true, false] {
            let (mut x, mut y, t0) = pair("198.19.0.0/16", true);
            let first = if x_dials {
                dials_from_x(&mut x, t0)
            } else {
                let out = y.handle_timeout(t0, 1).0;
                out.into_iter().map(|t| (false, t)).collect()
            };
            exchange(&mut x, &mut y, first, t0);
            assert!(x.is_up(0) && y.is_up(0));
            let mut now = t0;
            while now < t0 + Duration::from_secs(600) {
                now += Duration::from_millis(500);
                let unix = 1 + (now - t0).as_secs();
                let mut out: Vec<(bool, Transmit)> = Vec::new();
                out.extend(x.handle_timeout(now, unix).0.into_iter().map(|t| (true, t)));
                out.extend(
                    y.handle_timeout(now, unix)
                        .0
                        .into_iter()
                        .map(|t| (false, t)),
                );
                exchange(&mut x, &mut y, out, now);
                assert!(
                    x.peers[0].sessions.sending().is_some()
                        && y.peers[0].sessions.sending().is_some(),
                    "the session dropped at {:?} (x dialled: {x_dials})",
                    now - t0
                );
            }
        }
    }

    #[test]
    fn a_replayed_initiation_does_not_install_a_session() {
        let (mut x, mut y, now) = pair("198.19.0.0/16", true);
        let init = x.handle_timeout(now, 1).0.pop().unwrap();
        let from: SocketAddr = X_ADDR.parse().unwrap();
        assert_eq!(
            answer(&mut y, from, &init.bytes, now).1,
            vec![FedEvent::Up(0)]
        );
        let (tx, ev) = answer(&mut y, from, &init.bytes, now);
        assert!(tx.is_empty() && ev.is_empty());
    }

    #[test]
    fn srv_lookup_is_asked_once_then_used_and_renewed_after_its_ttl() {
        let (mut x, _, now) = pair("198.19.0.0/16", false);
        assert!(
            x.handle_timeout(now, 1).0.is_empty(),
            "no address yet: nothing to dial"
        );
        assert_eq!(x.wanted_lookups(now), vec!["y.ntm.internal".to_string()]);
        assert!(
            x.wanted_lookups(now).is_empty(),
            "asked once until answered"
        );
        x.set_addresses(
            "y.ntm.internal",
            vec![Y_ADDR.parse().unwrap()],
            Duration::from_secs(60),
            now,
        );
        let t = x.handle_timeout(now, 2).0;
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].to, Y_ADDR.parse::<SocketAddr>().unwrap());
        assert!(x.wanted_lookups(now + Duration::from_secs(59)).is_empty());
        assert_eq!(x.wanted_lookups(now + Duration::from_secs(61)).len(), 1);

        // A reload gives y a static address while a lookup is out: the
        // late DNS answer does not replace it.
        let later = now + Duration::from_secs(61);
        let key = x.peers[0].spec.public_key;
        x.reconfigure(vec![y_spec(key, "198.51.100.15:7446")], later);
        x.set_addresses(
            "y.ntm.internal",
            vec![Y_ADDR.parse().unwrap()],
            Duration::from_secs(60),
            later,
        );
        let t = x.handle_timeout(later, 3).0;
        assert_eq!(
            handshakes(&t),
            vec!["198.51.100.15:7446".parse::<SocketAddr>().unwrap()]
        );
        assert!(x.wanted_lookups(later).is_empty());
    }

    #[test]
    fn a_silent_session_is_declared_dead_and_redialled() {
        let (mut x, mut y, now) = pair("198.19.0.0/16", true);
        let out = dials_from_x(&mut x, now);
        exchange(&mut x, &mut y, out, now);
        assert!(x.is_up(0));
        let later = now + DEAD_AFTER + Duration::from_secs(1);
        let (t, events) = x.handle_timeout(later, 5);
        assert!(events.is_empty(), "not withdrawn at once: {events:?}");
        assert_eq!(
            x.domains().len(),
            1,
            "still announced while it may come back"
        );
        assert!(!x.is_up(0));
        assert!(
            t.iter().any(|t| t.bytes[0] == Kind::FedHandshakeInit as u8),
            "redials at once"
        );
    }

    #[test]
    fn a_domain_down_for_long_is_withdrawn_and_announced_again_when_it_returns() {
        let (mut x, mut y, now) = pair("198.19.0.0/16", true);
        let out = dials_from_x(&mut x, now);
        exchange(&mut x, &mut y, out, now);
        let died = now + DEAD_AFTER + Duration::from_secs(1);
        x.handle_timeout(died, 5);
        assert!(!x.is_up(0));
        assert_eq!(
            x.poll_timeout().map(|t| t <= died + WITHDRAW_AFTER),
            Some(true),
            "the withdrawal is a timer"
        );
        let before = died + WITHDRAW_AFTER - Duration::from_secs(1);
        assert!(x.handle_timeout(before, 6).1.is_empty());
        assert_eq!(x.domains().len(), 1);
        let gone = died + WITHDRAW_AFTER;
        let (_, events) = x.handle_timeout(gone, 7);
        assert_eq!(events, vec![FedEvent::Withdrawn(0)]);
        assert!(x.domains().is_empty());
        assert_eq!(
            x.peer_for_domain("y.ntm.internal"),
            Some(0),
            "still dialled"
        );
        assert!(x.handle_timeout(gone, 8).1.is_empty(), "withdrawn once");

        // Y answers again: the domain is announced again.
        let back = gone + Duration::from_secs(60);
        let out: Vec<(bool, Transmit)> = y
            .handle_timeout(back, 9)
            .0
            .into_iter()
            .filter(|t| t.bytes[0] == Kind::FedHandshakeInit as u8)
            .map(|t| (false, t))
            .collect();
        assert!(!out.is_empty(), "Y redials");
        let events = exchange(&mut x, &mut y, out, back);
        assert!(events.contains(&(true, FedEvent::Up(0))), "{events:?}");
        assert_eq!(x.domains().len(), 1);
    }

    fn y_spec(key: PublicKey, address: &str) -> FederationSpec {
        FederationSpec {
            domain: "y.ntm.internal".into(),
            public_key: key,
            address: Some(address.parse().unwrap()),
        }
    }

    fn handshakes(t: &[Transmit]) -> Vec<SocketAddr> {
        t.iter()
            .filter(|t| t.bytes[0] == Kind::FedHandshakeInit as u8)
            .map(|t| t.to)
            .collect()
    }

    /// x and y federated, session up; y's spec as x has it.
    fn up_pair() -> (Federation, Federation, FederationSpec, Instant) {
        let (mut x, mut y, now) = pair("198.19.0.0/16", true);
        let out = dials_from_x(&mut x, now);
        exchange(&mut x, &mut y, out, now);
        assert!(x.is_up(0));
        let spec = x.peers[0].spec.clone();
        (x, y, spec, now)
    }

    #[test]
    fn a_reload_without_changes_keeps_the_session_and_sends_nothing() {
        let (mut x, _, spec, now) = up_pair();
        let index = x.peers[0].sessions.newest().map(|s| s.local_index);
        let r = x.reconfigure(vec![spec], now);
        assert_eq!(
            r,
            Reconfigured {
                renumber: vec![Some(0)],
                withdrawn: false
            }
        );
        assert!(x.is_up(0));
        assert_eq!(x.peers[0].sessions.newest().map(|s| s.local_index), index);
        let (t, ev) = x.handle_timeout(now, 3);
        assert!(t.is_empty() && ev.is_empty(), "{t:?} {ev:?}");
    }

    #[test]
    fn an_added_entry_is_dialled_and_the_others_stay_up() {
        let (mut x, _, spec, now) = up_pair();
        let z = FederationSpec {
            domain: "z.ntm.internal".into(),
            public_key: PrivateKey::generate().public_key(),
            address: Some("198.51.100.14:7446".parse().unwrap()),
        };
        let r = x.reconfigure(vec![z, spec], now);
        assert_eq!(r.renumber, vec![Some(1)], "y moved to number 1");
        assert!(x.is_up(1) && !x.is_up(0));
        assert_eq!(x.peer_for_domain("z.ntm.internal"), Some(0));
        let (t, _) = x.handle_timeout(now, 3);
        assert_eq!(
            handshakes(&t),
            vec!["198.51.100.14:7446".parse::<SocketAddr>().unwrap()],
            "only z is dialled"
        );
    }

    #[test]
    fn a_changed_address_drops_the_link_and_dials_the_new_one() {
        let (mut x, _, spec, now) = up_pair();
        let moved = "198.51.100.15:7446";
        let r = x.reconfigure(vec![y_spec(spec.public_key, moved)], now);
        assert_eq!(r.renumber, vec![Some(0)]);
        assert!(!r.withdrawn);
        assert!(!x.is_up(0), "old link still up");
        assert_eq!(x.domains().len(), 1, "still announced, as in an outage");
        let (t, _) = x.handle_timeout(now, 3);
        assert_eq!(handshakes(&t), vec![moved.parse::<SocketAddr>().unwrap()]);
        // Not answered: withdrawn after WITHDRAW_AFTER as any outage.
        let (_, ev) = x.handle_timeout(now + WITHDRAW_AFTER, 4);
        assert_eq!(ev, vec![FedEvent::Withdrawn(0)]);
    }

    #[test]
    fn a_changed_key_drops_the_link_and_handshakes_with_the_new_key() {
        let (mut x, _, _, now) = up_pair();
        // Y's DC came back with a new key; x is told so by a reload.
        let ky2 = PrivateKey::generate();
        let mut y2 = Federation::new(
            ky2.clone(),
            "y.ntm.internal".into(),
            "198.19.0.0/16".parse().unwrap(),
            vec![FederationSpec {
                domain: "x.ntm.internal".into(),
                public_key: x.key.public_key(),
                address: Some(X_ADDR.parse().unwrap()),
            }],
            7,
            now,
        );
        let old_index = x.peers[0].sessions.newest().map(|s| s.local_index);
        x.reconfigure(vec![y_spec(ky2.public_key(), Y_ADDR)], now);
        assert!(!x.is_up(0));
        assert!(
            old_index.is_some_and(|i| !x.peers.iter().any(|p| p.sessions.owns(i))),
            "old session kept"
        );
        let later = now + Duration::from_secs(1);
        let out = dials_from_x(&mut x, later);
        assert_eq!(out.len(), 1);
        let events = exchange(&mut x, &mut y2, out, later);
        assert!(x.is_up(0) && y2.is_up(0), "{events:?}");
        assert_ne!(
            x.peers[0].sessions.newest().map(|s| s.local_index),
            old_index
        );
    }

    #[test]
    fn a_removed_entry_is_forgotten_and_its_domain_withdrawn() {
        let (mut x, _, _, now) = up_pair();
        let r = x.reconfigure(Vec::new(), now);
        assert_eq!(
            r,
            Reconfigured {
                renumber: vec![None],
                withdrawn: true
            }
        );
        assert!(x.is_empty() && x.domains().is_empty());
        assert!(x.handle_timeout(now, 3).0.is_empty(), "nothing dialled");
        assert_eq!(x.poll_timeout(), None);
    }
}
