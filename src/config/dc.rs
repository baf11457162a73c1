//! dc.toml: the Direction Coordinator's settings (docs/configuration.md),
//! validated and translated into the DC core's types (`dc::settings`).

use super::common::{
    parse_endpoint, parse_toml, read, type_name, ConfigError, Cx, DEFAULT_DC_PORT,
    DEFAULT_RELAY_PORT, DEFAULT_VIRTUAL_PREFIX,
};
use super::routes::RawRouteGrant;
use crate::dc::settings::{DcSettings, FederationSpec, RelaySpec, RouteGrant};
use crate::keys::PrivateKey;
use crate::proto::name::{self, Domain};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Value;

/// How long a node may go without refreshing before the DC expires it.
const DEFAULT_NODE_EXPIRY_SECS: u64 = 90;
/// Longest prefix length for `virtual_prefix`: a /31 or /32 has no room for
/// nodes.
const MAX_VIRTUAL_PREFIX_LEN: u8 = 30;

/// Settings of the Direction Coordinator (`ntmtun dc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcConfig {
    /// UDP addresses to listen on; at least one.
    pub listen: Vec<SocketAddr>,
    /// DNS domain under which node names resolve, lowercase, no trailing dot.
    pub domain: String,
    /// The DC's static key; nodes pin its public half.
    pub private_key: PrivateKey,
    /// Block virtual IPs are assigned from (host bits cleared).
    pub virtual_prefix: Ipv4Net,
    /// Where the DC keeps its node database.
    pub state_dir: PathBuf,
    /// Enrollment tokens; a node must present one of them.
    pub auth_keys: Vec<String>,
    /// A node that has not refreshed within this many seconds is expired;
    /// its address stays reserved for it.
    pub node_expiry_secs: u64,
    /// Relay Servers this DC hands tickets for (`[[relays]]`), one per key:
    /// entries of the same key (an address per family) are one relay.
    pub relays: Vec<RelaySpec>,
    /// Where to serve Prometheus metrics (`/metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Which node may route for which LAN prefixes (`[[route_grants]]`);
    /// no two nodes' prefixes overlap.
    pub route_grants: Vec<RouteGrant>,
    /// DCs of other domains this DC federates with (`[[federation]]`).
    pub federation: Vec<FederationSpec>,
}

impl DcConfig {
    /// What the DC core takes at start; the shell adds the route grants and
    /// the federation.
    pub fn core_settings(&self) -> DcSettings {
        DcSettings {
            key: self.private_key.clone(),
            domain: self.domain.clone(),
            prefix: self.virtual_prefix,
            auth_keys: self.auth_keys.clone(),
            expiry: Duration::from_secs(self.node_expiry_secs),
            relays: self.relays.clone(),
        }
    }
}

/// Reads and validates a DC config file.
pub fn load_dc(path: &Path) -> Result<DcConfig, ConfigError> {
    let text = read(path)?;
    parse_dc(&text, &path.display().to_string())
}

