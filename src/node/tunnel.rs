//! The node's tunnel side: node <-> node handshakes over direct candidates
//! or a relay, relay binding, endpoint choice (roaming, relay fallback and
//! upgrade), and peer control messages (ping/pong).

use super::core::{NodeCore, Output};
use super::counters::bump;
use super::peer::RelayLink;
use crate::dataplane::table::Endpoint;
use crate::keys::PublicKey;
use crate::proto::control::Control;
use crate::proto::cookie;
use crate::proto::handshake::Responder;
use crate::proto::link::{CookieOutcome, Response, Verdict};
use crate::proto::relay as relay_frames;
use crate::proto::signal::{self, PeerHello, PeerInfo};
use crate::proto::wire::Kind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// A session the peer initiated waits this long for its first record
/// before we start a handshake of our own.
const CONFIRM_WAIT: Duration = Duration::from_secs(1);
/// After a direct path failed, do not trust direct endpoints for this long.
const DIRECT_BAN: Duration = Duration::from_secs(30);

impl NodeCore {
    /// Sends `datagram` (a node-to-node message) to `ep`.
    pub(super) fn send_to(&mut self, ep: Endpoint, datagram: &[u8]) {
        let (to, bytes) = ep.wrap(datagram);
        self.out.push_back(Output::Udp { to, bytes });
    }

    /// Adds or updates a peer from the DC's direction.
    pub(super) fn upsert_peer(&mut self, info: &PeerInfo, now: Instant) -> PublicKey {
        let key = PublicKey(info.public_key);
        // A virtual address now held by another key: forget the old peer.
        if let Some(old) = self.by_vip.get(&info.virtual_ip).copied() {
            if old != key {
                self.peers.remove(&old);
                self.table_dirty = true;
            }
        }
        self.by_vip.insert(info.virtual_ip, key);
        let epoch = self.start;
        let (prefix, routes) = (self.prefix, self.routes.clone());
        let peer = self.peers.entry(key).or_insert_with(|| {
            super::peer::Peer::new(
                info.name.clone(),
                info.virtual_ip,
                key,
                Arc::new(crate::dataplane::table::PeerStats::new(epoch)),
            )
        });
        peer.name = info.name.clone();
        peer.virtual_ip = info.virtual_ip;
        peer.path = info.path;
        if peer.offered != info.endpoints {
            // New candidates: upgrade probing starts over.
            peer.upgrade = None;
            peer.offered = info.endpoints.clone();
            peer.candidates = super::loop_guard::usable(&peer.offered, prefix, &routes);
        }
        peer.initiate = info.initiate;
        let new_grant = info.relay.clone();
        let same_session = match (&peer.relay, &new_grant) {
            (Some(old), Some(new)) => old.grant.address == new.address && old.grant.sid == new.sid,
            _ => false,
        };
        match new_grant {
            Some(grant) if same_session => {
                if let Some(r) = &mut peer.relay {
                    r.grant = grant; // fresher ticket, same session
                }
            }
            Some(grant) => {
                peer.relay = Some(RelayLink {
                    grant,
                    bound: false,
                    last_bind: None,
                    bind_timestamp: 0,
                });
            }
            None => peer.relay = None,
        }
        self.bind_relay(key, now);
        // Punching: both sides send at once, so the one told to initiate
        // does so even before it has anything to send.
        if info.initiate {
            if let Some(p) = self.peers.get(&key) {
                if p.sessions.current().is_none() && !p.dialer.in_flight() {
                    self.initiate(key, now);
                }
            }
        }
        key
    }

    /// Sends (or refreshes) our bind to the peer's relay session.
    pub(super) fn bind_relay(&mut self, key: PublicKey, now: Instant) {
        let ts = self.unix_nanos(now);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(r) = &mut p.relay else { return };
        let Ok(ticket) =
            <[u8; crate::proto::ticket::TICKET_LEN]>::try_from(r.grant.ticket.as_slice())
        else {
            warn!(peer = %p.name, "malformed relay ticket from the DC");
            return;
        };
        r.bind_timestamp = ts.max(r.bind_timestamp + 1);
        r.last_bind = Some(now);
        let bytes = relay_frames::bind(r.grant.side, r.bind_timestamp, &ticket, &r.grant.secret);
        let to = r.grant.address;
        self.out.push_back(Output::Udp { to, bytes });
    }

