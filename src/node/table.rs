//! The read-mostly peer table the control thread publishes to the workers.
//!
//! Workers load the current snapshot once per batch (an `ArcSwap` load, no
//! lock) and never modify it; per-packet mutable state lives in atomics
//! (`PeerStats`, the session's counter and replay window).

use crate::proto::session::Session;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
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
    /// Milliseconds since `epoch` of the last authenticated receive / send.
    last_rx_ms: AtomicU64,
    last_tx_ms: AtomicU64,
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
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        // +1 so that 0 keeps meaning "never".
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    pub fn record_rx(&self, bytes: usize, now: Instant) {
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.last_rx_ms.store(self.ms(now), Ordering::Relaxed);
    }

    pub fn record_tx(&self, bytes: usize, now: Instant) {
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.last_tx_ms.store(self.ms(now), Ordering::Relaxed);
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
}

/// Where and how to send to one peer.
pub struct TxRoute {
    pub virtual_ip: Ipv4Addr,
    pub session: Arc<Session>,
    pub endpoint: SocketAddr,
    pub stats: Arc<PeerStats>,
}

/// How to accept records arriving for one of our session indexes.
pub struct RxRoute {
    pub virtual_ip: Ipv4Addr,
    pub session: Arc<Session>,
    pub endpoint: SocketAddr,
    pub stats: Arc<PeerStats>,
}

/// One immutable snapshot of everything the workers need.
#[derive(Default)]
pub struct PeerTable {
    /// Our own virtual address (None until registered).
    pub local_ip: Option<Ipv4Addr>,
    /// The virtual prefix: packets to it belong to the tunnel.
    pub prefix: Option<ipnet::Ipv4Net>,
    /// Resolvers whose UDP port 53 traffic is captured.
    pub resolvers: Vec<Ipv4Addr>,
    pub by_vip: HashMap<Ipv4Addr, TxRoute>,
    pub by_index: HashMap<u32, RxRoute>,
}
