//! Sans-IO protocol core: wire formats, the Noise IK handshake, transport
//! sessions with anti-replay, and the signaling messages between nodes and
//! the DC. Nothing here touches a socket or reads a clock: callers pass bytes
//! and times in and get bytes out.

pub mod aead;
pub mod control;
pub mod cookie;
pub mod handshake;
pub mod link;
pub mod ratelimit;
pub mod relay;
pub mod replay;
pub mod session;
pub mod signal;
pub mod ticket;
pub mod wire;
