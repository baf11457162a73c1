//! What a peer's handlers get from the node and hand back to it: the time,
//! the node's settings and ids, and a sink for datagrams, the workers'
//! table mark, and the asks only the node can carry out.

use crate::dataplane::table::Endpoint;
use crate::keys::{PrivateKey, PublicKey};
use crate::node::counters::{bump, ControlCounters};
use crate::node::dns::Resolution;
use crate::node::output::Output;
use crate::proto::link::IndexAlloc;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::DnsWaiter;

/// What the peers (and the rest of the core) produce for the IO shell and
/// for the core itself.
#[derive(Default)]
pub struct Sink {
    pub out: VecDeque<Output>,
    /// The workers' table no longer matches: republish it.
    pub table_dirty: bool,
    pub asks: Vec<Ask>,
}

/// What a peer needs the node to do: things that belong to the node, not
/// to one peer.
pub enum Ask {
    /// Answer this DNS query (the node's interceptors write the reply).
    Dns(Box<DnsWaiter>, Resolution),
    /// Ask the DC for a fresh direction for the peer named so.
    Redirect(String),
}

/// The node's id sources: session indexes (random, unique among ours) and
/// ping ids.
pub struct Ids<'a> {
    pub indexes: &'a mut IndexAlloc,
    /// Indexes in use, and the peer each routes to.
    pub taken: &'a HashMap<u32, PublicKey>,
    pub ping: &'a mut u64,
}

/// A peer handler's view of the node for one event.
pub struct Env<'a> {
    pub now: Instant,
    /// Wall-clock nanoseconds now: handshake and bind timestamps.
    pub unix: u64,
    pub key: &'a PrivateKey,
    /// `key`'s public half.
    pub public: PublicKey,
    /// This process (`Register::incarnation`), told to peers in handshakes.
    pub incarnation: u64,
    pub keepalive: Option<Duration>,
    pub rekey: Duration,
    pub counters: &'a ControlCounters,
    pub ids: Ids<'a>,
    pub sink: &'a mut Sink,
}

impl Env<'_> {
    /// Sends `datagram` (a node-to-node message) to `ep`.
    pub fn send(&mut self, ep: Endpoint, datagram: &[u8]) {
        let (to, bytes) = ep.wrap(datagram);
        self.sink.out.push_back(Output::Udp { to, bytes });
    }

    pub fn emit(&mut self, out: Output) {
        self.sink.out.push_back(out);
    }

    /// The workers' table must be republished.
    pub fn dirty(&mut self) {
        self.sink.table_dirty = true;
    }

    pub fn ask(&mut self, ask: Ask) {
        self.sink.asks.push(ask);
    }

    pub fn count(&self, which: impl FnOnce(&ControlCounters) -> &AtomicU64) {
        bump(which(self.counters));
    }

    /// A random session index none of ours uses.
    pub fn index(&mut self) -> u32 {
        let taken = self.ids.taken;
        self.ids.indexes.next(|i| taken.contains_key(&i))
    }

    pub fn ping_id(&mut self) -> u64 {
        *self.ids.ping = self.ids.ping.wrapping_add(1);
        *self.ids.ping
    }
}
