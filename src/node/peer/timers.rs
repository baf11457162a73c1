//! Per-peer timers: handshake retries, rekeys, relay binds, keepalives and
//! path health (a quiet direct path is re-probed, a dead one is noticed
//! within seconds and the pair falls back to the relay; a relayed pair keeps
//! probing to upgrade to direct).

use super::{Ask, Env, Peer};
use crate::dataplane::table::Endpoint;
use crate::node::path_choice;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Give up on a handshake after this many initiations.
const HANDSHAKE_ATTEMPTS: u32 = 10;
/// The responder of a session rekeys this much later than its initiator
/// would, in case the initiator went quiet.
const RESPONDER_REKEY_DELAY: Duration = Duration::from_secs(30);
/// Data sent with nothing heard back for this long: the path is suspect.
pub const PATH_TIMEOUT: Duration = Duration::from_secs(3);
/// Data or a ping unanswered this long on a direct path: re-probe it
/// (`Peer::reprobe_direct`) while `PATH_TIMEOUT` still runs. A NAT
/// mapping that lapsed on the peer's side is open again before the path
/// would be declared dead.
const REPROBE_AFTER: Duration = Duration::from_millis(1500);
/// A peer that sent us data hears from us within this long (an empty
/// record if we have nothing to say), so its health check stays quiet.
const PASSIVE_KEEPALIVE: Duration = Duration::from_secs(1);
/// While relayed, try the direct candidates this often.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Rebind relay sessions this often (holds the NAT mapping to the relay).
const REBIND_INTERVAL: Duration = Duration::from_secs(25);
const BIND_RETRY: Duration = Duration::from_secs(1);
/// Ask the DC for fresh direction at most this often per peer.
const REDIRECT_INTERVAL: Duration = Duration::from_secs(5);
/// Ask for a fresh relay ticket when this little validity is left.
const TICKET_REFRESH_SECS: u64 = 300;
/// How often the control thread looks at active peers.
pub const ACTIVE_TICK: Duration = Duration::from_millis(250);

impl Peer {
    /// Runs the peer's timers.
    pub fn on_timer(&mut self, env: &mut Env) {
        let now = env.now;
        self.expire_dns_waiters(env);
        self.relay_timers(env);
        if self.dialer.timed_out(now) {
            let attempts = self.dialer.attempts();
            if attempts >= HANDSHAKE_ATTEMPTS {
                warn!(peer = %self.name, attempts, "handshake failed: no response");
                self.dialer.reset();
                self.queue.clear();
            } else {
                self.initiate(env);
            }
            if self.sessions.newest().is_none() {
                return;
            }
        }
        // Reject-after: sessions past their age or count bound go, even if
        // the rekeys that should have replaced them failed.
        if self.sessions.expire(now, env.rekey) {
            info!(peer = %self.name, "session expired (no rekey completed in time)");
            env.dirty();
        }
        // Rekey: the initiator of the current session renews it on time; the
        // responder steps in later in case the initiator went quiet.
        if !self.dialer.in_flight()
            && self
                .sessions
                .rekey_due(now, env.rekey, RESPONDER_REKEY_DELAY)
        {
            debug!(peer = %self.name, "rekeying");
            env.count(|c| &c.rekeys);
            self.initiate(env);
        }
        // Something waits for a tunnel that nothing is building (a
        // handshake we let the peer's win, whose confirming record was
        // lost): build one once the wait for the record is over.
        let waiting = !self.queue.is_empty() || !self.dns_waiters.is_empty();
        if waiting && !self.is_up() && !self.dialer.in_flight() {
            self.ensure_tunnel(env);
        }
        self.path_health(env);
        self.path_mtu(env);
    }

