//! Split DNS planning (`[dns] mode`), pure: which way the node hooks into
//! the host's name resolution, the stub resolver's address, the routing
//! domains registered with systemd-resolved, and the state file that records
//! what was changed so a later start can undo it after a crash.
//!
//! Stub mode answers on the first address of the virtual prefix: the DC
//! never hands it to a node, and the prefix route already sends it into the
//! TUN, so queries to it reach the node like captured ones.

use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How a node handles the host's DNS queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DnsMode {
    /// Queries to the resolvers are routed into the TUN and answered or
    /// forwarded by the node.
    #[default]
    Capture,
    /// Split DNS: the node answers on a stub address in the TUN and
    /// registers it with systemd-resolved for the domain only; capture where
    /// systemd-resolved does not run.
    Stub,
    /// No DNS interception.
    Off,
}

impl DnsMode {
    /// The spelling used in node.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsMode::Capture => "capture",
            DnsMode::Stub => "stub",
            DnsMode::Off => "off",
        }
    }
}

impl fmt::Display for DnsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DnsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "capture" => Ok(DnsMode::Capture),
            "stub" => Ok(DnsMode::Stub),
            "off" => Ok(DnsMode::Off),
            _ => Err(format!(
                "{s:?} is not a DNS mode; expected one of \"capture\", \"stub\" or \"off\""
            )),
        }
    }
}

/// The mode in force and, when it differs from the configured one, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub mode: DnsMode,
    pub fallback: Option<&'static str>,
}

/// Stub mode needs systemd-resolved in the node's network namespace to send
/// the domain's queries to the stub; without it the node captures instead.
pub fn effective(configured: DnsMode, resolved_here: bool) -> Effective {
    match configured {
        DnsMode::Stub if !resolved_here => Effective {
            mode: DnsMode::Capture,
            fallback: Some(
                "[dns] mode = \"stub\" needs systemd-resolved in this network namespace, and it \
                 does not run here: using capture mode instead",
            ),
        },
        mode => Effective {
            mode,
            fallback: None,
        },
    }
}

/// The stub resolver's address: the network address of the virtual prefix.
pub fn stub_address(prefix: Ipv4Net) -> Ipv4Addr {
    prefix.trunc().network()
}

/// Routing-only domains ("~name") for the TUN link: the NTMobile domain and
/// the reverse zones covering the virtual prefix (rounded to whole octets,
/// as in-addr.arpa delegates), so resolved sends only those queries to us.
pub fn routing_domains(domain: &str, prefix: Ipv4Net) -> Vec<String> {
    let prefix = prefix.trunc();
    let zone_len = prefix.prefix_len().div_ceil(8) * 8;
    let mut out = vec![format!("~{domain}")];
    let Ok(zones) = prefix.subnets(zone_len) else {
        return out;
    };
    for zone in zones {
        let octets = zone.network().octets();
        let labels: Vec<String> = octets[..usize::from(zone_len / 8)]
            .iter()
            .rev()
            .map(u8::to_string)
            .collect();
        let name = if labels.is_empty() {
            "in-addr.arpa".to_string()
        } else {
            format!("{}.in-addr.arpa", labels.join("."))
        };
        out.push(format!("~{name}"));
    }
    out
}

