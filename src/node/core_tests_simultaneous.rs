//! Simultaneous open: every pair of a small mesh sends its first packets
//! both ways at the same instant, so both ends start a handshake at once.
//! In every delivery order (shuffled wire), with loss, and after both ends
//! restart, every first packet arrives, the pair settles on one session
//! each way, and it does not churn afterwards.

use super::*;
use rand::SeedableRng;

/// Two public nodes, two behind their own cone NATs, one behind a
/// symmetric NAT: direct, NATed-initiates, punched and relayed pairs.
fn mesh(seed: u64) -> (Net, Vec<PrivateKey>) {
    let mut net = Net::with_relay();
    let (c1, c2, s) = (
        net.add_nat("198.51.100.101", true),
        net.add_nat("198.51.100.102", true),
        net.add_nat("198.51.100.103", false),
    );
    let keys: Vec<PrivateKey> = (0..5).map(|_| PrivateKey::generate()).collect();
    let spec = [
        ("p1", "198.51.100.11:5000", None),
        ("p2", "198.51.100.12:5000", None),
        ("c1", "192.0.2.2:5000", Some(c1)),
        ("c2", "192.0.2.66:5000", Some(c2)),
        ("s1", "192.0.2.130:5000", Some(s)),
    ];
    for ((name, addr, nat), key) in spec.into_iter().zip(&keys) {
        net.add_node_full(name, addr, TOKEN, key.clone(), nat);
    }
    net.shuffle = Some(rand::rngs::StdRng::seed_from_u64(seed));
    net.advance(Duration::from_millis(500));
    (net, keys)
}

/// The first packet from `a` to `b`, tagged with the pair.
fn first_packet(net: &Net, a: usize, b: usize) -> Vec<u8> {
    let (va, vb) = (net.vip(a).unwrap(), net.vip(b).unwrap());
    let mut pkt = Vec::new();
    packet::build_ipv4_udp(
        SocketAddrV4::new(va, 7000 + a as u16),
        SocketAddrV4::new(vb, 7100 + b as u16),
        format!("first {a}->{b}").as_bytes(),
        &mut pkt,
    );
    pkt
}

/// Every node sends its first packet to every other at the same instant;
/// returns the pairs whose packet had not come out of the TUN within
/// `within`.
fn all_at_once(net: &mut Net, within: Duration) -> Vec<(usize, usize)> {
    let n = net.nodes.len();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
        .collect();
    let mut expected = Vec::new();
    for n in &mut net.nodes {
        n.tun.clear();
    }
    for (a, b) in pairs {
        let pkt = first_packet(net, a, b);
        let _node = net.nodes[a].span();
        net.nodes[a].core.handle_tun(pkt.clone(), net.now);
        expected.push((a, b, pkt));
    }
    let missing = |net: &Net| -> Vec<(usize, usize)> {
        expected
            .iter()
            .filter(|(_, b, pkt)| !net.nodes[*b].tun.contains(pkt))
            .map(|&(a, b, _)| (a, b))
            .collect()
    };
    let end = net.now + within;
    net.settle();
    while net.now < end && !missing(net).is_empty() {
        net.advance(Duration::from_millis(100));
    }
    missing(net)
}

