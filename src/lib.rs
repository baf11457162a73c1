//! ntmtun: NTMobile (Network Traversal with Mobility) as a TUN application.
//!
//! Layout follows docs/architecture.md: `proto` is the sans-IO protocol core
//! (wire formats, handshakes, sessions, signaling); `dc` and `node` hold each
//! role's sans-IO logic plus a thin IO shell; `dataplane` holds the per-core
//! workers; `net` holds socket and packet helpers shared by the shells.

pub mod cli;
pub mod clock;
pub mod config;
pub mod dataplane;
pub mod dc;
pub mod heap;
pub mod keyfile;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod node;
pub mod proto;
pub mod relay;
pub mod reload;
pub mod shutdown;
pub mod status;
