//! Path MTU to one peer, found by probing inside the tunnel (in the spirit
//! of RFC 8899, packetization-layer PMTU discovery): the underlay's ICMP may
//! be dropped anywhere, so the node never relies on it. A round sends
//! padded probes of several inner sizes (with DF, as every data datagram
//! has); the largest the peer acknowledges is the path's inner MTU. Packets
//! larger than that are answered from the TUN side (ICMP fragmentation
//! needed) and TCP SYNs are clamped, so applications fit the path.
//!
//! Until the first round ends, the figure is the ceiling the underlay's
//! family allows on a 1500-byte link; rounds run when a peer's endpoint
//! changes and every `REPROBE` (30 s) while traffic flows.

use crate::dataplane::table::Endpoint;
use std::time::{Duration, Instant};

/// Record overhead inside the UDP payload: header (16) + tag (16).
const RECORD_OVERHEAD: u16 = 32;
/// The relay's header in front of relayed records.
const RELAYED_OVERHEAD: u16 = 8;
const UDP_HEADER: u16 = 8;
/// The underlay MTU assumed until probing says otherwise.
const UNDERLAY_MTU: u16 = 1500;
/// Inner sizes probed below the ceiling, largest first. The smallest is
/// IPv4's minimum reassembly size: every path must carry it.
const STEPS: [u16; 9] = [1400, 1360, 1320, 1280, 1220, 1160, 1000, 800, 576];
/// Probes of a round are sent twice (loss happens); the round ends after
/// `ROUND_TIME`.
const RESEND_AFTER: Duration = Duration::from_millis(600);
const ROUND_TIME: Duration = Duration::from_millis(1500);
/// Probe again this often while the peer is in use: a path can narrow
/// (a route change behind a router that drops ICMP) or grow back. A round
/// is a dozen datagrams.
pub const REPROBE: Duration = Duration::from_secs(30);

/// The inner MTU a 1500-byte underlay allows towards `ep`, capped at the
/// TUN's MTU.
pub fn ceiling(ep: Endpoint, tun_mtu: u16) -> u16 {
    let ip = if ep.addr().is_ipv4() { 20 } else { 40 };
    let relay = if ep.is_relay() { RELAYED_OVERHEAD } else { 0 };
    (UNDERLAY_MTU - ip - UDP_HEADER - RECORD_OVERHEAD - relay).min(tun_mtu)
}

/// Probes to send now: one per size, all under round `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probes {
    pub id: u64,
    pub sizes: Vec<u16>,
}

#[derive(Debug)]
struct Round {
    id: u64,
    started: Instant,
    resent: bool,
    best: u16,
}

#[derive(Debug)]
pub struct PathMtu {
    tun_mtu: u16,
    endpoint: Option<Endpoint>,
    ceiling: u16,
    mtu: u16,
    round: Option<Round>,
    last_round: Option<Instant>,
}

impl PathMtu {
    pub fn new(tun_mtu: u16) -> PathMtu {
        PathMtu {
            tun_mtu,
            endpoint: None,
            ceiling: tun_mtu,
            mtu: tun_mtu,
            round: None,
            last_round: None,
        }
    }

    /// The inner MTU packets to this peer must fit.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The figure for sending to `ep`: what probing found if `ep` is the
    /// path probed, else that path's ceiling (the path just changed and
    /// the next tick starts probing it).
    pub fn mtu_for(&self, ep: Endpoint) -> u16 {
        if self.endpoint == Some(ep) {
            self.mtu
        } else {
            ceiling(ep, self.tun_mtu)
        }
    }

    /// The peer's endpoint may have changed: a new path starts over from
    /// its ceiling and is probed at the next `poll`. Returns whether the
    /// figure changed.
    pub fn on_endpoint(&mut self, ep: Endpoint) -> bool {
        if self.endpoint == Some(ep) {
            return false;
        }
        self.endpoint = Some(ep);
        self.ceiling = ceiling(ep, self.tun_mtu);
        self.round = None;
        self.last_round = None;
        std::mem::replace(&mut self.mtu, self.ceiling) != self.ceiling
    }

    fn sizes_above(&self, floor: u16) -> Vec<u16> {
        std::iter::once(self.ceiling)
            .chain(STEPS.into_iter().filter(|&s| s < self.ceiling))
            .filter(|&s| s > floor)
            .collect()
    }