/// Handshakes each node has answered so far.
fn answered(net: &Net) -> Vec<u64> {
    net.nodes
        .iter()
        .map(|n| {
            n.core
                .counters()
                .handshakes_answered
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect()
}

/// Both ends of every pair send on sessions of one handshake, and it is
/// the same one whoever's view.
fn settled_on_one_session(net: &Net) -> Result<(), String> {
    for a in 0..net.nodes.len() {
        for (key, p) in &net.nodes[a].core.peers {
            let b = net
                .nodes
                .iter()
                .position(|n| n.core.public_key() == *key)
                .ok_or("peer not in the mesh")?;
            let mine = p.sessions().sending().ok_or(format!("{a}->{b} not up"))?;
            let a_key = net.nodes[a].core.public_key();
            let theirs = net.nodes[b].core.peers[&a_key]
                .sessions()
                .sending()
                .ok_or(format!("{b}->{a} not up"))?;
            if mine.remote_index != theirs.local_index || theirs.remote_index != mine.local_index {
                return Err(format!("{a} and {b} send on different sessions"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_first_packet_arrives_in_every_delivery_order() {
    for seed in 0..12 {
        let (mut net, _) = mesh(seed);
        let lost = all_at_once(&mut net, Duration::from_millis(1500));
        assert!(lost.is_empty(), "seed {seed}: first packets lost {lost:?}");
        net.advance(Duration::from_secs(2));
        settled_on_one_session(&net).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn every_first_packet_arrives_despite_loss() {
    for seed in 0..8 {
        let (mut net, _) = mesh(100 + seed);
        net.loss = Some((rand::rngs::StdRng::seed_from_u64(seed), 0.25));
        let lost = all_at_once(&mut net, Duration::from_secs(8));
        assert!(lost.is_empty(), "seed {seed}: first packets lost {lost:?}");
        net.loss = None;
        net.advance(Duration::from_secs(3));
        settled_on_one_session(&net).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn a_settled_mesh_does_not_churn() {
    for seed in 0..4 {
        let (mut net, _) = mesh(200 + seed);
        assert!(all_at_once(&mut net, Duration::from_millis(1500)).is_empty());
        net.advance(Duration::from_secs(2));
        let before = answered(&net);
        // A minute of traffic both ways (rekeys come at 120 s).
        for _ in 0..30 {
            assert!(all_at_once(&mut net, Duration::from_millis(200)).is_empty());
            net.advance(Duration::from_secs(2));
        }
        assert_eq!(
            answered(&net),
            before,
            "seed {seed}: handshakes after settling"
        );
        settled_on_one_session(&net).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn restarted_nodes_are_reached_at_the_first_packet_both_ways() {
    for seed in 0..6 {
        let (mut net, keys) = mesh(300 + seed);
        assert!(all_at_once(&mut net, Duration::from_millis(1500)).is_empty());
        // p2 and c1 restart together: same keys and names, new processes.
        for (i, name) in [(1, "p2"), (2, "c1")] {
            let (addr, nat) = (net.nodes[i].addr.to_string(), net.nodes[i].nat);
            net.nodes.remove(i);
            let j = net.add_node_full(name, &addr, TOKEN, keys[i].clone(), nat);
            let node = net.nodes.remove(j);
            net.nodes.insert(i, node);
        }
        net.advance(Duration::from_millis(500));
        // Every pair, both ways: the others hear from the DC that p2 and
        // c1 restarted and drop the sessions those two forgot.
        let lost = all_at_once(&mut net, Duration::from_secs(4));
        assert!(lost.is_empty(), "seed {seed}: first packets lost {lost:?}");
        net.advance(Duration::from_secs(3));
        settled_on_one_session(&net).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn a_peer_that_died_and_came_back_is_reached_after_path_health_gave_up_on_it() {
    let (mut net, keys) = mesh(400);
    assert!(all_at_once(&mut net, Duration::from_millis(1500)).is_empty());
    // c1 dies. p1 keeps sending to it: path health falls back to the relay and bans the
    // direct path, the relay is silent too, p1 asks the DC and dials the dead endpoints.
    net.nodes[2].online = false;
    for _ in 0..20 {
        let pkt = first_packet(&net, 0, 2);
        net.nodes[0].core.handle_tun(pkt, net.now);
        net.advance(Duration::from_millis(500));
    }
    // c1 comes back: a new process, a new port behind its NAT.
    let (addr, nat) = (net.nodes[2].addr.to_string(), net.nodes[2].nat);
    net.nodes.remove(2);
    let j = net.add_node_full("c1", &addr, TOKEN, keys[2].clone(), nat);
    let node = net.nodes.remove(j);
    net.nodes.insert(2, node);
    net.advance(Duration::from_millis(500));
    let lost = all_at_once(&mut net, Duration::from_secs(4));
    assert!(lost.is_empty(), "first packets lost {lost:?}");
}
