//! Which endpoint the pair uses: following the peer's authenticated
//! records (roaming), falling back to the relay when the direct path
//! fails, re-probing a quiet direct path, probing to upgrade, keepalives,
//! and path MTU probing on the endpoint in use.

use super::{Env, Peer, MAX_ENDPOINTS};
use crate::dataplane::table::Endpoint;
use crate::node::path_choice;
use crate::node::tun::TUN_MTU;
use crate::proto::control::Control;
use crate::proto::wire::Kind;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// After a direct path failed, do not trust direct endpoints for this long.
const DIRECT_BAN: Duration = Duration::from_secs(30);

impl Peer {
    /// Whether an authenticated packet over `offered` leaves the pair on
    /// its current endpoint: a better-ranked direct one that is not dead.
    pub(super) fn keeps_endpoint(&self, offered: Endpoint, now: Instant) -> bool {
        let Some(current) = self.endpoint else {
            return false;
        };
        let heard = self.stats.last_route_rx().max(self.endpoint_heard);
        let liveness = path_choice::Liveness {
            heard,
            last_rx: self.stats.last_rx(),
            suspected: self.suspected,
        };
        let dead = liveness.dead(now, super::PATH_TIMEOUT);
        path_choice::keeps(&self.candidates, current, offered, dead)
    }

    /// Sends to `ep` from now on: an authenticated packet just came from
    /// it (or a handshake completed over it).
    pub(super) fn move_to(&mut self, ep: Endpoint, now: Instant) {
        self.endpoint = Some(ep);
        self.endpoint_heard = Some(now);
    }

    /// An authenticated record for our session `index` arrived from `from`
    /// (the core checked it does not come through our own tunnel). A
    /// session the peer initiated counts once a record arrives on it; the
    /// endpoint then follows the peer's records: that is the peer's
    /// choice, made after its own checks (a roaming peer, a peer that fell
    /// back to the relay, or one that proved the direct path with a probe).
    /// Upgrade probes themselves never get here. A direct path that failed
    /// us moments ago is not taken back at once, and a live direct
    /// endpoint does not give way to a worse-ranked family (records still
    /// in flight there after an upgrade, a rekey's copy).
    pub fn on_endpoint_seen(&mut self, index: u32, from: Endpoint, env: &mut Env) {
        self.follow(from, env);
        // After the endpoint: what waited for the confirmation goes out
        // there.
        self.confirm(index, env);
    }

    /// Moves to `from`, where an authenticated record came from, if the
    /// rules above allow.
    fn follow(&mut self, from: Endpoint, env: &mut Env) {
        let now = env.now;
        if self.endpoint == Some(from) {
            self.endpoint_heard = Some(now);
            return;
        }
        let take = match (self.endpoint, from) {
            // Anywhere is better than nowhere.
            (None, _) => true,
            (_, Endpoint::Direct(_)) => {
                self.direct_banned_until.is_none_or(|t| now >= t) && !self.keeps_endpoint(from, now)
            }
            // Records still in flight on the relay after both moved to a
            // direct path must not pull us back while direct is alive.
            (Some(Endpoint::Direct(_)), Endpoint::Relay { .. }) => self
                .stats
                .last_direct_rx()
                .is_none_or(|t| now.saturating_duration_since(t) >= super::PATH_TIMEOUT),
            (_, Endpoint::Relay { .. }) => true,
        };
        if take {
            info!(peer = %self.name, old = ?self.endpoint.map(|e| e.to_string()), new = %from, "peer endpoint changed");
            self.move_to(from, now);
            self.last_switch = Some(now);
            self.awaiting_since = None;
            env.dirty();
        }
    }

    /// Moves a pair whose direct path failed to the relay `relay`:
    /// counted, and direct endpoints are distrusted for a while (no
    /// flapping between a half-open path and the relay).
    pub(super) fn fall_back(&mut self, relay: Endpoint, env: &mut Env) {
        self.endpoint = Some(relay);
        self.direct_banned_until = Some(env.now + DIRECT_BAN);
        self.last_switch = Some(env.now);
        self.relay_fallbacks += 1;
        env.count(|c| &c.relay_fallbacks);
        env.dirty();
    }

    /// Falls back from a failed direct path to the relay, if we have one,
    /// and tells the peer through it.
    pub(super) fn fall_back_to_relay(&mut self, env: &mut Env) -> bool {
        let Some(relay_ep) = self.relay_endpoint() else {
            return false;
        };
        if self.endpoint == Some(relay_ep) {
            return false;
        }
        warn!(peer = %self.name, relay = %relay_ep, "direct path stopped answering; falling back to the relay");
        self.fall_back(relay_ep, env);
        self.last_probe = Some(env.now);
        let id = env.ping_id();
        self.send_control(relay_ep, Control::Fallback(id), env);
        true
    }

