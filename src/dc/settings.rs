//! What the DC core takes from its operator: its settings at start, and the
//! ones a SIGHUP reload changes live. The core defines these types; the
//! config loader (`config::dc`) translates dc.toml into them, so the core
//! never sees a file's shape and the loader never reaches into the core.

use crate::keys::{PrivateKey, PublicKey};
use ipnet::Ipv4Net;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything `DcCore::new` needs.
pub struct DcSettings {
    pub key: PrivateKey,
    /// Lowercase, no trailing dot.
    pub domain: String,
    /// The block virtual IPs are assigned from (host bits cleared).
    pub prefix: Ipv4Net,
    /// Enrolment tokens; a node must present one of them.
    pub auth_keys: Vec<String>,
    /// A node silent for this long is expired.
    pub expiry: Duration,
    pub relays: Vec<RelaySpec>,
}

/// One relay: its key and its addresses (one per family, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    pub public_key: PublicKey,
    pub addresses: Vec<SocketAddr>,
}

/// Which node may route for which LAN prefixes. Grants of one DC never
/// overlap (the loader refuses it), so every LAN address has at most one
/// gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteGrant {
    /// The node's name (a label of this domain).
    pub node: String,
    pub prefixes: Vec<Ipv4Net>,
}

/// Another domain's DC to federate with: its domain, its key, and where to
/// reach it (`None`: look it up with DNS SRV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationSpec {
    /// Lowercase, no trailing dot.
    pub domain: String,
    pub public_key: PublicKey,
    pub address: Option<SocketAddr>,
}

/// A setting a SIGHUP reload changed, applied live by `DcCore::apply`.
#[derive(Debug, Clone, PartialEq)]
pub enum DcChange {
    AuthKeys(Vec<String>),
    Relays(Vec<RelaySpec>),
    /// Online gateways' routes are authorised again.
    RouteGrants(Vec<RouteGrant>),
    /// Added domains are dialled, removed ones withdrawn, changed ones
    /// dialled again; unchanged sessions stay.
    Federation(Vec<FederationSpec>),
}
