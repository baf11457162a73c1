//! node.toml: a node's settings (docs/configuration.md).

use super::common::{parse_toml, read, ConfigError, Cx, DEFAULT_DC_PORT};
use crate::dataplane::io::IoMode;
use crate::keys::{PrivateKey, PublicKey};
use crate::net::resolv;
use crate::node::split_dns::DnsMode;
use crate::proto::name::Label;
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::Value;

/// Name of the node's TUN interface.
const DEFAULT_TUN: &str = "ntm0";
/// Where the node's control socket (used by `ntmtun status` etc.) lives.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ntmtun/ntmtun.sock";
/// Keepalive interval: half the 30 s UDP timeout of Linux-based home
/// routers, so a mapping still sees a packet in time when one keepalive
/// (or its answer) is lost (docs/configuration.md).
pub const DEFAULT_KEEPALIVE_SECS: u64 = 15;
/// Session rekey interval.
const DEFAULT_REKEY_SECS: u64 = 120;
/// Upper bound on dataplane worker threads.
const MAX_WORKERS: usize = 64;
/// Linux IFNAMSIZ minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;
/// `sun_path` in `sockaddr_un` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_LEN: usize = 107;

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

/// The node's `[dns]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub mode: DnsMode,
    /// Resolver addresses whose queries are intercepted; defaults to the
    /// nameservers in /etc/resolv.conf.
    pub resolvers: Vec<IpAddr>,
}

/// Reads and validates a node config file; `[dns] resolvers` defaults to
/// the nameservers in /etc/resolv.conf.
pub fn load_node(path: &Path) -> Result<NodeConfig, ConfigError> {
    let text = read(path)?;
    parse_node(&text, &path.display().to_string())
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

impl Cx<'_> {
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
