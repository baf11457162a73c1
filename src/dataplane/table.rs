//! The read-mostly peer table the control thread publishes to the workers.
//!
//! Workers load the current snapshot once per batch (an `ArcSwap` load, no
//! lock) and never modify it; per-packet mutable state lives in atomics
//! (`PeerStats`, the session's counter and replay window).

use crate::proto::session::Session;
use crate::proto::signal::GrantedRoute;
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Traffic counters of one peer, shared by workers and the control thread.
#[derive(Debug)]
pub struct PeerStats {
    epoch: Instant,
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    /// Milliseconds since `epoch` of the last authenticated receive / send
    /// of anything (keepalives included), and of the last that carried data.
    last_rx_ms: AtomicU64,
    last_tx_ms: AtomicU64,
    last_data_rx_ms: AtomicU64,
    last_data_tx_ms: AtomicU64,
    /// Last authenticated receive over a direct path (not the relay).
    last_direct_rx_ms: AtomicU64,
    /// Last authenticated receive from the endpoint the route sends to:
    /// whether that endpoint still answers (`node::path_choice`).
    last_route_rx_ms: AtomicU64,
}

impl PeerStats {
    pub fn new(epoch: Instant) -> Self {
        PeerStats {
            epoch,
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            last_rx_ms: AtomicU64::new(0),
            last_tx_ms: AtomicU64::new(0),
            last_data_rx_ms: AtomicU64::new(0),
            last_data_tx_ms: AtomicU64::new(0),
            last_direct_rx_ms: AtomicU64::new(0),
            last_route_rx_ms: AtomicU64::new(0),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        // +1 so that 0 keeps meaning "never".
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Counts a received record; `bytes == 0` is a keepalive.
    pub fn record_rx(&self, bytes: usize, direct: bool, now: Instant) {
        let ms = self.ms(now);
        self.last_rx_ms.store(ms, Ordering::Relaxed);
        if direct {
            self.last_direct_rx_ms.store(ms, Ordering::Relaxed);
        }
        if bytes > 0 {
            self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            self.rx_packets.fetch_add(1, Ordering::Relaxed);
            self.last_data_rx_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Notes that a received record came from the endpoint the route sends
    /// to (counted by `record_rx` as well).
    pub fn record_route_rx(&self, now: Instant) {
        self.last_route_rx_ms.store(self.ms(now), Ordering::Relaxed);
    }

    /// Counts a sent record; `bytes == 0` is a keepalive.
    pub fn record_tx(&self, bytes: usize, now: Instant) {
        let ms = self.ms(now);
        self.last_tx_ms.store(ms, Ordering::Relaxed);
        if bytes > 0 {
            self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            self.tx_packets.fetch_add(1, Ordering::Relaxed);
            self.last_data_tx_ms.store(ms, Ordering::Relaxed);
        }
    }

    fn at(&self, ms: u64) -> Option<Instant> {
        (ms != 0).then(|| self.epoch + Duration::from_millis(ms - 1))
    }

    pub fn last_rx(&self) -> Option<Instant> {
        self.at(self.last_rx_ms.load(Ordering::Relaxed))
    }

    pub fn last_tx(&self) -> Option<Instant> {
        self.at(self.last_tx_ms.load(Ordering::Relaxed))
    }

    pub fn last_direct_rx(&self) -> Option<Instant> {
        self.at(self.last_direct_rx_ms.load(Ordering::Relaxed))
    }

    pub fn last_route_rx(&self) -> Option<Instant> {
        self.at(self.last_route_rx_ms.load(Ordering::Relaxed))
    }

    pub fn last_data_rx(&self) -> Option<Instant> {
        self.at(self.last_data_rx_ms.load(Ordering::Relaxed))
    }

    pub fn last_data_tx(&self) -> Option<Instant> {
        self.at(self.last_data_tx_ms.load(Ordering::Relaxed))
    }
}

/// The subnet routes the DC granted in the domain (docs/architecture.md,
/// "Gateways"), as the data path needs them. Lookups are longest-prefix
/// matches over a short list sorted longest first: no allocation, and the
/// DC caps the list at `config::MAX_ROUTE_GRANTS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Other gateways' prefixes and their virtual IPs, longest first.
    others: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Prefixes granted to us: packets for them leave the TUN to our LAN.
    own: Vec<Ipv4Net>,
    /// node.toml `accept_routes`: send to other gateways' prefixes.
    accept: bool,
}

impl Routes {
    pub fn new(granted: &[GrantedRoute], local_ip: Option<Ipv4Addr>, accept: bool) -> Self {
        let mut others: Vec<(Ipv4Net, Ipv4Addr)> = granted
            .iter()
            .filter(|r| Some(r.gateway) != local_ip)
            .map(|r| (r.prefix.trunc(), r.gateway))
            .collect();
        others.sort_by_key(|(p, _)| std::cmp::Reverse(p.prefix_len()));
        let own = granted
            .iter()
            .filter(|r| Some(r.gateway) == local_ip)
            .map(|r| r.prefix.trunc())
            .collect();
        Routes {
            others,
            own,
            accept,
        }
    }

    /// The gateway whose granted prefix holds `addr` (longest match).
    pub fn owner(&self, addr: Ipv4Addr) -> Option<Ipv4Addr> {
        self.others
            .iter()
            .find(|(p, _)| p.contains(&addr))
            .map(|&(_, gw)| gw)
    }

    /// The gateway to send a packet for `addr` to, if we accept routes.
    pub fn gateway(&self, addr: Ipv4Addr) -> Option<Ipv4Addr> {
        self.accept.then(|| self.owner(addr)).flatten()
    }

    /// Whether `addr` is in a LAN the DC granted to us.
    pub fn is_own(&self, addr: Ipv4Addr) -> bool {
        self.own.iter().any(|p| p.contains(&addr))
    }

    /// The prefixes to route into the TUN on this host.
    pub fn installed(&self) -> Vec<Ipv4Net> {
        let mut v: Vec<Ipv4Net> = if self.accept {
            self.others.iter().map(|&(p, _)| p).collect()
        } else {
            Vec::new()
        };
        v.sort();
        v.dedup();
        v
    }
}

/// Where a peer is reached: directly, or through a relay session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Direct(SocketAddr),
    Relay { relay: SocketAddr, sid: u32 },
}

impl Endpoint {
    /// The address datagrams to this endpoint are sent to.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            Endpoint::Direct(a) => a,
            Endpoint::Relay { relay, .. } => relay,
        }
    }

