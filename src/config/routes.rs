//! Subnet-routing keys: node.toml `advertise_routes`, `accept_routes` and
//! `snat`, and dc.toml `[[route_grants]]` (docs/configuration.md), the
//! latter translated into the DC core's `RouteGrant`.

use super::common::{ConfigError, Cx, DEFAULT_VIRTUAL_PREFIX};
use crate::dc::settings::RouteGrant;
use crate::proto::name::Label;
use crate::proto::signal::{MAX_ADVERTISED_ROUTES, MAX_ROUTE_GRANTS};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::Ipv4Addr;
use toml::Value;

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table [[route_grants]] with keys `node` and `prefixes`"
)]
pub(super) struct RawRouteGrant {
    node: Option<Value>,
    prefixes: Option<Value>,
}

/// Blocks no LAN is made of: "this network", loopback, multicast and the
/// reserved block with the broadcast address.
const NEVER_ROUTED: [Ipv4Net; 3] = [
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 3),
];

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Parses one LAN prefix; the reason reads after "is not a usable route
/// prefix: ".
fn parse_route_prefix(text: &str, virtual_prefix: Ipv4Net) -> Result<Ipv4Net, String> {
    let net = match text.trim().parse::<Ipv4Net>() {
        Ok(net) => net,
        Err(_) if text.trim().parse::<ipnet::Ipv6Net>().is_ok() => {
            return Err("it is an IPv6 prefix, and subnet routes are IPv4 only".into())
        }
        Err(_) if text.trim().parse::<Ipv4Addr>().is_ok() => {
            return Err(format!(
                "the prefix length is missing (for one host write \"{}/32\")",
                text.trim()
            ))
        }
        Err(_) => return Err("not an address/length prefix".into()),
    };
    if net.addr() != net.network() {
        return Err(format!(
            "{} has host bits set; the network address is {}",
            net,
            net.trunc()
        ));
    }
    if net.prefix_len() == 0 {
        return Err("a default route is not a LAN (ntmtun has no exit nodes)".into());
    }
    for (block, what) in [
        (DEFAULT_VIRTUAL_PREFIX, "NTMobile's virtual block"),
        (virtual_prefix, "the DC's virtual_prefix"),
    ] {
        if overlaps(&net, &block) {
            return Err(format!(
                "it overlaps {what} {block}, whose addresses belong to nodes"
            ));
        }
    }
    if let Some(block) = NEVER_ROUTED.iter().find(|b| overlaps(&net, b)) {
        return Err(format!(
            "it overlaps {block}, which is not unicast LAN space"
        ));
    }
    Ok(net)
}

