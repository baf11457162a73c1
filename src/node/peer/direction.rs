//! The DC's word about a peer (route decision, candidates, relay grant)
//! and our side of the relay session it granted.

use super::{Env, Peer, RelayLink};
use crate::dataplane::table::{Endpoint, Routes};
use crate::node::loop_guard;
use crate::proto::relay as relay_frames;
use crate::proto::signal::PeerInfo;
use crate::proto::ticket::TICKET_LEN;
use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

impl Peer {
    /// The DC directed us to this peer (again): take its name, path,
    /// candidates and relay grant; bind the relay; and, told to initiate
    /// (punching: both sides send at once), start a handshake even before
    /// there is anything to send.
    pub fn on_direction(
        &mut self,
        info: &PeerInfo,
        prefix: Option<Ipv4Net>,
        routes: &Routes,
        env: &mut Env,
    ) {
        self.name = info.name.clone();
        self.virtual_ip = info.virtual_ip;
        self.path = info.path;
        // A later process of the peer than the one our sessions are with:
        // it restarted. (The DC's word may also be older than a handshake
        // we just made with the new process: then it changes nothing.)
        if self.incarnation != 0 && info.incarnation > self.incarnation {
            self.forget_sessions(env);
            self.incarnation = 0;
        }
        if self.offered != info.endpoints {
            // New candidates: upgrade probing starts over.
            self.upgrade = None;
            self.offered = info.endpoints.clone();
            self.candidates = loop_guard::usable(&self.offered, prefix, routes);
        }
        match (&mut self.relay, info.relay.clone()) {
            (Some(old), Some(grant))
                if old.grant.address == grant.address && old.grant.sid == grant.sid =>
            {
                old.grant = grant; // fresher ticket, same session
            }
            (_, Some(grant)) => {
                self.relay = Some(RelayLink {
                    grant,
                    bound: false,
                    last_bind: None,
                    bind_timestamp: 0,
                });
            }
            (_, None) => self.relay = None,
        }
        self.bind_relay(env);
        if info.initiate && self.sessions.newest().is_none() && !self.dialer.in_flight() {
            self.initiate(env);
        }
    }

    /// The DC says the peer restarted: the sessions with it are gone at its
    /// end, and records sent on them would be lost. Forget them and the
    /// endpoint (a new process, maybe a new port); what is sent next waits
    /// for a fresh handshake.
    fn forget_sessions(&mut self, env: &mut Env) {
        info!(peer = %self.name, "peer restarted: forgetting the sessions with it");
        self.sessions.clear();
        self.dialer.reset();
        self.endpoint = None;
        self.last_response = None;
        self.pings.clear();
        // Path health judged the old process's paths; the new one starts
        // with a clean slate (a direct path banned after the old process
        // died would keep the new one's records from moving us there).
        self.awaiting_since = None;
        self.suspected = None;
        self.direct_banned_until = None;
        self.last_switch = None;
        self.reprobed = None;
        self.upgrade = None;
        env.dirty();
    }

    /// Re-derives the usable candidates after the virtual prefix or the
    /// routed LANs changed, and leaves a direct endpoint that a new route
    /// now pulls into our own TUN (for the relay, or the first usable
    /// candidate).
    pub fn refresh_candidates(&mut self, prefix: Option<Ipv4Net>, routes: &Routes, env: &mut Env) {
        let usable = loop_guard::usable(&self.offered, prefix, routes);
        if usable != self.candidates {
            if usable.len() < self.offered.len() {
                debug!(peer = %self.name, offered = ?self.offered, ?usable, "candidates inside our own tunnel left out");
            }
            self.candidates = usable;
            self.upgrade = None;
        }
        if let Some(Endpoint::Direct(a)) = self.endpoint {
            if loop_guard::tunnelled(a, prefix, routes) {
                let next = self
                    .relay_endpoint()
                    .or_else(|| self.candidates.first().map(|&c| Endpoint::Direct(c)));
                warn!(peer = %self.name, endpoint = %a, next = ?next.map(|e| e.to_string()), "peer endpoint is now routed into our own tunnel: leaving it");
                self.endpoint = next;
                self.upgrade = None;
                env.dirty();
            }
        }
    }

    /// Sends (or refreshes) our bind to the peer's relay session.
    pub(super) fn bind_relay(&mut self, env: &mut Env) {
        let Some(r) = &mut self.relay else { return };
        let Ok(ticket) = <[u8; TICKET_LEN]>::try_from(r.grant.ticket.as_slice()) else {
            warn!(peer = %self.name, "malformed relay ticket from the DC");
            return;
        };
        r.bind_timestamp = env.unix.max(r.bind_timestamp + 1);
        r.last_bind = Some(env.now);
        let bytes = relay_frames::bind(r.grant.side, r.bind_timestamp, &ticket, &r.grant.secret);
        let to = r.grant.address;
        env.emit(crate::node::output::Output::Udp { to, bytes });
    }

    /// The relay acknowledged our bind with timestamp `ts` (the core
    /// checked its MAC with `relay_secret`).
    pub fn on_bind_ack(&mut self, ts: u64, env: &mut Env) {
        let Some(r) = &mut self.relay else { return };
        if ts != r.bind_timestamp || r.bound {
            r.bound = true;
            return;
        }
        r.bound = true;
        let relay_ep = r.endpoint();
        debug!(peer = %self.name, relay = %r.grant.address, sid = r.grant.sid, "relay session bound");
        // Already relayed through another relay (failover): move over now.
        let moved = self.endpoint.is_some_and(|e| e.is_relay() && e != relay_ep);
        if moved {
            info!(peer = %self.name, relay = %relay_ep, "moving to the new relay");
            self.endpoint = Some(relay_ep);
            env.dirty();
            self.keepalive(env);
        }
        // An initiation waiting for the relay goes out through it now, if
        // its targets include the relay: the same one (a new attempt would make the answer to the first, maybe
        // already on its way over a direct path, arrive for nothing).
        let due = self
            .initiation_targets(self.dialer.attempts())
            .contains(&relay_ep);
        if due && self.sessions.newest().is_none() {
            if let Some(message) = self.dialer.message() {
                let message = message.to_vec();
                env.send(relay_ep, &message);
            }
        }
    }

    /// The bound relay endpoint, if any.
    pub(super) fn relay_endpoint(&self) -> Option<Endpoint> {
        self.relay
            .as_ref()
            .filter(|r| r.bound)
            .map(RelayLink::endpoint)
    }

    /// Our host's addresses changed (`moved`) or not: either way the peer
    /// hears from us (an authenticated packet from a new address is what
    /// moves it); after a move, the relay is rebound, old verdicts on
    /// direct paths forgotten, and the DC asked for fresh direction.
    pub fn on_network_change(&mut self, moved: bool, env: &mut Env) {
        self.keepalive(env);
        if moved {
            self.bind_relay(env);
            self.last_redirect = None;
            self.direct_banned_until = None;
            self.upgrade = None;
            self.redirect(env);
        }
    }
}
