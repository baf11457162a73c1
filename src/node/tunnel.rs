//! The node's tunnel side, as a router: node-to-node datagrams and events
//! go to the peer they belong to (by key, by our session index, by relay
//! session), after the checks that belong to the node rather than to one
//! peer: the responder's gate and Noise read, and the loop guard. What a
//! peer does with them is in `node::peer`.

use super::core::NodeCore;
use super::counters::bump;
use super::loop_guard::tunnelled;
use super::peer::{Ask, Env, Ids, Peer};
use crate::dataplane::table::{Endpoint, PeerStats};
use crate::keys::PublicKey;
use crate::proto::control::Control;
use crate::proto::cookie;
use crate::proto::handshake::Responder;
use crate::proto::link::Verdict;
use crate::proto::relay as relay_frames;
use crate::proto::signal::{self, PeerHello, PeerInfo, Target};
use crate::proto::wire::Kind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

impl NodeCore {
    /// Runs `f` on the peer with key `key`, with the node's environment;
    /// then keeps the index map in step with the peer's indexes and carries
    /// out what the peer asked of the node.
    pub(super) fn with_peer<R>(
        &mut self,
        key: PublicKey,
        now: Instant,
        f: impl FnOnce(&mut Peer, &mut Env) -> R,
    ) -> Option<R> {
        let unix = self.unix_nanos(now);
        let peer = self.peers.get_mut(&key)?;
        let before = peer.indexes();
        let mut env = Env {
            now,
            unix,
            key: &self.s.key,
            public: self.public,
            incarnation: self.s.unix_nanos_at_start,
            keepalive: self.s.keepalive,
            rekey: self.s.rekey,
            counters: &self.counters,
            ids: Ids {
                indexes: &mut self.indexes,
                taken: &self.owners,
                ping: &mut self.next_ping,
            },
            sink: &mut self.sink,
        };
        let r = f(peer, &mut env);
        let after = peer.indexes();
        if before != after {
            for i in before.into_iter().flatten() {
                self.owners.remove(&i);
            }
            for i in after.into_iter().flatten() {
                self.owners.insert(i, key);
            }
        }
        self.run_asks(now);
        Some(r)
    }

    /// Carries out what peers asked of the node.
    fn run_asks(&mut self, now: Instant) {
        for ask in std::mem::take(&mut self.sink.asks) {
            match ask {
                Ask::Dns(waiter, answer) => self.reply_dns(&waiter, &answer),
                Ask::Redirect(name) => {
                    if self.dc.is_up() {
                        self.resolve(Target::Name(name), true, None, now);
                    }
                }
            }
        }
    }

    /// The peer that owns our index `index` (a session or an initiation).
    pub(super) fn peer_of_index(&self, index: u32) -> Option<PublicKey> {
        self.owners.get(&index).copied()
    }

    /// Forgets a peer and the indexes that routed to it.
    fn remove_peer(&mut self, key: PublicKey) {
        if let Some(p) = self.peers.remove(&key) {
            for i in p.indexes().into_iter().flatten() {
                self.owners.remove(&i);
            }
            self.sink.table_dirty = true;
        }
    }

    /// Adds or updates a peer from the DC's direction.
    pub(super) fn upsert_peer(&mut self, info: &PeerInfo, now: Instant) -> PublicKey {
        let key = PublicKey(info.public_key);
        // A virtual address now held by another key: forget the old peer.
        if let Some(old) = self.by_vip.get(&info.virtual_ip).copied() {
            if old != key {
                self.remove_peer(old);
            }
        }
        self.by_vip.insert(info.virtual_ip, key);
        let epoch = self.start;
        self.peers.entry(key).or_insert_with(|| {
            Peer::new(
                info.name.clone(),
                info.virtual_ip,
                key,
                Arc::new(PeerStats::new(epoch)),
            )
        });
        let (prefix, routes) = (self.prefix, self.routes.clone());
        self.with_peer(key, now, |p, env| {
            p.on_direction(info, prefix, &routes, env)
        });
        key
    }

    /// Starts a handshake with `key` now, whatever its state.
    #[cfg(test)]
    pub(super) fn initiate(&mut self, key: PublicKey, now: Instant) {
        self.with_peer(key, now, Peer::initiate);
    }

