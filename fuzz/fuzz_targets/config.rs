//! The config loader: `parse_dc`, `parse_relay` and `parse_node_with` on
//! arbitrary UTF-8; errors must render and name a key when they have one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = config::parse_dc(text, "dc.toml") {
        let _ = (e.to_string(), e.key());
    }
    if let Err(e) = config::parse_relay(text, "relay.toml") {
        let _ = (e.to_string(), e.key());
    }
    if let Err(e) = config::parse_node_with(text, "node.toml", || Ok(vec![])) {
        let _ = (e.to_string(), e.key());
    }
});
