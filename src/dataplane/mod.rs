//! The data plane: pinned workers that each own one TUN queue and one
//! SO_REUSEPORT UDP socket and move packets run-to-completion. Anything that
//! is not a data record of a known session goes to the control thread.
//!
//! Two IO shells move the packets (`io` picks one): `uring` (multishot
//! io_uring reads and receives into provided-buffer rings, batched SENDMSG)
//! and `epoll` (poll(2) + recvmmsg/sendmmsg). Both run the per-packet code
//! of `path`, the TUN offloads of `vnet` (TSO/USO super-packets) and `gro`
//! (coalesced TUN writes), and the UDP batches of `net::batch` (GSO sends,
//! GRO receives); `NTMTUN_OFFLOAD=0` turns the offloads off.
//!
//! Its contract with its owner is defined here, with no import from the
//! node: the `PeerTable` snapshot it reads (`table`), the rule for an opened
//! record (`opened`), and what it hands back (`Punt`).

pub mod epoll;
pub mod gro;
pub mod io;
pub mod mtu;
pub mod opened;
pub mod path;
pub mod table;
pub mod uring;
pub mod vnet;
pub mod worker;

pub use vnet::tun_write;

use std::net::SocketAddr;
use table::Endpoint;

/// What the data plane hands to its owner (the node's control thread):
/// everything a worker does not handle itself. The owner's inbox wraps it
/// (`From<Punt>`), so the workers never name the owner's types.
pub enum Punt {
    /// A datagram that is not a data record of a session the table knows:
    /// handshakes, DC messages, relay frames.
    Udp { from: SocketAddr, bytes: Vec<u8> },
    /// A TUN packet with no tunnel yet, or a captured DNS query.
    Tun(Vec<u8>),
    /// An ICMP fragmentation-needed answer to a packet too big for its
    /// peer's path (`dataplane::mtu`), to be written into the TUN.
    TooBig(Vec<u8>),
    /// An authenticated record for our session `index` came from `from`,
    /// which is not the endpoint the table had, or was the session's first
    /// (`opened::classify_opened`).
    EndpointSeen { index: u32, from: Endpoint },
    /// A peer control message (ping, probe) on session `index` from `from`.
    PeerControl {
        index: u32,
        from: Endpoint,
        payload: Vec<u8>,
    },
}
