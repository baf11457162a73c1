//! Per-peer timers: handshake retries, rekeys, relay binds, keepalives and
//! path health (a quiet direct path is re-probed, a dead one is noticed
//! within seconds and the pair falls back to the relay; a relayed pair keeps
//! probing to upgrade to direct).

use super::core::NodeCore;
use super::dns::Resolution as DnsResolution;
use super::path_choice;
use crate::dataplane::table::Endpoint;
use crate::keys::PublicKey;
use crate::proto::signal::Target;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Give up on a handshake after this many initiations.
pub const HANDSHAKE_ATTEMPTS: u32 = 10;
/// The responder of a session rekeys this much later than its initiator
/// would, in case the initiator went quiet.
const RESPONDER_REKEY_DELAY: Duration = Duration::from_secs(30);
/// Data sent with nothing heard back for this long: the path is suspect.
pub const PATH_TIMEOUT: Duration = Duration::from_secs(3);
/// Data or a ping unanswered this long on a direct path: re-probe it
/// (`NodeCore::reprobe_direct`) while `PATH_TIMEOUT` still runs. A NAT
/// mapping that lapsed on the peer's side is open again before the path
/// would be declared dead.
pub const REPROBE_AFTER: Duration = Duration::from_millis(1500);
/// A peer that sent us data hears from us within this long (an empty
/// record if we have nothing to say), so its health check stays quiet.
pub const PASSIVE_KEEPALIVE: Duration = Duration::from_secs(1);
/// While relayed, try the direct candidates this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Rebind relay sessions this often (holds the NAT mapping to the relay).
pub const REBIND_INTERVAL: Duration = Duration::from_secs(25);
const BIND_RETRY: Duration = Duration::from_secs(1);
/// Ask the DC for fresh direction at most this often per peer.
const REDIRECT_INTERVAL: Duration = Duration::from_secs(5);
/// Ask for a fresh relay ticket when this little validity is left.
const TICKET_REFRESH_SECS: u64 = 300;
/// How often the control thread looks at active peers.
pub const ACTIVE_TICK: Duration = Duration::from_millis(250);

impl NodeCore {
    pub(super) fn peer_timers(&mut self, key: PublicKey, now: Instant) {
        self.expire_dns_waiters(key, now);
        self.relay_timers(key, now);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.dialer.timed_out(now) {
            let attempts = p.dialer.attempts();
            if attempts >= HANDSHAKE_ATTEMPTS {
                warn!(peer = %p.name, attempts, "handshake failed: no response");
                if let Some(i) = p.dialer.index() {
                    self.initiations.remove(&i);
                }
                p.dialer.reset();
                p.queue.clear();
            } else {
                self.initiate(key, now);
            }
            if self
                .peers
                .get(&key)
                .is_some_and(|p| p.sessions.current().is_none())
            {
                return;
            }
        }
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        // Reject-after: sessions past their age or count bound go, even if
        // the rekeys that should have replaced them failed.
        if p.sessions.expire(now, self.s.rekey) {
            info!(peer = %p.name, "session expired (no rekey completed in time)");
            self.table_dirty = true;
        }
        // Rekey: the initiator of the current session renews it on time; the
        // responder steps in later in case the initiator went quiet.
        if !p.dialer.in_flight()
            && p.sessions
                .rekey_due(now, self.s.rekey, RESPONDER_REKEY_DELAY)
        {
            debug!(peer = %p.name, "rekeying");
            self.counters.rekeys.fetch_add(1, Ordering::Relaxed);
            self.initiate(key, now);
        }
        self.path_health(key, now);
        self.path_mtu(key, now);
    }

    /// DNS answers that waited long enough go out with the address: the
    /// first packets will find the tunnel or trigger it again.
    fn expire_dns_waiters(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !p.dns_waiters.iter().any(|w| w.deadline <= now) {
            return;
        }
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

    fn relay_timers(&mut self, key: PublicKey, now: Instant) {
        let unix = self.unix_nanos(now) / 1_000_000_000;
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let Some(r) = &p.relay else { return };
        let since_bind = r
            .last_bind
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let due = if r.bound { REBIND_INTERVAL } else { BIND_RETRY };
        let ticket_low = r.grant.expires_unix.saturating_sub(unix) < TICKET_REFRESH_SECS;
        if since_bind >= due {
            self.bind_relay(key, now);
        }
        if ticket_low {
            self.redirect(key, now);
        }
    }

    /// Asks the DC for a fresh direction for this peer (new candidates, a
    /// new relay or ticket), at most every few seconds.
    pub(super) fn redirect(&mut self, key: PublicKey, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.last_redirect
            .is_some_and(|t| now.saturating_duration_since(t) < REDIRECT_INTERVAL)
        {
            return;
        }
        p.last_redirect = Some(now);
        let name = p.name.clone();
        if self.dc.is_up() {
            self.resolve(Target::Name(name), true, None, now);
        }
    }

    fn path_health(&mut self, key: PublicKey, now: Instant) {
        let keepalive = self.s.keepalive;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.sessions.sending().is_none() || p.endpoint.is_none() {
            return;
        }
        let (rx, tx) = (p.stats.last_rx(), p.stats.last_tx());
        let (data_rx, data_tx) = (p.stats.last_data_rx(), p.stats.last_data_tx());
        let since =
            |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));

