//! Wiring of the node: TUN queues, data sockets, workers, the control
//! thread, the upstream DNS reader, the control socket and shutdown.

use super::control::Control;
use super::core::{NodeCore, NodeSettings};
use super::counters::bump;
use super::inbox::Inbox;
use super::split_dns::DnsMode;
use super::{control_socket, resolved, split_dns, system, tun};
use crate::config::NodeConfig;
use crate::dataplane::table::PeerTable;
use crate::dataplane::worker::{DataplaneCounters, Worker};
use crate::net::{addrwatch, ifaddrs, udp};
use crate::{reload, shutdown};
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// Control-channel depth: bounded so a flood cannot grow memory; workers
/// count what they drop when it is full.
const CONTROL_QUEUE: usize = 4096;

fn worker_count(cfg: &NodeConfig) -> usize {
    if cfg.workers > 0 {
        cfg.workers
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// Binds one SO_REUSEPORT socket per worker on the same port (the NAT sees
/// one mapping; the kernel spreads flows over the sockets). Dual-stack
/// (`[::]`, IPv4 through v4-mapped addresses) where the host has IPv6,
/// IPv4-only otherwise. Returns the sockets and whether they are IPv6.
fn bind_data_sockets(port: u16, count: usize) -> Result<(Vec<UdpSocket>, bool)> {
    let opts = udp::UdpOptions {
        reuse_port: true,
        ..Default::default()
    };
    let (first, any) = match udp::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), opts) {
        Ok(s) => (s, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        Err(e) => {
            info!(error = %e, "no IPv6 socket; using IPv4 only");
            let s = udp::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), opts).with_context(
                || {
                    format!(
                        "cannot bind the data socket on UDP port {port} (key `listen_port`); \
                         expected a free port, or 0 to let the system choose"
                    )
                },
            )?;
            (s, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        }
    };
    let port = first.local_addr()?.port();
    let mut all = vec![first];
    for _ in 1..count {
        all.push(udp::bind(SocketAddr::new(any, port), opts)?);
    }
    for s in &all {
        s.set_nonblocking(true)?;
    }
    Ok((all, any.is_ipv6()))
}