/// The link's routing domains for every zone the stub answers: our domain
/// and each federated one, with their reverse zones, in that order, each
/// once (two federated domains' prefixes may overlap, and so share
/// reverse zones).
pub fn stub_routing_domains<'a>(
    zones: impl IntoIterator<Item = (&'a str, Ipv4Net)>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (domain, prefix) in zones {
        for d in routing_domains(domain, prefix) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// `resolvectl domain TUN DOMAINS...`: sets the link's whole list, so it
/// both registers and updates (a federated domain added or withdrawn).
pub fn domain_command(tun: &str, domains: &[String]) -> Vec<String> {
    let mut cmd = vec!["domain".to_string(), tun.to_string()];
    cmd.extend(domains.iter().cloned());
    cmd
}

/// The `resolvectl` invocations that register the stub on `tun`.
///
/// First the link's own protocol settings, so that nothing the host set
/// globally reaches the stub: no LLMNR or mDNS (resolved would otherwise
/// announce the host name and send single-label queries into the tunnel),
/// no DNSSEC (the synthetic zone is unsigned: a host with `DNSSEC=yes`
/// rejects every answer) and no DNS-over-TLS (the stub speaks plain DNS on
/// port 53: a host with `DNSOverTLS=yes` never reaches it). Then no default
/// route and the routing domains, so that only those names go to the link;
/// the server last, so no query can reach it before the domains are set.
pub fn register_commands(tun: &str, stub: Ipv4Addr, domains: &[String]) -> Vec<Vec<String>> {
    let link = |verb: &str, value: &str| vec![verb.to_string(), tun.to_string(), value.to_string()];
    vec![
        link("llmnr", "no"),
        link("mdns", "no"),
        link("dnssec", "no"),
        link("dnsovertls", "no"),
        link("default-route", "false"),
        domain_command(tun, domains),
        link("dns", &stub.to_string()),
    ]
}

/// The fix to name when resolvectl's error (`stderr`) is a refusal:
/// systemd-resolved lets root change link settings, and other users only
/// through polkit, which refuses a service that has no session. A capability
/// such as CAP_NET_ADMIN does not count: over dbus-daemon resolved cannot
/// see it.
pub fn refusal_hint(stderr: &str) -> Option<&'static str> {
    stderr.contains("Access denied").then_some(
        "systemd-resolved lets only root change link settings: run the node as root (with the \
         packaged unit: a drop-in with `User=root` and `Group=root`), or use [dns] mode = \"capture\"",
    )
}

/// `resolvectl revert TUN`: drops every setting we made on the link.
pub fn revert_command(tun: &str) -> Vec<String> {
    vec!["revert".into(), tun.into()]
}

/// What a run changed in the host's DNS set-up, written before the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub tun: String,
    /// Capture (policy rules) or Stub (systemd-resolved link settings).
    pub mode: DnsMode,
}

const STATE_HEADER: &str =
    "# ntmtun: DNS changes of a running node; the next start undoes them if it crashed";

impl State {
    pub fn to_text(&self) -> String {
        format!("{STATE_HEADER}\ntun={}\nmode={}\n", self.tun, self.mode)
    }

    /// `None` for anything that is not a state file we wrote.
    pub fn parse(text: &str) -> Option<State> {
        let (mut tun, mut mode) = (None, None);
        for line in text.lines() {
            match line.split_once('=') {
                Some(("tun", v)) if !v.is_empty() && !v.contains('/') => tun = Some(v.to_string()),
                Some(("mode", v)) => mode = v.parse::<DnsMode>().ok(),
                _ => {}
            }
        }
        Some(State {
            tun: tun?,
            mode: mode?,
        })
    }
}