        // Answer data we got with at least an empty record.
        let passive = data_rx > tx && since(tx) >= PASSIVE_KEEPALIVE;
        // Sent data and heard nothing since: start (or keep) the clock.
        if data_tx.is_some() && data_tx > rx {
            p.awaiting_since.get_or_insert(now);
        } else {
            p.awaiting_since = None;
        }
        // A re-probe for waiting data that no pong answered in time: the
        // peer's own packets (its answer to the relayed request) prove
        // only its direction, not that it hears us.
        let on_direct = matches!(p.endpoint, Some(Endpoint::Direct(_)));
        let unanswered = on_direct
            && p.reprobe_unanswered().is_some_and(|(at, data)| {
                data && now.saturating_duration_since(at) >= PATH_TIMEOUT - REPROBE_AFTER
            });
        let suspect = (unanswered
            || p.awaiting_since
                .is_some_and(|t| now.saturating_duration_since(t) >= PATH_TIMEOUT))
            && p.last_switch
                .is_none_or(|t| now.saturating_duration_since(t) >= PATH_TIMEOUT);
        // Relayed: probe the direct candidates. On a direct endpoint of a
        // worse-ranked family: probe the better ones, backing off.
        let relayed = p.endpoint.is_some_and(|e| e.is_relay());
        let interval = if relayed {
            PROBE_INTERVAL
        } else {
            path_choice::upgrade_interval(p.upgrade_misses())
        };
        let probe = !p.probe_targets().is_empty()
            && p.direct_banned_until.is_none_or(|t| now >= t)
            && p.last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        let persistent = keepalive.is_some_and(|k| since(tx) >= k);
        // Quiet since: the data clock, or the oldest ping (a keepalive)
        // sent since we last heard the peer. Once per quiet spell.
        let ping = p
            .pings
            .iter()
            .map(|&(_, t)| t)
            .filter(|&t| Some(t) > rx)
            .min();
        let quiet = p.awaiting_since.into_iter().chain(ping).min();
        let reprobe = on_direct
            && quiet.is_some_and(|t| {
                now.saturating_duration_since(t) >= REPROBE_AFTER
                    && p.reprobed.is_none_or(|(at, _)| at < t)
            });

        if suspect {
            p.awaiting_since = Some(now);
            p.reprobed = None;
            p.suspected = Some(now);
            p.last_switch = Some(now);
            let name = p.name.clone();
            info!(peer = %name, endpoint = ?p.endpoint.map(|e| e.to_string()), "path not answering");
            if !(on_direct && self.fall_back_to_relay(key, now)) {
                // No relay to fall back to, or the relay path itself is
                // silent: the peer may have moved, restarted (its sessions
                // are gone), or the relay died. Ask the DC, and start a
                // fresh handshake over every path we know.
                self.bind_relay(key, now);
                if self.peers.get(&key).is_some_and(|p| !p.dialer.in_flight()) {
                    self.initiate(key, now);
                }
            }
            self.redirect(key, now);
            return;
        }
        if probe {
            self.probe_direct(key, now);
        }
        if reprobe {
            self.reprobe_direct(key, now);
        } else if persistent {
            let id = self.next_ping();
            self.send_ping(key, id, now);
        } else if passive {
            self.keepalive(key, now);
        }
    }

    /// Whether any peer needs the fast control tick (traffic in flight,
    /// binds pending, handshakes running).
    pub(super) fn any_active(&self, now: Instant) -> bool {
        self.peers.values().any(|p| {
            let recent = |t: Option<Instant>| {
                t.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10))
            };
            recent(p.stats.last_data_rx())
                || recent(p.stats.last_data_tx())
                || p.dialer.in_flight()
                || p.relay.as_ref().is_some_and(|r| !r.bound)
        })
    }
}
