//! What the node knows about one peer the DC directed it to: its identity,
//! candidate endpoints, sessions, a handshake in flight, and what waits for
//! the tunnel (queued packets, DNS answers).

use super::table::PeerStats;
use crate::keys::PublicKey;
use crate::node::dns::PendingQuery;
use crate::proto::handshake::Initiator;
use crate::proto::session::Session;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

/// Packets held per peer while its tunnel comes up.
pub const QUEUE_LIMIT: usize = 64;
/// Most endpoints we send a handshake initiation to.
pub const MAX_ENDPOINTS: usize = 4;

/// A DNS query answered once the tunnel is up (or its deadline passes).
pub struct DnsWaiter {
    pub pending: PendingQuery,
    pub client: SocketAddrV4,
    pub resolver: SocketAddrV4,
    pub deadline: Instant,
}

/// An initiation we sent and await a response to.
pub struct Initiation {
    pub initiator: Initiator,
    pub sent: Instant,
    pub attempts: u32,
}

pub struct Peer {
    pub name: String,
    pub virtual_ip: Ipv4Addr,
    pub key: PublicKey,
    pub endpoints: Vec<SocketAddr>,
    /// The endpoint the last authenticated packet came from.
    pub endpoint: Option<SocketAddr>,
    pub current: Option<Arc<Session>>,
    pub previous: Option<Arc<Session>>,
    /// When `current` was established, and whether we initiated it.
    pub established: Option<Instant>,
    pub we_initiated: bool,
    pub initiation: Option<Initiation>,
    /// Highest handshake timestamp accepted from this peer (replay guard).
    pub last_hello: u64,
    pub queue: VecDeque<Vec<u8>>,
    pub dns_waiters: Vec<DnsWaiter>,
    pub stats: Arc<PeerStats>,
}

impl Peer {
    pub fn new(
        name: String,
        virtual_ip: Ipv4Addr,
        key: PublicKey,
        endpoints: Vec<SocketAddr>,
        stats: Arc<PeerStats>,
    ) -> Self {
        Peer {
            name,
            virtual_ip,
            key,
            endpoints,
            endpoint: None,
            current: None,
            previous: None,
            established: None,
            we_initiated: false,
            initiation: None,
            last_hello: 0,
            queue: VecDeque::new(),
            dns_waiters: Vec::new(),
            stats,
        }
    }

    /// Holds a packet until the tunnel is up; the oldest goes when full.
    pub fn enqueue(&mut self, packet: Vec<u8>) {
        if self.queue.len() >= QUEUE_LIMIT {
            self.queue.pop_front();
        }
        self.queue.push_back(packet);
    }

    /// Installs a new session, keeping the old one for records in flight.
    pub fn install(
        &mut self,
        session: Session,
        endpoint: SocketAddr,
        now: Instant,
        we_initiated: bool,
    ) {
        self.previous = self.current.take();
        self.current = Some(Arc::new(session));
        self.endpoint = Some(endpoint);
        self.established = Some(now);
        self.we_initiated = we_initiated;
    }

    /// Where to send initiations: the known-good endpoint first.
    pub fn targets(&self) -> Vec<SocketAddr> {
        let mut t: Vec<SocketAddr> = self.endpoint.into_iter().collect();
        for e in &self.endpoints {
            if !t.contains(e) {
                t.push(*e);
            }
        }
        t.truncate(MAX_ENDPOINTS);
        t
    }

    pub fn owns_index(&self, index: u32) -> bool {
        self.current
            .as_ref()
            .is_some_and(|s| s.local_index == index)
            || self
                .previous
                .as_ref()
                .is_some_and(|s| s.local_index == index)
    }
}
