//! No tunnel inside itself. Packets to the domain's virtual prefix and to
//! other gateways' LANs go into our own TUN, so a peer "endpoint" there would
//! carry our encrypted records inside the tunnel they belong to: a gateway
//! offers its LAN address as a direct candidate, the peer routes that LAN
//! through the tunnel, and the two ends chase each other's endpoint between
//! the real address and the looped copy (seen in CI: thousands of endpoint
//! changes a second and a dead path). Such candidates are never tried, and
//! datagrams arriving from such addresses are dropped before any state moves.

use crate::dataplane::table::Routes;
use ipnet::Ipv4Net;
use std::net::{IpAddr, SocketAddr};

/// Whether packets to `addr` would enter our TUN: the virtual prefix, or a
/// LAN we route to another gateway.
pub fn tunnelled(addr: SocketAddr, prefix: Option<Ipv4Net>, routes: &Routes) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => prefix.is_some_and(|p| p.contains(&ip)) || routes.gateway(ip).is_some(),
        IpAddr::V6(_) => false,
    }
}

/// The DC's candidates that do not loop through our TUN, in its order.
pub fn usable(offered: &[SocketAddr], prefix: Option<Ipv4Net>, routes: &Routes) -> Vec<SocketAddr> {
    offered
        .iter()
        .copied()
        .filter(|&a| !tunnelled(a, prefix, routes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::signal::GrantedRoute;
    use std::net::Ipv4Addr;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn routes(accept: bool) -> Routes {
        let granted = [
            GrantedRoute {
                prefix: "192.0.2.160/27".parse().expect("prefix"),
                gateway: Ipv4Addr::new(198, 18, 0, 2),
            },
            GrantedRoute {
                prefix: "192.0.2.128/27".parse().expect("prefix"),
                gateway: Ipv4Addr::new(198, 18, 0, 1),
            },
        ];
        Routes::new(&granted, Some(Ipv4Addr::new(198, 18, 0, 1)), accept)
    }

    #[test]
    fn other_gateways_lans_and_the_virtual_prefix_are_tunnelled() {
        let prefix = Some("198.18.0.0/15".parse().expect("prefix"));
        let r = routes(true);
        assert!(tunnelled(sa("192.0.2.161:5000"), prefix, &r));
        assert!(tunnelled(sa("198.18.0.2:5000"), prefix, &r));
        assert!(tunnelled(sa("198.19.255.1:5000"), prefix, &r));
        // Our own LAN leaves the TUN, the Internet and IPv6 never enter it.
        assert!(!tunnelled(sa("192.0.2.129:5000"), prefix, &r));
        assert!(!tunnelled(sa("198.51.100.102:5000"), prefix, &r));
        assert!(!tunnelled(sa("[2001:db8::1]:5000"), prefix, &r));
        // Before registration there is no prefix to loop through.
        assert!(!tunnelled(sa("198.18.0.2:5000"), None, &r));
    }

    #[test]
    fn a_lan_we_do_not_route_is_a_fine_candidate() {
        let r = routes(false);
        assert!(!tunnelled(sa("192.0.2.161:5000"), None, &r));
    }

    #[test]
    fn usable_keeps_the_dcs_order() {
        let prefix = Some("198.18.0.0/15".parse().expect("prefix"));
        let offered = [
            sa("192.0.2.161:1"),
            sa("198.51.100.102:1"),
            sa("[2001:db8::2]:1"),
            sa("198.18.0.9:1"),
        ];
        assert_eq!(
            usable(&offered, prefix, &routes(true)),
            vec![sa("198.51.100.102:1"), sa("[2001:db8::2]:1")]
        );
    }
}
