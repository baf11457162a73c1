//! The IO side of split DNS: finding systemd-resolved, registering the stub
//! on the TUN link with `resolvectl` (the CLI of its D-Bus API, easy to
//! audit in the logs), and the state file of `split_dns`.

use super::split_dns::{self, DnsMode, State};
use super::system;
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use tracing::{debug, info, warn};

/// `comm` of systemd-resolved (truncated to 15 characters by the kernel).
const RESOLVED_COMM: &str = "systemd-resolve";
/// Bound on the /proc scan.
const MAX_PROCS: usize = 65536;

/// True when systemd-resolved runs in our network namespace and
/// `resolvectl` is installed. One running elsewhere (the host, seen from a
/// container or a lab namespace) would apply our settings to a link of its
/// own namespace with the same index, so it does not count.
pub fn running_here() -> bool {
    let Ok(ours) = std::fs::read_link("/proc/self/ns/net") else {
        return false;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    let found = procs.take(MAX_PROCS).flatten().any(|e| {
        let dir = e.path();
        std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == RESOLVED_COMM)
            && std::fs::read_link(dir.join("ns/net")).is_ok_and(|ns| ns == ours)
    });
    found
        && Command::new("resolvectl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn resolvectl(args: &[String]) -> Result<()> {
    debug!(cmd = %format!("resolvectl {}", args.join(" ")), "host DNS change");
    let out = Command::new("resolvectl").args(args).output().context(
        "cannot run `resolvectl` (install systemd-resolved, or use [dns] mode = \"capture\")",
    )?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "`resolvectl {}` failed: {}{}",
            args.join(" "),
            stderr.trim(),
            split_dns::refusal_hint(&stderr)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Points systemd-resolved at the stub for `domains` on `tun`.
pub fn register(tun: &str, stub: Ipv4Addr, domains: &[String]) -> Result<()> {
    for cmd in split_dns::register_commands(tun, stub, domains) {
        resolvectl(&cmd)?;
    }
    info!(tun, %stub, ?domains, "stub resolver registered with systemd-resolved");
    Ok(())
}

/// Replaces the routing domains of the stub's link (a federated domain
/// announced or withdrawn); the server and the protocol settings stay.
pub fn set_domains(tun: &str, domains: &[String]) -> Result<()> {
    resolvectl(&split_dns::domain_command(tun, domains))?;
    info!(tun, ?domains, "stub resolver's routing domains updated");
    Ok(())
}

/// Writes the state file before the change it records (atomically, so a
/// crash leaves the old file or the new one).
pub fn record(path: &Path, state: &State) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, state.to_text())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing the DNS state file {}", path.display()))
}

/// Undoes what the state file at `path` records, then removes it. Used at
/// shutdown (with the TUN still open: resolvectl names the link) and, for a
/// predecessor that crashed, at start. The capture rules are removed by
/// `system::teardown` in any case.
pub fn undo(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    match State::parse(&text) {
        Some(State {
            tun,
            mode: DnsMode::Stub,
        }) if !crate::net::host::link::exists(&tun) => {
            // resolved dropped the link's settings with the link.
            debug!(
                tun,
                "the TUN is gone, and its systemd-resolved settings with it"
            );
        }
        Some(State {
            tun,
            mode: DnsMode::Stub,
        }) => match resolvectl(&split_dns::revert_command(&tun)) {
            Ok(()) => info!(tun, "systemd-resolved settings of the TUN reverted"),
            Err(e) => warn!(
                tun,
                error = format!("{e:#}"),
                "cannot revert the systemd-resolved settings of the TUN; they go when the TUN does"
            ),
        },
        Some(_) => system::teardown(),
        None => warn!(path = %path.display(), "not an ntmtun DNS state file; removing it"),
    }
    if let Err(e) = std::fs::remove_file(path) {
        warn!(path = %path.display(), error = %e, "cannot remove the DNS state file");
    }
}
