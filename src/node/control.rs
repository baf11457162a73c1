//! The control thread: runs the sans-IO `NodeCore`, carries out its
//! outputs, and publishes new peer tables to the workers.

use super::core::{NodeCore, Output};
use super::system;
use super::table::PeerTable;
use crate::dataplane::ToControl;
use crate::net::udp;
use crate::status::PingReport;
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::net::{IpAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use tun_rs::SyncDevice;

pub struct Control {
    pub core: NodeCore,
    pub rx: Receiver<ToControl>,
    /// A handle on the data socket: signaling leaves from the data port, so
    /// the DC sees the address peers must use.
    pub udp: UdpSocket,
    /// Marked socket for forwarding DNS to the real resolvers.
    pub upstream: UdpSocket,
    /// The upstream socket is IPv6 (dual-stack).
    pub upstream_v6: bool,
    pub tun: Arc<SyncDevice>,
    pub tun_name: String,
    pub table: Arc<ArcSwap<PeerTable>>,
    /// Resolvers to capture once the TUN has its address (empty: off).
    pub capture: Vec<IpAddr>,
    /// The data socket is IPv6 (dual-stack).
    pub v6: bool,
    pub pings: Vec<PendingPing>,
}

/// An `ntmtun ping` waiting for its pong.
pub struct PendingPing {
    id: u64,
    name: String,
    reply: Sender<PingReport>,
    deadline: Instant,
}

const PING_TIMEOUT: Duration = Duration::from_secs(3);

impl Control {
    /// Runs until a `Shutdown` message arrives or every sender is gone.
    pub fn run(mut self) {
        let mut captured = false;
        loop {
            let now = Instant::now();
            self.core.handle_timeout(now);
            self.drain(&mut captured);
            let wait = self
                .core
                .poll_timeout(now)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(5));
            match self.rx.recv_timeout(wait) {
                Ok(ToControl::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Take whatever else is queued before the next timer pass.
            for _ in 0..256 {
                match self.rx.try_recv() {
                    Ok(ToControl::Shutdown) => return,
                    Ok(msg) => self.handle(msg),
                    Err(_) => break,
                }
            }
            self.drain(&mut captured);
        }
    }

    fn handle(&mut self, msg: ToControl) {
        let now = Instant::now();
        match msg {
            ToControl::Udp { from, mut bytes } => {
                // A queue more than half full is load: handshakes then need
                // a cookie before they cost a Diffie-Hellman.
                let backlog = self.rx.capacity().is_some_and(|c| self.rx.len() * 2 > c);
                self.core.set_backlog(backlog);
                self.core.handle_udp(from, &mut bytes, now)
            }
            ToControl::Tun(pkt) => self.core.handle_tun(pkt, now),
            ToControl::EndpointSeen { index, from } => {
                self.core.handle_endpoint_seen(index, from, now)
            }
            ToControl::PeerControl {
                index,
                from,
                payload,
            } => self.core.handle_peer_control(index, from, &payload, now),
            ToControl::NetworkChanged(endpoints) => self.core.handle_network_change(endpoints, now),
            ToControl::Ping { name, reply } => match self.core.ping(&name, now) {
                Ok(id) => self.pings.push(PendingPing {
                    id,
                    name,
                    reply,
                    deadline: now + PING_TIMEOUT,
                }),
                Err(error) => {
                    let _ = reply.try_send(PingReport {
                        name,
                        rtt_ms: None,
                        path: None,
                        endpoint: None,
                        error: Some(error),
                    });
                }
            },
            ToControl::Upstream { from, bytes } => self.core.handle_upstream(from, &bytes),
            ToControl::Status(reply) => {
                let _ = reply.try_send(self.core.status(now));
            }
            ToControl::Shutdown => {}
        }
    }

    /// Carries out the core's outputs and publishes a changed table.
    fn drain(&mut self, captured: &mut bool) {
        let now = Instant::now();
        self.pings.retain(|p| {
            if p.deadline > now {
                return true;
            }
            let error = format!(
                "no answer from {} within {} s",
                p.name,
                PING_TIMEOUT.as_secs()
            );
            let _ = p.reply.try_send(PingReport {
                name: p.name.clone(),
                rtt_ms: None,
                path: None,
                endpoint: None,
                error: Some(error),
            });
            false
        });
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Pong {
                    id,
                    rtt,
                    path,
                    endpoint,
                } => {
                    if let Some(i) = self.pings.iter().position(|p| p.id == id) {
                        let p = self.pings.swap_remove(i);
                        let _ = p.reply.try_send(PingReport {
                            name: p.name,
                            rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
                            path: Some(path.to_string()),
                            endpoint: Some(endpoint),
                            error: None,
                        });
                    }
                }
                Output::Udp { to, bytes } => {
                    if let Err(e) = self.udp.send_to(&bytes, udp::for_socket(to, self.v6)) {
                        debug!(%to, error = %e, "control send failed");
                    }
                }
                Output::Tun(pkt) => {
                    // An offload TUN (IFF_VNET_HDR, which tun-rs reports as
                    // tcp_gso) takes a virtio header in front of each write.
                    let offload = self.tun.tcp_gso();
                    if let Err(e) = crate::dataplane::tun_write(&self.tun, offload, &pkt) {
                        debug!(error = %e, "TUN write failed");
                    }
                }
                Output::Upstream { to, bytes } => {
                    if let Err(e) = self
                        .upstream
                        .send_to(&bytes, udp::for_socket(to, self.upstream_v6))
                    {
                        warn!(resolver = %to, error = %e, "cannot forward DNS query");
                    }
                }
                Output::Configure(reg) => {
                    let capture: Vec<IpAddr> = self
                        .capture
                        .iter()
                        .copied()
                        .filter(|r| {
                            if r.is_loopback() {
                                warn!(
                                    resolver = %r,
                                    "a loopback resolver (systemd-resolved?) cannot be captured by policy routing; \
                                     set [dns] resolvers to the upstream servers"
                                );
                            }
                            !r.is_loopback()
                        })
                        .collect();
                    let ipv6 = capture.iter().any(IpAddr::is_ipv6);
                    if let Err(e) = system::configure_address(
                        &self.tun_name,
                        reg.virtual_ip,
                        reg.prefix_len,
                        ipv6,
                    ) {
                        warn!(error = format!("{e:#}"), "cannot configure the TUN");
                    }
                    if !*captured && !capture.is_empty() {
                        match system::capture_dns(&self.tun_name, &capture) {
                            Ok(()) => *captured = true,
                            Err(e) => warn!(
                                error = format!("{e:#}"),
                                "cannot capture DNS; names in the domain will not resolve"
                            ),
                        }
                    }
                }
            }
        }
        if let Some(t) = self.core.take_table() {
            self.table.store(Arc::new(t));
        }
    }
}
