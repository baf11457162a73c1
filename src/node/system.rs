//! Host network set-up for the node, through netlink (`net::host`): the
//! TUN address, and the policy rules that capture DNS into the TUN.
//!
//! Everything added here is removed by `teardown`, which also runs at start
//! so a crashed predecessor leaves nothing behind. It removes only what is
//! ours: the rules at priorities `PRIO_MARK` and `PRIO_DNS`, and the routes
//! of table `DNS_TABLE`.

use crate::net::host::route::{self, Route};
use crate::net::host::rule::{self, Rule, Selector};
use crate::net::host::{self, address, link, Family};
use crate::net::udp::FWMARK;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};
use tracing::{debug, info, warn};

/// Routing table that sends captured DNS into the TUN.
pub const DNS_TABLE: u32 = 20053;
/// Rule priority: our own (marked) sockets use the main table...
pub const PRIO_MARK: u32 = 20052;
/// ...and only then is UDP port 53 to a resolver sent to `DNS_TABLE`.
pub const PRIO_DNS: u32 = 20053;
/// Bound on the rules removed per family and priority (one per resolver).
const MAX_RULES: usize = 64;

fn sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        debug!(path, error = %e, "sysctl not set");
    }
}

/// Gives the TUN its virtual address; the prefix route comes with it.
/// IPv6 stays off on the TUN unless a resolver is reached over IPv6 (its
/// queries are routed into the TUN), and then without router solicitations.
pub fn configure_address(
    tun: &str,
    vip: Ipv4Addr,
    prefix_len: u8,
    ipv6: bool,
) -> Result<(), host::Error> {
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
    address::replace_v4(tun, vip, prefix_len)?;
    link::set_up(tun)?;
    info!(tun, %vip, prefix_len, "TUN configured");
    Ok(())
}

/// Routes UDP DNS for `resolvers` (IPv4 and IPv6) into the TUN: the paper's
/// capture mode. Our own sockets carry `FWMARK` and keep the main table.
pub fn capture_dns(tun: &str, resolvers: &[IpAddr]) -> Result<(), host::Error> {
    for family in Family::BOTH {
        if resolvers.iter().any(|r| Family::of(r) == family) {
            rule::add(Rule {
                priority: PRIO_MARK,
                selector: Selector::FwMark(family, FWMARK),
                table: route::MAIN,
            })?;
        }
    }
    for &r in resolvers {
        route::replace(Route {
            dst: IpNet::from(r),
            dev: tun,
            table: DNS_TABLE,
        })?;
        rule::add(Rule {
            priority: PRIO_DNS,
            selector: Selector::UdpTo(r, 53),
            table: DNS_TABLE,
        })?;
    }
    info!(
        tun,
        ?resolvers,
        "DNS queries to the resolvers are captured into the TUN"
    );
    Ok(())
}

/// Removes our rules and the routes of our table (bounded: a few rules
/// per priority). Nothing there is not an error.
pub fn teardown() {
    for family in Family::BOTH {
        for prio in [PRIO_DNS, PRIO_MARK] {
            for _ in 0..MAX_RULES {
                match rule::delete_priority(family, prio) {
                    Ok(()) => {}
                    Err(e) if e.is_absent() => break,
                    Err(e) => {
                        warn!(error = %e, "cannot remove a DNS capture rule");
                        break;
                    }
                }
            }
        }
        match route::flush_table(family, DNS_TABLE) {
            Ok(n) => debug!(%family, table = DNS_TABLE, routes = n, "DNS table flushed"),
            Err(e) if e.is_absent() => {}
            Err(e) => warn!(error = %e, "cannot flush the DNS routing table"),
        }
    }
}
