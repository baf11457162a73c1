//! One data-plane worker: a TUN queue and a UDP socket, polled together;
//! each wake-up drains a bounded batch from each, run to completion.
//! The per-packet path reuses two fixed buffers and does not allocate;
//! only packets bound for the control thread are copied.

use super::ToControl;
use crate::net::udp;
use crate::net::{packet, poll};
use crate::node::table::Endpoint;
use crate::node::table::PeerTable;
use crate::proto::relay::{parse_relayed, put_relayed_header, RELAYED_HEADER_LEN};
use crate::proto::wire::{self, TransportHeader, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};
use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use tun_rs::SyncDevice;

/// Packets taken from one source per wake-up before looking at the other.
const BATCH: usize = 64;
/// How often a worker re-checks the stop flag when idle.
const IDLE_WAKE: Duration = Duration::from_millis(200);
/// Big enough for any datagram or TUN packet.
const BUF: usize = 65536;
/// Where a TUN packet is read in the outbound buffer: behind room for the
/// relay header and the record header.
const PAYLOAD_AT: usize = RELAYED_HEADER_LEN + TRANSPORT_HEADER_LEN;

/// Drop counters of the data plane, shared by all workers.
#[derive(Debug, Default)]
pub struct DataplaneCounters {
    pub rx_auth_failed: AtomicU64,
    pub rx_spoofed: AtomicU64,
    pub tx_no_route: AtomicU64,
    pub control_full: AtomicU64,
    pub send_errors: AtomicU64,
}

pub struct Worker {
    pub id: usize,
    /// This worker's TUN queue (queue 0 is shared with the control thread,
    /// which writes DNS answers and first packets through it).
    pub tun: Arc<SyncDevice>,
    pub udp: UdpSocket,
    /// The socket is IPv6 (dual-stack): IPv4 destinations are v4-mapped.
    pub v6: bool,
    pub table: Arc<ArcSwap<PeerTable>>,
    pub to_control: Sender<ToControl>,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<DataplaneCounters>,
    pub core: Option<core_affinity::CoreId>,
}

