//! Configuration files for the two roles: `dc.toml` and `node.toml`.
//!
//! The key names are a public contract documented in docs/configuration.md.
//! Files are read into "raw" structs of untyped TOML values first and then
//! validated key by key, so that every error can say which file, which key,
//! which value, and what was expected instead. Serde's `deny_unknown_fields`
//! catches misspelt keys and lists the valid ones.

use crate::keys::{PrivateKey, PublicKey};
use crate::net::resolv;
use crate::proto::name::{self, Domain, Label};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use toml::Value;

mod routes;
pub use routes::{RouteGrant, MAX_ADVERTISED_ROUTES, MAX_ROUTE_GRANTS};

/// UDP port of the DC when an address does not give one.
pub const DEFAULT_DC_PORT: u16 = 7446;
/// The block NTMobile virtual IPs come from (RFC 2544 benchmarking space,
/// which is never routed on the Internet).
pub const DEFAULT_VIRTUAL_PREFIX: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15);
/// How long a node may go without refreshing before the DC expires it.
pub const DEFAULT_NODE_EXPIRY_SECS: u64 = 90;
/// Name of the node's TUN interface.
pub const DEFAULT_TUN: &str = "ntm0";
/// Where the node's control socket (used by `ntmtun status` etc.) lives.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ntmtun/ntmtun.sock";
/// Keepalive interval: half the 30 s UDP timeout of Linux-based home
/// routers, so a mapping still sees a packet in time when one keepalive
/// (or its answer) is lost (docs/configuration.md).
pub const DEFAULT_KEEPALIVE_SECS: u64 = 15;
/// Session rekey interval.
pub const DEFAULT_REKEY_SECS: u64 = 120;
/// Upper bound on dataplane worker threads.
pub const MAX_WORKERS: usize = 64;

/// Longest prefix length for `virtual_prefix`: a /31 or /32 has no room for
/// nodes.
const MAX_VIRTUAL_PREFIX_LEN: u8 = 30;
/// Linux IFNAMSIZ minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;
/// `sun_path` in `sockaddr_un` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_LEN: usize = 107;

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
    /// Relay Servers this DC hands tickets for (`[[relays]]`); an entry per
    /// address family of the same relay is allowed.
    pub relays: Vec<RelayEntry>,
    /// Where to serve Prometheus metrics (`/metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Which node may route for which LAN prefixes (`[[route_grants]]`);
    /// no two nodes' prefixes overlap.
    pub route_grants: Vec<RouteGrant>,
    /// DCs of other domains this DC federates with (`[[federation]]`).
    pub federation: Vec<FederationEntry>,
}

/// One `[[federation]]` entry of the DC config: another domain's DC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationEntry {
    /// Lowercase, no trailing dot.
    pub domain: String,
    pub public_key: PublicKey,
    /// `None`: found with a DNS SRV lookup of `_ntmtun._udp.<domain>`.
    pub address: Option<SocketAddr>,
}

/// One `[[relays]]` entry of the DC config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEntry {
    pub address: SocketAddr,
    pub public_key: PublicKey,
}

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

/// Default relay port.
pub const DEFAULT_RELAY_PORT: u16 = 7447;
/// Default per-pair relay rate limit.
pub const DEFAULT_SESSION_RATE_MBPS: u64 = 1000;

/// Settings of a node (`ntmtun node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's DNS label, e.g. `alice` for `alice.<domain>`.
    pub name: String,
    /// The node's static key; its public half is its identity.
    pub private_key: PrivateKey,
    /// DC addresses to try; at least one.
    pub dc: Vec<SocketAddr>,
    /// The DC's public key, pinned so a node cannot be lured to a fake DC.
    pub dc_public_key: PublicKey,
    /// Enrollment token; one of the DC's `auth_keys`.
    pub auth_key: String,
    /// Name of the TUN interface to create.
    pub tun: String,
    /// Local UDP port for tunnels; 0 lets the OS choose.
    pub listen_port: u16,
    /// Unix socket for the local control/status interface.
    pub control_socket: PathBuf,
    /// Dataplane worker threads; 0 means one per available core.
    pub workers: usize,
    /// Which IO shell the workers use (key `io`).
    pub io: IoMode,
    /// Keepalive interval in seconds; 0 disables keepalives.
    pub keepalive_secs: u64,
    /// Session rekey interval in seconds.
    pub rekey_secs: u64,
    /// DNS interception settings (table `[dns]`).
    pub dns: DnsConfig,
    /// Where to serve Prometheus metrics (`/metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// LAN prefixes behind this node that it offers to route for (a
    /// gateway); the DC grants or refuses each.
    pub advertise_routes: Vec<Ipv4Net>,
    /// Route the prefixes other gateways were granted into the tunnel.
    pub accept_routes: bool,
    /// Masquerade tunnel traffic that leaves to the LAN (gateways whose LAN
    /// hosts have no route back to the other sites).
    pub snat: bool,
}

/// The data plane's IO shell (node key `io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IoMode {
    /// io_uring where a probe at start shows it works, else epoll.
    #[default]
    Auto,
    /// io_uring, or a start error if the kernel lacks it.
    Uring,
    /// poll(2) + recvmmsg/sendmmsg: works everywhere.
    Epoll,
}

impl IoMode {
    /// The spelling used in node.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Epoll => "epoll",
        }
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IoMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            _ => Err(format!(
                "{s:?} is not an IO shell; expected one of \"auto\", \"uring\" or \"epoll\""
            )),
        }
    }
}

/// How a node handles the host's DNS queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DnsMode {
    /// Queries to the resolvers are routed into the TUN and answered or
    /// forwarded by the node.
    #[default]
    Capture,
    /// Split DNS: the node answers on a stub address in the TUN and
    /// registers it with systemd-resolved for the domain only; capture where
    /// systemd-resolved does not run.
    Stub,
    /// No DNS interception.
    Off,
}

impl DnsMode {
    /// The spelling used in node.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsMode::Capture => "capture",
            DnsMode::Stub => "stub",
            DnsMode::Off => "off",
        }
    }
}

impl fmt::Display for DnsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DnsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "capture" => Ok(DnsMode::Capture),
            "stub" => Ok(DnsMode::Stub),
            "off" => Ok(DnsMode::Off),
            _ => Err(format!(
                "{s:?} is not a DNS mode; expected one of \"capture\", \"stub\" or \"off\""
            )),
        }
    }
}

/// The node's `[dns]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub mode: DnsMode,
    /// Resolver addresses whose queries are intercepted; defaults to the
    /// nameservers in /etc/resolv.conf.
    pub resolvers: Vec<IpAddr>,
}

/// A config file that could not be read or is not valid. The message names
/// the file, the key, the offending value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The io error is part of the message and
    /// deliberately not a `source`, so error chains do not print it twice.
    #[error(
        "cannot read config file {}: {error}; check the path given to --config",
        path.display()
    )]
    Read { path: PathBuf, error: io::Error },
    /// Not valid TOML, a misspelt key, or a table of the wrong shape; the
    /// message comes from the TOML parser and carries line and column.
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    /// A key is missing or its value is not acceptable.
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The key an `Invalid` error is about, for callers that want to point
    /// at it.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Reads and validates a DC config file.
