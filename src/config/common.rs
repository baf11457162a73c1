//! What every config file shares: the default ports and virtual block, the
//! error type and its wording, reading a file (and refusing one anyone can
//! read), the raw TOML parse, and the validation context `Cx` whose helpers
//! each name the key in their errors.

use crate::keys::{PrivateKey, PublicKey};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::Value;

/// UDP port of the DC when an address does not give one.
pub const DEFAULT_DC_PORT: u16 = 7446;
/// Default relay port.
pub const DEFAULT_RELAY_PORT: u16 = 7447;
/// The block NTMobile virtual IPs come from (RFC 2544 benchmarking space,
/// which is never routed on the Internet).
pub const DEFAULT_VIRTUAL_PREFIX: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15);
/// Most `listen` addresses of the DC or a relay: their shells wait on every
/// socket in one poll(2) of at most this many descriptors.
pub const MAX_LISTEN: usize = 16;

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

pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
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

pub(super) fn parse_toml<T: for<'de> Deserialize<'de>>(
    text: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

// ---------------------------------------------------------------------------
// Validation helpers. Each takes the key so its error can name it.

/// Validation context: knows the file name for error messages.
pub(super) struct Cx<'a> {
    pub(super) origin: &'a str,
}

impl Cx<'_> {
    pub(super) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(super) fn required(
        &self,
        key: &str,
        value: Option<Value>,
        expected: &str,
    ) -> Result<Value, ConfigError> {
        value.ok_or_else(|| self.invalid(key, format!("missing; expected {expected}")))
    }

    pub(super) fn wrong_type(&self, key: &str, value: &Value, expected: &str) -> ConfigError {
        self.invalid(
            key,
            format!(
                "{} is {}; expected {expected}",
                show(value),
                type_name(value)
            ),
        )
    }

    pub(super) fn string(
        &self,
        key: &str,
        value: Value,
        expected: &str,
    ) -> Result<String, ConfigError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type(key, &other, expected)),
        }
    }

    /// Like `string`, but never repeats the value in a message: it may be a
    /// secret that should not end up in logs.
    pub(super) fn secret_string(
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
    pub(super) fn integer(
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
    pub(super) fn path(
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
    pub(super) fn string_list(
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

    /// The required `listen` list of the DC or a relay: at most
    /// [`MAX_LISTEN`] addresses.
    pub(super) fn listen(
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
        if listen.len() > MAX_LISTEN {
            return Err(self.invalid(
                "listen",
                format!(
                    "{} addresses; expected at most {} (one per address family is usual)",
                    listen.len(),
                    MAX_LISTEN
                ),
            ));
        }
        Ok(listen)
    }

    /// `listen` (DC, relay) or `dc` (node): one address or a list of them,
    /// each "ip:port", "[ipv6]:port" or a bare IP meaning `default_port`.
    pub(super) fn addresses(
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
    pub(super) fn metrics_listen(
        &self,
        value: Option<Value>,
    ) -> Result<Option<SocketAddr>, ConfigError> {
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
    pub(super) fn public_key(
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

    pub(super) fn private_key(&self, value: Option<Value>) -> Result<PrivateKey, ConfigError> {
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
}

/// A TOML value as it would appear in the file, for error messages.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

pub(super) fn type_name(value: &Value) -> &'static str {
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

/// Parses "ip:port", "[ipv6]:port", a bare IP or "[ipv6]"; a bare IP gets
/// `default_port` (the DC's or the relay's, depending on what the address
/// is of). Port 0 is refused since nobody could reach it, and so is an
/// unspecified address unless it is an address to listen on.
pub(super) fn parse_endpoint(
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
