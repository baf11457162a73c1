//! Route direction: given what the DC knows about two nodes, decide how they
//! should reach each other (DESIGN.md, "Route direction"). Pure: no clock,
//! no sockets, so every rule is a unit test.

use crate::proto::signal::Path;
use std::net::{IpAddr, SocketAddr};

/// How a node's IPv4 NAT maps, as learned from two observers (the DC and a
/// relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// The reflexive address is one of the node's own: no NAT.
    None,
    /// Same public port towards the DC and the relay: endpoint-independent
    /// mapping, hole punching works.
    Independent,
    /// Different ports per destination (symmetric NAT): punching fails.
    PerDestination,
    /// Not observed yet (no relay, or no report): assume punching may work,
    /// with the relay as fallback.
    Unknown,
}

/// What the DC knows about one node.
#[derive(Debug, Clone)]
pub struct View {
    /// The address the DC saw the node's data socket as.
    pub reflexive: SocketAddr,
    /// The node's own socket addresses.
    pub locals: Vec<SocketAddr>,
    pub nat: Nat,
}

impl View {
    fn has_v4(&self) -> bool {
        self.reflexive.is_ipv4() || self.locals.iter().any(SocketAddr::is_ipv4)
    }

    fn v6(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .locals
            .iter()
            .copied()
            .filter(SocketAddr::is_ipv6)
            .collect();
        if self.reflexive.is_ipv6() && !v.contains(&self.reflexive) {
            v.insert(0, self.reflexive);
        }
        v
    }

    fn behind_v4_nat(&self) -> bool {
        self.nat != Nat::None
    }

    /// The node's public IPv4 endpoint, if the DC saw one.
    fn public_v4(&self) -> Option<SocketAddr> {
        self.reflexive.is_ipv4().then_some(self.reflexive)
    }

    fn locals_v4(&self) -> Vec<SocketAddr> {
        self.locals
            .iter()
            .copied()
            .filter(SocketAddr::is_ipv4)
            .collect()
    }
}

/// The DC's decision for a pair (A asked to reach B).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub path: Path,
    /// Where A should try to reach B directly, best first, and vice versa.
    pub a_to_b: Vec<SocketAddr>,
    pub b_to_a: Vec<SocketAddr>,
    pub a_initiates: bool,
    pub b_initiates: bool,
}

fn push_unique(v: &mut Vec<SocketAddr>, items: impl IntoIterator<Item = SocketAddr>) {
    for i in items {
        if !v.contains(&i) {
            v.push(i);
        }
    }
}

fn same_ip(a: Option<SocketAddr>, b: Option<SocketAddr>) -> bool {
    matches!((a, b), (Some(x), Some(y)) if x.ip() == y.ip())
}

/// Decides the route, best option first (DESIGN.md):
/// 1. same NAT: direct on local addresses;
/// 2. both on public IPv4 (no NAT): direct on IPv4, IPv6 as a second try;
/// 3. both have IPv6: direct on IPv6 (no NAT; both send, which also opens
///    stateful firewalls);
/// 4. one side reachable on IPv4: direct, the NATed side initiates;
/// 5. both behind endpoint-independent NATs: punch, both told at once;
/// 6. otherwise (per-destination NAT, no common family): relay, with the
///    direct candidates kept for upgrade probes.
pub fn decide(a: &View, b: &View) -> Decision {
    let mut d = Decision {
        path: Path::Relay,
        a_to_b: Vec::new(),
        b_to_a: Vec::new(),
        a_initiates: true,
        b_initiates: false,
    };
    let both_v4 = a.has_v4() && b.has_v4();
    let (a6, b6) = (a.v6(), b.v6());

    if both_v4 && a.behind_v4_nat() && b.behind_v4_nat() && same_ip(a.public_v4(), b.public_v4()) {
        d.path = Path::Direct;
        push_unique(&mut d.a_to_b, b.locals_v4());
        push_unique(&mut d.b_to_a, a.locals_v4());
        return d;
    }
    let public = |v: &View| !v.behind_v4_nat() && v.public_v4().is_some();
    if both_v4 && public(a) && public(b) {
        d.path = Path::Direct;
        push_unique(
            &mut d.a_to_b,
            b.public_v4().into_iter().chain(b.locals_v4()).chain(b6),
        );
        push_unique(
            &mut d.b_to_a,
            a.public_v4().into_iter().chain(a.locals_v4()).chain(a6),
        );
        return d;
    }
    if !a6.is_empty() && !b6.is_empty() {
        d.path = Path::Direct;
        d.b_initiates = true;
        push_unique(&mut d.a_to_b, b6);
        push_unique(&mut d.b_to_a, a6);
    }
    if both_v4 {
        let (pa, pb) = (a.public_v4(), b.public_v4());
        push_unique(&mut d.a_to_b, pb.into_iter().chain(b.locals_v4()));
        push_unique(&mut d.b_to_a, pa.into_iter().chain(a.locals_v4()));
        if d.path == Path::Direct {
            return d;
        }
        let punchable = |n: Nat| matches!(n, Nat::Independent | Nat::Unknown);
        if !b.behind_v4_nat() && pb.is_some() {
            d.path = Path::Direct;
        } else if !a.behind_v4_nat() && pa.is_some() {
            d.path = Path::Direct;
            d.a_initiates = false;
            d.b_initiates = true;
        } else if punchable(a.nat) && punchable(b.nat) && pa.is_some() && pb.is_some() {
            d.path = Path::Punch;
            d.b_initiates = true;
        }
    }
    d
}