pub fn load_dc(path: &Path) -> Result<DcConfig, ConfigError> {
    let text = read(path)?;
    parse_dc(&text, &path.display().to_string())
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

/// Reads and validates a node config file; `[dns] resolvers` defaults to
/// the nameservers in /etc/resolv.conf.
pub fn load_node(path: &Path) -> Result<NodeConfig, ConfigError> {
    let text = read(path)?;
    parse_node(&text, &path.display().to_string())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    // Every config holds a private key: a file anyone on the host can read
    // gives that key away.
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            return Err(ConfigError::Invalid {
                origin: path.display().to_string(),
                key: "(file mode)".into(),
                message: format!(
                    "the file holds a private key and is readable by every user (mode {mode:o}); \
                     expected mode 600: run `chmod 600 {}`",
                    path.display()
                ),
            });
        }
    }
    Ok(text)
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

    let mut relays = Vec::new();
    for (i, r) in raw.relays.unwrap_or_default().into_iter().enumerate() {
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
        if relays.iter().any(|e: &RelayEntry| e.address == address) {
            return Err(cx.invalid(
                &key,
                format!("{address} is listed twice; expected each relay address once"),
            ));
        }
        relays.push(RelayEntry {
            address,
            public_key,
        });
    }

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

/// Validates `[[federation]]`: a domain (not ours, each once), the other
/// DC's public key (not ours), and an optional address.
fn federation_entries(
    cx: &Cx,
    raw: Vec<RawFederationEntry>,
    own_domain: &str,
    own_key: &PrivateKey,
) -> Result<Vec<FederationEntry>, ConfigError> {
    const DOMAIN: &str = "the other DC's domain, a DNS name such as \"y.ntm.internal\"";
    const ADDR: &str = "the other DC's address as \"ip:port\" or \"[ipv6]:port\" (port 7446 if a bare IP), or no `address` to look it up with DNS SRV _ntmtun._udp.<domain>";
    let mut out: Vec<FederationEntry> = Vec::new();
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
        out.push(FederationEntry {
            domain,
            public_key,
            address,
        });
    }
    Ok(out)
}

/// Validates the text of a node config; `origin` names the file in
/// messages. `[dns] resolvers` defaults to the nameservers in
/// /etc/resolv.conf.
pub fn parse_node(text: &str, origin: &str) -> Result<NodeConfig, ConfigError> {
    parse_node_with(text, origin, resolv::system_resolvers)
}

/// Like [`parse_node`], but takes the default for `[dns] resolvers` from
/// `default_resolvers`, which is called only when the key is absent; this
/// keeps tests independent of the host's resolv.conf.
pub fn parse_node_with(
    text: &str,
    origin: &str,
    default_resolvers: impl FnOnce() -> io::Result<Vec<IpAddr>>,
) -> Result<NodeConfig, ConfigError> {
    let raw: RawNode = parse_toml(text, origin)?;
    let cx = Cx { origin };

    const NAME: &str = "a single DNS label of 1-63 characters a-z, 0-9 and '-', not starting or ending with '-', such as \"alice\"";
    let name = cx.string("name", cx.required("name", raw.name, NAME)?, NAME)?;
    Label::parse(&name).map_err(|why| {
        cx.invalid(
            "name",
            format!("{name:?} is not a valid name: it {why}; expected {NAME}"),
        )
    })?;

    let private_key = cx.private_key(raw.private_key)?;

    const DC: &str = "the DC's address as \"ip:port\", \"[ipv6]:port\" or a bare IP (port 7446), or a list of them";
    let dc = cx.addresses(
        "dc",
        cx.required("dc", raw.dc, DC)?,
        DC,
        false,
        DEFAULT_DC_PORT,
    )?;

    let dc_public_key = cx.public_key("dc_public_key", raw.dc_public_key, "the DC's public key")?;
    if private_key.public_key() == dc_public_key {
        return Err(cx.invalid(
            "private_key",
            "is the DC's own private key (its public key equals `dc_public_key`); expected the node's own key from `ntmtun keygen`",
        ));
    }

    const AUTH_KEY: &str = "a non-empty enrollment token, one of the DC's `auth_keys`";
    let auth_key = cx.secret_string(
        "auth_key",
        cx.required("auth_key", raw.auth_key, AUTH_KEY)?,
        AUTH_KEY,
    )?;
    if auth_key.trim().is_empty() {
        return Err(cx.invalid(
            "auth_key",
            format!("{auth_key:?} is empty; expected {AUTH_KEY}"),
        ));
    }

    const TUN: &str =
        "a Linux interface name of 1-15 bytes without '/', ':' or whitespace, such as \"ntm0\"";
    let tun = match raw.tun {
        None => DEFAULT_TUN.to_string(),
        Some(v) => {
            let tun = cx.string("tun", v, TUN)?;
            check_ifname(&tun).map_err(|why| {
                cx.invalid(
                    "tun",
                    format!("{tun:?} is not a valid interface name: {why}; expected {TUN}"),
                )
            })?;
            tun
        }
    };

    let listen_port = match raw.listen_port {
        None => 0,
        Some(v) => cx.integer(
            "listen_port",
            v,
            0,
            i64::from(u16::MAX),
            "a UDP port number 0-65535 (0 = any)",
        )? as u16,
    };

    const SOCKET: &str = "a socket path such as \"/run/ntmtun/ntmtun.sock\", at most 107 bytes";
    let control_socket = cx.path(
        "control_socket",
        raw.control_socket,
        SOCKET,
        Some(DEFAULT_CONTROL_SOCKET),
    )?;
    let socket_len = control_socket.as_os_str().len();
    if socket_len > MAX_SOCKET_PATH_LEN {
        return Err(cx.invalid(
            "control_socket",
            format!(
                "{:?} is {socket_len} bytes long, too long for a Unix socket; expected {SOCKET}",
                control_socket.display().to_string()
            ),
        ));
    }

    let workers = match raw.workers {
        None => 0,
        Some(v) => cx.integer(
            "workers",
            v,
            0,
            MAX_WORKERS as i64,
            "a number of worker threads 0-64 (0 = one per available core)",
        )? as usize,
    };

    let io = match raw.io {
        None => IoMode::default(),
        Some(v) => {
            let s = cx.string("io", v, "one of \"auto\", \"uring\" or \"epoll\"")?;
            s.parse::<IoMode>().map_err(|why| cx.invalid("io", why))?
        }
    };

    let keepalive_secs = match raw.keepalive_secs {
        None => DEFAULT_KEEPALIVE_SECS,
        Some(v) => cx.integer(
            "keepalive_secs",
            v,
            0,
            3600,
            "a number of seconds 1-3600, or 0 to disable keepalives",
        )? as u64,
    };

    let rekey_secs = match raw.rekey_secs {
        None => DEFAULT_REKEY_SECS,
        Some(v) => cx.integer("rekey_secs", v, 10, 86400, "a number of seconds 10-86400")? as u64,
    };

    let dns = cx.dns(raw.dns.unwrap_or_default(), default_resolvers)?;
    let (advertise_routes, accept_routes, snat) =
        cx.gateway(raw.advertise_routes, raw.accept_routes, raw.snat)?;

    Ok(NodeConfig {
        name,
        private_key,
        dc,
        dc_public_key,
        auth_key,
        tun,
        listen_port,
        control_socket,
        workers,
        io,
        keepalive_secs,
        rekey_secs,
        dns,
        metrics_listen: cx.metrics_listen(raw.metrics_listen)?,
        advertise_routes,
        accept_routes,
        snat,
    })
}

// ---------------------------------------------------------------------------
// Raw (unvalidated) file contents. Values stay untyped so that validation can
// report a wrong type together with the key and the value.

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
    route_grants: Option<Vec<routes::RawRouteGrant>>,
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
struct RawRelay {
    listen: Option<Value>,
    private_key: Option<Value>,
    dc_public_key: Option<Value>,
    session_rate_mbps: Option<Value>,
    metrics_listen: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelayEntry {
    address: Option<Value>,
    public_key: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<Value>,
    private_key: Option<Value>,
    dc: Option<Value>,
    dc_public_key: Option<Value>,
    auth_key: Option<Value>,
    tun: Option<Value>,
    listen_port: Option<Value>,
    control_socket: Option<Value>,
    workers: Option<Value>,
    io: Option<Value>,
    keepalive_secs: Option<Value>,
    rekey_secs: Option<Value>,
    dns: Option<RawDns>,
    metrics_listen: Option<Value>,
    advertise_routes: Option<Value>,
    accept_routes: Option<Value>,
    snat: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a table [dns] with keys `mode` and `resolvers`"
)]
struct RawDns {
    mode: Option<Value>,
    resolvers: Option<Value>,
}