    /// The last re-probe, while no pong has answered it.
    pub(super) fn reprobe_unanswered(&self) -> Option<(Instant, bool)> {
        self.reprobed
            .filter(|&(at, _)| self.pong_at.is_none_or(|t| t < at))
    }

    /// The direct path went quiet (data or a ping unanswered): before path
    /// health may declare it dead, ping it again, and ask the peer through
    /// the relay to ping us straight back (`Control::Reprobe`): the relay
    /// stays a standby, not a destination. Only a pong ends the re-probe.
    pub(super) fn reprobe_direct(&mut self, env: &mut Env) {
        self.reprobed = Some((env.now, self.awaiting_since.is_some()));
        debug!(peer = %self.name, endpoint = ?self.endpoint.map(|e| e.to_string()), "direct path quiet: re-probing it");
        let id = env.ping_id();
        self.ping(id, env);
        if let Some(relay) = self.relay_endpoint() {
            let id = env.ping_id();
            self.send_control(relay, Control::Reprobe(id), env);
        }
    }

    /// Where upgrade probes go: every direct candidate while relayed; the
    /// candidates of better-ranked families while on a direct endpoint.
    pub(super) fn probe_targets(&self) -> Vec<Endpoint> {
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
    pub(super) fn upgrade_misses(&self) -> u32 {
        match self.upgrade {
            Some((ep, misses)) if Some(ep) == self.endpoint => misses,
            _ => 0,
        }
    }

    /// Probes straight to the peer's direct candidates while we are relayed,
    /// or to the better-ranked ones while on a worse-ranked direct endpoint
    /// (`path_choice`): the peer answers each one from where it arrived,
    /// and an answer that reaches us moves us there; our keepalive then
    /// moves the peer.
    pub(super) fn probe_direct(&mut self, env: &mut Env) {
        self.last_probe = Some(env.now);
        let Some(s) = self.sessions.sending().cloned() else {
            return;
        };
        let targets = self.probe_targets();
        if let Some(ep @ Endpoint::Direct(_)) = self.endpoint {
            let misses = self.upgrade_misses();
            info!(peer = %self.name, endpoint = %ep, ?targets, misses, "probing better-ranked direct candidates");
            self.upgrade = Some((ep, misses.saturating_add(1)));
        }
        let id = env.ping_id();
        for t in targets {
            if let Ok(bytes) = s.seal_to_vec(Kind::Data, &Control::Probe(id).to_vec()) {
                env.send(t, &bytes);
            }
        }
    }

    /// An empty data record: proves liveness, holds NAT bindings, and
    /// teaches the peer our current address.
    pub(super) fn keepalive(&mut self, env: &mut Env) {
        let (Some(s), Some(ep)) = (self.sessions.sending(), self.endpoint) else {
            return;
        };
        if let Ok(bytes) = s.seal_to_vec(Kind::Data, &[]) {
            self.stats.record_tx(0, env.now);
            env.send(ep, &bytes);
        }
    }

    /// Seals a control message on the session we send on and sends it to
    /// `ep`.
    pub(super) fn send_control(&mut self, ep: Endpoint, msg: Control, env: &mut Env) {
        let Some(s) = self.sessions.sending() else {
            return;
        };
        self.stats.record_tx(0, env.now);
        if let Ok(bytes) = s.seal_to_vec(Kind::Data, &msg.to_vec()) {
            env.send(ep, &bytes);
        }
    }

    /// Runs path MTU probing (`node::pmtu`): sends a round's probes over
    /// the current endpoint and republishes the table when the figure
    /// changes.
    pub(super) fn path_mtu(&mut self, env: &mut Env) {
        let (Some(s), Some(ep)) = (self.sessions.sending().cloned(), self.endpoint) else {
            return;
        };
        let id = env.ping_id();
        let moved = self.pmtu.on_endpoint(ep);
        let (probes, changed) = self.pmtu.poll(env.now, || id);
        if changed {
            info!(peer = %self.name, mtu = self.pmtu.mtu(), endpoint = %ep, "path MTU");
        }
        if moved || changed {
            env.dirty();
        }
        let Some(probes) = probes else { return };
        let mut msg = [0u8; TUN_MTU as usize];
        for size in probes.sizes {
            let n = Control::MtuProbe {
                id: probes.id,
                size,
            }
            .write(&mut msg);
            if let Ok(bytes) = s.seal_to_vec(Kind::Data, &msg[..n]) {
                env.send(ep, &bytes);
            }
        }
    }
}