/// The state file: beside the control socket, in the run directory. The
/// socket is bound first, so its path is unique to one running node even
/// when several share a directory.
pub fn state_path(control_socket: &Path) -> PathBuf {
    control_socket.with_extension("dns-state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_mode_round_trips() {
        for mode in [DnsMode::Capture, DnsMode::Stub, DnsMode::Off] {
            assert_eq!(mode.to_string().parse::<DnsMode>(), Ok(mode));
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn stub_without_resolved_falls_back_to_capture() {
        let e = effective(DnsMode::Stub, false);
        assert_eq!(e.mode, DnsMode::Capture);
        assert!(e
            .fallback
            .is_some_and(|why| why.contains("systemd-resolved")));
        assert_eq!(effective(DnsMode::Stub, true).mode, DnsMode::Stub);
        for m in [DnsMode::Capture, DnsMode::Off] {
            assert_eq!(
                effective(m, false),
                Effective {
                    mode: m,
                    fallback: None
                }
            );
        }
    }

    #[test]
    fn stub_address_is_the_prefix_network_the_dc_never_assigns() {
        assert_eq!(
            stub_address(net("198.18.0.0/15")),
            Ipv4Addr::new(198, 18, 0, 0)
        );
        assert_eq!(
            stub_address(net("198.18.5.7/24")),
            Ipv4Addr::new(198, 18, 5, 0)
        );
    }

    #[test]
    fn routing_domains_cover_the_reverse_zones_of_the_prefix() {
        assert_eq!(
            routing_domains("ntm.internal", net("198.18.0.0/15")),
            vec![
                "~ntm.internal",
                "~18.198.in-addr.arpa",
                "~19.198.in-addr.arpa"
            ]
        );
        assert_eq!(
            routing_domains("x.test", net("198.18.4.0/24")),
            vec!["~x.test", "~4.18.198.in-addr.arpa"]
        );
        let d = routing_domains("x.test", net("198.18.0.0/22"));
        assert_eq!(d.len(), 1 + 4);
        assert_eq!(d[4], "~3.18.198.in-addr.arpa");
        assert_eq!(
            routing_domains("x.test", net("0.0.0.0/0")),
            vec!["~x.test", "~in-addr.arpa"]
        );
    }

    #[test]
    fn stub_domains_add_each_federated_domain_and_its_reverse_zones_once() {
        assert_eq!(
            stub_routing_domains([("x.ntm.internal", net("198.18.0.0/16"))]),
            vec!["~x.ntm.internal", "~18.198.in-addr.arpa"]
        );
        assert_eq!(
            stub_routing_domains([
                ("x.ntm.internal", net("198.18.0.0/16")),
                ("y.ntm.internal", net("198.19.0.0/16")),
                ("z.test", net("198.18.0.0/15")),
            ]),
            vec![
                "~x.ntm.internal",
                "~18.198.in-addr.arpa",
                "~y.ntm.internal",
                "~19.198.in-addr.arpa",
                "~z.test",
            ]
        );
        // Overlapping prefixes share reverse zones: each listed once.
        assert_eq!(
            stub_routing_domains([
                ("a.test", net("198.19.0.0/16")),
                ("b.test", net("198.19.0.0/16")),
            ]),
            vec!["~a.test", "~19.198.in-addr.arpa", "~b.test"]
        );
        assert!(stub_routing_domains([]).is_empty());
        assert_eq!(
            domain_command("ntm0", &["~a.test".into(), "~b.test".into()]).join(" "),
            "domain ntm0 ~a.test ~b.test"
        );
    }

    #[test]
    fn register_turns_off_host_protocols_then_routes_domains_then_sets_the_server() {
        let cmds = register_commands(
            "ntm0",
            Ipv4Addr::new(198, 18, 0, 0),
            &["~ntm.internal".into(), "~18.198.in-addr.arpa".into()],
        );
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            text,
            vec![
                "llmnr ntm0 no",
                "mdns ntm0 no",
                "dnssec ntm0 no",
                "dnsovertls ntm0 no",
                "default-route ntm0 false",
                "domain ntm0 ~ntm.internal ~18.198.in-addr.arpa",
                "dns ntm0 198.18.0.0",
            ]
        );
        assert_eq!(revert_command("ntm0").join(" "), "revert ntm0");
    }

    #[test]
    fn an_access_denied_names_the_fix() {
        let hint = refusal_hint("Failed to set DNS configuration: Access denied");
        assert!(hint.is_some_and(|h| h.contains("User=root")));
        assert_eq!(
            refusal_hint("Failed to resolve interface \"ntm0\": No such device"),
            None
        );
    }

    #[test]
    fn state_round_trips_and_rejects_foreign_files() {
        for mode in [DnsMode::Stub, DnsMode::Capture] {
            let s = State {
                tun: "ntm0".into(),
                mode,
            };
            assert_eq!(State::parse(&s.to_text()), Some(s));
        }
        assert_eq!(State::parse(""), None);
        assert_eq!(State::parse("tun=ntm0\nmode=bogus\n"), None);
        assert_eq!(State::parse("tun=../x\nmode=stub\n"), None);
        assert_eq!(
            state_path(Path::new("/run/ntmtun/ntmtun.sock")),
            PathBuf::from("/run/ntmtun/ntmtun.dns-state")
        );
    }
}
