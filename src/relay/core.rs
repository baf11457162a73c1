//! Sans-IO relay logic: a datagram and the time in, one action out.

use crate::metrics::sample::Sample;
use crate::proto::ratelimit::RateLimiter;
use crate::proto::relay::{self, Bind};
use crate::proto::ticket::TicketKey;
use crate::proto::wire::{self, Datagram, Kind};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Most relay sessions held at once; binds beyond it are refused.
pub const MAX_SESSIONS: usize = 65536;

/// A setting a SIGHUP reload changed, applied live by `RelayCore::apply`.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayChange {
    /// The ceiling on any ticket's rate, in Mbit/s (relay.toml
    /// `session_rate_mbps`).
    SessionRateMbps(u64),
}

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the datagram, unchanged, to this address.
    Forward(SocketAddr),
    /// Answer the sender with these bytes.
    Reply(Vec<u8>),
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    BadTicket,
    Expired,
    BadMac,
    Replayed,
    NoSession,
    NotBound,
    RateLimited,
    Full,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::BadTicket,
        DropReason::Expired,
        DropReason::BadMac,
        DropReason::Replayed,
        DropReason::NoSession,
        DropReason::NotBound,
        DropReason::RateLimited,
        DropReason::Full,
    ];

    /// The `reason` label of `ntmtun_relay_dropped_by_reason`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadTicket => "bad_ticket",
            DropReason::Expired => "expired",
            DropReason::BadMac => "bad_mac",
            DropReason::Replayed => "replayed",
            DropReason::NoSession => "no_session",
            DropReason::NotBound => "not_bound",
            DropReason::RateLimited => "rate_limited",
            DropReason::Full => "full",
        }
    }
}

/// Counters for logs and (later) metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RelayStats {
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub binds: u64,
    pub dropped: u64,
    pub rate_limited: u64,
    /// `dropped`, split by `DropReason` (indexed as `DropReason::ALL`).
    pub dropped_by_reason: [u64; 9],
}

/// A token bucket in bytes: `rate` per second, bursts up to one tenth of a
/// second of traffic (at least 256 KiB so GSO-sized bursts pass).
struct Bucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: Self::cap(rate),
            last: now,
        }
    }

    fn cap(rate: u64) -> f64 {
        (rate as f64 / 10.0).max(256.0 * 1024.0)
    }

    fn take(&mut self, bytes: usize, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate as f64).min(Self::cap(self.rate));
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

struct Session {
    expires_unix: u64,
    secrets: [[u8; 32]; 2],
    sides: [Option<SocketAddr>; 2],
    last_bind: [u64; 2],
    /// The rate the ticket grants; the bucket runs at the lower of it and
    /// `max_rate_bytes`.
    ticket_rate: u64,
    bucket: Bucket,
}

pub struct RelayCore {
    key: TicketKey,
    /// Ceiling on any ticket's rate (this relay's `session_rate_mbps`).
    max_rate_bytes: u64,
    sessions: HashMap<u32, Session>,
    /// Binds, probes and pings per source address.
    control_limit: RateLimiter,
    pub stats: RelayStats,
}

impl RelayCore {
    pub fn new(key: TicketKey, max_rate_bytes: u64) -> RelayCore {
        RelayCore {
            control_limit: RateLimiter::new(50, 100, 65536),
            key,
            max_rate_bytes,
            sessions: HashMap::new(),
            stats: RelayStats::default(),
        }
    }