    pub fn is_relay(&self) -> bool {
        matches!(self, Endpoint::Relay { .. })
    }

    /// Wraps a node-to-node datagram for this endpoint: relayed ones get
    /// the 8-byte Kind::Relayed header. Returns where to send it.
    pub fn wrap(&self, datagram: &[u8]) -> (SocketAddr, Vec<u8>) {
        match *self {
            Endpoint::Direct(a) => (a, datagram.to_vec()),
            Endpoint::Relay { relay, sid } => {
                let mut v = vec![0u8; crate::proto::wire::RELAYED_HEADER_LEN + datagram.len()];
                crate::proto::wire::put_relayed_header(&mut v, sid);
                v[crate::proto::wire::RELAYED_HEADER_LEN..].copy_from_slice(datagram);
                (relay, v)
            }
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Direct(a) => write!(f, "{a}"),
            Endpoint::Relay { relay, sid } => write!(f, "relay {relay} (session {sid:08x})"),
        }
    }
}

/// Where and how to send to one peer.
pub struct TxRoute {
    /// The peer's name (for metrics labels; never on the packet path).
    pub name: String,
    pub virtual_ip: Ipv4Addr,
    pub session: Arc<Session>,
    pub endpoint: Endpoint,
    pub stats: Arc<PeerStats>,
    /// Largest inner packet the path to the peer carries (`node::pmtu`).
    pub mtu: u16,
    /// "direct", "punched" or "relay" (the metrics' path label).
    pub path: &'static str,
}

