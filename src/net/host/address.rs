//! Interface addresses.

use super::link;
use super::netlink::Netlink;
use super::Error;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use std::net::Ipv4Addr;

/// Gives interface `dev` the address `ip/prefix_len`, or keeps it if it
/// has it (`ip address replace`); the kernel adds the prefix route.
pub fn replace_v4(dev: &str, ip: Ipv4Addr, prefix_len: u8) -> Result<(), Error> {
    let what = format!("assigning {ip}/{prefix_len} to {dev}");
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.index = link::index(dev)?;
    msg.attributes = vec![
        AddressAttribute::Local(ip.into()),
        AddressAttribute::Address(ip.into()),
    ];
    Netlink::open(NETLINK_ROUTE, &what)?.request(
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
        &what,
    )
}
