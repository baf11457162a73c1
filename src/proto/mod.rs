//! Sans-IO protocol core: wire formats, the Noise IK handshake, transport
//! sessions with anti-replay, the signaling messages between nodes and the
//! DC, and what a node name is. Nothing here touches a socket or reads a
//! clock: callers pass bytes and times in and get bytes out.

pub mod aead;
pub mod control;
pub mod cookie;
pub mod handshake;
pub mod link;
pub mod name;
pub mod ratelimit;
pub mod relay;
pub mod replay;
pub mod session;
pub mod signal;
pub mod ticket;
pub mod wire;