impl Cx<'_> {
    /// A list of prefix strings, each checked, none overlapping another.
    fn prefixes(
        &self,
        key: &str,
        value: Value,
        virtual_prefix: Ipv4Net,
        expected: &str,
    ) -> Result<Vec<Ipv4Net>, ConfigError> {
        let mut out: Vec<Ipv4Net> = Vec::new();
        for text in self.string_list(key, value, expected, false)? {
            let net = parse_route_prefix(&text, virtual_prefix).map_err(|why| {
                self.invalid(
                    key,
                    format!("{text:?} is not a usable route prefix: {why}; expected {expected}"),
                )
            })?;
            if let Some(other) = out.iter().find(|o| overlaps(o, &net)) {
                return Err(self.invalid(
                    key,
                    format!(
                        "{net} overlaps {other}, listed before it; expected each address range once"
                    ),
                ));
            }
            out.push(net);
        }
        Ok(out)
    }

    /// `true`/`false` with a default.
    fn flag(&self, key: &str, value: Option<Value>, default: bool) -> Result<bool, ConfigError> {
        match value {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(b),
            Some(other) => Err(self.wrong_type(key, &other, "true or false")),
        }
    }

    /// node.toml: `advertise_routes`, `accept_routes`, `snat`.
    pub(super) fn gateway(
        &self,
        advertise: Option<Value>,
        accept: Option<Value>,
        snat: Option<Value>,
    ) -> Result<(Vec<Ipv4Net>, bool, bool), ConfigError> {
        const KEY: &str = "advertise_routes";
        const EXPECTED: &str =
            "a list of the IPv4 LAN prefixes behind this node, such as [\"192.0.2.0/26\"]";
        let advertise = match advertise {
            None => Vec::new(),
            Some(v) => self.prefixes(KEY, v, DEFAULT_VIRTUAL_PREFIX, EXPECTED)?,
        };
        if advertise.len() > MAX_ADVERTISED_ROUTES {
            return Err(self.invalid(
                KEY,
                format!(
                    "{} prefixes; expected at most {MAX_ADVERTISED_ROUTES} (summarise them into shorter prefixes)",
                    advertise.len()
                ),
            ));
        }
        let accept = self.flag("accept_routes", accept, true)?;
        let snat = self.flag("snat", snat, false)?;
        if snat && advertise.is_empty() {
            return Err(self.invalid(
                "snat",
                "is true, but `advertise_routes` is empty: only a gateway forwards to a LAN; \
                 expected advertise_routes with the LAN prefixes, or snat = false",
            ));
        }
        Ok((advertise, accept, snat))
    }

    /// dc.toml: `[[route_grants]]`. No two grants overlap, whether of one
    /// node or of two: every LAN address has at most one gateway.
    pub(super) fn route_grants(
        &self,
        raw: Vec<RawRouteGrant>,
        virtual_prefix: Ipv4Net,
    ) -> Result<Vec<RouteGrant>, ConfigError> {
        const NODE: &str = "the name of the node allowed to route for `prefixes`, such as \"gwa\"";
        const PREFIXES: &str = "a non-empty list of IPv4 LAN prefixes, such as [\"192.0.2.0/26\"]";
        let mut out: Vec<RouteGrant> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let node_key = format!("route_grants[{i}].node");
            let node = self.string(&node_key, self.required(&node_key, r.node, NODE)?, NODE)?;
            Label::parse(&node).map_err(|why| {
                self.invalid(
                    &node_key,
                    format!("{node:?} is not a valid node name: it {why}; expected {NODE}"),
                )
            })?;
            if let Some(j) = out.iter().position(|g| g.node == node) {
                return Err(self.invalid(
                    &node_key,
                    format!(
                        "node {node:?} already has route_grants[{j}]; expected one [[route_grants]] table per node, listing all its prefixes"
                    ),
                ));
            }
            let key = format!("route_grants[{i}].prefixes");
            let value = self.required(&key, r.prefixes, PREFIXES)?;
            let prefixes = self.prefixes(&key, value, virtual_prefix, PREFIXES)?;
            for p in &prefixes {
                if let Some((g, q)) = out
                    .iter()
                    .find_map(|g| g.prefixes.iter().find(|q| overlaps(p, q)).map(|q| (g, q)))
                {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "{p} overlaps {q}, granted to node {:?}; a LAN address can have only one gateway: \
                             expected prefixes that do not overlap another node's",
                            g.node
                        ),
                    ));
                }
            }
            out.push(RouteGrant { node, prefixes });
        }
        let total: usize = out.iter().map(|g| g.prefixes.len()).sum();
        if total > MAX_ROUTE_GRANTS {
            return Err(self.invalid(
                "route_grants",
                format!(
                    "{total} prefixes in all; expected at most {MAX_ROUTE_GRANTS} (summarise them into shorter prefixes)"
                ),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse_dc, parse_node_with, DcConfig, NodeConfig};
    use crate::keys::PrivateKey;
    use crate::proto::signal::MAX_ROUTE_GRANTS;

    fn dc(extra: &str) -> Result<DcConfig, String> {
        let text = format!(
            "listen = [\"198.51.100.10:7446\"]\ndomain = \"ntm.internal\"\n\
             private_key = \"{}\"\nstate_dir = \"/tmp/x\"\nauth_keys = [\"t\"]\n{extra}",
            PrivateKey::generate().to_base64()
        );
        parse_dc(&text, "dc.toml").map_err(|e| e.to_string())
    }

    fn node(extra: &str) -> Result<NodeConfig, String> {
        let text = format!(
            "name = \"gwa\"\nprivate_key = \"{}\"\ndc = \"198.51.100.10\"\n\
             dc_public_key = \"{}\"\nauth_key = \"t\"\n{extra}",
            PrivateKey::generate().to_base64(),
            PrivateKey::generate().public_key().to_base64()
        );
        parse_node_with(&text, "node.toml", || {
            Ok(vec!["198.51.100.53".parse().unwrap()])
        })
        .map_err(|e| e.to_string())
    }

    #[track_caller]
    fn err_mentions(r: Result<impl std::fmt::Debug, String>, parts: &[&str]) {
        let msg = r.expect_err("expected an error");
        for p in parts {
            assert!(msg.contains(p), "{msg:?}\n  does not mention {p:?}");
        }
    }

    #[test]
    fn node_defaults_and_values() {
        let n = node("").unwrap();
        assert!(n.advertise_routes.is_empty() && n.accept_routes && !n.snat);
        let n = node(
            "advertise_routes = [\"192.0.2.128/27\", \"203.0.113.0/24\"]\naccept_routes = false\nsnat = true\n",
        )
        .unwrap();
        assert_eq!(
            n.advertise_routes,
            vec![
                "192.0.2.128/27".parse().unwrap(),
                "203.0.113.0/24".parse().unwrap()
            ]
        );
        assert!(!n.accept_routes && n.snat);
    }

    #[test]
    fn node_errors_name_the_value_and_the_fix() {
        err_mentions(
            node("advertise_routes = [\"192.0.2.5/26\"]\n"),
            &[
                "`advertise_routes`",
                "192.0.2.5/26",
                "host bits",
                "192.0.2.0/26",
            ],
        );
        err_mentions(
            node("advertise_routes = [\"198.19.0.0/24\"]\n"),
            &["198.19.0.0/24", "198.18.0.0/15"],
        );
        err_mentions(
            node("advertise_routes = [\"192.0.2.0\"]\n"),
            &["prefix length is missing", "192.0.2.0/32"],
        );
        err_mentions(
            node("advertise_routes = [\"2001:db8::/64\"]\n"),
            &["IPv6", "IPv4 only"],
        );
        err_mentions(
            node("advertise_routes = [\"0.0.0.0/0\"]\n"),
            &["default route"],
        );
        err_mentions(
            node("advertise_routes = [\"127.0.0.0/24\"]\n"),
            &["127.0.0.0/8"],
        );
        err_mentions(
            node("advertise_routes = [\"192.0.2.0/24\", \"192.0.2.64/26\"]\n"),
            &["192.0.2.64/26 overlaps 192.0.2.0/24"],
        );
        err_mentions(
            node("advertise_routes = \"192.0.2.0/26\"\n"),
            &["`advertise_routes`", "a string"],
        );
        err_mentions(
            node("accept_routes = \"yes\"\n"),
            &["`accept_routes`", "true or false"],
        );
        err_mentions(node("snat = true\n"), &["`snat`", "advertise_routes"]);
    }

    #[test]
    fn dc_grants_parse() {
        let d = dc("[[route_grants]]\nnode = \"gwa\"\nprefixes = [\"192.0.2.128/27\"]\n\n\
                    [[route_grants]]\nnode = \"gwb\"\nprefixes = [\"192.0.2.160/27\", \"203.0.113.0/24\"]\n")
        .unwrap();
        assert_eq!(d.route_grants.len(), 2);
        assert_eq!(d.route_grants[1].node, "gwb");
        assert_eq!(
            d.route_grants[1].prefixes[1],
            "203.0.113.0/24".parse().unwrap()
        );
        assert!(dc("").unwrap().route_grants.is_empty());
    }

    #[test]
    fn dc_grant_errors() {
        err_mentions(
            dc(
                "[[route_grants]]\nnode = \"gwa\"\nprefixes = [\"192.0.2.0/26\"]\n\n\
                [[route_grants]]\nnode = \"gwb\"\nprefixes = [\"192.0.2.32/27\"]\n",
            ),
            &[
                "route_grants[1].prefixes",
                "192.0.2.32/27 overlaps 192.0.2.0/26",
                "\"gwa\"",
                "only one gateway",
            ],
        );
        err_mentions(
            dc("[[route_grants]]\nnode = \"gwa\"\nprefixes = [\"198.18.4.0/24\"]\n"),
            &["route_grants[0].prefixes", "198.18.0.0/15"],
        );
        err_mentions(
            dc("virtual_prefix = \"100.64.0.0/10\"\n[[route_grants]]\nnode = \"gwa\"\nprefixes = [\"100.64.1.0/24\"]\n"),
            &["virtual_prefix 100.64.0.0/10"],
        );
        err_mentions(
            dc("[[route_grants]]\nnode = \"gwa\"\nprefixes = [\"192.0.2.1/26\"]\n"),
            &["192.0.2.1/26", "192.0.2.0/26"],
        );
        err_mentions(
            dc("[[route_grants]]\nnode = \"GW A\"\nprefixes = [\"192.0.2.0/26\"]\n"),
            &["route_grants[0].node", "\"GW A\""],
        );
        err_mentions(
            dc("[[route_grants]]\nnode = \"gwa\"\n"),
            &["route_grants[0].prefixes", "missing"],
        );
        err_mentions(
            dc("[[route_grants]]\nnode = \"gwa\"\nprefixes = []\n"),
            &["route_grants[0].prefixes", "empty list"],
        );
        err_mentions(
            dc(
                "[[route_grants]]\nnode = \"gwa\"\nprefixes = [\"192.0.2.0/26\"]\n\n\
                [[route_grants]]\nnode = \"gwa\"\nprefixes = [\"192.0.2.64/26\"]\n",
            ),
            &["route_grants[1].node", "already has route_grants[0]"],
        );
        err_mentions(
            dc("[[route_grants]]\nnode = \"gwa\"\nprefix = [\"192.0.2.0/26\"]\n"),
            &["unknown field `prefix`"],
        );
        let many: Vec<String> = (0..=MAX_ROUTE_GRANTS)
            .map(|i| format!("\"203.0.113.{i}/32\""))
            .collect();
        err_mentions(
            dc(&format!(
                "[[route_grants]]\nnode = \"gwa\"\nprefixes = [{}]\n",
                many.join(", ")
            )),
            &["`route_grants`", "at most 48"],
        );
    }
}
