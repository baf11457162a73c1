//! One data-plane worker: a TUN queue and a UDP socket, polled together;
//! each wake-up drains a bounded batch from each, run to completion.
//!
//! Outbound: TUN reads (super-packets split into segments when the TUN has
//! offload) land in preallocated slots with room in front for the relay
//! and record headers; each is sealed in place and the batch leaves in one
//! `sendmmsg`, runs of records to one destination as UDP GSO trains.
//! Inbound: `recvmmsg` (with UDP GRO trains split back into datagrams),
//! each record opened in place, the IPv4 payloads written to the TUN in
//! one coalescing batch. The offload mechanics live in `super::gso`.
//! The per-packet path reuses preallocated buffers and does not allocate
//! (tun-rs's GRO coalescing aside, see `gso::TunWriter`); only packets
//! bound for the control thread are copied.

use super::gso::{self, TunReader, TunWriter, TxRec, UdpRx, UdpTx};
use super::ToControl;
use crate::net::udp;
use crate::net::{packet, poll};
use crate::node::table::Endpoint;
use crate::node::table::{admits, PeerTable, TxRoute};
use crate::proto::relay::{parse_relayed, put_relayed_header, RELAYED_HEADER_LEN};
use crate::proto::wire::{self, TransportHeader, TAG_LEN, TRANSPORT_HEADER_LEN};
use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use tun_rs::SyncDevice;

/// TUN reads per wake-up before looking at the socket.
const TUN_READS: usize = 64;
/// Outbound packet slots: one per TUN packet or super-packet segment; the
/// records of a batch are sent when they run out.
const TX_SLOTS: usize = 128;
/// Datagrams (or GRO trains) per recvmmsg.
const RX_MSGS: usize = 32;
/// recvmmsg calls per wake-up before looking at the TUN.
const RX_CALLS: usize = 4;
/// Packets per coalescing TUN write batch.
const TUN_WRITES: usize = tun_rs::IDEAL_BATCH_SIZE;
/// How often a worker re-checks the stop flag when idle.
const IDLE_WAKE: Duration = Duration::from_millis(200);
/// Where a TUN packet sits in its slot: behind room for the relay header
/// and the record header.
const PAYLOAD_AT: usize = RELAYED_HEADER_LEN + TRANSPORT_HEADER_LEN;

