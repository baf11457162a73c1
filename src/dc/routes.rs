//! Subnet routes in the DC: which of a node's advertised prefixes its
//! `[[route_grants]]` cover (docs/protocol.md, "Subnet routes").

use super::settings::RouteGrant;
use crate::proto::signal::MAX_ADVERTISED_ROUTES;
use crate::proto::signal::{RefusedRoute, RouteRefusal};
use ipnet::Ipv4Net;

/// An advertised prefix the DC refused, with the node whose grant it
/// overlaps (for the DC's log; nodes are only told "another node").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub route: RefusedRoute,
    pub owner: Option<String>,
}

/// Splits `advertised` into the prefixes `node` may route for (inside one
/// of its grants) and the refused rest. Prefixes are normalised (host bits
/// cleared) and at most `MAX_ADVERTISED_ROUTES` are considered, since a
/// hostile node is not bound by node.toml's checks.
pub fn authorise(
    grants: &[RouteGrant],
    node: &str,
    advertised: &[Ipv4Net],
) -> (Vec<Ipv4Net>, Vec<Refusal>) {
    let own = grants.iter().find(|g| g.node == node);
    let mut granted: Vec<Ipv4Net> = Vec::new();
    let mut refused = Vec::new();
    for p in advertised
        .iter()
        .take(MAX_ADVERTISED_ROUTES)
        .map(Ipv4Net::trunc)
    {
        if granted.contains(&p) || refused.iter().any(|r: &Refusal| r.route.prefix == p) {
            continue;
        }
        if own.is_some_and(|g| g.prefixes.iter().any(|q| q.contains(&p))) {
            granted.push(p);
            continue;
        }
        let owner = grants
            .iter()
            .find(|g| {
                g.node != node
                    && g.prefixes
                        .iter()
                        .any(|q| q.contains(&p.network()) || p.contains(&q.network()))
            })
            .map(|g| g.node.clone());
        let reason = if owner.is_some() {
            RouteRefusal::GrantedToAnother
        } else {
            RouteRefusal::NotGranted
        };
        refused.push(Refusal {
            route: RefusedRoute { prefix: p, reason },
            owner,
        });
    }
    granted.sort();
    (granted, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn grants() -> Vec<RouteGrant> {
        vec![
            RouteGrant {
                node: "gwa".into(),
                prefixes: vec![net("192.0.2.128/27")],
            },
            RouteGrant {
                node: "gwb".into(),
                prefixes: vec![net("192.0.2.160/27"), net("203.0.113.0/24")],
            },
        ]
    }

    #[test]
    fn grants_cover_equal_and_narrower_prefixes_only() {
        let (ok, no) = authorise(
            &grants(),
            "gwb",
            &[
                net("192.0.2.160/27"),
                net("203.0.113.64/26"),
                net("203.0.112.0/23"),
            ],
        );
        assert_eq!(ok, vec![net("192.0.2.160/27"), net("203.0.113.64/26")]);
        assert_eq!(no.len(), 1);
        assert_eq!(no[0].route.prefix, net("203.0.112.0/23"));
        assert_eq!(no[0].route.reason, RouteRefusal::NotGranted);
    }

    #[test]
    fn another_nodes_prefix_is_refused_and_its_owner_named() {
        let (ok, no) = authorise(
            &grants(),
            "gwa",
            &[
                net("192.0.2.128/27"),
                net("192.0.2.160/28"),
                net("192.0.2.192/27"),
            ],
        );
        assert_eq!(ok, vec![net("192.0.2.128/27")]);
        assert_eq!(
            no,
            vec![
                Refusal {
                    route: RefusedRoute {
                        prefix: net("192.0.2.160/28"),
                        reason: RouteRefusal::GrantedToAnother,
                    },
                    owner: Some("gwb".into()),
                },
                Refusal {
                    route: RefusedRoute {
                        prefix: net("192.0.2.192/27"),
                        reason: RouteRefusal::NotGranted,
                    },
                    owner: None,
                },
            ]
        );
    }

    #[test]
    fn a_node_without_grants_gets_nothing_and_input_is_bounded() {
        let many: Vec<Ipv4Net> = (0..200u32)
            .map(|i| Ipv4Net::new(std::net::Ipv4Addr::from(0xcb00_7100 + i), 32).unwrap())
            .collect();
        let (ok, no) = authorise(&grants(), "alice", &many);
        assert!(ok.is_empty());
        assert_eq!(no.len(), MAX_ADVERTISED_ROUTES);
        // Host bits are cleared before the check, and duplicates count once.
        let (ok, no) = authorise(
            &grants(),
            "gwa",
            &[net("192.0.2.130/27"), net("192.0.2.128/27")],
        );
        assert_eq!(ok, vec![net("192.0.2.128/27")]);
        assert!(no.is_empty());
    }
}
