//! Handshakes with the peer: ours (`Dialer`: where initiations go, cookie
//! replies, the authenticated response) and the peer's (answered once the
//! node's gate and the Noise read passed), key confirmation, and what waits
//! for the tunnel going out once it is up.

use super::{Ask, Env, Peer, MAX_ENDPOINTS};
use crate::dataplane::table::Endpoint;
use crate::proto::handshake::Responder;
use crate::proto::link::{CookieOutcome, Crossing, Response};
use crate::proto::signal::{self, Path, PeerHello, PeerReply};
use crate::proto::wire::Kind;
use std::time::Duration;
use tracing::{debug, info, warn};

/// A session the peer initiated waits this long for its first record
/// before we start a handshake of our own.
const CONFIRM_WAIT: Duration = Duration::from_secs(1);

impl Peer {
    /// Starts a handshake unless the tunnel is up, a handshake is in flight
    /// or a session the peer just initiated awaits its first record; then
    /// delivers whatever waits if the tunnel is already up.
    pub fn ensure_tunnel(&mut self, env: &mut Env) {
        let confirming = self
            .sessions
            .unconfirmed_since()
            .is_some_and(|at| env.now.saturating_duration_since(at) < CONFIRM_WAIT);
        if self.is_up() {
            self.flush(env);
        } else if !self.dialer.in_flight() && !confirming {
            self.initiate(env);
        }
    }

    /// Sends a new handshake initiation to the peer (replacing any in
    /// flight); where it goes depends on how many went unanswered.
    pub(in crate::node) fn initiate(&mut self, env: &mut Env) {
        let index = env.index();
        let timestamp = self.dialer.timestamp(env.unix);
        let hello = PeerHello {
            timestamp,
            incarnation: env.incarnation,
        };
        let Ok(payload) = signal::encode(&hello) else {
            return;
        };
        let bytes = match self.dialer.start(env.key, index, &payload, env.now) {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => {
                warn!(peer = %self.name, error = %e, "cannot start handshake");
                return;
            }
        };
        let attempts = self.dialer.attempts();
        let targets = self.initiation_targets(attempts);
        debug!(peer = %self.name, ?targets, attempts, "sending handshake initiation");
        for t in targets {
            env.send(t, &bytes);
        }
    }

    /// Where a handshake initiation goes on attempt `attempts`: the direct
    /// candidates (unless the DC said only a relay can work), and the relay
    /// once bound if the DC chose it or direct attempts are not answering.
    pub(super) fn initiation_targets(&self, attempts: u32) -> Vec<Endpoint> {
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

    /// Direct endpoints worth trying: the known-good one first.
    pub(super) fn direct_targets(&self) -> Vec<Endpoint> {
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

    /// The peer's initiation, through the node's gate and read: answer it
    /// unless it replays an older one (the same one over another path gets
    /// the same answer there, so the initiator completes on whichever path
    /// works) or crosses ours and loses (`Crossing`: then ours goes again). Neither the endpoint nor the session we send on changes
    /// until the first authentic record on the new session (key
    /// confirmation), so a replayed initiation moves nothing.
    pub fn on_initiation(
        &mut self,
        from: Endpoint,
        resp: Responder,
        hello: PeerHello,
        env: &mut Env,
    ) {
        if hello.timestamp == self.last_hello {
            if let Some(bytes) = &self.last_response {
                debug!(peer = %self.name, endpoint = %from, "same initiation over another path: same answer");
                let bytes = bytes.clone();
                env.send(from, &bytes);
            }
            return;
        }
        if hello.timestamp < self.last_hello {
            debug!(peer = %self.name, "replayed handshake initiation dropped");
            return;
        }
        if let Crossing::Resend(ours) = self.dialer.on_crossing(&env.public) {
            debug!(peer = %self.name, endpoint = %from, "both ends dialled at once: ours wins, sent again");
            let ours = ours.to_vec();
            env.send(from, &ours);
            return;
        }
        let index = env.index();
        let Ok(reply) = signal::encode(&PeerReply {
            incarnation: env.incarnation,
        }) else {
            return;
        };
        match resp.reply(Kind::HandshakeResp, index, &reply) {
            Ok((session, bytes)) => {
                self.last_hello = hello.timestamp;
                self.incarnation = self.incarnation.max(hello.incarnation);
                info!(peer = %self.name, endpoint = %from, "tunnel up (responder)");
                self.sessions.install(session, env.now, false);
                env.dirty();
                env.count(|c| &c.handshakes_answered);
                env.send(from, &bytes);
                self.last_response = Some(bytes);
            }
            Err(e) => warn!(error = %e, "cannot answer handshake"),
        }
    }

    /// A peer under load answered our initiation with a cookie: keep it,
    /// and send the same initiation once more with mac2, to where the
    /// reply came from. Forged replies do not open and are ignored.
    pub fn on_cookie_reply(&mut self, from: Endpoint, datagram: &[u8], env: &mut Env) {
        match self.dialer.on_cookie_reply(datagram, env.now) {
            CookieOutcome::Resend(message) => {
                env.count(|c| &c.cookies_received);
                debug!(peer = %self.name, %from, "peer is under load: retrying with its cookie");
                env.send(from, &message);
            }
            CookieOutcome::Kept => env.count(|c| &c.cookies_received),
            CookieOutcome::Ignored => {
                debug!(%from, peer = %self.name, "cookie reply that does not open dropped");
            }
        }
    }

    /// A response to our initiation. Only an authentic one completes the
    /// handshake; it proves the path it came over, so the pair moves there
    /// unless its current endpoint ranks better and still answers
    /// (`path_choice`). The old session stays for records in flight.
    pub fn on_response(
        &mut self,
        from: Endpoint,
        sender: u32,
        receiver: u32,
        noise: &[u8],
        env: &mut Env,
    ) {
        match self.dialer.on_response(sender, receiver, noise) {
            Response::Done(session, reply) => {
                info!(peer = %self.name, endpoint = %from, "tunnel up (initiator)");
                if let Ok(r) = signal::decode::<PeerReply>(&reply) {
                    self.incarnation = self.incarnation.max(r.incarnation);
                }
                if !self.keeps_endpoint(from, env.now) {
                    self.move_to(from, env.now);
                }
                self.sessions.install(*session, env.now, true);
                self.awaiting_since = None;
                env.dirty();
                // Key confirmation: the responder sends on this session
                // only after a record on it, so one goes now.
                if !self.flush(env) {
                    self.keepalive(env);
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
    pub(super) fn flush(&mut self, env: &mut Env) -> bool {
        let (Some(session), Some(ep)) = (self.sessions.sending().cloned(), self.endpoint) else {
            return false;
        };
        for w in std::mem::take(&mut self.dns_waiters) {
            env.ask(Ask::Dns(Box::new(w), self.dns_answer()));
        }
        let pings = std::mem::take(&mut self.pending_pings);
        let sent = !self.queue.is_empty() || !pings.is_empty();
        for pkt in std::mem::take(&mut self.queue) {
            if let Ok(bytes) = session.seal_to_vec(Kind::Data, &pkt) {
                self.stats.record_tx(pkt.len(), env.now);
                env.send(ep, &bytes);
            }
        }
        for id in pings {
            self.ping(id, env);
        }
        sent
    }

    /// The first authentic record on a session the peer initiated arrived:
    /// it becomes the one we send on, and what waited for it goes out.
    pub(super) fn confirm(&mut self, index: u32, env: &mut Env) {
        if self.sessions.confirm(index) {
            debug!(peer = %self.name, index, "session confirmed by the peer's first record");
            env.dirty();
            self.flush(env);
        }
    }
}
