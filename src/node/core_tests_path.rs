//! Which direct candidate a dual-stack pair settles on (`node::path_choice`):
//! the DC ranks IPv4 first on a LAN where both are public on IPv4, so the
//! pair must end on IPv4 whichever initiation the responder handles first,
//! stay there through rekeys, fall back to IPv6 when IPv4 dies without
//! flapping, and return when IPv4 works again.

use super::super::peer::PATH_TIMEOUT;
use super::*;
use std::sync::atomic::Ordering::Relaxed;

const ALICE4: &str = "198.51.100.11:5000";
const ALICE6: &str = "[2001:db8:100::11]:5000";
const BOB4: &str = "198.51.100.12:5000";
const BOB6: &str = "[2001:db8:100::12]:5000";

impl Net {
    /// A dual-stack node on the LAN segment: its data socket serves both
    /// families from one port.
    fn add_dual(&mut self, name: &str, v4: &str, v6: &str, key: PrivateKey) -> usize {
        let i = self.add_node_with_key(name, v4, TOKEN, key);
        let (v4, v6): (SocketAddr, SocketAddr) = (v4.parse().unwrap(), v6.parse().unwrap());
        self.nodes[i].addr6 = Some(v6);
        self.nodes[i].core.set_local_endpoints(vec![v4, v6]);
        i
    }

    /// Alice and bob, both dual-stack on the LAN.
    fn dual_lan() -> Net {
        let mut net = Net::new();
        net.add_dual("alice", ALICE4, ALICE6, PrivateKey::generate());
        net.add_dual("bob", BOB4, BOB6, PrivateKey::generate());
        net
    }

    /// The endpoints alice sends to and bob sends to.
    fn endpoints(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.peer_path(0).1, self.peer_path(1).1)
    }

    fn path_mtus(&self) -> (u16, u16) {
        let mtu = |i: usize| self.nodes[i].core.status(self.now).peers[0].path_mtu;
        (mtu(0), mtu(1))
    }

    /// Runs `secs` seconds of traffic both ways (a datagram each way every
    /// 250 ms); returns how often each side's endpoint changed, and whether
    /// every datagram from the last `PATH_TIMEOUT` on arrived.
    fn traffic(&mut self, secs: u64) -> (usize, usize, bool) {
        let (mut last, mut moves, mut lost_late) = (self.endpoints(), (0, 0), false);
        let steps = secs * 4;
        let late = steps.saturating_sub(PATH_TIMEOUT.as_secs() * 4);
        for step in 0..steps {
            self.advance(Duration::from_millis(250));
            let ok = self.deliver(0, 1, step as u8) & self.deliver(1, 0, step as u8);
            lost_late |= step >= late && !ok;
            let now = self.endpoints();
            moves.0 += usize::from(now.0 != last.0);
            moves.1 += usize::from(now.1 != last.1);
            last = now;
        }
        (moves.0, moves.1, !lost_late)
    }
}

fn sa(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn ipv6_initiation_handled_first_still_ends_on_ipv4_and_stays() {
    let mut net = Net::dual_lan();
    // Every IPv6 datagram overtakes the IPv4 ones, for the whole test: the
    // handshake completes on IPv6 and rekeys race the same way.
    net.v6_first = true;
    net.connect();
    assert_eq!(net.endpoints(), (sa(BOB4), sa(ALICE4)), "not on IPv4");
    assert_eq!(net.path_mtus(), (1432, 1432), "IPv4 path MTU");
    // Past a rekey (120 s): no endpoint moves at all.
    let (a, b, ok) = net.traffic(150);
    assert!(ok, "traffic lost on a settled path");
    assert_eq!((a, b), (0, 0), "the endpoint moved");
    assert_eq!(net.endpoints(), (sa(BOB4), sa(ALICE4)));
    assert!(net.nodes[0].core.counters().rekeys.load(Relaxed) > 0);
}

#[test]
fn restarted_dual_stack_peer_ends_on_ipv4() {
    let mut net = Net::dual_lan();
    let bob_key = PrivateKey::generate();
    net.nodes.remove(1);
    net.add_dual("bob", BOB4, BOB6, bob_key.clone());
    net.connect();
    assert_eq!(net.endpoints(), (sa(BOB4), sa(ALICE4)));
    // Bob restarts on a new port; its initiations reach alice IPv6 first.
    net.v6_first = true;
    net.nodes.remove(1);
    let (b4, b6) = ("198.51.100.12:6000", "[2001:db8:100::12]:6000");
    net.add_dual("bob", b4, b6, bob_key);
    net.advance(Duration::from_millis(500));
    assert!(net.dns(1, "alice.ntm.internal.", RecordType::A).is_some());
    let (_, _, ok) = net.traffic(10);
    assert!(ok, "traffic lost after the restart settled");
    assert_eq!(net.endpoints(), (sa(b4), sa(ALICE4)));
    assert_eq!(net.path_mtus(), (1432, 1432));
}

#[test]
fn dead_ipv4_falls_back_to_ipv6_without_flapping_and_returns() {
    let mut net = Net::dual_lan();
    net.connect();
    assert_eq!(net.endpoints(), (sa(BOB4), sa(ALICE4)));
    net.v4_down = true;
    let (a, b, ok) = net.traffic(15);
    assert!(ok, "IPv6 does not carry the traffic");
    assert_eq!(net.endpoints(), (sa(BOB6), sa(ALICE6)));
    assert_eq!((a, b), (1, 1), "more than one move to IPv6");
    assert_eq!(net.path_mtus(), (1420, 1420), "IPv6 path MTU re-probed");
    // Upgrade probes to IPv4 keep failing (backing off): no flapping, past
    // a rekey.
    let (a, b, ok) = net.traffic(130);
    assert!(ok);
    assert_eq!((a, b), (0, 0), "flapped while IPv4 was down");
    // IPv4 works again: the next upgrade probe (at most 40 s on) finds it.
    net.v4_down = false;
    let (a, b, ok) = net.traffic(45);
    assert!(ok);
    assert_eq!(net.endpoints(), (sa(BOB4), sa(ALICE4)), "never went back");
    assert_eq!((a, b), (1, 1));
    assert_eq!(net.path_mtus(), (1432, 1432));
}