/// The NAT kind from the DC's and a relay's observations of one socket.
pub fn classify(
    reflexive: SocketAddr,
    locals: &[SocketAddr],
    relay_saw: Option<SocketAddr>,
) -> Nat {
    if locals.iter().any(|l| l.ip() == reflexive.ip())
        || reflexive.ip() == IpAddr::from([0, 0, 0, 0])
    {
        return Nat::None;
    }
    match relay_saw {
        None => Nat::Unknown,
        Some(r) if r == reflexive => Nat::Independent,
        Some(_) => Nat::PerDestination,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn view(reflexive: &str, locals: &[&str], nat: Nat) -> View {
        View {
            reflexive: sa(reflexive),
            locals: locals.iter().map(|l| sa(l)).collect(),
            nat,
        }
    }

    #[test]
    fn lan_is_direct_requester_initiates() {
        let a = view("198.51.100.11:1", &["198.51.100.11:1"], Nat::None);
        let b = view("198.51.100.12:2", &["198.51.100.12:2"], Nat::None);
        let d = decide(&a, &b);
        assert_eq!(d.path, Path::Direct);
        assert_eq!(d.a_to_b, vec![sa("198.51.100.12:2")]);
        assert!(d.a_initiates && !d.b_initiates);
    }

    #[test]
    fn public_dual_stack_nodes_prefer_ipv4() {
        let a = view(
            "198.51.100.11:1",
            &["198.51.100.11:1", "[2001:db8::11]:1"],
            Nat::None,
        );
        let b = view(
            "198.51.100.12:2",
            &["198.51.100.12:2", "[2001:db8::12]:2"],
            Nat::None,
        );
        let d = decide(&a, &b);
        assert_eq!(d.path, Path::Direct);
        assert_eq!(
            d.a_to_b,
            vec![sa("198.51.100.12:2"), sa("[2001:db8::12]:2")]
        );
    }

    #[test]
    fn same_nat_uses_local_addresses() {
        let a = view("198.51.100.101:4000", &["192.0.2.2:1"], Nat::Independent);
        let b = view("198.51.100.101:4001", &["192.0.2.3:2"], Nat::PerDestination);
        let d = decide(&a, &b);
        assert_eq!(d.path, Path::Direct);
        assert_eq!(d.a_to_b, vec![sa("192.0.2.3:2")]);
        assert_eq!(d.b_to_a, vec![sa("192.0.2.2:1")]);
    }

    #[test]
    fn public_peer_is_direct_and_the_natted_side_initiates() {
        let public = view("198.51.100.11:1", &["198.51.100.11:1"], Nat::None);
        let natted = view("198.51.100.102:9", &["192.0.2.66:2"], Nat::PerDestination);
        let d = decide(&public, &natted);
        assert_eq!(d.path, Path::Direct);
        assert!(!d.a_initiates && d.b_initiates);
        assert_eq!(d.b_to_a[0], sa("198.51.100.11:1"));
        let d = decide(&natted, &public);
        assert_eq!(d.path, Path::Direct);
        assert!(d.a_initiates);
        assert_eq!(d.a_to_b[0], sa("198.51.100.11:1"));
    }

    #[test]
    fn two_cone_nats_punch_both_sides() {
        let a = view("198.51.100.101:4000", &["192.0.2.2:1"], Nat::Independent);
        let b = view("198.51.100.102:5000", &["192.0.2.66:2"], Nat::Unknown);
        let d = decide(&a, &b);
        assert_eq!(d.path, Path::Punch);
        assert!(d.a_initiates && d.b_initiates);
        assert_eq!(d.a_to_b[0], sa("198.51.100.102:5000"));
        assert_eq!(d.b_to_a[0], sa("198.51.100.101:4000"));
    }

    #[test]
    fn symmetric_nat_needs_the_relay_but_keeps_candidates() {
        let a = view("198.51.100.101:4000", &["192.0.2.2:1"], Nat::PerDestination);
        let b = view("198.51.100.102:5000", &["192.0.2.66:2"], Nat::Independent);
        let d = decide(&a, &b);
        assert_eq!(d.path, Path::Relay);
        assert_eq!(d.a_to_b[0], sa("198.51.100.102:5000"));
    }

    #[test]
    fn v4_only_to_v6_only_is_relay_without_candidates() {
        let a = view("198.51.100.11:1", &["198.51.100.11:1"], Nat::None);
        let b = view("[2001:db8:100::12]:2", &["[2001:db8:100::12]:2"], Nat::None);
        let d = decide(&a, &b);
        assert_eq!(d.path, Path::Relay);
        assert!(d.a_to_b.is_empty() && d.b_to_a.is_empty());
    }

    #[test]
    fn dual_stack_prefers_ipv6_then_ipv4() {
        let a = view(
            "198.51.100.101:4000",
            &["192.0.2.2:1", "[2001:db8:a::2]:1"],
            Nat::PerDestination,
        );
        let b = view(
            "198.51.100.102:5000",
            &["192.0.2.66:2", "[2001:db8:b::2]:2"],
            Nat::PerDestination,
        );
        let d = decide(&a, &b);
        assert_eq!(d.path, Path::Direct);
        assert_eq!(d.a_to_b[0], sa("[2001:db8:b::2]:2"));
        assert!(d.a_to_b.contains(&sa("198.51.100.102:5000")));
        assert!(d.b_initiates);
    }

    #[test]
    fn classification_from_two_observers() {
        let r = sa("198.51.100.101:4000");
        assert_eq!(
            classify(sa("198.51.100.11:1"), &[sa("198.51.100.11:1")], None),
            Nat::None
        );
        assert_eq!(classify(r, &[sa("192.0.2.2:1")], Some(r)), Nat::Independent);
        assert_eq!(
            classify(r, &[sa("192.0.2.2:1")], Some(sa("198.51.100.101:4001"))),
            Nat::PerDestination
        );
        assert_eq!(classify(r, &[sa("192.0.2.2:1")], None), Nat::Unknown);
    }
}
