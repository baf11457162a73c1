//! Host network set-up for the node, through iproute2's `ip` (present on
//! every Linux host and easy for an operator to audit in the logs): the TUN
//! address, and the policy rules that capture DNS into the TUN.
//!
//! Everything added here is removed by `teardown`, which also runs at start
//! so a crashed predecessor leaves nothing behind.

use crate::net::udp::FWMARK;
use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use tracing::{debug, info};

/// Routing table that sends captured DNS into the TUN.
pub const DNS_TABLE: u32 = 20053;
/// Rule priority: our own (marked) sockets use the main table...
pub const PRIO_MARK: u32 = 20052;
/// ...and only then is UDP port 53 to a resolver sent to `DNS_TABLE`.
pub const PRIO_DNS: u32 = 20053;

pub(super) fn ip(args: &[&str]) -> Result<()> {
    debug!(cmd = %format!("ip {}", args.join(" ")), "host network change");
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        debug!(path, error = %e, "sysctl not set");
    }
}

/// Gives the TUN its virtual address; the prefix route comes with it.
/// IPv6 stays off on the TUN unless a resolver is reached over IPv6 (its
/// queries are routed into the TUN), and then without router solicitations.
pub fn configure_address(tun: &str, vip: Ipv4Addr, prefix_len: u8, ipv6: bool) -> Result<()> {
    let conf6 = format!("/proc/sys/net/ipv6/conf/{tun}");
    if ipv6 {
        sysctl(&format!("{conf6}/router_solicitations"), "0");
        sysctl(&format!("{conf6}/accept_ra"), "0");
        sysctl(&format!("{conf6}/disable_ipv6"), "0");
    } else {
        sysctl(&format!("{conf6}/disable_ipv6"), "1");
    }
    // DNS answers we write carry the resolver's address as source, which is
    // routed via another interface: strict reverse-path filtering would drop
    // them, loose mode keeps the check meaningful.
    sysctl(&format!("/proc/sys/net/ipv4/conf/{tun}/rp_filter"), "2");
    ip(&[
        "address",
        "replace",
        &format!("{vip}/{prefix_len}"),
        "dev",
        tun,
    ])
    .with_context(|| format!("assigning {vip}/{prefix_len} to {tun}"))?;
    ip(&["link", "set", "dev", tun, "up"])?;
    info!(tun, %vip, prefix_len, "TUN configured");
    Ok(())
}

/// Routes UDP DNS for `resolvers` (IPv4 and IPv6) into the TUN: the paper's
/// capture mode. Our own sockets carry `FWMARK` and keep the main table.
pub fn capture_dns(tun: &str, resolvers: &[IpAddr]) -> Result<()> {
    let mark = format!("{FWMARK:#x}");
    let table = DNS_TABLE.to_string();
    for family in ["-4", "-6"] {
        if resolvers.iter().any(|r| r.is_ipv6() == (family == "-6")) {
            ip(&[
                family,
                "rule",
                "add",
                "priority",
                &PRIO_MARK.to_string(),
                "fwmark",
                &mark,
                "lookup",
                "main",
            ])?;
        }
    }
    for r in resolvers {
        let (family, host) = match r {
            IpAddr::V4(_) => ("-4", format!("{r}/32")),
            IpAddr::V6(_) => ("-6", format!("{r}/128")),
        };
        ip(&[
            family, "route", "replace", &host, "dev", tun, "table", &table,
        ])?;
        let prio = PRIO_DNS.to_string();
        ip(&[
            family, "rule", "add", "priority", &prio, "to", &host, "ipproto", "udp", "dport", "53",
            "lookup", &table,
        ])?;
    }
    info!(
        tun,
        ?resolvers,
        "DNS queries to the resolvers are captured into the TUN"
    );
    Ok(())
}

/// Removes our rules and routes (bounded: a few passes per priority).
pub fn teardown() {
    for family in ["-4", "-6"] {
        for prio in [PRIO_DNS, PRIO_MARK] {
            for _ in 0..64 {
                if ip(&[family, "rule", "del", "priority", &prio.to_string()]).is_err() {
                    break;
                }
            }
        }
    }
    for family in ["-4", "-6"] {
        if let Err(e) = ip(&[family, "route", "flush", "table", &DNS_TABLE.to_string()]) {
            // An empty table is not an error worth more than a debug line.
            debug!(error = %e, "flushing the DNS table");
        }
    }
}
