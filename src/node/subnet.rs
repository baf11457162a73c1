//! Host set-up for subnet routing (docs/operations.md, "Gateways"): routes
//! for other gateways' LAN prefixes into the TUN, and on a gateway IPv4
//! forwarding plus an nftables table `ip ntmtun` (MSS clamping into the
//! tunnel; with `snat`, masquerade of tunnel traffic leaving to the LAN).
//!
//! The routes go with the TUN when the node exits; the table is deleted at
//! shutdown and at start-up (after a crash), like `system::teardown`.

use crate::net::host;
use crate::net::host::nat::{self, Gateway as NatTable};
use crate::net::host::route::{self, Route};
use anyhow::{Context, Result};
use ipnet::{IpNet, Ipv4Net};
use tracing::{info, warn};

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
        } else if let Err(e) = route::delete(tun_route(tun, *p)) {
            warn!(prefix = %p, kind, error = %e, "cannot remove a route from the TUN");
        } else {
            info!(prefix = %p, kind, tun, "route removed from the TUN");
        }
    }
    for p in wanted {
        if now.contains(p) {
            continue;
        }
        match route::replace(tun_route(tun, *p)) {
            Ok(()) => {
                info!(prefix = %p, kind, tun, "route into the tunnel");
                now.push(*p);
            }
            Err(e) => warn!(
                prefix = %p,
                kind,
                error = %e,
                "cannot route a prefix into the TUN; its hosts are unreachable from here"
            ),
        }
    }
    now
}

fn tun_route(tun: &str, prefix: Ipv4Net) -> Route<'_> {
    Route {
        dst: IpNet::V4(prefix),
        dev: tun,
        table: route::MAIN,
    }
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
    let table = NatTable {
        table: NFT_TABLE,
        tun,
        snat,
    };
    if let Err(e) = nat::install(table) {
        if snat {
            return Err(anyhow::Error::new(e)
                .context("snat = true, but the masquerade table could not be installed"));
        }
        warn!(
            error = %e,
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
        if let Err(e) = teardown() {
            warn!(error = %e, "cannot remove the gateway nftables table");
        }
        if let Some(v) = &self.forward_was {
            let v = if v.is_empty() { "0" } else { v.as_str() };
            if let Err(e) = std::fs::write(IP_FORWARD, v) {
                warn!(error = %e, "cannot restore ip_forward");
            }
        }
    }
}

/// Deletes our nftables table if it exists (a crashed predecessor's too);
/// no table is no error.
pub fn teardown() -> Result<(), host::Error> {
    match nat::delete_table(NFT_TABLE) {
        Ok(()) => {
            info!(table = NFT_TABLE, "gateway nftables table removed");
            Ok(())
        }
        Err(e) if e.is_absent() => Ok(()),
        Err(e) => Err(e),
    }
}