    /// Advances the timers. Returns probes to send (if any) and whether the
    /// figure changed. `next_id` numbers a new round.
    pub fn poll(&mut self, now: Instant, next_id: impl FnOnce() -> u64) -> (Option<Probes>, bool) {
        if self.endpoint.is_none() {
            return (None, false);
        }
        let Some(round) = &mut self.round else {
            if self
                .last_round
                .is_some_and(|t| now.saturating_duration_since(t) < REPROBE)
            {
                return (None, false);
            }
            let id = next_id();
            self.round = Some(Round {
                id,
                started: now,
                resent: false,
                best: 0,
            });
            self.last_round = Some(now);
            return (
                Some(Probes {
                    id,
                    sizes: self.sizes_above(0),
                }),
                false,
            );
        };
        let age = now.saturating_duration_since(round.started);
        if age >= ROUND_TIME {
            let best = round.best;
            self.round = None;
            // Nothing came back: the path itself is down, which path
            // health handles; keep the figure.
            if best == 0 || best == self.mtu {
                return (None, false);
            }
            self.mtu = best;
            return (None, true);
        }
        if age >= RESEND_AFTER && !round.resent {
            round.resent = true;
            let (id, best) = (round.id, round.best);
            let sizes = self.sizes_above(best);
            if !sizes.is_empty() {
                return (Some(Probes { id, sizes }), false);
            }
        }
        (None, false)
    }

    /// The peer acknowledged a probe of `size` from round `id`. Returns
    /// whether the figure changed (the ceiling itself got through: the
    /// round is over at once).
    pub fn on_ack(&mut self, id: u64, size: u16) -> bool {
        let Some(round) = &mut self.round else {
            return false;
        };
        if round.id != id || size > self.ceiling {
            return false;
        }
        round.best = round.best.max(size);
        if size == self.ceiling {
            self.round = None;
            return std::mem::replace(&mut self.mtu, size) != size;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct4() -> Endpoint {
        Endpoint::Direct("198.51.100.11:7000".parse().expect("addr"))
    }

    #[test]
    fn ceilings_follow_the_family_and_the_relay() {
        let v6 = Endpoint::Direct("[2001:db8:100::11]:7000".parse().expect("addr"));
        let relay4 = Endpoint::Relay {
            relay: "198.51.100.20:7447".parse().expect("addr"),
            sid: 1,
        };
        assert_eq!(ceiling(direct4(), 1500), 1440);
        assert_eq!(ceiling(relay4, 1500), 1432);
        assert_eq!(ceiling(v6, 1500), 1420);
        assert_eq!(ceiling(direct4(), 1432), 1432, "capped at the TUN MTU");
    }

    #[test]
    fn a_round_settles_on_the_largest_acknowledged_size() {
        let t0 = Instant::now();
        let mut p = PathMtu::new(1432);
        assert!(!p.on_endpoint(direct4()));
        let (probes, changed) = p.poll(t0, || 7);
        let probes = probes.expect("first round starts at once");
        assert!(!changed);
        assert_eq!(probes.id, 7);
        assert_eq!(probes.sizes[0], 1432);
        assert_eq!(*probes.sizes.last().expect("sizes"), 576);
        assert!(!p.on_ack(7, 1220));
        assert!(!p.on_ack(8, 1400), "another round's ack is ignored");
        assert_eq!(p.mtu(), 1432, "optimistic until the round ends");
        let (resend, _) = p.poll(t0 + RESEND_AFTER, || 9);
        assert_eq!(
            resend.expect("resend").sizes,
            vec![1432, 1400, 1360, 1320, 1280]
        );
        assert_eq!(
            p.poll(t0 + RESEND_AFTER, || 9),
            (None, false),
            "resent once"
        );
        assert_eq!(p.poll(t0 + ROUND_TIME, || 9), (None, true));
        assert_eq!(p.mtu(), 1220);
        assert_eq!(
            p.poll(t0 + ROUND_TIME, || 9),
            (None, false),
            "no new round yet"
        );
        let (again, _) = p.poll(t0 + REPROBE, || 10);
        assert_eq!(again.expect("reprobe").id, 10);
        assert!(p.on_ack(10, 1432), "the ceiling ends the round at once");
        assert_eq!(p.mtu(), 1432);
    }

    #[test]
    fn silence_keeps_the_figure_and_a_new_endpoint_starts_over() {
        let t0 = Instant::now();
        let mut p = PathMtu::new(1432);
        p.on_endpoint(direct4());
        let (probes, _) = p.poll(t0, || 1);
        assert!(probes.is_some());
        assert!(!p.on_ack(1, 576));
        assert_eq!(p.poll(t0 + ROUND_TIME, || 2), (None, true));
        assert_eq!(p.mtu(), 576);
        let v6 = Endpoint::Direct("[2001:db8:100::11]:7000".parse().expect("addr"));
        assert!(p.on_endpoint(v6));
        assert_eq!(p.mtu(), 1420);
        let (probes, _) = p.poll(t0 + ROUND_TIME, || 3);
        assert_eq!(probes.expect("new path, new round").sizes[0], 1420);
        assert_eq!(
            p.poll(t0 + ROUND_TIME * 3, || 4),
            (None, false),
            "nothing acked"
        );
        assert_eq!(p.mtu(), 1420);
    }
}
