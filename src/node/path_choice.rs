//! Which of a peer's direct endpoints a pair settles on (docs/architecture.md,
//! "Choosing among direct candidates"). Initiations go to every direct
//! candidate at once, so which family a handshake completes on depends on
//! which copy the responder handled first. These rules make the outcome
//! deterministic: the DC ranks the candidates best first, an address ranks
//! with the first candidate of its family, a direct endpoint only gives way
//! to a worse-ranked one once it has gone silent, and a pair on a
//! worse-ranked endpoint probes the better ones (with backoff) and moves up
//! when one answers. Pure: addresses and times in, decisions out.

use crate::dataplane::table::Endpoint;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// First upgrade probe interval while on a direct endpoint that is not of
/// the best-ranked family; it doubles per unanswered probe, up to eight
/// times this.
pub const UPGRADE_FIRST: Duration = Duration::from_secs(5);
const UPGRADE_MAX_DOUBLINGS: u32 = 3;

/// The rank of a direct address among the DC's candidates (best first):
/// the position of the first candidate of the same family, so any address
/// of a family (a roamed peer's new one, say) ranks with that family. A
/// family the DC did not list ranks after all candidates.
pub fn family_rank(candidates: &[SocketAddr], addr: SocketAddr) -> usize {
    candidates
        .iter()
        .position(|c| c.is_ipv4() == addr.is_ipv4())
        .unwrap_or(candidates.len())
}

/// The candidates of families ranked better than `current`'s: where
/// upgrade probes go while the pair uses `current`.
pub fn better(candidates: &[SocketAddr], current: SocketAddr) -> &[SocketAddr] {
    &candidates[..family_rank(candidates, current)]
}

/// How long after the last upgrade probe the next goes out, after
/// `misses` probes on this endpoint that found nothing better.
pub fn upgrade_interval(misses: u32) -> Duration {
    UPGRADE_FIRST * 2u32.pow(misses.min(UPGRADE_MAX_DOUBLINGS))
}

/// What the node has heard over the endpoint it sends to, and from the
/// peer at all.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Last authenticated record from the current endpoint (or the moment
    /// one moved us there).
    pub heard: Option<Instant>,
    /// Last authenticated record from the peer over any path.
    pub last_rx: Option<Instant>,
    /// When path health last found the pair's path not answering (data
    /// sent, nothing back for `PATH_TIMEOUT`).
    pub suspected: Option<Instant>,
}

impl Liveness {
    /// The current endpoint is dead when it has been silent for `timeout`
    /// and either the peer is heard elsewhere or path health found our own
    /// data to it unanswered since. A quiet pair (nothing sent, nothing
    /// heard) is not evidence: its endpoint stays.
    pub fn dead(&self, now: Instant, timeout: Duration) -> bool {
        let silent = self
            .heard
            .is_none_or(|t| now.saturating_duration_since(t) >= timeout);
        silent && (self.last_rx > self.heard || self.suspected > self.heard)
    }
}

/// Whether the pair keeps `current` although an authenticated record (or
/// handshake) came over `offered`: both direct, `offered` of a worse-ranked
/// family, and `current` not dead. Everything else follows `offered` (the
/// relay rules live with the relay, in `tunnel.rs`).
pub fn keeps(candidates: &[SocketAddr], current: Endpoint, offered: Endpoint, dead: bool) -> bool {
    match (current, offered) {
        (Endpoint::Direct(c), Endpoint::Direct(o)) => {
            !dead && family_rank(candidates, o) > family_rank(candidates, c)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn lan() -> Vec<SocketAddr> {
        vec![sa("198.51.100.12:5000"), sa("[2001:db8:100::12]:5000")]
    }

    #[test]
    fn addresses_rank_with_their_family() {
        let c = lan();
        assert_eq!(family_rank(&c, sa("198.51.100.12:5000")), 0);
        assert_eq!(
            family_rank(&c, sa("203.0.113.12:6000")),
            0,
            "roamed, same family"
        );
        assert_eq!(family_rank(&c, sa("[2001:db8:203::12]:5000")), 1);
        assert_eq!(
            family_rank(&c[..1], sa("[2001:db8:100::12]:5000")),
            1,
            "unlisted family last"
        );
        assert_eq!(better(&c, sa("[2001:db8:100::12]:5000")), &c[..1]);
        assert!(better(&c, sa("198.51.100.12:5000")).is_empty());
    }

    #[test]
    fn upgrade_probes_back_off_to_a_bound() {
        assert_eq!(upgrade_interval(0), Duration::from_secs(5));
        assert_eq!(upgrade_interval(1), Duration::from_secs(10));
        assert_eq!(upgrade_interval(3), Duration::from_secs(40));
        assert_eq!(upgrade_interval(100), Duration::from_secs(40));
    }

    #[test]
    fn a_live_better_endpoint_is_kept_a_dead_one_is_not() {
        let c = lan();
        let (v4, v6) = (Endpoint::Direct(c[0]), Endpoint::Direct(c[1]));
        let relay = Endpoint::Relay {
            relay: sa("198.51.100.20:7447"),
            sid: 1,
        };
        assert!(keeps(&c, v4, v6, false));
        assert!(!keeps(&c, v4, v6, true));
        assert!(!keeps(&c, v6, v4, false), "better always moves");
        assert!(
            !keeps(&c, v4, Endpoint::Direct(sa("203.0.113.12:1")), false),
            "same family moves"
        );
        assert!(!keeps(&c, relay, v6, false));
        assert!(!keeps(&c, v4, relay, false));
    }

    #[test]
    fn silence_is_death_only_with_evidence() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(3);
        let at = |s: u64| Some(t0 + Duration::from_secs(s));
        let quiet = Liveness {
            heard: at(0),
            last_rx: at(0),
            suspected: None,
        };
        assert!(
            !quiet.dead(t0 + Duration::from_secs(60), timeout),
            "an idle pair"
        );
        let elsewhere = Liveness {
            last_rx: at(59),
            ..quiet
        };
        assert!(elsewhere.dead(t0 + Duration::from_secs(60), timeout));
        assert!(
            !elsewhere.dead(t0 + Duration::from_secs(2), timeout),
            "heard lately"
        );
        let unanswered = Liveness {
            suspected: at(3),
            ..quiet
        };
        assert!(unanswered.dead(t0 + Duration::from_secs(3), timeout));
        let answered_since = Liveness {
            heard: at(4),
            ..unanswered
        };
        assert!(!answered_since.dead(t0 + Duration::from_secs(60), timeout));
    }
}