/// Validates the text of a DC config; `origin` names the file in messages.
pub fn parse_dc(text: &str, origin: &str) -> Result<DcConfig, ConfigError> {
    let raw: RawDc = parse_toml(text, origin)?;
    let cx = Cx { origin };

    let listen = cx.listen(raw.listen, DEFAULT_DC_PORT)?;

    const DOMAIN: &str = "a DNS name such as \"ntm.internal\"";
    let domain_raw = cx.string("domain", cx.required("domain", raw.domain, DOMAIN)?, DOMAIN)?;
    let domain = check_domain(&domain_raw).map_err(|why| {
        cx.invalid(
            "domain",
            format!("{domain_raw:?} is not a valid DNS name: {why}; expected {DOMAIN}"),
        )
    })?;

    let private_key = cx.private_key(raw.private_key)?;

    const PREFIX: &str =
        "an IPv4 prefix such as \"198.18.0.0/15\", with a prefix length of at most 30";
    let virtual_prefix = match raw.virtual_prefix {
        None => DEFAULT_VIRTUAL_PREFIX,
        Some(v) => {
            let s = cx.string("virtual_prefix", v, PREFIX)?;
            let net = parse_virtual_prefix(&s).map_err(|why| {
                cx.invalid(
                    "virtual_prefix",
                    format!("{s:?} is not a usable prefix: {why}; expected {PREFIX}"),
                )
            })?;
            net.trunc()
        }
    };

    const STATE_DIR: &str = "a directory path such as \"/var/lib/ntmtun/dc\"";
    let state_dir = cx.path("state_dir", raw.state_dir, STATE_DIR, None)?;

    const AUTH_KEYS: &str =
        "a non-empty list of non-empty enrollment tokens such as [\"change-me-enrollment-token\"]";
    let auth_keys = cx.auth_keys(
        cx.required("auth_keys", raw.auth_keys, AUTH_KEYS)?,
        AUTH_KEYS,
    )?;

    let node_expiry_secs = match raw.node_expiry_secs {
        None => DEFAULT_NODE_EXPIRY_SECS,
        Some(v) => cx.integer(
            "node_expiry_secs",
            v,
            30,
            i64::MAX,
            "a whole number of seconds, at least 30 (nodes refresh every 20 s)",
        )? as u64,
    };

    let relays = relay_specs(&cx, raw.relays.unwrap_or_default())?;

    let federation = federation_entries(
        &cx,
        raw.federation.unwrap_or_default(),
        &domain,
        &private_key,
    )?;

    Ok(DcConfig {
        listen,
        domain,
        private_key,
        virtual_prefix,
        state_dir,
        auth_keys,
        node_expiry_secs,
        relays,
        metrics_listen: cx.metrics_listen(raw.metrics_listen)?,
        route_grants: cx.route_grants(raw.route_grants.unwrap_or_default(), virtual_prefix)?,
        federation,
    })
}

/// Validates `[[relays]]` (each address once) and groups the entries by
/// key: entries of one key are one relay, an address per family.
fn relay_specs(cx: &Cx, raw: Vec<RawRelayEntry>) -> Result<Vec<RelaySpec>, ConfigError> {
    let mut relays: Vec<RelaySpec> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("relays[{i}].address");
        const ADDR: &str =
            "the relay's address as \"ip:port\" or \"[ipv6]:port\" (port 7447 if a bare IP)";
        let text = cx.string(&key, cx.required(&key, r.address, ADDR)?, ADDR)?;
        let address = parse_endpoint(&text, false, DEFAULT_RELAY_PORT).map_err(|why| {
            cx.invalid(
                &key,
                format!("{text:?} is not a valid address: {why}; expected {ADDR}"),
            )
        })?;
        let public_key = cx.public_key(
            &format!("relays[{i}].public_key"),
            r.public_key,
            "the relay's public key",
        )?;
        if relays.iter().any(|s| s.addresses.contains(&address)) {
            return Err(cx.invalid(
                &key,
                format!("{address} is listed twice; expected each relay address once"),
            ));
        }
        match relays.iter_mut().find(|s| s.public_key == public_key) {
            Some(s) => s.addresses.push(address),
            None => relays.push(RelaySpec {
                public_key,
                addresses: vec![address],
            }),
        }
    }
    Ok(relays)
}