    /// A setting reloaded on SIGHUP; held sessions take the new ceiling too.
    pub fn apply(&mut self, change: RelayChange) {
        match change {
            RelayChange::SessionRateMbps(mbps) => {
                self.max_rate_bytes = mbps * 1_000_000 / 8;
                for s in self.sessions.values_mut() {
                    s.bucket.rate = s.ticket_rate.min(self.max_rate_bytes);
                }
                tracing::info!(rate_mbps = mbps, "session_rate_mbps reloaded");
            }
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Counters and gauges for the metrics endpoint.
    pub fn metrics(&self) -> Vec<Sample> {
        let s = &self.stats;
        let by_reason = DropReason::ALL.iter().map(|r| {
            Sample::counter(
                "ntmtun_relay_dropped_by_reason",
                "Datagrams dropped, by reason.",
                s.dropped_by_reason[*r as usize],
            )
            .label("reason", r.label())
        });
        let mut m = vec![
            Sample::gauge(
                "ntmtun_relay_sessions",
                "Relay sessions held (ticketed pairs).",
                self.sessions.len() as u64,
            ),
            Sample::counter(
                "ntmtun_relay_forwarded_packets",
                "Datagrams forwarded between the sides of a pair.",
                s.forwarded_packets,
            ),
            Sample::counter(
                "ntmtun_relay_forwarded_bytes",
                "Bytes forwarded between the sides of a pair.",
                s.forwarded_bytes,
            ),
            Sample::counter("ntmtun_relay_binds", "Binds accepted.", s.binds),
            Sample::counter(
                "ntmtun_relay_dropped",
                "Datagrams dropped (bad ticket, not bound, malformed, ...).",
                s.dropped,
            ),
            Sample::counter(
                "ntmtun_relay_rate_limited",
                "Datagrams dropped by a rate limit (per ticket or per source).",
                s.rate_limited,
            ),
        ];
        m.extend(by_reason);
        m
    }

    fn drop(&mut self, why: DropReason) -> Action {
        self.stats.dropped += 1;
        self.stats.dropped_by_reason[why as usize] += 1;
        if why == DropReason::RateLimited {
            self.stats.rate_limited += 1;
        }
        Action::Drop(why)
    }

    pub fn handle(&mut self, from: SocketAddr, dgram: &[u8], now: Instant, unix: u64) -> Action {
        // Everything but forwarding costs crypto or answers with more bytes
        // than it got: limited per source.
        let parsed = wire::parse(dgram);
        let forwarding = matches!(parsed, Ok(Datagram::Relayed { .. }));
        if !forwarding && !self.control_limit.allow(from.ip(), now) {
            return self.drop(DropReason::RateLimited);
        }
        match parsed {
            Ok(Datagram::Relayed { sid, .. }) => self.forward(from, sid, dgram.len(), now),
            Ok(Datagram::Relay {
                kind: Kind::RelayBind,
                bytes,
            }) => self.bind(from, bytes, now, unix),
            Ok(Datagram::Relay {
                kind: Kind::RelayProbe,
                bytes,
            }) => match relay::parse_probe(bytes) {
                Some(nonce) => Action::Reply(relay::probe_reply(nonce, from)),
                None => self.drop(DropReason::Malformed),
            },
            Ok(Datagram::Relay {
                kind: Kind::RelayPing,
                bytes,
            }) => match relay::parse_ping(Kind::RelayPing, bytes, &self.key) {
                Some(nonce) => Action::Reply(relay::ping(Kind::RelayPong, nonce, &self.key)),
                None => self.drop(DropReason::BadMac),
            },
            _ => self.drop(DropReason::Malformed),
        }
    }

    /// A `Relayed` frame of `len` bytes for session `sid` from `from`.
    fn forward(&mut self, from: SocketAddr, sid: u32, len: usize, now: Instant) -> Action {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return self.drop(DropReason::NoSession);
        };
        let to = if s.sides[0] == Some(from) {
            s.sides[1]
        } else if s.sides[1] == Some(from) {
            s.sides[0]
        } else {
            // Only a bound side may send: the ticket is not an open door.
            return self.drop(DropReason::NotBound);
        };
        let Some(to) = to else {
            return self.drop(DropReason::NotBound);
        };
        if !s.bucket.take(len, now) {
            return self.drop(DropReason::RateLimited);
        }
        self.stats.forwarded_packets += 1;
        self.stats.forwarded_bytes += len as u64;
        Action::Forward(to)
    }

    fn bind(&mut self, from: SocketAddr, dgram: &[u8], now: Instant, unix: u64) -> Action {
        let Some(b) = Bind::parse(dgram) else {
            return self.drop(DropReason::Malformed);
        };
        let Some(t) = self.key.open(b.ticket) else {
            return self.drop(DropReason::BadTicket);
        };
        if t.expires_unix <= unix {
            return self.drop(DropReason::Expired);
        }
        let side = b.side as usize;
        if !b.verify(&t.secrets[side]) {
            return self.drop(DropReason::BadMac);
        }
        if !self.sessions.contains_key(&t.sid) && self.sessions.len() >= MAX_SESSIONS {
            return self.drop(DropReason::Full);
        }
        let rate = t.rate_bytes.min(self.max_rate_bytes);
        let s = self.sessions.entry(t.sid).or_insert_with(|| Session {
            expires_unix: t.expires_unix,
            secrets: t.secrets,
            sides: [None, None],
            last_bind: [0, 0],
            ticket_rate: t.rate_bytes,
            bucket: Bucket::new(rate, now),
        });
        if s.secrets != t.secrets {
            // A different ticket reusing a live sid: refuse, never merge.
            return self.drop(DropReason::BadTicket);
        }
        if b.timestamp <= s.last_bind[side] {
            return self.drop(DropReason::Replayed);
        }
        s.last_bind[side] = b.timestamp;
        s.expires_unix = s.expires_unix.max(t.expires_unix);
        s.sides[side] = Some(from);
        self.stats.binds += 1;
        Action::Reply(relay::bind_ack(
            b.side,
            t.sid,
            b.timestamp,
            from,
            &t.secrets[side],
        ))
    }

    /// Forgets sessions whose tickets expired.
    pub fn expire(&mut self, unix: u64) {
        self.sessions.retain(|_, s| s.expires_unix > unix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use crate::proto::ticket::Ticket;

    fn setup() -> (RelayCore, TicketKey, Ticket) {
        let dc = PrivateKey::generate();
        let relay = PrivateKey::generate();
        let core = RelayCore::new(TicketKey::derive(&relay, &dc.public_key()), 1 << 30);
        let t = Ticket {
            sid: 9,
            expires_unix: 1000,
            rate_bytes: 1 << 20,
            secrets: [[1; 32], [2; 32]],
        };
        (core, TicketKey::derive(&dc, &relay.public_key()), t)
    }

    fn relayed(sid: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 8];
        wire::put_relayed_header(&mut v, sid);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn binds_then_forwards_both_ways_only_for_bound_sides() {
        let (mut r, k, t) = setup();
        let now = Instant::now();
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "198.51.100.11:1".parse().unwrap(),
            "[2001:db8::12]:2".parse().unwrap(),
            "198.51.100.66:3".parse().unwrap(),
        );
        let sealed = k.seal(&t, [0; 12]);
        let pkt = relayed(9, b"opaque");
        assert_eq!(
            r.handle(a, &pkt, now, 10),
            Action::Drop(DropReason::NoSession)
        );
        let Action::Reply(ack) = r.handle(a, &relay::bind(0, 1, &sealed, &t.secrets[0]), now, 10)
        else {
            panic!()
        };
        assert_eq!(
            relay::parse_bind_ack(&ack, |_, _| Some(t.secrets[0])),
            Some((0, 9, 1, a))
        );
        assert_eq!(
            r.handle(a, &pkt, now, 10),
            Action::Drop(DropReason::NotBound)
        );
        assert!(matches!(
            r.handle(b, &relay::bind(1, 1, &sealed, &t.secrets[1]), now, 10),
            Action::Reply(_)
        ));
        assert_eq!(r.handle(a, &pkt, now, 10), Action::Forward(b));
        assert_eq!(r.handle(b, &pkt, now, 10), Action::Forward(a));
        assert_eq!(
            r.handle(c, &pkt, now, 10),
            Action::Drop(DropReason::NotBound)
        );
    }

    #[test]
    fn refuses_forged_replayed_expired_and_wrong_side_binds() {
        let (mut r, k, t) = setup();
        let now = Instant::now();
        let a: SocketAddr = "198.51.100.11:1".parse().unwrap();
        let sealed = k.seal(&t, [0; 12]);
        // Side 1's secret cannot bind side 0.
        assert_eq!(
            r.handle(a, &relay::bind(0, 1, &sealed, &t.secrets[1]), now, 10),
            Action::Drop(DropReason::BadMac)
        );
        let mut forged = sealed;
        forged[20] ^= 1;
        assert_eq!(
            r.handle(a, &relay::bind(0, 1, &forged, &t.secrets[0]), now, 10),
            Action::Drop(DropReason::BadTicket)
        );
        assert_eq!(
            r.handle(a, &relay::bind(0, 1, &sealed, &t.secrets[0]), now, 2000),
            Action::Drop(DropReason::Expired)
        );
        let bind = relay::bind(0, 5, &sealed, &t.secrets[0]);
        assert!(matches!(r.handle(a, &bind, now, 10), Action::Reply(_)));
        assert_eq!(
            r.handle(a, &bind, now, 10),
            Action::Drop(DropReason::Replayed)
        );
        // Another DC's ticket (different key) is garbage to us.
        let other = TicketKey::derive(
            &PrivateKey::generate(),
            &PrivateKey::generate().public_key(),
        );
        let alien = other.seal(&t, [0; 12]);
        assert_eq!(
            r.handle(a, &relay::bind(0, 9, &alien, &t.secrets[0]), now, 10),
            Action::Drop(DropReason::BadTicket)
        );
        r.expire(1000);
        assert_eq!(r.session_count(), 0);
        // Each drop is counted under its reason, and exported.
        let by = |why: DropReason| r.stats.dropped_by_reason[why as usize];
        assert_eq!(by(DropReason::BadTicket), 2);
        assert_eq!(by(DropReason::BadMac), 1);
        assert_eq!(by(DropReason::Expired), 1);
        assert_eq!(by(DropReason::Replayed), 1);
        assert!(r
            .metrics()
            .iter()
            .any(|m| m.name == "ntmtun_relay_dropped_by_reason"
                && m.labels == [("reason".to_string(), "bad_ticket".to_string())]
                && m.value == 2));
    }

    #[test]
    fn reloaded_rate_applies_to_held_sessions() {
        let (mut r, k, t) = setup();
        let now = Instant::now();
        let (a, b): (SocketAddr, SocketAddr) = (
            "198.51.100.11:1".parse().unwrap(),
            "198.51.100.12:2".parse().unwrap(),
        );
        let sealed = k.seal(&t, [0; 12]);
        r.handle(a, &relay::bind(0, 1, &sealed, &t.secrets[0]), now, 10);
        r.handle(b, &relay::bind(1, 1, &sealed, &t.secrets[1]), now, 10);
        r.apply(RelayChange::SessionRateMbps(1));
        let pkt = relayed(9, &[0u8; 1400]);
        // Empty the burst allowance, then one second at 1 Mbit/s refills
        // 125000 bytes.
        for _ in 0..1000 {
            r.handle(a, &pkt, now, 10);
        }
        let later = now + std::time::Duration::from_secs(1);
        let passed = (0..1000)
            .filter(|_| r.handle(a, &pkt, later, 10) == Action::Forward(b))
            .count();
        let want = 125_000 / pkt.len();
        assert!(
            (want - 1..=want + 1).contains(&passed),
            "passed {passed}, want {want}"
        );
    }

    #[test]
    fn rate_limit_per_ticket() {
        let (mut r, k, mut t) = setup();
        t.rate_bytes = 1000;
        let now = Instant::now();
        let (a, b): (SocketAddr, SocketAddr) = (
            "198.51.100.11:1".parse().unwrap(),
            "198.51.100.12:2".parse().unwrap(),
        );
        let sealed = k.seal(&t, [0; 12]);
        r.handle(a, &relay::bind(0, 1, &sealed, &t.secrets[0]), now, 10);
        r.handle(b, &relay::bind(1, 1, &sealed, &t.secrets[1]), now, 10);
        let pkt = relayed(9, &[0u8; 1400]);
        let passed = (0..1000)
            .filter(|_| r.handle(a, &pkt, now, 10) == Action::Forward(b))
            .count();
        // The burst allowance (256 KiB) passes, then the bucket is dry.
        assert!(passed > 100 && passed < 200, "passed {passed}");
        assert!(r.stats.rate_limited > 0);
        // Ten seconds at 1000 B/s refill 10000 bytes: seven or eight more.
        let later = now + std::time::Duration::from_secs(10);
        let refilled = (0..100)
            .filter(|_| r.handle(a, &pkt, later, 10) == Action::Forward(b))
            .count();
        assert!((7..=8).contains(&refilled), "refilled {refilled}");
    }

    #[test]
    fn probe_and_ping() {
        let (mut r, k, _) = setup();
        let a: SocketAddr = "198.51.100.11:1".parse().unwrap();
        let Action::Reply(rep) = r.handle(a, &relay::probe(4), Instant::now(), 1) else {
            panic!()
        };
        assert_eq!(relay::parse_probe_reply(&rep), Some((4, a)));
        let Action::Reply(pong) =
            r.handle(a, &relay::ping(Kind::RelayPing, 8, &k), Instant::now(), 1)
        else {
            panic!()
        };
        assert_eq!(relay::parse_ping(Kind::RelayPong, &pong, &k), Some(8));
    }
}
