//! The Relay Server: forwards already-encrypted datagrams between the two
//! nodes of a DC-ticketed pair. `core` is the sans-IO logic; `server` is the
//! batched (recvmmsg/sendmmsg) UDP shell.

pub mod core;
pub mod server;