/// What a queued record needs once it is sent: whose stats to count, and
/// how many payload bytes.
#[derive(Clone, Copy)]
struct Sent {
    vip: Ipv4Addr,
    bytes: usize,
}

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
        // The TUN has offload (IFF_VNET_HDR) when it was asked for and the
        // kernel agreed; the UDP offloads follow the same switch.
        let offload = self.tun.tcp_gso();
        let gro = offload
            && match udp::enable_gro(fds[1]) {
                Ok(()) => true,
                Err(e) => {
                    warn!(worker = self.id, error = %e, "UDP GRO refused; receiving single datagrams");
                    false
                }
            };
        let gso = offload && udp::gso_supported(fds[1]);
        if offload && !gso {
            warn!(
                worker = self.id,
                "UDP GSO not supported by the kernel; sending with sendmmsg"
            );
        }
        if self.id == 0 {
            info!(
                tun_offload = offload,
                tun_uso = self.tun.udp_gso(),
                udp_gso = gso,
                udp_gro = gro,
                "data plane offloads"
            );
        }
        // Everything the batches need, allocated once.
        let mut reader = TunReader::new(offload, PAYLOAD_AT, TAG_LEN, TX_SLOTS);
        let mut tx: UdpTx<Sent> = UdpTx::new(self.v6, gso, TX_SLOTS);
        let mut rx = UdpRx::new(RX_MSGS);
        let mut writer = TunWriter::new(TUN_WRITES);
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
            if ready.is(0) {
                self.tun_batch(&table, &mut reader, &mut tx, now);
            }
            if ready.is(1) {
                self.udp_batch(&table, &mut rx, &mut writer, now);
            }
        }
    }

    fn to_control(&self, msg: ToControl) {
        if self.to_control.try_send(msg).is_err() {
            self.counters.control_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drains up to `TUN_READS` reads from the TUN, seals what has a route
    /// and sends the records in batches.
    fn tun_batch(
        &self,
        table: &PeerTable,
        reader: &mut TunReader,
        tx: &mut UdpTx<Sent>,
        now: Instant,
    ) {
        let mut used = 0;
        for _ in 0..TUN_READS {
            let need = match reader.read(&self.tun) {
                Ok(0) => continue,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(worker = self.id, error = %e, "TUN read failed");
                    break;
                }
            };
            if used + need > reader.capacity() {
                self.flush_tx(table, reader, tx, now);
                used = 0;
            }
            let got = reader.place(used);
            for i in used..used + got {
                self.outbound(table, reader, tx, i);
            }
            used += got;
        }
        self.flush_tx(table, reader, tx, now);
    }

    fn flush_tx(&self, table: &PeerTable, reader: &TunReader, tx: &mut UdpTx<Sent>, now: Instant) {
        if tx.is_empty() {
            return;
        }
        // Consecutive records mostly belong to one peer: look it up once.
        let mut last: Option<(Ipv4Addr, Option<&TxRoute>)> = None;
        let dropped = tx.flush(self.udp.as_raw_fd(), reader.slots(), |s: Sent| {
            let route = match last {
                Some((vip, route)) if vip == s.vip => route,
                _ => {
                    let route = table.by_vip.get(&s.vip);
                    last = Some((s.vip, route));
                    route
                }
            };
            if let Some(route) = route {
                route.stats.record_tx(s.bytes, now);
            }
        });
        if dropped > 0 {
            self.counters
                .send_errors
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// The TUN packet in slot `i` at `PAYLOAD_AT`: sealed in place and
    /// queued if it has a route; handed to the control thread if it is for
    /// the tunnel (or a captured DNS query) without one.
    fn outbound(&self, table: &PeerTable, reader: &mut TunReader, tx: &mut UdpTx<Sent>, i: usize) {
        let (slot, n) = reader.slot_mut(i);
        let pkt = &slot[PAYLOAD_AT..PAYLOAD_AT + n];
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
            let len = match route
                .session
                .seal(wire::DATA, &mut slot[RELAYED_HEADER_LEN..], n)
            {
                Ok(len) => len,
                Err(e) => {
                    debug!(error = %e, "seal failed");
                    return;
                }
            };
            // Relayed records carry the relay's 8-byte header in front;
            // the slot keeps room for it so nothing is copied.
            let (start, to) = match route.endpoint {
                Endpoint::Direct(a) => (RELAYED_HEADER_LEN, a),
                Endpoint::Relay { relay, sid } => {
                    put_relayed_header(slot, sid);
                    (0, relay)
                }
            };
            let queued = tx.push(TxRec {
                slot: i,
                start,
                len: RELAYED_HEADER_LEN + len - start,
                to,
                meta: Sent { vip: dst, bytes: n },
            });
            if !queued {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let in_prefix = table.prefix.is_some_and(|p| p.contains(&dst))
            || table.federated.iter().any(|p| p.contains(&dst));
        if in_prefix || table.resolvers.contains(&IpAddr::V4(dst)) {
            self.to_control(ToControl::Tun(pkt.to_vec()));
        } else {
            self.counters.tx_no_route.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drains up to `RX_CALLS` recvmmsg batches from the socket, splits GRO
    /// trains into datagrams, handles each and writes the packets for the
    /// TUN in coalescing batches.
    fn udp_batch(&self, table: &PeerTable, rx: &mut UdpRx, writer: &mut TunWriter, now: Instant) {
        for _ in 0..RX_CALLS {
            let n = match rx.recv(self.udp.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on Linux; not fatal.
                    debug!(worker = self.id, error = %e, "UDP receive error");
                    break;
                }
            };
            for i in 0..n {
                let (from, seg, data) = rx.get(i);
                let Some(from) = from else { continue };
                for range in gso::segments(data.len(), seg) {
                    self.inbound(table, &mut data[range], from, now, writer);
                }
            }
            if n < rx.capacity() {
                break;
            }
        }
        self.flush_tun(writer);
    }

    fn flush_tun(&self, writer: &mut TunWriter) {
        if let Err(e) = writer.flush(&self.tun) {
            debug!(error = %e, "TUN write failed");
        }
    }

    /// A datagram from the network.
    fn inbound(
        &self,
        table: &PeerTable,
        dgram: &mut [u8],
        from: SocketAddr,
        now: Instant,
        writer: &mut TunWriter,
    ) {
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
                if !admits(payload, route.virtual_ip, table.local_ip) {
                    self.counters.rx_spoofed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if writer.is_full() {
                    self.flush_tun(writer);
                }
                if !writer.push(payload) {
                    debug!(len = payload.len(), "packet too big for the TUN batch");
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
