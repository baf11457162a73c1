//! The read-mostly peer table the control thread publishes to the workers.
//!
//! Workers load the current snapshot once per batch (an `ArcSwap` load, no
//! lock) and never modify it; per-packet mutable state lives in atomics
//! (`PeerStats`, the session's counter and replay window).

use crate::proto::session::Session;
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

    pub fn last_data_rx(&self) -> Option<Instant> {
        self.at(self.last_data_rx_ms.load(Ordering::Relaxed))
    }

    pub fn last_data_tx(&self) -> Option<Instant> {
        self.at(self.last_data_tx_ms.load(Ordering::Relaxed))
    }
}

/// Whether a decrypted packet may enter the TUN: the tunnel authenticated
/// the peer, so its inner source must be that peer's virtual address (or a
/// peer could spoof another), and it must be addressed to us.
pub fn admits(payload: &[u8], peer_vip: Ipv4Addr, local_ip: Option<Ipv4Addr>) -> bool {
    use crate::net::packet;
    packet::source(payload) == Some(IpAddr::V4(peer_vip))
        && local_ip.is_some_and(|ip| packet::destination(payload) == Some(IpAddr::V4(ip)))
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
    /// the 8-byte RELAYED header. Returns where to send it.
    pub fn wrap(&self, datagram: &[u8]) -> (SocketAddr, Vec<u8>) {
        match *self {
            Endpoint::Direct(a) => (a, datagram.to_vec()),
            Endpoint::Relay { relay, sid } => {
                let mut v = vec![0u8; crate::proto::relay::RELAYED_HEADER_LEN + datagram.len()];
                crate::proto::relay::put_relayed_header(&mut v, sid);
                v[crate::proto::relay::RELAYED_HEADER_LEN..].copy_from_slice(datagram);
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
}

/// How to accept records arriving for one of our session indexes.
pub struct RxRoute {
    pub virtual_ip: Ipv4Addr,
    pub session: Arc<Session>,
    pub endpoint: Endpoint,
    pub stats: Arc<PeerStats>,
}

/// One immutable snapshot of everything the workers need.
#[derive(Default)]
pub struct PeerTable {
    /// Our own virtual address (None until registered).
    pub local_ip: Option<Ipv4Addr>,
    /// The virtual prefix: packets to it belong to the tunnel.
    pub prefix: Option<ipnet::Ipv4Net>,
    /// Virtual prefixes of federated domains: theirs belong to the tunnel too.
    pub federated: Vec<ipnet::Ipv4Net>,
    /// Resolvers whose UDP port 53 traffic is captured.
    pub resolvers: Vec<IpAddr>,
    pub by_vip: HashMap<Ipv4Addr, TxRoute>,
    pub by_index: HashMap<u32, RxRoute>,
}
