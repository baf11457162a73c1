//! The control thread: runs the sans-IO `NodeCore`, carries out its
//! outputs, and publishes new peer tables to the workers.

use super::core::NodeCore;
use super::inbox::Inbox;
use super::output::Output;
use super::split_dns::DnsMode;
use super::{resolved, split_dns, system};
use crate::dataplane::table::PeerTable;
use crate::dataplane::Punt;
use crate::net::udp;
use crate::reload::NodeChange;
use crate::status::PingReport;
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::net::{IpAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use tun_rs::SyncDevice;

pub struct Control {
    pub core: NodeCore,
    pub rx: Receiver<Inbox>,
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
    /// The DNS mode in force (stub falls back to capture when registering
    /// with systemd-resolved fails).
    pub dns_mode: DnsMode,
    /// Records the host DNS changes made, for undoing them after a crash.
    pub dns_state: PathBuf,
    /// The DNS hook (capture rules or stub registration) is in place.
    pub hooked: bool,
    /// Stub mode: the routing domains registered on the TUN link.
    pub stub_domains: Vec<String>,
    /// The data socket is IPv6 (dual-stack).
    pub v6: bool,
    pub pings: Vec<PendingPing>,
    /// Other gateways' LAN prefixes currently routed into the TUN.
    pub subnet_routes: Vec<ipnet::Ipv4Net>,
    /// Federated domains' virtual prefixes currently routed into the TUN.
    pub federated_routes: Vec<ipnet::Ipv4Net>,
    /// The data plane's shell, workers and offloads, for `status`.
    pub dataplane: crate::status::DataplaneStatus,
}

impl Control {
    /// Capture targets: loopback resolvers cannot be captured by policy
    /// routing (the kernel delivers to them locally).
    fn capturable(&self) -> Vec<IpAddr> {
        self.capture
            .iter()
            .copied()
            .filter(|r| {
                if r.is_loopback() {
                    warn!(
                        resolver = %r,
                        "a loopback resolver (systemd-resolved?) cannot be captured by policy routing; \
                         set [dns] resolvers to the upstream servers, or use [dns] mode = \"stub\""
                    );
                }
                !r.is_loopback()
            })
            .collect()
    }

    /// Stub mode, on the core's list of routing domains: the first list
    /// (right after the registration's `Configure`) registers the stub with
    /// systemd-resolved, falling back to capture if that fails; each later
    /// one (a federated domain announced or withdrawn) sets the link's
    /// domains, keeping the stub and its settings. Lists are applied in the
    /// order the core emitted them. The state file is written before any
    /// change.
    fn stub_domains_changed(&mut self, domains: Vec<String>) {
        if self.dns_mode != DnsMode::Stub || domains == self.stub_domains {
            return;
        }
        if self.hooked {
            match resolved::set_domains(&self.tun_name, &domains) {
                Ok(()) => self.stub_domains = domains,
                Err(e) => warn!(
                    error = format!("{e:#}"),
                    "cannot update the stub resolver's routing domains; the TUN link keeps its \
                     previous list, so federated domains added since do not reach the stub"
                ),
            }
            return;
        }
        let Some(stub) = self.core.stub_address() else {
            return;
        };
        let done = self
            .record(DnsMode::Stub)
            .and_then(|()| resolved::register(&self.tun_name, stub, &domains));
        match done {
            Ok(()) => {
                self.hooked = true;
                self.stub_domains = domains;
            }
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "cannot register the stub resolver with systemd-resolved; using capture mode instead"
                );
                resolved::undo(&self.dns_state);
                self.dns_mode = DnsMode::Capture;
                self.core.set_dns_stub(false);
                self.hook_dns();
            }
        }
    }

    /// Capture mode: routes queries to the resolvers into the TUN.
    fn hook_dns(&mut self) {
        let capture = self.capturable();
        if self.dns_mode != DnsMode::Capture || capture.is_empty() {
            return;
        }
        let done = self
            .record(DnsMode::Capture)
            .and_then(|()| Ok(system::capture_dns(&self.tun_name, &capture)?));
        match done {
            Ok(()) => self.hooked = true,
            Err(e) => warn!(
                error = format!("{e:#}"),
                "cannot capture DNS; names in the domain will not resolve"
            ),
        }
    }

    /// Writes one packet into the TUN. An offload TUN (IFF_VNET_HDR, which
    /// tun-rs reports as tcp_gso) takes a virtio header in front of each write.
    fn write_tun(&self, pkt: &[u8]) {
        let offload = self.tun.tcp_gso();
        if let Err(e) = crate::dataplane::tun_write(&self.tun, offload, pkt) {
            debug!(error = %e, "TUN write failed");
        }
    }

    fn record(&self, mode: DnsMode) -> anyhow::Result<()> {
        resolved::record(
            &self.dns_state,
            &split_dns::State {
                tun: self.tun_name.clone(),
                mode,
            },
        )
    }
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
        loop {
            let now = Instant::now();
            self.core.handle_timeout(now);
            self.drain();
            let wait = self
                .core
                .poll_timeout(now)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(5));
            match self.rx.recv_timeout(wait) {
                Ok(Inbox::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Take whatever else is queued before the next timer pass.
            for _ in 0..256 {
                match self.rx.try_recv() {
                    Ok(Inbox::Shutdown) => return,
                    Ok(msg) => self.handle(msg),
                    Err(_) => break,
                }
            }
            self.drain();
        }
    }

    fn handle(&mut self, msg: Inbox) {
        let now = Instant::now();
        match msg {
            Inbox::Punt(punt) => self.punt(punt, now),
            Inbox::NetworkChanged(endpoints) => self.core.handle_network_change(endpoints, now),
            Inbox::Ping { name, reply } => match self.core.ping(&name, now) {
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
            Inbox::Upstream { from, bytes } => self.core.handle_upstream(from, &bytes),
            Inbox::Reload(changes) => {
                for change in changes {
                    if let NodeChange::Resolvers(r) = &change {
                        self.capture = r.clone();
                        if self.hooked && self.dns_mode == DnsMode::Capture {
                            system::teardown();
                            self.hooked = false;
                            self.hook_dns();
                        }
                    }
                    self.core.apply(change);
                }
            }
            Inbox::Status(reply) => {
                let mut report = self.core.status(now);
                report.dataplane = self.dataplane.clone();
                let _ = reply.try_send(report);
            }
            Inbox::Shutdown => {}
        }
    }

    /// What a worker handed over.
    fn punt(&mut self, punt: Punt, now: Instant) {
        match punt {
            Punt::Udp { from, mut bytes } => {
                // A queue more than half full is load: handshakes then need
                // a cookie before they cost a Diffie-Hellman.
                let backlog = self.rx.capacity().is_some_and(|c| self.rx.len() * 2 > c);
                self.core.set_backlog(backlog);
                self.core.handle_udp(from, &mut bytes, now)
            }
            Punt::Tun(pkt) => self.core.handle_tun(pkt, now),
            Punt::TooBig(answer) => self.write_tun(&answer),
            Punt::EndpointSeen { index, from } => self.core.handle_endpoint_seen(index, from, now),
            Punt::PeerControl {
                index,
                from,
                payload,
            } => self.core.handle_peer_control(index, from, &payload, now),
        }
    }

    /// Carries out the core's outputs and publishes a changed table.
    fn drain(&mut self) {
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
                Output::Tun(pkt) => self.write_tun(&pkt),
                Output::Upstream { to, bytes } => {
                    if let Err(e) = self
                        .upstream
                        .send_to(&bytes, udp::for_socket(to, self.upstream_v6))
                    {
                        warn!(resolver = %to, error = %e, "cannot forward DNS query");
                    }
                }
                Output::SubnetRoutes(wanted) => {
                    self.subnet_routes = super::subnet::sync_routes(
                        &self.tun_name,
                        "subnet",
                        &self.subnet_routes,
                        &wanted,
                    );
                }
                Output::FederatedRoutes(prefixes) => {
                    self.federated_routes = super::subnet::sync_routes(
                        &self.tun_name,
                        "federated",
                        &self.federated_routes,
                        &prefixes,
                    );
                }
                Output::StubDomains(domains) => self.stub_domains_changed(domains),
                Output::Configure(reg) => {
                    let ipv6 = self.dns_mode == DnsMode::Capture
                        && self.capturable().iter().any(IpAddr::is_ipv6);
                    if let Err(e) = system::configure_address(
                        &self.tun_name,
                        reg.virtual_ip,
                        reg.prefix_len,
                        ipv6,
                    ) {
                        warn!(error = %e, "cannot configure the TUN");
                    }
                    // Stub mode hooks on the `StubDomains` that follows.
                    if !self.hooked {
                        self.hook_dns();
                    }
                }
            }
        }
        if let Some(t) = self.core.take_table() {
            self.table.store(Arc::new(t));
        }
    }
}
