//! The DC's IO shell: UDP sockets on every listen address, one thread
//! polling them and feeding the sans-IO core.

use super::core::DcCore;
use super::settings::{DcChange, FederationSpec};
use super::store::Store;
use crate::clock::unix_now;
use crate::config::{DcConfig, MAX_LISTEN};
use crate::net::{poll, udp};
use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Datagrams read from one socket per wake-up.
const DRAIN: usize = 256;

// One poll(2) waits on every listen socket.
const _: () = assert!(MAX_LISTEN <= poll::MAX_FDS);

/// Runs the DC until `stop` is set; changes from SIGHUP reloads arrive on
/// `reloads`.
pub fn run(cfg: DcConfig, stop: Arc<AtomicBool>, reloads: Receiver<Vec<DcChange>>) -> Result<()> {
    let store = Store::open(&cfg.state_dir).with_context(|| {
        format!(
            "opening the DC store in state_dir {}",
            cfg.state_dir.display()
        )
    })?;
    let enrolled = store.all().map(|v| v.len()).unwrap_or(0);
    let sockets: Vec<UdpSocket> = cfg
        .listen
        .iter()
        .map(|&addr| {
            udp::bind(
                addr,
                udp::UdpOptions {
                    mark: false,
                    ..Default::default()
                },
            )
            .with_context(|| format!("listen address {addr} (key `listen` in the DC config)"))
        })
        .collect::<Result<_>>()?;
    for s in &sockets {
        s.set_nonblocking(true)?;
    }
    info!(
        listen = ?cfg.listen,
        domain = %cfg.domain,
        prefix = %cfg.virtual_prefix,
        public_key = %cfg.private_key.public_key(),
        enrolled,
        "DC ready"
    );
    let mut core = DcCore::new(cfg.core_settings(), store, rand::random(), Instant::now())
        .with_route_grants(cfg.route_grants.clone());
    for g in &cfg.route_grants {
        info!(node = %g.node, prefixes = ?g.prefixes, "route grant");
    }
    core.federate(cfg.federation.clone(), Instant::now());
    // Only entries without `address` need DNS.
    let mut srv = if needs_dns(&cfg.federation) {
        Some(super::srv::spawn()?)
    } else {
        None
    };
    for f in &cfg.federation {
        info!(domain = %f.domain, address = ?f.address, public_key = %f.public_key, "federating");
    }
    let fds: Vec<_> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let mut buf = vec![0u8; 65536];
    let metrics = crate::metrics::server::Published::default();
    metrics.publish(core.metrics());
    let _metrics_thread = metrics.serve(cfg.metrics_listen, stop.clone())?;
    while !stop.load(Ordering::Relaxed) {
        metrics.publish(core.metrics());
        let now = Instant::now();
        for change in reloads.try_iter().flatten() {
            if let DcChange::Federation(specs) = &change {
                if srv.is_none() && needs_dns(specs) {
                    match super::srv::spawn() {
                        Ok(s) => srv = Some(s),
                        Err(e) => {
                            error!(error = format!("{e:#}"), "cannot start the DNS SRV lookups that [[federation]] entries without `address` need; restart the DC")
                        }
                    }
                }
            }
            for t in core.apply(change, now, unix_now()) {
                send(&sockets[0], &sockets, t.to, &t.bytes);
            }
        }
        if let Some((ask, answers)) = &srv {
            for domain in core.wanted_lookups(now) {
                if ask.send(domain).is_err() {
                    warn!("the DNS SRV lookup thread is gone");
                }
            }
            while let Ok((domain, addrs, ttl)) = answers.try_recv() {
                core.set_federation_addresses(&domain, addrs, ttl, now);
            }
        }
        for t in core.handle_timeout(now, unix_now()) {
            send(&sockets[0], &sockets, t.to, &t.bytes);
        }
        let wait = core
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(10), Duration::from_millis(500));
        let ready = poll::readable(&fds, wait).context("waiting for DC sockets")?;
        for (i, sock) in sockets.iter().enumerate() {
            if !ready.is(i) {
                continue;
            }
            // Bounded drain so one busy socket cannot starve the others; a
            // socket still full after it means more arrives than we handle.
            let mut drained = true;
            for round in 0..DRAIN {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!(error = %e, "DC receive failed");
                        break;
                    }
                };
                // A dual-stack socket reports IPv4 nodes as v4-mapped IPv6;
                // route direction needs their real family.
                let from = udp::canonical(from);
                for t in core.handle(from, &mut buf[..n], Instant::now(), unix_now()) {
                    send(sock, &sockets, t.to, &t.bytes);
                }
                drained = round + 1 < DRAIN;
            }
            core.set_backlog(!drained);
        }
    }
    info!(online = core.online_count(), stats = ?core.stats, "DC stopping");
    Ok(())
}

/// Whether some `[[federation]]` entry is found by DNS SRV (no `address`).
fn needs_dns(specs: &[FederationSpec]) -> bool {
    specs.iter().any(|f| f.address.is_none())
}

/// Replies leave from the socket the request came in on when the family
/// matches (so the node sees the address it sent to), else from any socket
/// of the right family.
fn send(preferred: &UdpSocket, all: &[UdpSocket], to: SocketAddr, bytes: &[u8]) {
    // A wildcard IPv6 socket is dual-stack and sends to both families; an
    // IPv4 wildcard only to IPv4.
    let family_ok = |s: &UdpSocket| {
        s.local_addr()
            .map(|a| a.is_ipv4() == to.is_ipv4() || (a.is_ipv6() && a.ip().is_unspecified()))
            .unwrap_or(false)
    };
    let sock = if family_ok(preferred) {
        Some(preferred)
    } else {
        all.iter().find(|s| family_ok(s))
    };
    match sock {
        Some(s) => {
            let v6 = s.local_addr().is_ok_and(|a| a.is_ipv6());
            if let Err(e) = s.send_to(bytes, udp::for_socket(to, v6)) {
                warn!(%to, error = %e, "DC send failed");
            }
        }
        None => warn!(%to, "no DC socket of the right address family"),
    }
}
