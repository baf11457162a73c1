//! The data plane: pinned workers that each own one TUN queue and one
//! SO_REUSEPORT UDP socket and move packets run-to-completion. Anything that
//! is not a data record of a known session goes to the control thread.
//!
//! Two IO shells move the packets (`io` picks one): `uring` (multishot
//! io_uring reads and receives into provided-buffer rings, batched SENDMSG)
//! and `epoll` (poll(2) + recvmmsg/sendmmsg). Both run the per-packet code
//! of `path`, the TUN offloads of `vnet` (TSO/USO super-packets) and `gro`
//! (coalesced TUN writes), and the UDP batches of `net::batch` (GSO sends,
//! GRO receives); `NTMTUN_OFFLOAD=0` turns the offloads off. Both sit
//! behind the same `ToControl` channel and `PeerTable` snapshot.

pub mod epoll;
pub mod gro;
pub mod io;
pub mod mtu;
pub mod path;
pub mod uring;
pub mod vnet;
pub mod worker;

pub use vnet::tun_write;

use crate::node::table::Endpoint;
use std::net::SocketAddr;

/// What a worker (or another IO thread) hands to the control thread.
pub enum ToControl {
    /// A datagram that is not a data record of a known session.
    Udp {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A TUN packet with no tunnel yet, or a captured DNS query.
    Tun(Vec<u8>),
    /// An ICMP fragmentation-needed answer to a packet too big for its
    /// peer's path (`dataplane::mtu`), to be written into the TUN.
    TooBig(Vec<u8>),
    /// An authenticated record for our session `index` came from `from`,
    /// which is not the endpoint the table had.
    EndpointSeen {
        index: u32,
        from: Endpoint,
    },
    /// A peer control message (ping, probe) on session `index` from `from`.
    PeerControl {
        index: u32,
        from: Endpoint,
        payload: Vec<u8>,
    },
    /// The host's addresses or routes changed; these are our endpoints now.
    NetworkChanged(Vec<SocketAddr>),
    /// An answer from a real DNS resolver.
    Upstream {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Settings reloaded on SIGHUP.
    Reload(Vec<crate::reload::NodeChange>),
    /// `ntmtun status` asks; the report goes back on the channel.
    Status(crossbeam_channel::Sender<crate::status::StatusReport>),
    /// `ntmtun ping NAME`: the answer goes back on the channel.
    Ping {
        name: String,
        reply: crossbeam_channel::Sender<crate::status::PingReport>,
    },
    Shutdown,
}