fn parse_toml<T: for<'de> Deserialize<'de>>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

// ---------------------------------------------------------------------------
// Validation helpers. Each takes the key so its error can name it.

/// Validation context: knows the file name for error messages.
struct Cx<'a> {
    origin: &'a str,
}

impl Cx<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn required(
        &self,
        key: &str,
        value: Option<Value>,
        expected: &str,
    ) -> Result<Value, ConfigError> {
        value.ok_or_else(|| self.invalid(key, format!("missing; expected {expected}")))
    }

    fn wrong_type(&self, key: &str, value: &Value, expected: &str) -> ConfigError {
        self.invalid(
            key,
            format!(
                "{} is {}; expected {expected}",
                show(value),
                type_name(value)
            ),
        )
    }

    fn string(&self, key: &str, value: Value, expected: &str) -> Result<String, ConfigError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type(key, &other, expected)),
        }
    }

    /// Like `string`, but never repeats the value in a message: it may be a
    /// secret that should not end up in logs.
    fn secret_string(
        &self,
        key: &str,
        value: Value,
        expected: &str,
    ) -> Result<String, ConfigError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(self.invalid(
                key,
                format!(
                    "the value (not shown because it is secret) is {}; expected {expected}",
                    type_name(&other)
                ),
            )),
        }
    }

    /// An integer in `min..=max`.
    fn integer(
        &self,
        key: &str,
        value: Value,
        min: i64,
        max: i64,
        expected: &str,
    ) -> Result<i64, ConfigError> {
        match value {
            Value::Integer(n) if (min..=max).contains(&n) => Ok(n),
            Value::Integer(n) => {
                Err(self.invalid(key, format!("{n} is out of range; expected {expected}")))
            }
            other => Err(self.wrong_type(key, &other, expected)),
        }
    }

    /// A path; `default` is used when the key is absent, and if there is no
    /// default the key is required.
    fn path(
        &self,
        key: &str,
        value: Option<Value>,
        expected: &str,
        default: Option<&str>,
    ) -> Result<PathBuf, ConfigError> {
        let value = match (value, default) {
            (Some(v), _) => v,
            (None, Some(d)) => return Ok(PathBuf::from(d)),
            (None, None) => return Err(self.invalid(key, format!("missing; expected {expected}"))),
        };
        let s = self.string(key, value, expected)?;
        if s.trim().is_empty() {
            return Err(self.invalid(key, format!("{s:?} is empty; expected {expected}")));
        }
        Ok(PathBuf::from(s))
    }

    /// A string or a list of strings, as a list.
    fn string_list(
        &self,
        key: &str,
        value: Value,
        expected: &str,
        allow_single: bool,
    ) -> Result<Vec<String>, ConfigError> {
        let items = match value {
            Value::String(s) if allow_single => return Ok(vec![s]),
            Value::Array(items) => items,
            other => return Err(self.wrong_type(key, &other, expected)),
        };
        if items.is_empty() {
            return Err(self.invalid(key, format!("[] is an empty list; expected {expected}")));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(self.invalid(
                    key,
                    format!(
                        "entry {} of the list, {}, is {}; expected {expected}",
                        i + 1,
                        show(&other),
                        type_name(&other)
                    ),
                )),
            })
            .collect()
    }

    /// `listen` (DC) or `dc` (node): one address or a list of them, each
    /// "ip:port", "[ipv6]:port" or a bare IP meaning port 7446.
    /// The required `listen` list of the DC or a relay.
    fn listen(
        &self,
        value: Option<Value>,
        default_port: u16,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let expected = format!(
            "a list of addresses to listen on, each \"ip:port\", \"[ipv6]:port\" or a bare IP (port {default_port}), \
             such as [\"198.51.100.10:{default_port}\", \"[2001:db8::1]:{default_port}\"]"
        );
        let listen = self.addresses(
            "listen",
            self.required("listen", value, &expected)?,
            &expected,
            true,
            default_port,
        )?;
        if listen.len() > crate::net::poll::MAX_FDS {
            return Err(self.invalid(
                "listen",
                format!(
                    "{} addresses; expected at most {} (one per address family is usual)",
                    listen.len(),
                    crate::net::poll::MAX_FDS
                ),
            ));
        }
        Ok(listen)
    }

    fn addresses(
        &self,
        key: &str,
        value: Value,
        expected: &str,
        for_listening: bool,
        default_port: u16,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for text in self.string_list(key, value, expected, true)? {
            let addr = parse_endpoint(&text, for_listening, default_port).map_err(|why| {
                self.invalid(
                    key,
                    format!("{text:?} is not a valid address: {why}; expected {expected}"),
                )
            })?;
            if out.contains(&addr) {
                return Err(self.invalid(
                    key,
                    format!(
                        "{text:?} is listed more than once (as {addr}); expected each address once"
                    ),
                ));
            }
            out.push(addr);
        }
        Ok(out)
    }

    /// The optional `metrics_listen` address of every role.
    fn metrics_listen(&self, value: Option<Value>) -> Result<Option<SocketAddr>, ConfigError> {
        const EXPECTED: &str = "an address to serve Prometheus metrics on, such as \"127.0.0.1:9101\" or \"[::1]:9101\"";
        let Some(v) = value else { return Ok(None) };
        let text = self.string("metrics_listen", v, EXPECTED)?;
        text.parse::<SocketAddr>().map(Some).map_err(|_| {
            self.invalid(
                "metrics_listen",
                format!("{text:?} is not an address with a port; expected {EXPECTED}"),
            )
        })
    }

    /// A required public key; `what` says whose, for the messages.
    fn public_key(
        &self,
        key: &str,
        value: Option<Value>,
        what: &str,
    ) -> Result<PublicKey, ConfigError> {
        let expected = format!("{what}, base64 of 32 bytes (use the output of `ntmtun pubkey`)");
        let text = self.string(key, self.required(key, value, &expected)?, &expected)?;
        PublicKey::from_base64(&text).map_err(|e| {
            self.invalid(
                key,
                format!(
                    "{text:?} is not a valid public key: {e} (use the output of `ntmtun pubkey`)"
                ),
            )
        })
    }

    fn private_key(&self, value: Option<Value>) -> Result<PrivateKey, ConfigError> {
        const KEY: &str = "private_key";
        const EXPECTED: &str = "base64 of 32 bytes (use the output of `ntmtun keygen`)";
        let text = self.secret_string(KEY, self.required(KEY, value, EXPECTED)?, EXPECTED)?;
        PrivateKey::from_base64(&text).map_err(|e| {
            self.invalid(
                KEY,
                format!(
                    "the value ({} characters, not shown because it is secret) is not a valid private key: {e} (use the output of `ntmtun keygen`)",
                    text.chars().count()
                ),
            )
        })
    }

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

    fn dns(
        &self,
        raw: RawDns,
        default_resolvers: impl FnOnce() -> io::Result<Vec<IpAddr>>,
    ) -> Result<DnsConfig, ConfigError> {
        const MODE_KEY: &str = "[dns] mode";
        const MODE: &str = "one of \"capture\", \"stub\" or \"off\"";
        let mode = match raw.mode {
            None => DnsMode::default(),
            Some(v) => {
                let s = self.string(MODE_KEY, v, MODE)?;
                s.parse::<DnsMode>()
                    .map_err(|why| self.invalid(MODE_KEY, why))?
            }
        };

        const KEY: &str = "[dns] resolvers";
        const RESOLVERS: &str = "a list of resolver IP addresses such as [\"198.51.100.53\"]";
        let resolvers = match raw.resolvers {
            Some(v) => {
                let list = match v {
                    Value::Array(items) if items.is_empty() => Vec::new(),
                    other => self.string_list(KEY, other, RESOLVERS, true)?,
                };
                let mut out: Vec<IpAddr> = Vec::new();
                for text in list {
                    let ip = parse_resolver(&text).map_err(|why| {
                        self.invalid(KEY, format!("{text:?} is not a valid resolver address: {why}; expected {RESOLVERS}"))
                    })?;
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
                if out.is_empty() && mode != DnsMode::Off {
                    return Err(self.invalid(
                        KEY,
                        format!("[] is an empty list, but [dns] mode is \"{mode}\"; expected {RESOLVERS}, or mode = \"off\""),
                    ));
                }
                out
            }
            // With DNS off the resolvers are informational only, so a
            // missing or unreadable resolv.conf is not an error.
            None if mode == DnsMode::Off => default_resolvers().unwrap_or_default(),
            None => match default_resolvers() {
                Ok(list) if !list.is_empty() => list,
                Ok(_) => {
                    return Err(self.invalid(
                        KEY,
                        format!(
                            "not set, and {} lists no nameserver to default to; set it in [dns], e.g. resolvers = [\"198.51.100.53\"], or set mode = \"off\"",
                            resolv::RESOLV_CONF
                        ),
                    ))
                }
                Err(e) => {
                    return Err(self.invalid(
                        KEY,
                        format!(
                            "not set, and the default could not be read from {}: {e}; set it in [dns], e.g. resolvers = [\"198.51.100.53\"], or set mode = \"off\"",
                            resolv::RESOLV_CONF
                        ),
                    ))
                }
            },
        };
        Ok(DnsConfig { mode, resolvers })
    }
}

