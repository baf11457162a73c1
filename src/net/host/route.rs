//! Routes: one prefix through an interface, in a routing table.

use super::netlink::Netlink;
use super::{link, Error, Family};
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use std::fmt;

/// The main routing table.
pub const MAIN: u32 = 254;
/// `rtm_table` of a table whose id does not fit in a byte: the id then
/// goes in the RTA_TABLE attribute only.
const TABLE_UNSPEC: u8 = 0;

/// `dst` through interface `dev`, in routing table `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub dst: IpNet,
    pub dev: &'a str,
    pub table: u32,
}

impl fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.dst, self.dev)?;
        if self.table != MAIN {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// Adds `route`, or replaces the route to the same prefix in its table
/// (`ip route replace`).
pub fn replace(route: Route) -> Result<(), Error> {
    let what = format!("adding route {route}");
    let mut msg = message(route.dst, route.table);
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    // A route without a gateway reaches its prefix on the link; IPv6
    // routes are always universe scope.
    msg.header.scope = match route.dst {
        IpNet::V4(_) => RouteScope::Link,
        IpNet::V6(_) => RouteScope::Universe,
    };
    msg.attributes
        .push(RouteAttribute::Oif(link::index(route.dev)?));
    Netlink::open(NETLINK_ROUTE, &what)?.request(
        RouteNetlinkMessage::NewRoute(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
        &what,
    )
}

/// Removes `route` (`ip route del`); an error that [`Error::is_absent`]
/// says it was not there.
pub fn delete(route: Route) -> Result<(), Error> {
    let what = format!("removing route {route}");
    let mut msg = message(route.dst, route.table);
    // Scope "nowhere", protocol and type unset: match any route to dst.
    msg.header.scope = RouteScope::NoWhere;
    msg.attributes
        .push(RouteAttribute::Oif(link::index(route.dev)?));
    Netlink::open(NETLINK_ROUTE, &what)?.request(RouteNetlinkMessage::DelRoute(msg), 0, &what)
}

/// Removes every `family` route of table `table` (`ip route flush table`);
/// returns how many went. An empty table is no error.
pub fn flush_table(family: Family, table: u32) -> Result<usize, Error> {
    let what = format!("flushing {family} routing table {table}");
    let mut nl = Netlink::open(NETLINK_ROUTE, &what)?;
    nl.strict_dumps();
    let mut ask = RouteMessage::default();
    ask.header.address_family = family.netlink();
    ask.attributes.push(RouteAttribute::Table(table));
    let mut removed = 0;
    for route in nl.dump(RouteNetlinkMessage::GetRoute(ask), &what)? {
        let RouteNetlinkMessage::NewRoute(route) = route else {
            continue;
        };
        if table_of(&route) != table {
            continue;
        }
        match nl.request(RouteNetlinkMessage::DelRoute(route), 0, &what) {
            Err(e) if !e.is_absent() => return Err(e),
            _ => removed += 1,
        }
    }
    Ok(removed)
}

/// A route message for `dst` in `table`, header and destination set.
fn message(dst: IpNet, table: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match dst {
        IpNet::V4(_) => Family::V4.netlink(),
        IpNet::V6(_) => Family::V6.netlink(),
    };
    msg.header.destination_prefix_length = dst.prefix_len();
    msg.header.table = u8::try_from(table).unwrap_or(TABLE_UNSPEC);
    msg.attributes = vec![
        RouteAttribute::Destination(RouteAddress::from(dst.addr())),
        RouteAttribute::Table(table),
    ];
    msg
}

/// The table a dumped route is in: RTA_TABLE, else the header's byte.
fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;

    #[test]
    fn a_table_id_above_255_goes_in_the_attribute_only() {
        let m = message("198.51.100.53/32".parse().unwrap(), 20053);
        assert_eq!(m.header.table, TABLE_UNSPEC);
        assert_eq!(table_of(&m), 20053);
        let m = message("2001:db8::53/128".parse().unwrap(), MAIN);
        assert_eq!(m.header.table, 254);
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.destination_prefix_length, 128);
    }
}
