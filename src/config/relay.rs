//! relay.toml: a Relay Server's settings (docs/configuration.md).

use super::common::{parse_toml, read, ConfigError, Cx, DEFAULT_RELAY_PORT};
use crate::keys::{PrivateKey, PublicKey};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use toml::Value;

/// Default per-pair relay rate limit.
const DEFAULT_SESSION_RATE_MBPS: u64 = 1000;

/// Settings of a Relay Server (`ntmtun relay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// UDP addresses to listen on (IPv4 and/or IPv6; both for v4<->v6 relaying).
    pub listen: Vec<SocketAddr>,
    pub private_key: PrivateKey,
    /// The DC whose tickets this relay honours.
    pub dc_public_key: PublicKey,
    /// Most a ticketed pair may send through the relay, in Mbit/s.
    pub session_rate_mbps: u64,
    /// Where to serve Prometheus metrics (`/metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// Reads and validates a relay config file.
pub fn load_relay(path: &Path) -> Result<RelayConfig, ConfigError> {
    let text = read(path)?;
    parse_relay(&text, &path.display().to_string())
}

/// Parses a relay config.
pub fn parse_relay(text: &str, origin: &str) -> Result<RelayConfig, ConfigError> {
    let raw: RawRelay = parse_toml(text, origin)?;
    let cx = Cx { origin };
    let listen = cx.listen(raw.listen, DEFAULT_RELAY_PORT)?;
    let private_key = cx.private_key(raw.private_key)?;
    let dc_public_key = cx.public_key("dc_public_key", raw.dc_public_key, "the DC's public key")?;
    let session_rate_mbps = match raw.session_rate_mbps {
        None => DEFAULT_SESSION_RATE_MBPS,
        Some(v) => cx.integer(
            "session_rate_mbps",
            v,
            1,
            1_000_000,
            "a whole number of Mbit/s, 1 to 1000000",
        )? as u64,
    };
    Ok(RelayConfig {
        listen,
        private_key,
        dc_public_key,
        session_rate_mbps,
        metrics_listen: cx.metrics_listen(raw.metrics_listen)?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    listen: Option<Value>,
    private_key: Option<Value>,
    dc_public_key: Option<Value>,
    session_rate_mbps: Option<Value>,
    metrics_listen: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{keys, sa};

    #[test]
    fn bare_relay_addresses_get_the_relay_port() {
        let k = keys();
        let text = format!(
            "listen = [\"198.51.100.20\", \"[2001:db8::20]\"]\nprivate_key = \"{}\"\ndc_public_key = \"{}\"\n",
            k.node_private, k.dc_public
        );
        let r = parse_relay(&text, "relay.toml").unwrap();
        assert_eq!(
            r.listen,
            vec![sa("198.51.100.20:7447"), sa("[2001:db8::20]:7447")]
        );
    }
}
