//! Policy routing rules: which routing table a packet looks up.

use super::netlink::Netlink;
use super::{route, Error, Family};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use netlink_packet_route::{IpProtocol, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use std::fmt;
use std::net::IpAddr;

/// What a rule matches: our marked sockets, or UDP to one host and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// Packets carrying this fwmark (`fwmark MARK`), of one family.
    FwMark(Family, u32),
    /// UDP to `to` port `port` (`to HOST ipproto udp dport PORT`).
    UdpTo(IpAddr, u16),
}

/// At `priority`, packets matching `selector` look up table `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub selector: Selector,
    pub table: u32,
}

impl Rule {
    fn family(&self) -> Family {
        match self.selector {
            Selector::FwMark(f, _) => f,
            Selector::UdpTo(ip, _) => Family::of(&ip),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {}: ", self.family(), self.priority)?;
        match self.selector {
            Selector::FwMark(_, mark) => write!(f, "fwmark {mark:#x}")?,
            Selector::UdpTo(ip, port) => write!(f, "to {ip} ipproto udp dport {port}")?,
        }
        match self.table {
            route::MAIN => write!(f, " lookup main"),
            table => write!(f, " lookup {table}"),
        }
    }
}

/// Adds `rule` (`ip rule add`); an identical rule is refused (EEXIST).
pub fn add(rule: Rule) -> Result<(), Error> {
    let what = format!("adding {rule}");
    Netlink::open(NETLINK_ROUTE, &what)?.request(
        RouteNetlinkMessage::NewRule(message(&rule)),
        NLM_F_CREATE | NLM_F_EXCL,
        &what,
    )
}

/// Removes one `family` rule at `priority` (`ip rule del priority P`); an
/// error that [`Error::is_absent`] says none was left.
pub fn delete_priority(family: Family, priority: u32) -> Result<(), Error> {
    let what = format!("removing the {family} rule at priority {priority}");
    let mut msg = RuleMessage::default();
    msg.header.family = family.netlink();
    msg.attributes.push(RuleAttribute::Priority(priority));
    Netlink::open(NETLINK_ROUTE, &what)?.request(RouteNetlinkMessage::DelRule(msg), 0, &what)
}

fn message(rule: &Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = rule.family().netlink();
    msg.header.action = RuleAction::ToTable;
    // A table id above 255 goes in FRA_TABLE only.
    msg.header.table = u8::try_from(rule.table).unwrap_or(0);
    msg.attributes = vec![
        RuleAttribute::Priority(rule.priority),
        RuleAttribute::Table(rule.table),
    ];
    match rule.selector {
        Selector::FwMark(_, mark) => msg.attributes.push(RuleAttribute::FwMark(mark)),
        Selector::UdpTo(ip, port) => {
            msg.header.dst_len = if ip.is_ipv4() { 32 } else { 128 };
            msg.attributes.extend([
                RuleAttribute::Destination(ip),
                RuleAttribute::IpProtocol(IpProtocol::Udp),
                RuleAttribute::DestinationPortRange(RulePortRange {
                    start: port,
                    end: port,
                }),
            ]);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;

    #[test]
    fn a_dns_rule_matches_one_host_udp_port_53() {
        let rule = Rule {
            priority: 20053,
            selector: Selector::UdpTo("2001:db8::53".parse().unwrap(), 53),
            table: 20053,
        };
        let m = message(&rule);
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.dst_len, 128);
        assert_eq!(m.header.table, 0, "20053 does not fit rtm_table");
        assert!(m.attributes.contains(&RuleAttribute::Table(20053)));
        assert!(m
            .attributes
            .contains(&RuleAttribute::IpProtocol(IpProtocol::Udp)));
        assert_eq!(
            rule.to_string(),
            "IPv6 rule 20053: to 2001:db8::53 ipproto udp dport 53 lookup 20053"
        );
        let mark = Rule {
            priority: 20052,
            selector: Selector::FwMark(Family::V4, 0x4e54),
            table: route::MAIN,
        };
        assert_eq!(message(&mark).header.table, 254);
        assert_eq!(
            mark.to_string(),
            "IPv4 rule 20052: fwmark 0x4e54 lookup main"
        );
    }
}