impl Worker {
    pub fn run(self) {
        if let Some(core) = self.core {
            let pinned = core_affinity::set_for_current(core);
            debug!(worker = self.id, core = core.id, pinned, "worker started");
        }
        let fds = [self.tun.as_raw_fd(), self.udp.as_raw_fd()];
        // Outbound: room in front for the relay and record headers, behind
        // for the tag.
        let mut out = vec![0u8; BUF + RELAYED_HEADER_LEN + TRANSPORT_OVERHEAD];
        let mut inb = vec![0u8; BUF];
        while !self.stop.load(Ordering::Relaxed) {
            let ready = match poll::readable(&fds, IDLE_WAKE) {
                Ok(r) => r,
                Err(e) => {
                    warn!(worker = self.id, error = %e, "poll failed; worker stops");
                    return;
                }
            };
            let table = self.table.load();
            let now = Instant::now();
            if ready[0] {
                for _ in 0..BATCH {
                    match self.tun.recv(&mut out[PAYLOAD_AT..PAYLOAD_AT + BUF]) {
                        Ok(n) => self.outbound(&table, &mut out, n, now),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            warn!(worker = self.id, error = %e, "TUN read failed");
                            break;
                        }
                    }
                }
            }
            if ready[1] {
                for _ in 0..BATCH {
                    match self.udp.recv_from(&mut inb) {
                        Ok((n, from)) => {
                            self.inbound(&table, &mut inb[..n], udp::canonical(from), now)
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP errors surface here on Linux; not fatal.
                            debug!(worker = self.id, error = %e, "UDP receive error");
                            break;
                        }
                    }
                }
            }
        }
    }

    fn to_control(&self, msg: ToControl) {
        if self.to_control.try_send(msg).is_err() {
            self.counters.control_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A packet from the TUN at `out[PAYLOAD_AT..PAYLOAD_AT + n]`.
    fn outbound(&self, table: &PeerTable, out: &mut [u8], n: usize, now: Instant) {
        let pkt = &out[PAYLOAD_AT..PAYLOAD_AT + n];
        let dst = match packet::destination(pkt) {
            Some(IpAddr::V4(dst)) => dst,
            // IPv6 only ever goes to the control thread as a captured DNS
            // query; the rest (router solicitations) is dropped.
            Some(v6 @ IpAddr::V6(_)) if table.resolvers.contains(&v6) => {
                self.to_control(ToControl::Tun(pkt.to_vec()));
                return;
            }
            _ => return,
        };
        if let Some(route) = table.by_vip.get(&dst) {
            let record = &mut out[RELAYED_HEADER_LEN..];
            let len = match route.session.seal(wire::DATA, record, n) {
                Ok(len) => len,
                Err(e) => {
                    debug!(error = %e, "seal failed");
                    return;
                }
            };
            // Relayed records carry the relay's 8-byte header in front;
            // the buffer keeps room for it so nothing is copied.
            let (start, to) = match route.endpoint {
                Endpoint::Direct(a) => (RELAYED_HEADER_LEN, a),
                Endpoint::Relay { relay, sid } => {
                    put_relayed_header(out, sid);
                    (0, relay)
                }
            };
            match self.udp.send_to(
                &out[start..RELAYED_HEADER_LEN + len],
                udp::for_socket(to, self.v6),
            ) {
                Ok(_) => route.stats.record_tx(n, now),
                Err(e) => {
                    self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    debug!(error = %e, endpoint = %route.endpoint, "send failed");
                }
            }
            return;
        }
        let in_prefix = table.prefix.is_some_and(|p| p.contains(&dst));
        if in_prefix || table.resolvers.contains(&IpAddr::V4(dst)) {
            self.to_control(ToControl::Tun(pkt.to_vec()));
        } else {
            self.counters.tx_no_route.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A datagram from the network.
    fn inbound(&self, table: &PeerTable, dgram: &mut [u8], from: SocketAddr, now: Instant) {
        // Records through a relay arrive wrapped; the endpoint they prove is
        // the relay session, and the record itself starts after the header.
        let (seen, record) = match parse_relayed(dgram) {
            Some((sid, _)) => (
                Endpoint::Relay { relay: from, sid },
                &mut dgram[RELAYED_HEADER_LEN..],
            ),
            None => (Endpoint::Direct(from), &mut dgram[..]),
        };
        let route = match TransportHeader::decode(record) {
            Ok(h) if h.kind == wire::DATA => table.by_index.get(&h.receiver),
            _ => None,
        };
        let Some(route) = route else {
            self.to_control(ToControl::Udp {
                from,
                bytes: dgram.to_vec(),
            });
            return;
        };
        let range = match route.session.open(record) {
            Ok(r) => r,
            Err(e) => {
                self.counters.rx_auth_failed.fetch_add(1, Ordering::Relaxed);
                debug!(%from, error = %e, "record dropped");
                return;
            }
        };
        let index = route.session.local_index;
        let payload = &record[range];
        route.stats.record_rx(payload.len(), !seen.is_relay(), now);
        let control = payload.first().is_some_and(|b| b >> 4 != 4);
        // Control messages (probes) carry their own endpoint rules.
        if seen != route.endpoint && !control {
            self.to_control(ToControl::EndpointSeen { index, from: seen });
        }
        match payload.first() {
            None => {} // keepalive
            Some(b) if b >> 4 == 4 => {
                // The tunnel authenticates the peer; the inner source must be
                // its own virtual address, or a peer could spoof another.
                let src_ok = packet::source(payload) == Some(IpAddr::V4(route.virtual_ip));
                let dst_ok = table
                    .local_ip
                    .is_some_and(|ip| packet::destination(payload) == Some(IpAddr::V4(ip)));
                if !(src_ok && dst_ok) {
                    self.counters.rx_spoofed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if let Err(e) = self.tun.send(payload) {
                    debug!(error = %e, "TUN write failed");
                }
            }
            Some(_) => self.to_control(ToControl::PeerControl {
                index,
                from: seen,
                payload: payload.to_vec(),
            }),
        }
    }
}