/// Validates `[[federation]]`: a domain (not ours, each once), the other
/// DC's public key (not ours), and an optional address.
fn federation_entries(
    cx: &Cx,
    raw: Vec<RawFederationEntry>,
    own_domain: &str,
    own_key: &PrivateKey,
) -> Result<Vec<FederationSpec>, ConfigError> {
    const DOMAIN: &str = "the other DC's domain, a DNS name such as \"y.ntm.internal\"";
    const ADDR: &str = "the other DC's address as \"ip:port\" or \"[ipv6]:port\" (port 7446 if a bare IP), or no `address` to look it up with DNS SRV _ntmtun._udp.<domain>";
    let mut out: Vec<FederationSpec> = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        let key = format!("federation[{i}].domain");
        let text = cx.string(&key, cx.required(&key, f.domain, DOMAIN)?, DOMAIN)?;
        let domain = check_domain(&text).map_err(|why| {
            cx.invalid(
                &key,
                format!("{text:?} is not a valid DNS name: {why}; expected {DOMAIN}"),
            )
        })?;
        if domain == own_domain {
            return Err(cx.invalid(
                &key,
                format!("{domain:?} is this DC's own `domain`; expected another domain's name"),
            ));
        }
        if out.iter().any(|e| e.domain == domain) {
            return Err(cx.invalid(
                &key,
                format!("{domain:?} is listed twice; expected each federated domain once"),
            ));
        }
        let pk_key = format!("federation[{i}].public_key");
        let public_key = cx.public_key(&pk_key, f.public_key, "the other DC's public key")?;
        if public_key == own_key.public_key() {
            return Err(cx.invalid(
                &pk_key,
                "is this DC's own public key; expected the public key of the other domain's DC"
                    .to_string(),
            ));
        }
        let address = match f.address {
            None => None,
            Some(v) => {
                let key = format!("federation[{i}].address");
                let text = cx.string(&key, v, ADDR)?;
                Some(
                    parse_endpoint(&text, false, DEFAULT_DC_PORT).map_err(|why| {
                        cx.invalid(
                            &key,
                            format!("{text:?} is not a valid address: {why}; expected {ADDR}"),
                        )
                    })?,
                )
            }
        };
        out.push(FederationSpec {
            domain,
            public_key,
            address,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDc {
    listen: Option<Value>,
    domain: Option<Value>,
    private_key: Option<Value>,
    virtual_prefix: Option<Value>,
    state_dir: Option<Value>,
    auth_keys: Option<Value>,
    node_expiry_secs: Option<Value>,
    relays: Option<Vec<RawRelayEntry>>,
    metrics_listen: Option<Value>,
    route_grants: Option<Vec<RawRouteGrant>>,
    federation: Option<Vec<RawFederationEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederationEntry {
    domain: Option<Value>,
    address: Option<Value>,
    public_key: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelayEntry {
    address: Option<Value>,
    public_key: Option<Value>,
}

impl Cx<'_> {
    fn auth_keys(&self, value: Value, expected: &str) -> Result<Vec<String>, ConfigError> {
        const KEY: &str = "auth_keys";
        let items = match value {
            Value::Array(items) if items.is_empty() => {
                return Err(self.invalid(KEY, format!("[] is an empty list; expected {expected}")))
            }
            Value::Array(items) => items,
            other => {
                return Err(self.invalid(
                    KEY,
                    format!(
                        "the value (not shown because it may be secret) is {}; expected {expected}",
                        type_name(&other)
                    ),
                ))
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Value::String(s) if !s.trim().is_empty() => out.push(s),
                Value::String(s) => {
                    return Err(self.invalid(
                        KEY,
                        format!("entry {}, {s:?}, is empty; expected {expected}", i + 1),
                    ))
                }
                other => {
                    return Err(self.invalid(
                        KEY,
                        format!(
                        "entry {} (not shown because it may be secret) is {}; expected {expected}",
                        i + 1,
                        type_name(&other)
                    ),
                    ))
                }
            }
        }
        Ok(out)
    }
}

fn parse_virtual_prefix(s: &str) -> Result<Ipv4Net, String> {
    let net = match s.trim().parse::<Ipv4Net>() {
        Ok(net) => net,
        Err(_) if s.trim().parse::<ipnet::Ipv6Net>().is_ok() => {
            return Err("it is an IPv6 prefix".to_string())
        }
        Err(_) if s.trim().parse::<Ipv4Addr>().is_ok() => {
            return Err("the prefix length is missing".to_string())
        }
        Err(_) => return Err("not an address/length prefix".to_string()),
    };
    if net.prefix_len() > MAX_VIRTUAL_PREFIX_LEN {
        return Err(format!(
            "a /{} is too small to hold nodes",
            net.prefix_len()
        ));
    }
    Ok(net)
}

/// Validates a domain (any case, trailing dot optional: `proto::name`) and
/// returns it lowercased without the trailing dot.
fn check_domain(domain: &str) -> Result<String, String> {
    Domain::parse(&name::fold(domain))
        .map(|d| d.to_string())
        .map_err(|e| e.to_string())
}
