//! Socket and packet helpers shared by the IO shells: UDP socket set-up,
//! readiness polling, interface addresses, IP/UDP headers, resolv.conf, and
//! host networking (links, addresses, routes, rules, nftables) over netlink.

pub mod addrwatch;
pub mod batch;
pub mod host;
pub mod icmp;
pub mod ifaddrs;
pub mod mss;
pub mod packet;
pub mod poll;
pub mod resolv;
pub mod udp;
