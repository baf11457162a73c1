//! Configuration files for the three roles: `dc.toml`, `relay.toml` and
//! `node.toml`, one file here for each (`dc`, `relay`, `node`), the
//! subnet-routing keys in `routes`, and what they share in `common`.
//!
//! The key names are a public contract documented in docs/configuration.md.
//! Files are read into "raw" structs of untyped TOML values first and then
//! validated key by key, so that every error can say which file, which key,
//! which value, and what was expected instead. Serde's `deny_unknown_fields`
//! catches misspelt keys and lists the valid ones.
//!
//! Where a core has a type for a setting (`dc::settings`, `dataplane::io`,
//! `node::split_dns`), the loader produces that type: the cores never see a
//! file's shape, and nothing here reaches into their workings.

mod common;
mod dc;
mod node;
mod relay;
mod routes;

pub use common::{
    ConfigError, DEFAULT_DC_PORT, DEFAULT_RELAY_PORT, DEFAULT_VIRTUAL_PREFIX, MAX_LISTEN,
};
pub use dc::{load_dc, parse_dc, DcConfig};
pub use node::{
    load_node, parse_node, parse_node_with, DnsConfig, NodeConfig, DEFAULT_CONTROL_SOCKET,
    DEFAULT_KEEPALIVE_SECS,
};
pub use relay::{load_relay, parse_relay, RelayConfig};

#[cfg(test)]
mod common_tests;
#[cfg(test)]
mod dc_tests;
#[cfg(test)]
mod node_tests;
#[cfg(test)]
mod test_support;