/// A TOML value as it would appear in the file, for error messages.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

/// Parses "ip:port", "[ipv6]:port", a bare IP or "[ipv6]"; a missing port
/// means [`DEFAULT_DC_PORT`]. Port 0 is refused since nobody could reach it,
/// and so is an unspecified address unless it is an address to listen on.
/// An address with an optional port; a bare IP gets `default_port` (the
/// DC's or the relay's, depending on what the address is of).
fn parse_endpoint(
    text: &str,
    for_listening: bool,
    default_port: u16,
) -> Result<SocketAddr, String> {
    let s = text.trim();
    let addr = if let Ok(addr) = s.parse::<SocketAddr>() {
        addr
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, default_port)
    } else if let Some(ip) = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
    {
        SocketAddr::new(IpAddr::V6(ip), default_port)
    } else if s.is_empty() {
        return Err("it is empty".to_string());
    } else if s.contains('%') {
        return Err("IPv6 scope ids (%iface) are not supported".to_string());
    } else if looks_like_host(s) {
        return Err("host names are not supported, use an IP address".to_string());
    } else {
        return Err("not an IP address with an optional port".to_string());
    };
    if addr.port() == 0 {
        return Err("port 0 cannot be reached".to_string());
    }
    if !for_listening && addr.ip().is_unspecified() {
        return Err(format!("{} is not a reachable address", addr.ip()));
    }
    Ok(addr)
}

/// "dc.example" or "dc.example:7446": a host name, which we do not resolve
/// (IPv6 addresses contain letters too, but also colons).
fn looks_like_host(s: &str) -> bool {
    let host = match s.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => s,
    };
    !host.contains(':') && host.chars().any(|c| c.is_ascii_alphabetic())
}

