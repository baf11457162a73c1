//! Counters of the node's control side: handshakes (and how the flood
//! defences answered them), rekeys, DNS results and what its bounded queues
//! dropped. Atomics the
//! core bumps and the metrics endpoint reads, so a scrape never waits on
//! the control thread.

use crate::metrics::sample::Sample;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ControlCounters {
    /// Initiations that reached the control thread, before any check.
    pub handshakes_received: AtomicU64,
    /// Responses sent (each one cost a Diffie-Hellman).
    pub handshakes_answered: AtomicU64,
    /// Initiations answered with a cookie reply instead (under load).
    pub handshakes_cookie_replied: AtomicU64,
    /// Initiations over the per-source rate limit.
    pub handshakes_rate_limited: AtomicU64,
    /// Initiations with a mac1 for another key (or garbage).
    pub handshakes_bad_mac1: AtomicU64,
    /// Cookie replies we accepted as an initiator.
    pub cookies_received: AtomicU64,
    /// Packets for a peer pushed out of its queue while its tunnel came up.
    pub peer_queue_full: AtomicU64,
    /// Packets for unknown virtual addresses refused or pushed out.
    pub orphan_full: AtomicU64,
    /// DNS queries refused because the forwarding table was full.
    pub dns_forward_full: AtomicU64,
    /// Resolver answers and address changes lost to a full control queue.
    pub upstream_queue_full: AtomicU64,
    pub addrwatch_queue_full: AtomicU64,
    /// Datagrams from addresses we route into our own TUN (a peer's
    /// virtual IP or a gateway's LAN): our tunnel inside itself, dropped.
    pub looped: AtomicU64,
    /// Rekeys started (a fresh handshake when a session reached rekey_secs).
    pub rekeys: AtomicU64,
    /// Direct paths that stopped answering and moved to the relay (found by
    /// our path health or announced by the peer).
    pub relay_fallbacks: AtomicU64,
    /// DNS queries the node answered itself (its domain, reverse zone).
    pub dns_answered: AtomicU64,
    /// DNS queries forwarded to a real resolver.
    pub dns_forwarded: AtomicU64,
    /// DNS queries that failed: SERVFAIL from the node (DC unreachable, too
    /// many in flight) or a forwarded query the resolver never answered.
    pub dns_failed: AtomicU64,
}

/// Adds one.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl ControlCounters {
    pub fn samples(&self) -> Vec<Sample> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut m = vec![
            Sample::counter(
                "ntmtun_node_handshakes_received",
                "Handshake initiations that reached the control thread.",
                get(&self.handshakes_received),
            ),
            Sample::counter(
                "ntmtun_node_handshakes_answered",
                "Handshake initiations answered with a response (a Diffie-Hellman each).",
                get(&self.handshakes_answered),
            ),
            Sample::counter(
                "ntmtun_node_handshakes_cookie_replied",
                "Handshake initiations without a valid mac2 answered with a cookie reply under load.",
                get(&self.handshakes_cookie_replied),
            ),
            Sample::counter(
                "ntmtun_node_handshakes_rate_limited",
                "Handshake initiations dropped by the per-source rate limit.",
                get(&self.handshakes_rate_limited),
            ),
            Sample::counter(
                "ntmtun_node_handshakes_bad_mac1",
                "Handshake initiations dropped for a mac1 not made for our key.",
                get(&self.handshakes_bad_mac1),
            ),
            Sample::counter(
                "ntmtun_node_cookies_received",
                "Cookie replies accepted from peers under load.",
                get(&self.cookies_received),
            ),
            Sample::counter(
                "ntmtun_node_rekeys",
                "Rekeys started (a fresh handshake when a session reached rekey_secs).",
                get(&self.rekeys),
            ),
            Sample::counter(
                "ntmtun_node_relay_fallbacks",
                "Direct paths that stopped answering and moved to the relay (found here or announced by the peer).",
                get(&self.relay_fallbacks),
            ),
        ];
        let dns = [
            ("answered", &self.dns_answered),
            ("forwarded", &self.dns_forwarded),
            ("failed", &self.dns_failed),
        ];
        for (result, c) in dns {
            m.push(
                Sample::counter(
                    "ntmtun_node_dns_queries",
                    "DNS queries by result: answered by the node, forwarded to a resolver, failed.",
                    get(c),
                )
                .label("result", result),
            );
        }
        let drops = [
            ("peer_queue_full", &self.peer_queue_full),
            ("orphan_queue_full", &self.orphan_full),
            ("dns_forward_full", &self.dns_forward_full),
            ("upstream_control_queue_full", &self.upstream_queue_full),
            ("addrwatch_control_queue_full", &self.addrwatch_queue_full),
            ("looped", &self.looped),
        ];
        for (reason, c) in drops {
            m.push(
                Sample::counter(
                    "ntmtun_node_control_dropped",
                    "Packets, queries and events the control side dropped, by reason: a full bounded queue, or a datagram that came through our own tunnel (looped).",
                    get(c),
                )
                .label("reason", reason),
            );
        }
        m
    }
}
