//! The relay's IO shell: one socket per listen address, batched receive
//! and send (`net::batch`: UDP GRO in, GSO out), one thread. Datagrams are
//! forwarded out of a socket of the destination's address family, which is
//! what lets an IPv4-only node and an IPv6-only node talk through a
//! dual-stack relay, and straight from the slot they were received in: a
//! GRO train of records for one pair leaves again as one GSO train.

use super::core::{RelayChange, RelayCore};
use crate::clock::unix_now;
use crate::config::{RelayConfig, MAX_LISTEN};
use crate::net::batch::{self, Bufs, Transmit, UdpRx, UdpTx};
use crate::net::{poll, udp};
use crate::proto::ticket::TicketKey;
use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

use super::core::Action;

/// Messages (datagrams or GRO trains) per receive.
const RX_MSGS: usize = 64;
/// Datagrams queued per socket before they are sent.
const TX_QUEUE: usize = 256;

// One poll(2) waits on every listen socket.
const _: () = assert!(MAX_LISTEN <= poll::MAX_FDS);

/// The bytes the relay sends: forwards from the receive slots, then the
/// core's replies (`Transmit::buf` past the slots).
struct Out<'a> {
    rx: &'a UdpRx,
    replies: &'a [Vec<u8>],
}

impl Bufs for Out<'_> {
    fn buf(&self, i: usize) -> &[u8] {
        match i.checked_sub(self.rx.capacity()) {
            Some(r) => &self.replies[r],
            None => self.rx.buf(i),
        }
    }
}

/// Index of the socket that should send to `to`.
fn socket_for(locals: &[SocketAddr], to: SocketAddr) -> Option<usize> {
    locals
        .iter()
        .position(|l| l.is_ipv4() == to.is_ipv4())
        .or_else(|| {
            locals
                .iter()
                .position(|l| l.is_ipv6() && l.ip().is_unspecified())
        })
}

/// Runs the relay until `stop` is set; changes from SIGHUP reloads arrive
/// on `reloads`.
pub fn run(
    cfg: RelayConfig,
    stop: Arc<AtomicBool>,
    reloads: Receiver<Vec<RelayChange>>,
) -> Result<()> {
    let sockets: Vec<UdpSocket> = cfg
        .listen
        .iter()
        .map(|&a| {
            let s = udp::bind(
                a,
                udp::UdpOptions {
                    mark: false,
                    buffer_bytes: 8 << 20,
                    ..Default::default()
                },
            )
            .with_context(|| format!("listen address {a} (key `listen` in the relay config)"))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let locals: Vec<SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<_>>()?;
    let fds: Vec<_> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let key = TicketKey::derive(&cfg.private_key, &cfg.dc_public_key);
    let mut core = RelayCore::new(key, cfg.session_rate_mbps * 1_000_000 / 8);
    let offload = batch::offload_from_env();
    let mut tx: Vec<UdpTx<()>> = Vec::with_capacity(fds.len());
    for (&fd, local) in fds.iter().zip(&locals) {
        // Best effort: a kernel without them receives and sends single
        // datagrams.
        let gro = offload && batch::enable_gro(fd).is_ok();
        let gso = offload && batch::gso_supported(fd);
        info!(listen = %local, udp_gro = gro, udp_gso = gso, "relay offloads");
        tx.push(UdpTx::new(local.is_ipv6(), gso, TX_QUEUE));
    }
    info!(
        listen = ?locals,
        public_key = %cfg.private_key.public_key(),
        dc = %cfg.dc_public_key.short(),
        rate_mbps = cfg.session_rate_mbps,
        "relay ready"
    );
    let mut rx = UdpRx::new(RX_MSGS);
    let mut replies: Vec<Vec<u8>> = Vec::new();
    let mut last_expire = Instant::now();
    let mut last_log = Instant::now();
    let metrics = crate::metrics::server::Published::default();
    metrics.publish(core.metrics());
    let _metrics_thread = metrics.serve(cfg.metrics_listen, stop.clone())?;
    while !stop.load(Ordering::Relaxed) {
        for change in reloads.try_iter().flatten() {
            core.apply(change);
        }
        metrics.publish(core.metrics());
        let ready = poll::readable(&fds, Duration::from_millis(500))
            .context("waiting for relay sockets")?;
        for i in (0..fds.len()).filter(|&i| ready.is(i)) {
            // Bounded: a few batches per socket per wake-up.
            for _ in 0..8 {
                let n = match rx.recv(fds[i]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!(error = %e, "relay receive failed");
                        break;
                    }
                };
                let now = Instant::now();
                let unix = unix_now();
                for j in 0..n {
                    let Some(meta) = rx.meta(j) else { continue };
                    for seg in batch::segments(meta.len, meta.stride) {
                        let data = &rx.buf(j)[seg.clone()];
                        let (out, t) = match core.handle(meta.from, data, now, unix) {
                            Action::Forward(to) => {
                                let Some(out) = socket_for(&locals, to) else {
                                    continue;
                                };
                                let t = Transmit {
                                    buf: j,
                                    start: seg.start,
                                    len: seg.len(),
                                    to,
                                    meta: (),
                                };
                                (out, t)
                            }
                            Action::Reply(reply) => {
                                let t = Transmit {
                                    buf: rx.capacity() + replies.len(),
                                    start: 0,
                                    len: reply.len(),
                                    to: meta.from,
                                    meta: (),
                                };
                                replies.push(reply);
                                (i, t)
                            }
                            Action::Drop(_) => continue,
                        };
                        if !tx[out].push(t) {
                            send(&mut tx[out], fds[out], &rx, &replies);
                            tx[out].push(t);
                        }
                    }
                }
                for (k, queue) in tx.iter_mut().enumerate() {
                    send(queue, fds[k], &rx, &replies);
                }
                replies.clear();
                if n < rx.capacity() {
                    break;
                }
            }
        }
        if last_expire.elapsed() >= Duration::from_secs(1) {
            core.expire(unix_now());
            last_expire = Instant::now();
        }
        if last_log.elapsed() >= Duration::from_secs(60) {
            info!(sessions = core.session_count(), stats = ?core.stats, "relay statistics");
            last_log = Instant::now();
        }
    }
    info!(stats = ?core.stats, "relay stopping");
    Ok(())
}

/// Sends what `queue` holds (anything the socket refuses is dropped, as
/// UDP may).
fn send(queue: &mut UdpTx<()>, fd: RawFd, rx: &UdpRx, replies: &[Vec<u8>]) {
    if !queue.is_empty() {
        queue.flush(fd, &Out { rx, replies }, |()| ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_socket_of_the_destination_family() {
        let locals: Vec<SocketAddr> = vec![
            "198.51.100.20:7447".parse().unwrap(),
            "[2001:db8::20]:7447".parse().unwrap(),
        ];
        assert_eq!(
            socket_for(&locals, "198.51.100.11:1".parse().unwrap()),
            Some(0)
        );
        assert_eq!(
            socket_for(&locals, "[2001:db8::12]:1".parse().unwrap()),
            Some(1)
        );
        let v6_any: Vec<SocketAddr> = vec!["[::]:7447".parse().unwrap()];
        assert_eq!(
            socket_for(&v6_any, "198.51.100.11:1".parse().unwrap()),
            Some(0)
        );
        let v4_only: Vec<SocketAddr> = vec!["198.51.100.20:7447".parse().unwrap()];
        assert_eq!(
            socket_for(&v4_only, "[2001:db8::12]:1".parse().unwrap()),
            None
        );
    }
}
