//! Host set-up for subnet routing (docs/operations.md, "Gateways"): routes
//! for other gateways' LAN prefixes into the TUN, and on a gateway IPv4
//! forwarding plus an nftables table `ip ntmtun` (MSS clamping into the
//! tunnel; with `snat`, masquerade of tunnel traffic leaving to the LAN).
//!
//! The routes go with the TUN when the node exits; the table is deleted at
//! shutdown and at start-up (after a crash), like `system::teardown`.

use super::system::ip;
use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use std::io::Write;
use std::process::{Command, Stdio};
use tracing::{debug, info, warn};

/// The nftables table this node owns (family ip).
pub const NFT_TABLE: &str = "ntmtun";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Makes the TUN carry exactly `wanted` (other gateways' prefixes, or
/// federated domains' virtual prefixes: `kind` names which in logs), given
/// that `installed` is what it carries now; returns what it carries after.
pub fn sync_routes(
    tun: &str,
    kind: &str,
    installed: &[Ipv4Net],
    wanted: &[Ipv4Net],
) -> Vec<Ipv4Net> {
    let mut now: Vec<Ipv4Net> = Vec::new();
    for p in installed {
        if wanted.contains(p) {
            now.push(*p);
        } else if let Err(e) = ip(&["-4", "route", "del", &p.to_string(), "dev", tun]) {
            warn!(prefix = %p, kind, error = format!("{e:#}"), "cannot remove a route from the TUN");
        } else {
            info!(prefix = %p, kind, tun, "route removed from the TUN");
        }
    }
    for p in wanted {
        if now.contains(p) {
            continue;
        }
        match ip(&["-4", "route", "replace", &p.to_string(), "dev", tun]) {
            Ok(()) => {
                info!(prefix = %p, kind, tun, "route into the tunnel");
                now.push(*p);
            }
            Err(e) => warn!(
                prefix = %p,
                kind,
                error = format!("{e:#}"),
                "cannot route a prefix into the TUN; its hosts are unreachable from here"
            ),
        }
    }
    now
}

/// What a gateway changed on the host, to undo at shutdown.
pub struct Gateway {
    /// `ip_forward` before we turned it on, if it was off.
    forward_was: Option<String>,
}

/// Turns this host into a gateway for the tunnel: IPv4 forwarding on, and
/// the nftables table (MSS clamping; masquerade when `snat`). A failing
/// `snat` is an error, since the operator asked for it and LAN hosts
/// would see unroutable sources without it.
pub fn start_gateway(tun: &str, snat: bool) -> Result<Gateway> {
    let before = std::fs::read_to_string(IP_FORWARD)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let forward_was = if before == "1" {
        None
    } else {
        std::fs::write(IP_FORWARD, "1").with_context(|| {
            format!("turning on IPv4 forwarding ({IP_FORWARD}); a gateway needs it")
        })?;
        info!("IPv4 forwarding turned on (restored at shutdown)");
        Some(before)
    };
    let gw = Gateway { forward_was };
    if let Err(e) = nft(&ruleset(tun, snat)) {
        if snat {
            return Err(e.context("snat = true, but the masquerade table could not be installed"));
        }
        warn!(
            error = format!("{e:#}"),
            "no MSS clamping into the tunnel (nftables); TCP relies on path MTU discovery"
        );
    } else {
        info!(table = NFT_TABLE, snat, "gateway nftables table installed");
    }
    Ok(gw)
}

impl Drop for Gateway {
    /// Removes the table and restores `ip_forward`.
    fn drop(&mut self) {
        teardown();
        if let Some(v) = &self.forward_was {
            let v = if v.is_empty() { "0" } else { v.as_str() };
            if let Err(e) = std::fs::write(IP_FORWARD, v) {
                warn!(error = %e, "cannot restore ip_forward");
            }
        }
    }
}

/// Deletes our nftables table if it exists (a crashed predecessor's too).
pub fn teardown() {
    if let Err(e) = nft(&format!("delete table ip {NFT_TABLE}\n")) {
        debug!(error = format!("{e:#}"), "removing the nftables table");
    }
}

/// The gateway's table. Forwarded TCP SYNs into the TUN get their MSS
/// clamped to the route's MTU (LAN hosts assume 1500); with `snat`,
/// traffic from the TUN leaving by another interface is masqueraded.
fn ruleset(tun: &str, snat: bool) -> String {
    let masquerade = if snat {
        format!(
            "    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        iifname \"{tun}\" oifname != \"{tun}\" masquerade
    }}
"
        )
    } else {
        String::new()
    };
    // Create-then-delete first (one transaction; works on nftables before
    // 1.0.8's `destroy`): replacing the table leaves no stale rules.
    format!(
        "table ip {NFT_TABLE}
delete table ip {NFT_TABLE}
table ip {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority mangle; policy accept;
        oifname \"{tun}\" tcp flags syn tcp option maxseg size set rt mtu
        iifname \"{tun}\" tcp flags syn tcp option maxseg size set rt mtu
    }}
{masquerade}}}
"
    )
}

fn nft(script: &str) -> Result<()> {
    debug!(script, "nft");
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `nft` (install nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "`nft -f -` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_only_with_snat() {
        let with = ruleset("ntm0", true);
        assert!(
            with.contains("iifname \"ntm0\" oifname != \"ntm0\" masquerade"),
            "{with}"
        );
        assert!(with.contains("maxseg size set rt mtu"), "{with}");
        let without = ruleset("ntm0", false);
        assert!(!without.contains("masquerade"), "{without}");
        assert!(
            without.starts_with("table ip ntmtun\ndelete table ip ntmtun\n"),
            "{without}"
        );
    }
}