    /// DNS answers that waited long enough go out with the address: the
    /// first packets will find the tunnel or trigger it again.
    fn expire_dns_waiters(&mut self, env: &mut Env) {
        let now = env.now;
        if !self.dns_waiters.iter().any(|w| w.deadline <= now) {
            return;
        }
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.dns_waiters)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.dns_waiters = keep;
        for w in late {
            env.ask(Ask::Dns(Box::new(w), self.dns_answer()));
        }
    }

    fn relay_timers(&mut self, env: &mut Env) {
        let unix = env.unix / 1_000_000_000;
        let Some(r) = &self.relay else { return };
        let since_bind = r
            .last_bind
            .map_or(Duration::MAX, |t| env.now.saturating_duration_since(t));
        let due = if r.bound { REBIND_INTERVAL } else { BIND_RETRY };
        let ticket_low = r.grant.expires_unix.saturating_sub(unix) < TICKET_REFRESH_SECS;
        if since_bind >= due {
            self.bind_relay(env);
        }
        if ticket_low {
            self.redirect(env);
        }
    }

    /// Asks the DC for a fresh direction for this peer (new candidates, a
    /// new relay or ticket), at most every few seconds.
    pub(super) fn redirect(&mut self, env: &mut Env) {
        if self
            .last_redirect
            .is_some_and(|t| env.now.saturating_duration_since(t) < REDIRECT_INTERVAL)
        {
            return;
        }
        self.last_redirect = Some(env.now);
        env.ask(Ask::Redirect(self.name.clone()));
    }

    fn path_health(&mut self, env: &mut Env) {
        let (now, keepalive) = (env.now, env.keepalive);
        if self.sessions.sending().is_none() || self.endpoint.is_none() {
            return;
        }
        let (rx, tx) = (self.stats.last_rx(), self.stats.last_tx());
        let (data_rx, data_tx) = (self.stats.last_data_rx(), self.stats.last_data_tx());
        let since =
            |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));

        // Answer data we got with at least an empty record.
        let passive = data_rx > tx && since(tx) >= PASSIVE_KEEPALIVE;
        // Sent data and heard nothing since: start (or keep) the clock.
        if data_tx.is_some() && data_tx > rx {
            self.awaiting_since.get_or_insert(now);
        } else {
            self.awaiting_since = None;
        }
        // A re-probe for waiting data that no pong answered in time: the
        // peer's own packets (its answer to the relayed request) prove
        // only its direction, not that it hears us.
        let on_direct = matches!(self.endpoint, Some(Endpoint::Direct(_)));
        let unanswered = on_direct
            && self.reprobe_unanswered().is_some_and(|(at, data)| {
                data && now.saturating_duration_since(at) >= PATH_TIMEOUT - REPROBE_AFTER
            });
        let suspect = (unanswered
            || self
                .awaiting_since
                .is_some_and(|t| now.saturating_duration_since(t) >= PATH_TIMEOUT))
            && self
                .last_switch
                .is_none_or(|t| now.saturating_duration_since(t) >= PATH_TIMEOUT);
        // Relayed: probe the direct candidates. On a direct endpoint of a
        // worse-ranked family: probe the better ones, backing off.
        let relayed = self.endpoint.is_some_and(|e| e.is_relay());
        let interval = if relayed {
            PROBE_INTERVAL
        } else {
            path_choice::upgrade_interval(self.upgrade_misses())
        };
        let probe = !self.probe_targets().is_empty()
            && self.direct_banned_until.is_none_or(|t| now >= t)
            && self
                .last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        let persistent = keepalive.is_some_and(|k| since(tx) >= k);
        // Quiet since: the data clock, or the oldest ping (a keepalive)
        // sent since we last heard the peer. Once per quiet spell.
        let ping = self
            .pings
            .iter()
            .map(|&(_, t)| t)
            .filter(|&t| Some(t) > rx)
            .min();
        let quiet = self.awaiting_since.into_iter().chain(ping).min();
        let reprobe = on_direct
            && quiet.is_some_and(|t| {
                now.saturating_duration_since(t) >= REPROBE_AFTER
                    && self.reprobed.is_none_or(|(at, _)| at < t)
            });

        if suspect {
            self.awaiting_since = Some(now);
            self.reprobed = None;
            self.suspected = Some(now);
            self.last_switch = Some(now);
            info!(peer = %self.name, endpoint = ?self.endpoint.map(|e| e.to_string()), "path not answering");
            if !(on_direct && self.fall_back_to_relay(env)) {
                // No relay to fall back to, or the relay path itself is
                // silent: the peer may have moved, restarted (its sessions
                // are gone), or the relay died. Ask the DC, and start a
                // fresh handshake over every path we know.
                self.bind_relay(env);
                if !self.dialer.in_flight() {
                    self.initiate(env);
                }
            }
            self.redirect(env);
            return;
        }
        if probe {
            self.probe_direct(env);
        }
        if reprobe {
            self.reprobe_direct(env);
        } else if persistent {
            let id = env.ping_id();
            self.ping(id, env);
        } else if passive {
            self.keepalive(env);
        }
    }

    /// Whether the peer needs the fast control tick (traffic in flight, a
    /// bind pending, a handshake running).
    pub fn active(&self, now: Instant) -> bool {
        let recent = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10))
        };
        recent(self.stats.last_data_rx())
            || recent(self.stats.last_data_tx())
            || self.dialer.in_flight()
            || self.relay.as_ref().is_some_and(|r| !r.bound)
    }
}
