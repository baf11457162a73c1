//! Helpers the config tests share: keys, minimal files, and a check that
//! an error message mentions what it must.

use super::{parse_dc, parse_node_with, ConfigError, NodeConfig};
use crate::keys::PrivateKey;
use std::io;
use std::net::{IpAddr, SocketAddr};

pub(super) struct Keys {
    pub(super) dc_private: String,
    pub(super) dc_public: String,
    pub(super) node_private: String,
}

pub(super) fn keys() -> Keys {
    let dc = PrivateKey::generate();
    Keys {
        dc_private: dc.to_base64(),
        dc_public: dc.public_key().to_base64(),
        node_private: PrivateKey::generate().to_base64(),
    }
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Asserts that `msg` contains every one of `parts`.
#[track_caller]
pub(super) fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "{msg:?}\n  does not mention {part:?}");
    }
}

pub(super) fn dc_text(k: &Keys, replace: &[(&str, &str)]) -> String {
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

pub(super) fn dc_err(k: &Keys, replace: &[(&str, &str)]) -> String {
    match parse_dc(&dc_text(k, replace), "dc.toml") {
        Ok(cfg) => panic!("accepted {replace:?}: {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn node_text(k: &Keys, replace: &[(&str, &str)]) -> String {
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

pub(super) fn fixed_resolvers() -> io::Result<Vec<IpAddr>> {
    Ok(vec![ip("192.0.2.53")])
}

pub(super) fn parse_test_node(text: &str) -> Result<NodeConfig, ConfigError> {
    parse_node_with(text, "node.toml", fixed_resolvers)
}

pub(super) fn node_err(k: &Keys, replace: &[(&str, &str)]) -> String {
    match parse_test_node(&node_text(k, replace)) {
        Ok(cfg) => panic!("accepted {replace:?}: {cfg:?}"),
        Err(e) => e.to_string(),
    }
}
