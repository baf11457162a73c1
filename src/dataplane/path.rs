//! The per-packet processing both IO shells share (poll in `epoll`,
//! io_uring in `uring`): outbound, route lookup and seal in place into a
//! packet slot, queued as a record to send; inbound, open in place, admit
//! and queue the packet for the TUN. No syscalls and no allocation here
//! (only packets bound for the control thread are copied); the shells do
//! the reading, sending and writing.

use super::gso::{TunReader, TunWriter, TxRec, UdpTx};
use super::worker::DataplaneCounters;
use super::ToControl;
use crate::net::packet;
use crate::node::table::{admits, Endpoint, PeerTable, TxRoute};
use crate::proto::relay::{parse_relayed, put_relayed_header, RELAYED_HEADER_LEN};
use crate::proto::wire::{self, TransportHeader, TRANSPORT_HEADER_LEN};
use crossbeam_channel::Sender;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::debug;

/// Where a TUN packet sits in its slot: behind room for the relay header
/// and the record header.
pub const PAYLOAD_AT: usize = RELAYED_HEADER_LEN + TRANSPORT_HEADER_LEN;

/// What a queued record needs once it is sent: whose stats to count, and
/// how many payload bytes.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub vip: Ipv4Addr,
    pub bytes: usize,
}

/// One batch's view of the data plane: the table snapshot, the time, and
/// where to hand what the workers do not handle.
pub struct Path<'a> {
    pub table: &'a PeerTable,
    pub to_control: &'a Sender<ToControl>,
    pub counters: &'a DataplaneCounters,
    pub now: Instant,
}

impl Path<'_> {
    fn to_control(&self, msg: ToControl) {
        if self.to_control.try_send(msg).is_err() {
            self.counters.control_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The TUN packet in slot `i` at `PAYLOAD_AT`: sealed in place and
    /// queued if it has a route; handed to the control thread if it is for
    /// the tunnel (or a captured DNS query) without one. `tx` must have
    /// room (its capacity is the reader's slot count).
    pub fn outbound(&self, reader: &mut TunReader, tx: &mut UdpTx<Sent>, i: usize) {
        let table = self.table;
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
        let in_prefix = table.prefix.is_some_and(|p| p.contains(&dst));
        if in_prefix || table.resolvers.contains(&IpAddr::V4(dst)) {
            self.to_control(ToControl::Tun(pkt.to_vec()));
        } else {
            self.counters.tx_no_route.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the records a shell sent (per-peer stats; consecutive
    /// records mostly belong to one peer, so it is looked up once per run)
    /// and dropped.
    pub fn tx_counter(&self) -> TxCounter<'_> {
        TxCounter {
            table: self.table,
            now: self.now,
            last: None,
        }
    }

    /// Counts records the kernel refused or a full socket dropped.
    pub fn send_dropped(&self, n: usize) {
        if n > 0 {
            self.counters
                .send_errors
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// A datagram from the network (one segment of a GRO train). IPv4
    /// payloads of known sessions are queued on `writer`, which the caller
    /// keeps from being full (flushing it to the TUN first).
    pub fn inbound(&self, dgram: &mut [u8], from: SocketAddr, writer: &mut TunWriter) {
        let table = self.table;
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
        route
            .stats
            .record_rx(payload.len(), !seen.is_relay(), self.now);
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

/// Per-peer send statistics with a one-entry route cache.
pub struct TxCounter<'a> {
    table: &'a PeerTable,
    now: Instant,
    last: Option<(Ipv4Addr, Option<&'a TxRoute>)>,
}

impl TxCounter<'_> {
    pub fn sent(&mut self, s: Sent) {
        let route = match self.last {
            Some((vip, route)) if vip == s.vip => route,
            _ => {
                let route = self.table.by_vip.get(&s.vip);
                self.last = Some((s.vip, route));
                route
            }
        };
        if let Some(route) = route {
            route.stats.record_tx(s.bytes, self.now);
        }
    }
}
