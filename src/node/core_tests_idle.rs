//! Idle direct paths behind a home router (issue 18, "NAT mappings held"):
//! a public node and a node behind a cone NAT with Linux's conntrack
//! lifetimes (30 s, 120 s once a stream). Keepalives hold the mapping
//! through ten idle minutes, and a mapping lost anyway is reopened at once,
//! with the relay as a standby rather than the destination.

use super::*;

impl Net {
    /// Alice on the public segment, bob behind a home router; alice looked
    /// bob up and one packet went each way. Returns the router's index.
    fn public_and_home_router() -> (Net, usize) {
        let mut net = Net::with_relay();
        let router = net.add_nat("198.51.100.102", true);
        net.nats[router].timeouts = Some(Conntrack::LINUX);
        net.add_node("alice", "198.51.100.11:5000", TOKEN);
        net.add_natted("bob", "192.0.2.66:5000", router);
        net.connect();
        assert!(net.deliver(0, 1, 1) && net.deliver(1, 0, 2));
        assert_eq!(net.peer_path(0).0, "direct");
        (net, router)
    }

    /// Relay fallbacks of node `i`'s only peer, as `ntmtun status` shows.
    fn fallbacks(&self, i: usize) -> u64 {
        self.nodes[i].core.status(self.now).peers[0].relay_fallbacks
    }
}

#[test]
fn an_idle_direct_path_behind_a_30s_nat_stays_direct_for_ten_minutes() {
    let (mut net, _) = Net::public_and_home_router();
    for s in 1..=600 {
        net.advance(Duration::from_secs(1));
        assert_eq!(
            (net.peer_path(0).0, net.peer_path(1).0),
            ("direct".to_string(), "direct".to_string()),
            "the pair left the direct path after {s} s idle"
        );
    }
    // The first packet after the idle spell, from the public side: it is
    // the one a lapsed mapping would drop.
    assert!(
        net.deliver(0, 1, 3),
        "the first packet after 10 min was lost"
    );
    assert!(net.deliver(1, 0, 4));
    assert_eq!((net.fallbacks(0), net.fallbacks(1)), (0, 0));
}

#[test]
fn a_lost_nat_mapping_is_reopened_at_once_without_moving_to_the_relay() {
    let (mut net, router) = Net::public_and_home_router();
    net.advance(Duration::from_secs(40));
    // Bob sent and was answered (his own keepalive is most of an interval
    // away), then his router drops the mapping to alice (conntrack evicts entries that are
    // not yet a stream first; a keepalive and its retry lost in the first
    // 30 s do the same). Only bob's packets can open a new one; his
    // mappings to the DC and the relay live on.
    assert!(net.deliver(1, 0, 3));
    net.advance(Duration::from_secs(2));
    let alice = net.nodes[0].addr;
    net.nats[router]
        .flows
        .retain(|&(_, remote), _| remote != alice);
    assert!(
        !net.deliver(0, 1, 4),
        "the packet crossed a mapping that no longer exists"
    );
    let mut back = None;
    for step in 1..=20 {
        net.advance(Duration::from_millis(250));
        assert_eq!(
            net.peer_path(0).0,
            "direct",
            "alice moved to the relay {} ms after the lapse",
            step * 250
        );
        if net.deliver(0, 1, 5) {
            back = Some(step);
            break;
        }
    }
    let steps = back.expect("the mapping was never reopened");
    // Before path health's 3 s timeout would declare the path dead.
    assert!(steps < 12, "took {} ms", steps * 250);
    assert_eq!(net.peer_path(1).0, "direct");
    assert_eq!((net.fallbacks(0), net.fallbacks(1)), (0, 0));
}
