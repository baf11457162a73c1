//! What the node core asks of its IO shell: datagrams, TUN writes, DNS to
//! real resolvers, and host configuration to apply.

use crate::proto::signal::Registered;
use ipnet::Ipv4Net;
use std::net::SocketAddr;
use std::time::Duration;

/// Something the IO shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send through the data socket.
    Udp { to: SocketAddr, bytes: Vec<u8> },
    /// Write an IP packet into the TUN.
    Tun(Vec<u8>),
    /// Send a DNS query to a real resolver, bypassing the TUN.
    Upstream { to: SocketAddr, bytes: Vec<u8> },
    /// Registration accepted: give the TUN this address and routes.
    Configure(Registered),
    /// Route exactly these LAN prefixes (other gateways') into the TUN.
    SubnetRoutes(Vec<Ipv4Net>),
    /// A ping was answered (for `ntmtun ping`).
    Pong {
        id: u64,
        rtt: Duration,
        path: &'static str,
        endpoint: String,
    },
    /// The DC federates with these domains: route exactly their virtual
    /// prefixes into the TUN (a withdrawn domain's route goes).
    FederatedRoutes(Vec<Ipv4Net>),
    /// Stub mode: systemd-resolved must send exactly these routing domains
    /// ("~name") to the stub: ours and each federated domain's, with their
    /// reverse zones. Emitted when the list changes, the first time right
    /// after the registration's `Configure`: the shell registers the stub
    /// then.
    StubDomains(Vec<String>),
}