/// Our socket addresses: every usable host address with the data port.
fn endpoints(addrs: Vec<IpAddr>, port: u16, v6: bool) -> Vec<SocketAddr> {
    addrs
        .into_iter()
        .filter(|ip| v6 || ip.is_ipv4())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// Runs the node until SIGINT/SIGTERM; SIGHUP reloads `config_path`.
pub fn run(cfg: NodeConfig, config_path: PathBuf) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let workers = worker_count(&cfg);
    let listener = control_socket::bind(&cfg.control_socket)?;
    let _socket_file = control_socket::SocketFile(cfg.control_socket.clone());
    // Offloads (TUN TSO/USO, UDP GSO/GRO) unless NTMTUN_OFFLOAD=0.
    let shell = crate::dataplane::io::choose(cfg.io)?;
    let (queues, _) = tun::create(&cfg.tun, workers, crate::net::batch::offload_from_env())?;
    // The control socket and a TUN name nobody held prove no other node
    // runs here, so clearing the rules and DNS settings a crashed
    // predecessor may have left behind is safe (a node that fails before
    // this point touches nothing).
    let dns_state = split_dns::state_path(&cfg.control_socket);
    if dns_state.exists() {
        info!(state = %dns_state.display(), "undoing the DNS changes of a previous run");
        resolved::undo(&dns_state);
    }
    system::teardown();
    if let Err(e) = super::subnet::teardown() {
        // Hosts without nf_tables cannot have our table.
        debug!(error = %e, "no gateway nftables table to remove");
    }
    let offload = queues[0].tcp_gso();
    let (sockets, v6) = bind_data_sockets(cfg.listen_port, workers)?;
    let port = sockets[0].local_addr()?.port();
    let local_endpoints = endpoints(
        ifaddrs::local_addresses(&cfg.tun).unwrap_or_default(),
        port,
        v6,
    );

    let dns = split_dns::effective(
        cfg.dns.mode,
        cfg.dns.mode == DnsMode::Stub && resolved::running_here(),
    );
    if let Some(why) = dns.fallback {
        warn!("{why}");
    }
    let capture: Vec<IpAddr> = match dns.mode {
        DnsMode::Off => Vec::new(),
        DnsMode::Capture | DnsMode::Stub => cfg.dns.resolvers.clone(),
    };
    let now = Instant::now();
    let unix_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut core = NodeCore::new(
        NodeSettings {
            name: cfg.name.clone(),
            key: cfg.private_key.clone(),
            dc: cfg.dc.clone(),
            dc_key: cfg.dc_public_key,
            auth_key: cfg.auth_key.clone(),
            keepalive: (cfg.keepalive_secs > 0).then(|| Duration::from_secs(cfg.keepalive_secs)),
            rekey: Duration::from_secs(cfg.rekey_secs),
            resolvers: capture.clone(),
            unix_nanos_at_start: unix_nanos,
            index_seed: rand::random(),
        },
        now,
    );
    core.set_subnet_routes(cfg.advertise_routes.clone(), cfg.accept_routes);
    core.set_local_endpoints(local_endpoints.clone());
    core.set_dns_stub(dns.mode == DnsMode::Stub);
    let gateway = if cfg.advertise_routes.is_empty() {
        None
    } else {
        info!(advertise_routes = ?cfg.advertise_routes, snat = cfg.snat, "acting as a gateway for these LAN prefixes, once the DC grants them");
        Some(super::subnet::start_gateway(&cfg.tun, cfg.snat)?)
    };

    let table = Arc::new(ArcSwap::from_pointee(PeerTable::default()));
    let counters = Arc::new(DataplaneCounters::default());
    let control_counters = core.counters();
    let _metrics = match cfg.metrics_listen {
        Some(addr) => Some(crate::metrics::server::serve(
            addr,
            super::metrics::source(table.clone(), counters.clone(), control_counters.clone()),
            stop.clone(),
        )?),
        None => None,
    };
    let (tx, rx) = crossbeam_channel::bounded(CONTROL_QUEUE);
    let control_udp = sockets[0].try_clone()?;
    // The control thread writes through queue 0's fd. It must not open a
    // queue of its own: the kernel spreads flows over every attached queue,
    // and one nobody reads would swallow them.
    let queues: Vec<Arc<_>> = queues.into_iter().map(Arc::new).collect();
    let control_tun = queues[0].clone();
    // Keeps the TUN until its systemd-resolved settings are reverted at
    // shutdown: resolvectl names the link, and a closed TUN is gone.
    let tun_until_dns_undone = queues[0].clone();
    // Dual-stack where the host has IPv6, so IPv6 resolvers work too.
    let (upstream, upstream_v6) = match udp::bind(
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        udp::UdpOptions::default(),
    ) {
        Ok(s) => (s, true),
        Err(_) => (
            udp::bind(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                udp::UdpOptions::default(),
            )
            .context("DNS forwarding socket")?,
            false,
        ),
    };
    upstream.set_read_timeout(Some(Duration::from_millis(200)))?;

    info!(
        name = %cfg.name,
        tun = %cfg.tun,
        port,
        workers,
        io = shell.as_str(),
        offload,
        dns = dns.mode.as_str(),
        ?local_endpoints,
        public_key = %cfg.private_key.public_key(),
        "node starting"
    );

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    for (id, (tun, udp)) in queues.into_iter().zip(sockets).enumerate() {
        let w = Worker {
            id,
            tun,
            udp,
            v6,
            table: table.clone(),
            to_control: tx.clone(),
            stop: stop.clone(),
            counters: counters.clone(),
            core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            shell,
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || w.run())?,
        );
    }
    {
        let (tx, stop, upstream) = (tx.clone(), stop.clone(), upstream.try_clone()?);
        let dropped = control_counters.clone();
        handles.push(
            std::thread::Builder::new()
                .name("dns-upstream".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = upstream.recv_from(&mut buf) {
                            let msg = Inbox::Upstream {
                                from: udp::canonical(from),
                                bytes: buf[..n].to_vec(),
                            };
                            if tx.try_send(msg).is_err() {
                                bump(&dropped.upstream_queue_full);
                            }
                        }
                    }
                })?,
        );
    }
    {
        let (tx, stop, tun_name) = (tx.clone(), stop.clone(), cfg.tun.clone());
        let dropped = control_counters.clone();
        handles.push(
            std::thread::Builder::new()
                .name("addr-watch".into())
                .spawn(move || {
                    addrwatch::watch(&tun_name, stop, |addrs| {
                        let msg = Inbox::NetworkChanged(endpoints(addrs, port, v6));
                        if tx.try_send(msg).is_err() {
                            bump(&dropped.addrwatch_queue_full);
                        }
                    })
                })?,
        );
    }
    {
        let (tx, stop) = (tx.clone(), stop.clone());
        handles.push(
            std::thread::Builder::new()
                .name("control-socket".into())
                .spawn(move || control_socket::serve(listener, tx, stop))?,
        );
    }
    {
        let (tx, reload_tx) = (tx.clone(), tx.clone());
        let on_hup = reload::on_sighup(
            config_path,
            cfg.clone(),
            crate::config::load_node,
            reload::plan_node,
            move |changes| {
                let _ = reload_tx.send(Inbox::Reload(changes));
            },
        );
        shutdown::spawn_waiter(
            stop.clone(),
            move || {
                let _ = tx.send(Inbox::Shutdown);
            },
            on_hup,
        );
    }
    drop(tx);

    Control {
        core,
        rx,
        udp: control_udp,
        upstream,
        upstream_v6,
        tun: control_tun,
        tun_name: cfg.tun.clone(),
        table,
        capture,
        dns_mode: dns.mode,
        dns_state: dns_state.clone(),
        hooked: false,
        stub_domains: Vec::new(),
        v6,
        pings: Vec::new(),
        subnet_routes: Vec::new(),
        federated_routes: Vec::new(),
        dataplane: crate::status::DataplaneStatus {
            io: Some(shell.as_str().into()),
            workers: Some(workers),
            offload: Some(offload),
        },
    }
    .run();

    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    resolved::undo(&dns_state);
    drop(tun_until_dns_undone);
    system::teardown();
    drop(gateway); // removes its nftables table, restores ip_forward
    info!(
        auth_failed = counters.rx_auth_failed.load(Ordering::Relaxed),
        spoofed = counters.rx_spoofed.load(Ordering::Relaxed),
        control_full = counters.control_full.load(Ordering::Relaxed),
        "node stopped; routes, rules and DNS settings removed"
    );
    Ok(())
}