    /// The relay acknowledged a bind.
    pub(super) fn on_bind_ack(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let ack = relay_frames::parse_bind_ack(datagram, |sid, side| {
            self.peers.values().find_map(|p| {
                let r = p.relay.as_ref()?;
                (r.grant.sid == sid && r.grant.side == side && r.grant.address == from)
                    .then_some(r.grant.secret)
            })
        });
        let Some((_, sid, ts, _seen)) = ack else {
            debug!(%from, "unauthenticated bind ack dropped");
            return;
        };
        let Some(key) = self
            .peers
            .values()
            .find(|p| {
                p.relay
                    .as_ref()
                    .is_some_and(|r| r.grant.sid == sid && r.grant.address == from)
            })
            .map(|p| p.key)
        else {
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(r) = &mut p.relay else { return };
        if ts != r.bind_timestamp || r.bound {
            r.bound = true;
            return;
        }
        r.bound = true;
        let relay_ep = r.endpoint();
        debug!(peer = %p.name, relay = %from, sid, "relay session bound");
        // Already relayed through another relay (failover): move over now.
        let moved = p.endpoint.is_some_and(|e| e.is_relay() && e != relay_ep);
        if moved {
            info!(peer = %p.name, relay = %from, "moving to the new relay");
            p.endpoint = Some(relay_ep);
            self.table_dirty = true;
        }
        // An initiation waiting for the relay goes out through it now.
        let waiting = p.dialer.in_flight() && p.sessions.current().is_none();
        if moved {
            self.keepalive(key, now);
        }
        if waiting {
            self.initiate(key, now);
        }
    }

    /// Starts a handshake unless the tunnel is up, a handshake is in flight
    /// or a session the peer just initiated awaits its first record; then
    /// delivers whatever waits if the tunnel is already up.
    pub(super) fn ensure_tunnel(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let confirming = p.sessions.unconfirmed()
            && p.sessions
                .established()
                .is_some_and(|(at, _)| now.saturating_duration_since(at) < CONFIRM_WAIT);
        if p.sending().is_some() {
            self.flush_peer(key, now);
        } else if !p.dialer.in_flight() && !confirming {
            self.initiate(key, now);
        }
    }

    /// Sends a new handshake initiation to the peer (replacing any in
    /// flight); where it goes depends on how many went unanswered.
    pub(super) fn initiate(&mut self, key: PublicKey, now: Instant) {
        let index = self.alloc_index();
        let unix = self.unix_nanos(now);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(old) = p.dialer.index() {
            self.initiations.remove(&old);
        }
        let timestamp = p.dialer.timestamp(unix);
        let Ok(payload) = signal::encode(&PeerHello { timestamp }) else {
            return;
        };
        let bytes = match p.dialer.start(&self.s.key, index, &payload, now) {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => {
                warn!(peer = %p.name, error = %e, "cannot start handshake");
                return;
            }
        };
        let attempts = p.dialer.attempts();
        let targets = p.initiation_targets(attempts);
        debug!(peer = %p.name, ?targets, attempts, "sending handshake initiation");
        for t in targets {
            let (to, wrapped) = t.wrap(&bytes);
            self.out.push_back(Output::Udp { to, bytes: wrapped });
        }
        self.initiations.insert(index, key);
    }

    pub(super) fn on_handshake_init(&mut self, from: Endpoint, datagram: &[u8], now: Instant) {
        bump(&self.counters.handshakes_received);
        // The gate (`proto::link`): mac1, a cookie under load, the
        // per-source limit, before any Diffie-Hellman. Relayed initiations
        // come from the one other node of a ticketed pair, within the
        // ticket's rate: no address to prove.
        let source = match from {
            Endpoint::Direct(addr) => Some(addr),
            Endpoint::Relay { .. } => None,
        };
        match self.gate.check(Kind::CookieReply, datagram, source, now) {
            Verdict::Proceed => {}
            Verdict::Cookie(reply) => {
                bump(&self.counters.handshakes_cookie_replied);
                self.send_to(from, &reply);
                return;
            }
            Verdict::NoCookie => return,
            Verdict::BadMac1 => {
                bump(&self.counters.handshakes_bad_mac1);
                debug!(%from, "handshake initiation with a bad mac1 dropped");
                return;
            }
            Verdict::RateLimited => {
                bump(&self.counters.handshakes_rate_limited);
                debug!(%from, "handshake initiation over the rate limit dropped");
                return;
            }
        }
        let resp = match Responder::read(&self.s.key, self.gate.mac1(), datagram) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, error = %e, "handshake initiation rejected");
                return;
            }
        };
        let key = resp.remote_key;
        let Ok(hello) = signal::decode::<PeerHello>(&resp.payload) else {
            return;
        };
        let index = self.alloc_index();
        let Some(p) = self.peers.get_mut(&key) else {
            debug!(%from, peer = %key.short(), "handshake from a key the DC has not directed to us: dropped");
            self.undirected_handshakes += 1;
            return;
        };
        if hello.timestamp == p.last_hello {
            if let Some(bytes) = p.last_response.clone() {
                debug!(peer = %p.name, endpoint = %from, "same initiation over another path: same answer");
                self.send_to(from, &bytes);
            }
            return;
        }
        if hello.timestamp < p.last_hello {
            debug!(peer = %p.name, "replayed handshake initiation dropped");
            return;
        }
        match resp.reply(Kind::HandshakeResp, index, &[]) {
            Ok((session, bytes)) => {
                p.last_hello = hello.timestamp;
                p.last_response = Some(bytes.clone());
                info!(peer = %p.name, endpoint = %from, "tunnel up (responder)");
                p.install_answered(session, now);
                self.table_dirty = true;
                bump(&self.counters.handshakes_answered);
                self.send_to(from, &bytes);
            }
            Err(e) => warn!(error = %e, "cannot answer handshake"),
        }
    }

    /// A peer under load answered our initiation with a cookie: keep it,
    /// and send the same initiation once more with mac2, to where the
    /// reply came from. Forged replies do not open and are ignored.
    pub(super) fn on_cookie_reply(&mut self, from: Endpoint, datagram: &[u8], now: Instant) {
        let waiting = cookie::reply_receiver(datagram).and_then(|r| self.initiations.get(&r));
        let Some(key) = waiting.copied() else {
            debug!(%from, "cookie reply for no initiation in flight");
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        match p.dialer.on_cookie_reply(datagram, now) {
            CookieOutcome::Resend(message) => {
                bump(&self.counters.cookies_received);
                debug!(peer = %p.name, %from, "peer is under load: retrying with its cookie");
                self.send_to(from, &message);
            }
            CookieOutcome::Kept => bump(&self.counters.cookies_received),
            CookieOutcome::Ignored => {
                debug!(%from, peer = %p.name, "cookie reply that does not open dropped");
            }
        }
    }

    pub(super) fn on_handshake_resp(
        &mut self,
        from: Endpoint,
        sender: u32,
        receiver: u32,
        noise: &[u8],
        now: Instant,
    ) {
        let Some(key) = self.initiations.get(&receiver).copied() else {
            debug!(%from, "handshake response for no initiation in flight");
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        match p.dialer.on_response(sender, receiver, noise) {
            Response::Done(session, _) => {
                self.initiations.remove(&receiver);
                info!(peer = %p.name, endpoint = %from, "tunnel up (initiator)");
                p.install_initiated(*session, from, now);
                self.table_dirty = true;
                // Key confirmation: the responder sends on this session
                // only after a record on it, so one goes now.
                if !self.flush_peer(key, now) {
                    self.keepalive(key, now);
                }
            }
            Response::NotOurs => {}
            // A forgery (or a response for another key): the attempt
            // stays in flight for the authentic one.
            Response::Rejected(e) => {
                debug!(%from, error = %e, "handshake response rejected; still waiting");
            }
        }
    }

    /// Sends packets queued for the peer and answers DNS queries and pings
    /// waiting on it. True if any record went out.
    pub(super) fn flush_peer(&mut self, key: PublicKey, now: Instant) -> bool {
        let Some(p) = self.peers.get_mut(&key) else {
            return false;
        };
        let (Some(session), Some(ep)) = (p.sending(), p.endpoint) else {
            return false;
        };
        let answer = super::dns::Resolution::Found {
            name: p.name.clone(),
            virtual_ip: p.virtual_ip,
        };
        let waiters = std::mem::take(&mut p.dns_waiters);
        let queued: Vec<Vec<u8>> = p.queue.drain(..).collect();
        let pings = std::mem::take(&mut p.pending_pings);
        let stats = p.stats.clone();
        let sent = !queued.is_empty() || !pings.is_empty();
        for w in waiters {
            self.reply_dns(&w, &answer);
        }
        for pkt in queued {
            if let Ok(bytes) = session.seal_to_vec(Kind::Data, &pkt) {
                stats.record_tx(pkt.len(), now);
                self.send_to(ep, &bytes);
            }
        }
        for id in pings {
            self.send_ping(key, id, now);
        }
        sent
    }

    /// The first authentic record on a session the peer initiated arrived:
    /// it becomes the one we send on, and what waited for it goes out.
    pub(super) fn confirm_session(&mut self, key: PublicKey, index: u32, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.sessions.confirm(index) {
            debug!(peer = %p.name, index, "session confirmed by the peer's first record");
            self.table_dirty = true;
            self.flush_peer(key, now);
        }
    }

    /// An authenticated record for our session `index` arrived from `from`,
    /// which is not the endpoint the workers knew.
    pub fn handle_endpoint_seen(&mut self, index: u32, from: Endpoint, now: Instant) {
        if matches!(from, Endpoint::Direct(a) if self.looped(a)) {
            return;
        }
        let Some(key) = self.peer_of_index(index) else {
            return;
        };
        // A session the peer initiated counts once a record arrives on it;
        // the endpoint then follows the usual rules.
        self.confirm_session(key, index, now);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.endpoint == Some(from) {
            p.endpoint_heard = Some(now);
            return;
        }
        // Follow the path the peer's records take: that is the peer's
        // choice, made after its own checks (a roaming peer, a peer that
        // fell back to the relay, or one that proved the direct path with a
        // probe). Upgrade probes themselves never get here. A direct path
        // that failed us moments ago is not taken back at once, and a live
        // direct endpoint does not give way to a worse-ranked family
        // (records still in flight there after an upgrade, a rekey's copy).
        let take = match (p.endpoint, from) {
            (_, Endpoint::Direct(_)) => {
                p.direct_banned_until.is_none_or(|t| now >= t) && !p.keeps_endpoint(from, now)
            }
            // Records still in flight on the relay after both moved to a
            // direct path must not pull us back while direct is alive.
            (Some(Endpoint::Direct(_)), Endpoint::Relay { .. }) => p
                .stats
                .last_direct_rx()
                .is_none_or(|t| now.saturating_duration_since(t) >= super::health::PATH_TIMEOUT),
            (_, Endpoint::Relay { .. }) => true,
        };
        if take {
            info!(peer = %p.name, old = ?p.endpoint.map(|e| e.to_string()), new = %from, "peer endpoint changed");
            p.move_to(from, now);
            p.last_switch = Some(now);
            p.awaiting_since = None;
            self.table_dirty = true;
        }
    }

    /// An empty data record: proves liveness, holds NAT bindings, and
    /// teaches the peer our current address.
    pub(super) fn keepalive(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let (Some(s), Some(ep)) = (p.sending(), p.endpoint) else {
            return;
        };
        if let Ok(bytes) = s.seal_to_vec(Kind::Data, &[]) {
            p.stats.record_tx(0, now);
            self.send_to(ep, &bytes);
        }
    }

    /// Probes straight to the peer's direct candidates while we are relayed,
    /// or to the better-ranked ones while on a worse-ranked direct endpoint
    /// (`path_choice`): the peer answers each one from where it arrived,
    /// and an answer that reaches us moves us there; our keepalive then
    /// moves the peer.
    pub(super) fn probe_direct(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.last_probe = Some(now);
        let Some(s) = p.sending() else { return };
        let targets: Vec<Endpoint> = p.probe_targets();
        if let Some(ep @ Endpoint::Direct(_)) = p.endpoint {
            let misses = p.upgrade_misses();
            info!(peer = %p.name, endpoint = %ep, ?targets, misses, "probing better-ranked direct candidates");
            p.upgrade = Some((ep, misses.saturating_add(1)));
        }
        let id = self.next_ping();
        for t in targets {
            if let Ok(bytes) = s.seal_to_vec(Kind::Data, &Control::Probe(id).to_vec()) {
                self.send_to(t, &bytes);
            }
        }
    }

    /// Falls back from a failed direct path to the relay, if we have one.
    pub(super) fn fall_back_to_relay(&mut self, key: PublicKey, now: Instant) -> bool {
        let Some(p) = self.peers.get_mut(&key) else {
            return false;
        };
        let Some(relay_ep) = p.relay_endpoint() else {
            return false;
        };
        if p.endpoint == Some(relay_ep) {
            return false;
        }
        warn!(peer = %p.name, relay = %relay_ep, "direct path stopped answering; falling back to the relay");
        p.fall_back(relay_ep, now, now + DIRECT_BAN);
        p.last_probe = Some(now);
        bump(&self.counters.relay_fallbacks);
        self.table_dirty = true;
        let id = self.next_ping();
        self.send_control(key, relay_ep, Control::Fallback(id), now);
        true
    }

    /// The direct path went quiet (data or a ping unanswered): before path
    /// health may declare it dead, ping it again, and ask the peer through
    /// the relay to ping us straight back (`Control::Reprobe`): the relay stays a
    /// standby, not a destination. Only a pong ends the re-probe.
    pub(super) fn reprobe_direct(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.reprobed = Some((now, p.awaiting_since.is_some()));
        let relay = p.relay_endpoint();
        debug!(peer = %p.name, endpoint = ?p.endpoint.map(|e| e.to_string()), "direct path quiet: re-probing it");
        let id = self.next_ping();
        self.send_ping(key, id, now);
        if let Some(relay) = relay {
            let id = self.next_ping();
            self.send_control(key, relay, Control::Reprobe(id), now);
        }
    }

    /// Seals a control message on the current session and sends it to `ep`.
    fn send_control(&mut self, key: PublicKey, ep: Endpoint, msg: Control, now: Instant) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let Some(s) = p.sending() else { return };
        p.stats.record_tx(0, now);
        if let Ok(bytes) = s.seal_to_vec(Kind::Data, &msg.to_vec()) {
            self.send_to(ep, &bytes);
        }
    }

    /// Runs the peer's path MTU probing (`node::pmtu`): sends a round's
    /// probes over the current endpoint and republishes the table when the
    /// figure changes.
    pub(super) fn path_mtu(&mut self, key: PublicKey, now: Instant) {
        let id = self.next_ping();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let (Some(s), Some(ep)) = (p.sending(), p.endpoint) else {
            return;
        };
        let moved = p.pmtu.on_endpoint(ep);
        let (probes, changed) = p.pmtu.poll(now, || id);
        if changed {
            info!(peer = %p.name, mtu = p.pmtu.mtu(), endpoint = %ep, "path MTU");
        }
        self.table_dirty |= moved || changed;
        let Some(probes) = probes else { return };
        let mut msg = [0u8; super::tun::TUN_MTU as usize];
        for size in probes.sizes {
            let n = Control::MtuProbe {
                id: probes.id,
                size,
            }
            .write(&mut msg);
            if let Ok(bytes) = s.seal_to_vec(Kind::Data, &msg[..n]) {
                self.send_to(ep, &bytes);
            }
        }
    }

    // ----- ping / pong ------------------------------------------------------

    pub(super) fn send_ping(&mut self, key: PublicKey, id: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let (Some(s), Some(ep)) = (p.sending(), p.endpoint) else {
            p.pending_pings.push(id);
            return;
        };
        p.pings
            .retain(|(_, t)| now.saturating_duration_since(*t) < Duration::from_secs(10));
        p.pings.push((id, now));
        p.stats.record_tx(0, now);
        if let Ok(bytes) = s.seal_to_vec(Kind::Data, &Control::Ping(id).to_vec()) {
            self.send_to(ep, &bytes);
        }
    }

    /// A peer control message that arrived on session `index` from `from`.
    pub fn handle_peer_control(
        &mut self,
        index: u32,
        from: Endpoint,
        payload: &[u8],
        now: Instant,
    ) {
        let Some(msg) = Control::parse(payload) else {
            return;
        };
        let Some(key) = self.peer_of_index(index) else {
            return;
        };
        self.confirm_session(key, index, now);
        match msg {
            Control::MtuProbe { id, size } => {
                // Acknowledge where it came from: the probe tested that path.
                let Some(s) = self.peers.get(&key).and_then(|p| p.sending()) else {
                    return;
                };
                let ack = Control::MtuAck { id, size }.to_vec();
                if let Ok(bytes) = s.seal_to_vec(Kind::Data, &ack) {
                    self.send_to(from, &bytes);
                }
            }
            Control::MtuAck { id, size } => {
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                // Only acks over the path being probed count.
                if p.endpoint == Some(from) && p.pmtu.on_ack(id, size) {
                    info!(peer = %p.name, mtu = p.pmtu.mtu(), endpoint = %from, "path MTU");
                    self.table_dirty = true;
                }
            }
            Control::Probe(id) => {
                // Answer where it came from; do not move: the probe proves
                // only the peer-to-us direction.
                let Some(s) = self.peers.get(&key).and_then(|p| p.sending()) else {
                    return;
                };
                if let Ok(bytes) = s.seal_to_vec(Kind::Data, &Control::ProbeAck(id).to_vec()) {
                    self.send_to(from, &bytes);
                }
            }
            Control::Fallback(_) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.endpoint != Some(from) {
                        info!(peer = %p.name, relay = %from, "peer lost the direct path; following it to the relay");
                        p.fall_back(from, now, now + DIRECT_BAN);
                        bump(&self.counters.relay_fallbacks);
                        self.table_dirty = true;
                    }
                }
            }
            Control::Reprobe(_) => {
                let direct = self
                    .peers
                    .get(&key)
                    .is_some_and(|p| matches!(p.endpoint, Some(Endpoint::Direct(_))));
                if direct {
                    let id = self.next_ping();
                    self.send_ping(key, id, now);
                }
            }
            Control::ProbeAck(_) => {
                let before = self.peers.get(&key).and_then(|p| p.endpoint);
                self.handle_endpoint_seen(index, from, now);
                let Some(p) = self.peers.get(&key) else {
                    return;
                };
                if p.endpoint != before {
                    info!(peer = %p.name, endpoint = %from, "a better path works both ways: moving to it");
                    // Tell the peer now, not with our next data.
                    self.keepalive(key, now);
                }
            }
            Control::Ping(id) => {
                self.handle_endpoint_seen(index, from, now);
                let Some(p) = self.peers.get(&key) else {
                    return;
                };
                let (Some(s), Some(ep)) = (p.sending(), p.endpoint) else {
                    return;
                };
                // A re-probe waits for a pong, and our ping may have gone
                // out before the peer's packet reopened its NAT: ask again.
                let reprobing = p.reprobe_unanswered().is_some();
                p.stats.record_tx(0, now);
                if let Ok(bytes) = s.seal_to_vec(Kind::Data, &Control::Pong(id).to_vec()) {
                    self.send_to(ep, &bytes);
                }
                if reprobing {
                    let id = self.next_ping();
                    self.send_ping(key, id, now);
                }
            }
            Control::Pong(id) => {
                self.handle_endpoint_seen(index, from, now);
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                if let Some(i) = p.pings.iter().position(|(pid, _)| *pid == id) {
                    p.pong_at = Some(now);
                    let (_, sent) = p.pings.swap_remove(i);
                    let rtt = now.saturating_duration_since(sent);
                    p.rtt = Some(rtt);
                    let path = p.path_label();
                    let endpoint = p.endpoint.map(|e| e.to_string()).unwrap_or_default();
                    self.out.push_back(Output::Pong {
                        id,
                        rtt,
                        path,
                        endpoint,
                    });
                }
            }
        }
    }
}