/// How to accept records arriving for one of our session indexes.
pub struct RxRoute {
    pub virtual_ip: Ipv4Addr,
    pub session: Arc<Session>,
    pub endpoint: Endpoint,
    pub stats: Arc<PeerStats>,
    /// A session the peer initiated that awaits its first record (key
    /// confirmation): the worker tells the control thread when one comes.
    pub unconfirmed: bool,
}

/// One immutable snapshot of everything the workers need.
#[derive(Default)]
pub struct PeerTable {
    /// Our own virtual address (None until registered).
    pub local_ip: Option<Ipv4Addr>,
    /// The virtual prefix: packets to it belong to the tunnel.
    pub prefix: Option<Ipv4Net>,
    /// Virtual prefixes of federated domains: theirs belong to the tunnel too.
    pub federated: Vec<Ipv4Net>,
    /// Resolvers whose UDP port 53 traffic is captured.
    pub resolvers: Vec<IpAddr>,
    pub by_vip: HashMap<Ipv4Addr, TxRoute>,
    pub by_index: HashMap<u32, RxRoute>,
    /// Subnet routes (gateways' LAN prefixes).
    pub routes: Arc<Routes>,
}

impl PeerTable {
    /// The virtual IP a packet for `dst` is sent to: `dst` itself inside
    /// the virtual prefix (ours or a federated domain's), else the gateway
    /// whose LAN holds it.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.prefix.is_some_and(|p| p.contains(&dst))
            || self.federated.iter().any(|p| p.contains(&dst))
        {
            return Some(dst);
        }
        self.routes.gateway(dst)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn route(prefix: &str, gateway: &str) -> GrantedRoute {
        GrantedRoute {
            prefix: prefix.parse().unwrap(),
            gateway: ip(gateway),
        }
    }

    /// Us and two gateways whose granted LANs overlap (GWC's /28 inside
    /// GWA's /27); our own LAN is 192.0.2.160/27.
    pub(crate) const US: &str = "198.18.0.2";
    pub(crate) const GWA: &str = "198.18.0.1";
    pub(crate) const GWC: &str = "198.18.0.3";

    pub(crate) fn routes(accept: bool) -> Routes {
        Routes::new(
            &[
                route("192.0.2.128/27", GWA),
                route("192.0.2.128/28", GWC),
                route("192.0.2.160/27", US),
            ],
            Some(ip(US)),
            accept,
        )
    }

    #[test]
    fn longest_prefix_wins_and_own_prefixes_are_not_routed() {
        let r = routes(true);
        assert_eq!(r.gateway(ip("192.0.2.130")), Some(ip(GWC)));
        assert_eq!(r.gateway(ip("192.0.2.150")), Some(ip(GWA)));
        assert_eq!(r.gateway(ip("192.0.2.161")), None, "our own LAN");
        assert_eq!(r.gateway(ip("203.0.113.1")), None);
        assert!(r.is_own(ip("192.0.2.161")) && !r.is_own(ip("192.0.2.130")));
        assert_eq!(
            r.installed(),
            vec![
                "192.0.2.128/27".parse().unwrap(),
                "192.0.2.128/28".parse().unwrap()
            ]
        );
        // accept_routes = false: nothing is sent or installed, but what
        // peers' LANs send is still recognised as theirs.
        let off = routes(false);
        assert_eq!(off.gateway(ip("192.0.2.150")), None);
        assert!(off.installed().is_empty());
        assert_eq!(off.owner(ip("192.0.2.150")), Some(ip(GWA)));
    }

    #[test]
    fn next_hop_is_the_virtual_ip_or_the_lans_gateway() {
        let t = PeerTable {
            prefix: Some("198.18.0.0/15".parse().unwrap()),
            routes: Arc::new(routes(true)),
            ..Default::default()
        };
        assert_eq!(t.next_hop(ip("198.18.0.9")), Some(ip("198.18.0.9")));
        assert_eq!(t.next_hop(ip("192.0.2.150")), Some(ip(GWA)));
        assert_eq!(t.next_hop(ip("192.0.2.1")), None);
    }
}