fn parse_resolver(text: &str) -> Result<IpAddr, String> {
    let ip = text.trim().parse::<IpAddr>().map_err(|_| {
        if text.contains('%') {
            "IPv6 scope ids (%iface) are not supported".to_string()
        } else {
            "not an IP address (no port, no host name)".to_string()
        }
    })?;
    if ip.is_unspecified() {
        return Err(format!("{ip} is not a reachable address"));
    }
    Ok(ip)
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

/// The same rules as the kernel's `dev_valid_name`.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_string());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!("it is {} bytes long", name.len()));
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are reserved".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("it contains {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Keys {
        dc_private: String,
        dc_public: String,
        node_private: String,
    }

    fn keys() -> Keys {
        let dc = PrivateKey::generate();
        Keys {
            dc_private: dc.to_base64(),
            dc_public: dc.public_key().to_base64(),
            node_private: PrivateKey::generate().to_base64(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Asserts that `msg` contains every one of `parts`.
    #[track_caller]
    fn assert_mentions(msg: &str, parts: &[&str]) {
        for part in parts {
            assert!(msg.contains(part), "{msg:?}\n  does not mention {part:?}");
        }
    }

    // ---- DC ---------------------------------------------------------------

    fn dc_text(k: &Keys, replace: &[(&str, &str)]) -> String {
        let mut lines = vec![
            (
                "listen",
                r#"["198.51.100.10:7446", "[2001:db8:100::10]:7446"]"#.to_string(),
            ),
            ("domain", r#""ntm.internal""#.to_string()),
            ("private_key", format!("{:?}", k.dc_private)),
            ("state_dir", r#""/var/lib/ntmtun/dc""#.to_string()),
            ("auth_keys", r#"["change-me-enrollment-token"]"#.to_string()),
        ];
        for (key, value) in replace {
            lines.retain(|(k, _)| k != key);
            if !value.is_empty() {
                lines.push((key, value.to_string()));
            }
        }
        lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }

    fn dc_err(k: &Keys, replace: &[(&str, &str)]) -> String {
        match parse_dc(&dc_text(k, replace), "dc.toml") {
            Ok(cfg) => panic!("accepted {replace:?}: {cfg:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn dc_federation_entries_parse_and_are_checked() {
        let k = keys();
        let other = PrivateKey::generate().public_key().to_base64();
        let with = |fed: &str| format!("{}{fed}", dc_text(&k, &[]));
        let cfg = parse_dc(
            &with(&format!(
                "[[federation]]\ndomain = \"Y.ntm.internal.\"\npublic_key = \"{other}\"\n\n\
                 [[federation]]\ndomain = \"z.ntm.internal\"\naddress = \"198.51.100.14\"\npublic_key = \"{other}\"\n"
            )),
            "dc.toml",
        )
        .unwrap();
        assert_eq!(cfg.federation.len(), 2);
        assert_eq!(cfg.federation[0].domain, "y.ntm.internal");
        assert_eq!(cfg.federation[0].address, None, "no address: DNS SRV");
        assert_eq!(cfg.federation[1].address, Some(sa("198.51.100.14:7446")));
        assert!(parse_dc(&dc_text(&k, &[]), "dc.toml")
            .unwrap()
            .federation
            .is_empty());

        let err = |fed: String| match parse_dc(&with(&fed), "dc.toml") {
            Ok(c) => panic!("accepted {fed}: {c:?}"),
            Err(e) => e.to_string(),
        };
        let own = err(format!(
            "[[federation]]\ndomain = \"ntm.internal\"\npublic_key = \"{other}\"\n"
        ));
        assert_mentions(&own, &["federation[0].domain", "own `domain`"]);
        let own_key = err(format!(
            "[[federation]]\ndomain = \"y.ntm.internal\"\npublic_key = \"{}\"\n",
            k.dc_public
        ));
        assert_mentions(&own_key, &["federation[0].public_key", "own public key"]);
        let twice = err(format!(
            "[[federation]]\ndomain = \"y.ntm.internal\"\npublic_key = \"{other}\"\n[[federation]]\ndomain = \"y.ntm.internal\"\npublic_key = \"{other}\"\n"
        ));
        assert_mentions(&twice, &["federation[1].domain", "listed twice"]);
        let addr = err(format!("[[federation]]\ndomain = \"y.ntm.internal\"\naddress = \"nowhere\"\npublic_key = \"{other}\"\n"));
        assert_mentions(&addr, &["federation[0].address", "\"nowhere\"", "DNS SRV"]);
        let no_key = err("[[federation]]\ndomain = \"y.ntm.internal\"\n".to_string());
        assert_mentions(&no_key, &["federation[0].public_key"]);
    }

    #[test]
    fn dc_minimal_gets_defaults() {
        let k = keys();
        let cfg = parse_dc(&dc_text(&k, &[]), "dc.toml").unwrap();
        assert_eq!(
            cfg.listen,
            vec![sa("198.51.100.10:7446"), sa("[2001:db8:100::10]:7446")]
        );
        assert_eq!(cfg.domain, "ntm.internal");
        assert_eq!(cfg.private_key.to_base64(), k.dc_private);
        assert_eq!(
            cfg.virtual_prefix,
            "198.18.0.0/15".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(cfg.virtual_prefix, DEFAULT_VIRTUAL_PREFIX);
        assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/ntmtun/dc"));
        assert_eq!(
            cfg.auth_keys,
            vec!["change-me-enrollment-token".to_string()]
        );
        assert_eq!(cfg.node_expiry_secs, 90);
    }

    #[test]
    fn dc_full_example_parses() {
        let k = keys();
        let text = format!(
            r#"# dc.toml
listen = ["198.51.100.10:7446", "[2001:db8:100::10]:7446"]
domain = "NTM.Internal."
private_key = "{}"
virtual_prefix = "10.99.7.1/16"   # host bits are dropped
state_dir = "/var/lib/ntmtun/dc"
auth_keys = ["change-me-enrollment-token", "second-token"]
node_expiry_secs = 300
"#,
            k.dc_private
        );
        let cfg = parse_dc(&text, "dc.toml").unwrap();
        assert_eq!(cfg.domain, "ntm.internal");
        assert_eq!(
            cfg.virtual_prefix,
            "10.99.0.0/16".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(cfg.auth_keys.len(), 2);
        assert_eq!(cfg.node_expiry_secs, 300);
    }

    #[test]
    fn dc_listen_forms() {
        let k = keys();
        let one = |v: &str| {
            parse_dc(&dc_text(&k, &[("listen", v)]), "dc.toml")
                .unwrap()
                .listen
        };
        assert_eq!(one(r#""0.0.0.0:7446""#), vec![sa("0.0.0.0:7446")]);
        assert_eq!(one(r#"["[::]:9000"]"#), vec![sa("[::]:9000")]);
        assert_eq!(one(r#""198.51.100.10""#), vec![sa("198.51.100.10:7446")]);
        assert_eq!(one(r#"["2001:db8::1"]"#), vec![sa("[2001:db8::1]:7446")]);
    }

    #[test]
    fn dc_listen_errors() {
        let k = keys();
        let cases: &[(&str, &[&str])] = &[
            (
                "[]",
                &["`listen`", "[]", "empty list", "expected a list of"],
            ),
            (
                r#"["198.51.100.300:7446"]"#,
                &["`listen`", "\"198.51.100.300:7446\"", "not a valid address"],
            ),
            (
                r#"["dc.example:7446"]"#,
                &[
                    "`listen`",
                    "\"dc.example:7446\"",
                    "host names are not supported",
                ],
            ),
            (
                r#"["198.51.100.10:0"]"#,
                &["`listen`", "\"198.51.100.10:0\"", "port 0"],
            ),
            (
                r#"["198.51.100.10:7446", "198.51.100.10"]"#,
                &["`listen`", "\"198.51.100.10\"", "more than once"],
            ),
            (
                "7446",
                &["`listen`", "7446 is an integer", "expected a list of"],
            ),
            (
                r#"["198.51.100.10:7446", 5]"#,
                &["`listen`", "entry 2", "5, is an integer"],
            ),
            ("", &["`listen`", "missing", "expected a list of"]),
        ];
        for (value, parts) in cases {
            let msg = dc_err(&k, &[("listen", value)]);
            assert_mentions(&msg, &["dc.toml: key `listen`: "]);
            assert_mentions(&msg, parts);
        }
    }

    #[test]
    fn dc_domain_errors() {
        let k = keys();
        let long_label = format!("\"{}.internal\"", "a".repeat(64));
        let long_total = format!("\"{}\"", ["abcdefghij"; 19].join("."));
        let cases: &[(&str, &[&str])] = &[
            (
                r#""ntm_internal""#,
                &["\"ntm_internal\"", "not a valid DNS name", "contains '_'"],
            ),
            (
                r#""-ntm.internal""#,
                &[
                    "\"-ntm.internal\"",
                    "label \"-ntm\" starts or ends with '-'",
                ],
            ),
            (
                r#""ntm..internal""#,
                &["\"ntm..internal\"", "label \"\" is empty"],
            ),
            (r#""""#, &["\"\"", "it is empty"]),
            (r#"".""#, &["\".\"", "it is empty"]),
            (&long_label, &["is 64 characters long, more than 63"]),
            (&long_total, &["208 characters long, more than 200"]),
            (
                "42",
                &[
                    "42 is an integer",
                    "expected a DNS name such as \"ntm.internal\"",
                ],
            ),
            ("", &["missing", "expected a DNS name"]),
        ];
        for (value, parts) in cases {
            let msg = dc_err(&k, &[("domain", value)]);
            assert_mentions(&msg, &["dc.toml: key `domain`: "]);
            assert_mentions(&msg, parts);
        }
        // Exactly 200 characters is allowed.
        let max = format!("\"{}.ab\"", ["abcdefghij"; 18].join("."));
        assert_eq!(max.len() - 2, 200);
        parse_dc(&dc_text(&k, &[("domain", &max)]), "dc.toml").unwrap();
    }

    #[test]
    fn dc_virtual_prefix_errors() {
        let k = keys();
        let cases: &[(&str, &[&str])] = &[
            (
                r#""198.18.0.0/31""#,
                &["\"198.18.0.0/31\"", "/31 is too small"],
            ),
            (r#""fd00::/64""#, &["\"fd00::/64\"", "IPv6 prefix"]),
            (
                r#""198.18.0.0""#,
                &["\"198.18.0.0\"", "prefix length is missing"],
            ),
            (
                r#""198.18.0.0/33""#,
                &["\"198.18.0.0/33\"", "not an address/length prefix"],
            ),
            ("15", &["15 is an integer", "expected an IPv4 prefix"]),
        ];
        for (value, parts) in cases {
            let msg = dc_err(&k, &[("virtual_prefix", value)]);
            assert_mentions(&msg, &["dc.toml: key `virtual_prefix`: "]);
            assert_mentions(&msg, parts);
        }
        let cfg = parse_dc(
            &dc_text(&k, &[("virtual_prefix", r#""100.64.0.0/30""#)]),
            "dc.toml",
        )
        .unwrap();
        assert_eq!(cfg.virtual_prefix.prefix_len(), 30);
    }

    #[test]
    fn private_key_errors_do_not_show_the_secret() {
        let k = keys();
        let secretish = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
        let msg = dc_err(&k, &[("private_key", &format!("{secretish:?}"))]);
        assert_mentions(
            &msg,
            &[
                "dc.toml: key `private_key`: ",
                "28 characters, not shown because it is secret",
                "not a valid private key: decodes to 20 bytes; expected exactly 32",
                "ntmtun keygen",
            ],
        );
        assert!(!msg.contains(secretish), "{msg}");

        let msg = dc_err(&k, &[("private_key", r#""<output of ntmtun keygen>""#)]);
        assert_mentions(&msg, &["key `private_key`", "not valid base64"]);
        assert!(!msg.contains("output of ntmtun keygen>"), "{msg}");

        let msg = dc_err(&k, &[("private_key", "12345")]);
        assert_mentions(
            &msg,
            &["key `private_key`", "is an integer", "base64 of 32 bytes"],
        );
        assert!(!msg.contains("12345"), "{msg}");

        let msg = dc_err(&k, &[("private_key", "")]);
        assert_mentions(
            &msg,
            &["key `private_key`: missing; expected base64 of 32 bytes"],
        );
    }

    #[test]
    fn dc_state_dir_auth_keys_and_expiry_errors() {
        let k = keys();
        let cases: &[(&str, &str, &[&str])] = &[
            ("state_dir", "", &["missing", "expected a directory path"]),
            ("state_dir", r#""""#, &["\"\" is empty"]),
            (
                "state_dir",
                "[]",
                &["[] is a list", "expected a directory path"],
            ),
            ("auth_keys", "", &["missing", "expected a non-empty list"]),
            (
                "auth_keys",
                "[]",
                &["[] is an empty list", "expected a non-empty list"],
            ),
            ("auth_keys", r#"["good", ""]"#, &["entry 2, \"\", is empty"]),
            (
                "auth_keys",
                r#"["good", "  "]"#,
                &["entry 2, \"  \", is empty"],
            ),
            (
                "auth_keys",
                r#""solo-token""#,
                &["is a string", "expected a non-empty list"],
            ),
            ("auth_keys", "[7]", &["entry 1", "is an integer"]),
            (
                "node_expiry_secs",
                "0",
                &["0 is out of range", "at least 30"],
            ),
            ("node_expiry_secs", "-5", &["-5 is out of range"]),
            (
                "node_expiry_secs",
                r#""90""#,
                &["\"90\" is a string", "a whole number of seconds"],
            ),
            ("node_expiry_secs", "1.5", &["1.5 is a float"]),
        ];
        for (key, value, parts) in cases {
            let msg = dc_err(&k, &[(key, value)]);
            assert_mentions(&msg, &[&format!("dc.toml: key `{key}`: ")]);
            assert_mentions(&msg, parts);
        }
        // Auth tokens are secrets too.
        let msg = dc_err(&k, &[("auth_keys", r#""solo-token""#)]);
        assert!(!msg.contains("solo-token"), "{msg}");
    }

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

    #[test]
    fn metrics_listen_is_optional_and_checked() {
        let k = keys();
        assert_eq!(
            parse_dc(&dc_text(&k, &[]), "dc.toml")
                .unwrap()
                .metrics_listen,
            None
        );
        let text = format!(
            "{}\nmetrics_listen = \"127.0.0.1:9101\"\n",
            dc_text(&k, &[])
        );
        assert_eq!(
            parse_dc(&text, "dc.toml").unwrap().metrics_listen,
            Some(sa("127.0.0.1:9101"))
        );
        let text = format!("{}\nmetrics_listen = \"localhost\"\n", dc_text(&k, &[]));
        let msg = parse_dc(&text, "dc.toml").unwrap_err().to_string();
        assert_mentions(&msg, &["metrics_listen", "\"localhost\"", "127.0.0.1:9101"]);
    }

    #[test]
    fn world_readable_config_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dc.toml");
        std::fs::write(&path, "listen = []").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let msg = load_dc(&path).unwrap_err().to_string();
        assert_mentions(&msg, &["readable by every user", "chmod 600"]);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let msg = load_dc(&path).unwrap_err().to_string();
        assert!(!msg.contains("readable by every user"), "{msg}");
    }

    #[test]
    fn dc_unknown_key_lists_valid_keys() {
        let k = keys();
        let msg = dc_err(&k, &[("listen_addr", r#""1.2.3.4:7446""#)]);
        assert_mentions(
            &msg,
            &[
                "dc.toml: ",
                "line 6",
                "unknown field `listen_addr`",
                "`listen`",
                "`domain`",
                "`node_expiry_secs`",
            ],
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let msg = parse_dc("listen = [\"1.2.3.4:1\"]\ndomain = ntm\n", "dc.toml")
            .unwrap_err()
            .to_string();
        assert_mentions(&msg, &["dc.toml: TOML parse error at line 2, column 10"]);
        let msg = parse_node("name = \"a\"\nname = \"b\"\n", "node.toml")
            .unwrap_err()
            .to_string();
        assert_mentions(
            &msg,
            &["node.toml: TOML parse error at line 2", "duplicate key"],
        );
    }

    // ---- Node -------------------------------------------------------------

    fn node_text(k: &Keys, replace: &[(&str, &str)]) -> String {
        let mut lines = vec![
            ("name", r#""alice""#.to_string()),
            ("private_key", format!("{:?}", k.node_private)),
            ("dc", r#""198.51.100.10:7446""#.to_string()),
            ("dc_public_key", format!("{:?}", k.dc_public)),
            ("auth_key", r#""change-me-enrollment-token""#.to_string()),
        ];
        let mut tail = String::new();
        for (key, value) in replace {
            if key.starts_with('[') {
                tail.push_str(&format!("{key}\n{value}\n"));
                continue;
            }
            lines.retain(|(k, _)| k != key);
            if !value.is_empty() {
                lines.push((key, value.to_string()));
            }
        }
        let mut text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        text.push_str(&tail);
        text
    }

    fn fixed_resolvers() -> io::Result<Vec<IpAddr>> {
        Ok(vec![ip("192.0.2.53")])
    }

    fn parse_test_node(text: &str) -> Result<NodeConfig, ConfigError> {
        parse_node_with(text, "node.toml", fixed_resolvers)
    }

    fn node_err(k: &Keys, replace: &[(&str, &str)]) -> String {
        match parse_test_node(&node_text(k, replace)) {
            Ok(cfg) => panic!("accepted {replace:?}: {cfg:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn node_minimal_gets_defaults() {
        let k = keys();
        let cfg = parse_test_node(&node_text(&k, &[])).unwrap();
        assert_eq!(cfg.name, "alice");
        assert_eq!(cfg.private_key.to_base64(), k.node_private);
        assert_eq!(cfg.dc, vec![sa("198.51.100.10:7446")]);
        assert_eq!(cfg.dc_public_key.to_base64(), k.dc_public);
        assert_eq!(cfg.auth_key, "change-me-enrollment-token");
        assert_eq!(cfg.tun, "ntm0");
        assert_eq!(cfg.listen_port, 0);
        assert_eq!(cfg.control_socket, PathBuf::from("/run/ntmtun/ntmtun.sock"));
        assert_eq!(cfg.workers, 0);
        assert_eq!(cfg.keepalive_secs, 15);
        assert_eq!(cfg.rekey_secs, 120);
        assert_eq!(
            cfg.dns,
            DnsConfig {
                mode: DnsMode::Capture,
                resolvers: vec![ip("192.0.2.53")]
            }
        );
    }

    #[test]
    fn io_key_selects_the_shell() {
        let k = keys();
        let io = |v: &str| parse_test_node(&node_text(&k, &[("io", v)])).unwrap().io;
        assert_eq!(io(""), IoMode::Auto);
        assert_eq!(io(r#""auto""#), IoMode::Auto);
        assert_eq!(io(r#""uring""#), IoMode::Uring);
        assert_eq!(io(r#""epoll""#), IoMode::Epoll);
        for m in [IoMode::Auto, IoMode::Uring, IoMode::Epoll] {
            assert_eq!(m.as_str().parse::<IoMode>(), Ok(m));
        }
    }

    #[test]
    fn node_full_example_parses() {
        let k = keys();
        let text = format!(
            r#"# node.toml
name = "alice"
private_key = "{}"
dc = ["198.51.100.10:7446", "2001:db8:100::10"]
dc_public_key = "{}"
auth_key = "change-me-enrollment-token"
tun = "ntm0"
listen_port = 51820
control_socket = "/run/ntmtun/ntmtun.sock"
workers = 4
keepalive_secs = 0
rekey_secs = 600

[dns]
mode = "stub"     # "capture" | "stub" | "off"
resolvers = ["198.51.100.53", "2001:db8::53"]
"#,
            k.node_private, k.dc_public
        );
        let called = Cell::new(false);
        let cfg = parse_node_with(&text, "node.toml", || {
            called.set(true);
            Ok(vec![])
        })
        .unwrap();
        assert!(!called.get(), "default resolvers read although set");
        assert_eq!(
            cfg.dc,
            vec![sa("198.51.100.10:7446"), sa("[2001:db8:100::10]:7446")]
        );
        assert_eq!(cfg.listen_port, 51820);
        assert_eq!(cfg.workers, 4);
        assert_eq!(cfg.keepalive_secs, 0);
        assert_eq!(cfg.rekey_secs, 600);
        assert_eq!(cfg.dns.mode, DnsMode::Stub);
        assert_eq!(
            cfg.dns.resolvers,
            vec![ip("198.51.100.53"), ip("2001:db8::53")]
        );
    }

    #[test]
    fn node_dc_string_list_and_bare_ip() {
        let k = keys();
        let dc = |v: &str| parse_test_node(&node_text(&k, &[("dc", v)])).unwrap().dc;
        assert_eq!(
            dc(r#""198.51.100.10:9000""#),
            vec![sa("198.51.100.10:9000")]
        );
        assert_eq!(
            dc(r#"["198.51.100.10:9000"]"#),
            vec![sa("198.51.100.10:9000")]
        );
        assert_eq!(dc(r#""198.51.100.10""#), vec![sa("198.51.100.10:7446")]);
        assert_eq!(dc(r#""2001:db8::1""#), vec![sa("[2001:db8::1]:7446")]);
        assert_eq!(dc(r#""[2001:db8::1]""#), vec![sa("[2001:db8::1]:7446")]);
        assert_eq!(dc(r#"" [2001:db8::1]:1 ""#), vec![sa("[2001:db8::1]:1")]);
        assert_eq!(
            dc(r#"["198.51.100.10", "[2001:db8::1]:7447"]"#),
            vec![sa("198.51.100.10:7446"), sa("[2001:db8::1]:7447")]
        );
    }

    #[test]
    fn node_dc_errors() {
        let k = keys();
        let cases: &[(&str, &[&str])] = &[
            ("[]", &["[] is an empty list"]),
            (
                r#""dc.example.com""#,
                &["\"dc.example.com\"", "host names are not supported"],
            ),
            (
                r#""dc.example.com:7446""#,
                &["\"dc.example.com:7446\"", "host names are not supported"],
            ),
            (r#""198.51.100.10:0""#, &["\"198.51.100.10:0\"", "port 0"]),
            (
                r#""198.51.100.10:70000""#,
                &[
                    "\"198.51.100.10:70000\"",
                    "not an IP address with an optional port",
                ],
            ),
            (
                r#""0.0.0.0:7446""#,
                &["\"0.0.0.0:7446\"", "0.0.0.0 is not a reachable address"],
            ),
            (r#""fe80::1%eth0""#, &["\"fe80::1%eth0\"", "scope"]),
            (r#""""#, &["\"\" is not a valid address: it is empty"]),
            ("7446", &["7446 is an integer"]),
            ("{ host = \"x\" }", &["is a table"]),
            ("", &["missing"]),
        ];
        for (value, parts) in cases {
            let msg = node_err(&k, &[("dc", value)]);
            assert_mentions(
                &msg,
                &["node.toml: key `dc`: ", "expected the DC's address"],
            );
            assert_mentions(&msg, parts);
        }
    }

    #[test]
    fn node_dc_public_key_error_matches_contract() {
        let k = keys();
        let msg = node_err(&k, &[("dc_public_key", r#""abc=""#)]);
        assert_eq!(
            msg,
            "node.toml: key `dc_public_key`: \"abc=\" is not a valid public key: decodes to 2 bytes; expected exactly 32 (use the output of `ntmtun pubkey`)"
        );
        let msg = node_err(&k, &[("dc_public_key", r#""abc""#)]);
        assert_mentions(&msg, &["key `dc_public_key`: \"abc\"", "not valid base64"]);
        let msg = node_err(&k, &[("dc_public_key", "")]);
        assert_mentions(&msg, &["key `dc_public_key`: missing"]);
        let msg = node_err(&k, &[("dc_public_key", "true")]);
        assert_mentions(&msg, &["key `dc_public_key`: true is a boolean"]);
    }

    #[test]
    fn node_refuses_the_dcs_private_key() {
        let k = keys();
        let msg = node_err(&k, &[("private_key", &format!("{:?}", k.dc_private))]);
        assert_mentions(&msg, &["key `private_key`", "DC's own private key"]);
        assert!(!msg.contains(&k.dc_private));
    }

    #[test]
    fn node_name_errors() {
        let k = keys();
        let long = format!("\"{}\"", "a".repeat(64));
        let cases: &[(&str, &[&str])] = &[
            (r#""Alice""#, &["\"Alice\"", "upper case (use \"alice\")"]),
            (r#""al_ice""#, &["\"al_ice\"", "contains '_'"]),
            (r#""alice.home""#, &["\"alice.home\"", "contains '.'"]),
            (r#""-alice""#, &["\"-alice\"", "starts or ends with '-'"]),
            (r#""alice-""#, &["\"alice-\"", "starts or ends with '-'"]),
            (r#""""#, &["\"\"", "it is empty"]),
            (&long, &["64 characters long"]),
            ("1", &["1 is an integer"]),
            ("", &["missing"]),
        ];
        for (value, parts) in cases {
            let msg = node_err(&k, &[("name", value)]);
            assert_mentions(
                &msg,
                &["node.toml: key `name`: ", "expected a single DNS label"],
            );
            assert_mentions(&msg, parts);
        }
        let ok = format!("\"{}\"", "a1-".repeat(21).trim_end_matches('-'));
        parse_test_node(&node_text(&k, &[("name", &ok)])).unwrap();
    }

    #[test]
    fn node_auth_key_and_tun_errors() {
        let k = keys();
        let cases: &[(&str, &str, &[&str])] = &[
            ("auth_key", r#""""#, &["\"\" is empty", "enrollment token"]),
            ("auth_key", "", &["missing"]),
            ("auth_key", "[\"x\"]", &["is a list"]),
            (
                "tun",
                r#""ntm-interface-00""#,
                &["\"ntm-interface-00\"", "16 bytes long", "1-15 bytes"],
            ),
            ("tun", r#""ntm/0""#, &["\"ntm/0\"", "contains '/'"]),
            ("tun", r#""ntm:0""#, &["\"ntm:0\"", "contains ':'"]),
            ("tun", r#""ntm 0""#, &["\"ntm 0\"", "contains ' '"]),
            ("tun", r#""..""#, &["\"..\"", "reserved"]),
            ("tun", r#""""#, &["\"\"", "it is empty"]),
            ("tun", "0", &["0 is an integer"]),
        ];
        for (key, value, parts) in cases {
            let msg = node_err(&k, &[(key, value)]);
            assert_mentions(&msg, &[&format!("node.toml: key `{key}`: ")]);
            assert_mentions(&msg, parts);
        }
        assert!(!node_err(&k, &[("auth_key", "[\"x\"]")]).contains("[\"x\"]"));
        let cfg = parse_test_node(&node_text(&k, &[("tun", r#""ntm-interface0""#)])).unwrap();
        assert_eq!(cfg.tun, "ntm-interface0");
    }

    #[test]
    fn node_number_errors() {
        let k = keys();
        let long_socket = format!("\"/{}\"", "s".repeat(107));
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "listen_port",
                "70000",
                &["70000 is out of range", "0-65535"],
            ),
            ("listen_port", "-1", &["-1 is out of range"]),
            (
                "listen_port",
                r#""0""#,
                &["\"0\" is a string", "a UDP port number"],
            ),
            ("workers", "65", &["65 is out of range", "0-64"]),
            ("workers", "true", &["true is a boolean"]),
            (
                "io",
                r#""iouring""#,
                &["`io`", "\"iouring\" is not an IO shell", "\"uring\""],
            ),
            ("io", "1", &["1 is an integer", "\"auto\""]),
            (
                "keepalive_secs",
                "3601",
                &["3601 is out of range", "1-3600, or 0"],
            ),
            ("rekey_secs", "9", &["9 is out of range", "10-86400"]),
            ("rekey_secs", "86401", &["86401 is out of range"]),
            (
                "control_socket",
                &long_socket,
                &["108 bytes long", "too long for a Unix socket"],
            ),
            ("control_socket", r#""""#, &["\"\" is empty"]),
        ];
        for (key, value, parts) in cases {
            let msg = node_err(&k, &[(key, value)]);
            assert_mentions(&msg, &[&format!("node.toml: key `{key}`: ")]);
            assert_mentions(&msg, parts);
        }
        let cfg = parse_test_node(&node_text(
            &k,
            &[
                ("listen_port", "65535"),
                ("workers", "64"),
                ("keepalive_secs", "3600"),
                ("rekey_secs", "10"),
                ("control_socket", r#""/tmp/x.sock""#),
            ],
        ))
        .unwrap();
        assert_eq!(
            (
                cfg.listen_port,
                cfg.workers,
                cfg.keepalive_secs,
                cfg.rekey_secs
            ),
            (65535, 64, 3600, 10)
        );
        assert_eq!(cfg.control_socket, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn node_unknown_keys_are_errors() {
        let k = keys();
        let msg = node_err(&k, &[("dc_pubkey", r#""x""#)]);
        assert_mentions(
            &msg,
            &[
                "node.toml: ",
                "unknown field `dc_pubkey`",
                "`dc_public_key`",
                "`dns`",
            ],
        );
        let msg = node_err(&k, &[("[dns]", "mdoe = \"off\"")]);
        assert_mentions(
            &msg,
            &[
                "node.toml: ",
                "unknown field `mdoe`",
                "`mode`",
                "`resolvers`",
            ],
        );
    }

    #[test]
    fn dns_mode_and_resolvers() {
        let k = keys();
        let node = |dns: &str| parse_test_node(&node_text(&k, &[("[dns]", dns)]));
        assert_eq!(node("mode = \"off\"").unwrap().dns.mode, DnsMode::Off);
        assert_eq!(
            node("mode = \"capture\"").unwrap().dns.mode,
            DnsMode::Capture
        );
        assert_eq!(node("").unwrap().dns.mode, DnsMode::Capture);
        assert_eq!(
            node("resolvers = \"2001:db8::53\"").unwrap().dns.resolvers,
            vec![ip("2001:db8::53")]
        );
        assert_eq!(
            node("mode = \"off\"\nresolvers = []")
                .unwrap()
                .dns
                .resolvers,
            Vec::<IpAddr>::new()
        );
        let inline = format!("{}dns = {{ mode = \"off\" }}\n", node_text(&k, &[]));
        assert_eq!(parse_test_node(&inline).unwrap().dns.mode, DnsMode::Off);

        let cases: &[(&str, &str, &[&str])] = &[
            (
                "mode = \"Capture\"",
                "[dns] mode",
                &[
                    "\"Capture\" is not a DNS mode",
                    "\"capture\", \"stub\" or \"off\"",
                ],
            ),
            ("mode = 1", "[dns] mode", &["1 is an integer"]),
            (
                "resolvers = [\"198.51.100.53:53\"]",
                "[dns] resolvers",
                &["\"198.51.100.53:53\"", "not a valid resolver address"],
            ),
            (
                "resolvers = [\"dns.google\"]",
                "[dns] resolvers",
                &["\"dns.google\""],
            ),
            (
                "resolvers = [\"0.0.0.0\"]",
                "[dns] resolvers",
                &["\"0.0.0.0\"", "not a reachable address"],
            ),
            (
                "resolvers = []",
                "[dns] resolvers",
                &[
                    "[] is an empty list",
                    "mode is \"capture\"",
                    "mode = \"off\"",
                ],
            ),
            (
                "resolvers = [53]",
                "[dns] resolvers",
                &["entry 1", "53, is an integer"],
            ),
        ];
        for (dns, key, parts) in cases {
            let msg = node(dns).unwrap_err().to_string();
            assert_mentions(&msg, &[&format!("node.toml: key `{key}`: ")]);
            assert_mentions(&msg, parts);
        }

        let msg = parse_test_node(&format!("{}dns = \"capture\"\n", node_text(&k, &[])))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &msg,
            &[
                "node.toml: ",
                "dns = \"capture\"",
                "invalid type: string \"capture\"",
                "a table [dns]",
            ],
        );
    }

    #[test]
    fn dns_default_resolvers_failures() {
        let k = keys();
        let text = node_text(&k, &[]);
        let msg = parse_node_with(&text, "node.toml", || {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "No such file or directory",
            ))
        })
        .unwrap_err()
        .to_string();
        assert_mentions(
            &msg,
            &[
                "node.toml: key `[dns] resolvers`: not set",
                "/etc/resolv.conf: No such file or directory",
                "resolvers = [\"198.51.100.53\"]",
            ],
        );
        let msg = parse_node_with(&text, "node.toml", || Ok(vec![]))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &msg,
            &[
                "key `[dns] resolvers`: not set",
                "lists no nameserver",
                "set it in [dns]",
            ],
        );

        // With DNS off, a missing resolv.conf does not matter.
        let off = node_text(&k, &[("[dns]", "mode = \"off\"")]);
        let cfg = parse_node_with(&off, "node.toml", || Err(io::Error::other("boom"))).unwrap();
        assert_eq!(
            cfg.dns,
            DnsConfig {
                mode: DnsMode::Off,
                resolvers: vec![]
            }
        );
    }

    #[test]
    fn dns_mode_round_trips() {
        for mode in [DnsMode::Capture, DnsMode::Stub, DnsMode::Off] {
            assert_eq!(mode.to_string().parse::<DnsMode>(), Ok(mode));
        }
    }

    // ---- Files ------------------------------------------------------------

    #[test]
    fn load_reads_files_and_names_them() {
        let k = keys();
        let dir = tempfile::tempdir().unwrap();
        let private = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap()
        };
        let dc_path = dir.path().join("dc.toml");
        std::fs::write(&dc_path, dc_text(&k, &[])).unwrap();
        private(&dc_path);
        assert_eq!(load_dc(&dc_path).unwrap().domain, "ntm.internal");

        let node_path = dir.path().join("node.toml");
        let with_resolvers = node_text(&k, &[("[dns]", "resolvers = [\"192.0.2.1\"]")]);
        std::fs::write(&node_path, with_resolvers).unwrap();
        private(&node_path);
        assert_eq!(
            load_node(&node_path).unwrap().dns.resolvers,
            vec![ip("192.0.2.1")]
        );

        std::fs::write(&node_path, node_text(&k, &[("name", "\"Bob\"")])).unwrap();
        let msg = load_node(&node_path).unwrap_err().to_string();
        assert_mentions(
            &msg,
            &[&format!("{}: key `name`: \"Bob\"", node_path.display())],
        );

        let missing = dir.path().join("absent.toml");
        let err = load_dc(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read config file {}: No such file or directory (os error 2); \
                 check the path given to --config",
                missing.display()
            )
        );
        assert!(err.key().is_none());
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn error_key_accessor() {
        let k = keys();
        let err = parse_test_node(&node_text(&k, &[("tun", "\"a/b\"")])).unwrap_err();
        assert_eq!(err.key(), Some("tun"));
    }
}