    /// The relay acknowledged a bind.
    pub(super) fn on_bind_ack(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let ack = relay_frames::parse_bind_ack(datagram, |sid, side| {
            self.peers
                .values()
                .find_map(|p| p.relay_secret(from, sid, side))
        });
        let Some((_, sid, ts, _seen)) = ack else {
            debug!(%from, "unauthenticated bind ack dropped");
            return;
        };
        let Some(key) = self
            .peers
            .values()
            .find(|p| p.relay_session(from, sid))
            .map(Peer::key)
        else {
            return;
        };
        self.with_peer(key, now, |p, env| p.on_bind_ack(ts, env));
    }

    /// A handshake initiation: the gate (`proto::link`: mac1, a cookie
    /// under load, the per-source limit) before any Diffie-Hellman, then
    /// the Noise read, then the peer (the DC must have directed its key to
    /// us). Relayed initiations come from the one other node of a ticketed
    /// pair, within the ticket's rate: no address to prove.
    pub(super) fn on_handshake_init(&mut self, from: Endpoint, datagram: &[u8], now: Instant) {
        bump(&self.counters.handshakes_received);
        let source = match from {
            Endpoint::Direct(addr) => Some(addr),
            Endpoint::Relay { .. } => None,
        };
        match self.gate.check(Kind::CookieReply, datagram, source, now) {
            Verdict::Proceed => {}
            Verdict::Cookie(reply) => {
                bump(&self.counters.handshakes_cookie_replied);
                let (to, bytes) = from.wrap(&reply);
                self.sink
                    .out
                    .push_back(super::output::Output::Udp { to, bytes });
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
        if !self.peers.contains_key(&key) {
            debug!(%from, peer = %key.short(), "handshake from a key the DC has not directed to us: dropped");
            self.undirected_handshakes += 1;
            return;
        }
        self.with_peer(key, now, |p, env| p.on_initiation(from, resp, hello, env));
    }

    /// A cookie reply to one of our initiations.
    pub(super) fn on_cookie_reply(&mut self, from: Endpoint, datagram: &[u8], now: Instant) {
        let owner = cookie::reply_receiver(datagram).and_then(|r| self.peer_of_index(r));
        let Some(key) = owner else {
            debug!(%from, "cookie reply for no initiation in flight");
            return;
        };
        self.with_peer(key, now, |p, env| p.on_cookie_reply(from, datagram, env));
    }

    pub(super) fn on_handshake_resp(
        &mut self,
        from: Endpoint,
        sender: u32,
        receiver: u32,
        noise: &[u8],
        now: Instant,
    ) {
        let Some(key) = self.peer_of_index(receiver) else {
            debug!(%from, "handshake response for no initiation in flight");
            return;
        };
        self.with_peer(key, now, |p, env| {
            p.on_response(from, sender, receiver, noise, env)
        });
    }

    /// An authenticated record for our session `index` arrived from `from`,
    /// which is not the endpoint the workers knew.
    pub fn handle_endpoint_seen(&mut self, index: u32, from: Endpoint, now: Instant) {
        if matches!(from, Endpoint::Direct(a) if self.looped(a)) {
            return;
        }
        if let Some(key) = self.peer_of_index(index) {
            self.with_peer(key, now, |p, env| p.on_endpoint_seen(index, from, env));
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
        if matches!(from, Endpoint::Direct(a) if self.looped(a)) {
            return;
        }
        if let Some(key) = self.peer_of_index(index) {
            self.with_peer(key, now, |p, env| p.on_control(index, from, msg, env));
        }
    }

    /// Re-derives every peer's usable candidates; after the virtual prefix
    /// or the routed LANs changed.
    pub(super) fn refresh_candidates(&mut self, now: Instant) {
        let (prefix, routes) = (self.prefix, self.routes.clone());
        let keys: Vec<_> = self.peers.keys().copied().collect();
        for key in keys {
            self.with_peer(key, now, |p, env| {
                p.refresh_candidates(prefix, &routes, env)
            });
        }
    }

    /// Whether a datagram from `from` came through our own tunnel; counts it.
    pub(super) fn looped(&self, from: SocketAddr) -> bool {
        let looped = tunnelled(from, self.prefix, &self.routes);
        if looped {
            bump(&self.counters.looped);
            debug!(%from, "datagram from an address we route into the TUN dropped (tunnel inside itself)");
        }
        looped
    }
}
