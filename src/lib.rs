//! ntmtun: NTMobile (Network Traversal with Mobility) as a TUN application.
//!
//! Layout follows docs/architecture.md: `proto` is the sans-IO protocol core
//! (wire formats, handshakes, sessions, signaling); `dc` and `node` hold each
//! role's sans-IO logic plus a thin IO shell; `dataplane` holds the per-core
//! workers and their contract with the node (the peer table, the rule for an
//! opened record, what they punt), importing nothing from `node`; `net`
//! holds socket and packet helpers shared by the shells.
//! `config` reads the three files into the cores' own settings types; no
//! core imports it (tests/layering.rs).

pub mod cli;
pub mod clock;
pub mod config;
pub mod dataplane;
pub mod dc;
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
