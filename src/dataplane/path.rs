//! The per-packet processing both IO shells share (poll in `epoll`,
//! io_uring in `uring`): outbound, route lookup and seal in place into a
//! packet slot, queued as a record to send; inbound, open in place, admit
//! and queue the packet for the TUN. No syscalls and no allocation here
//! (only packets bound for the control thread are copied); the shells do
//! the reading, sending and writing.

use super::mtu::{self, Fit};
use super::opened::{classify_opened, Opened, RxPeer};
use super::table::{Endpoint, PeerTable, RxRoute, TxRoute};
use super::vnet::{TunReader, TunWriter};
use super::worker::DataplaneCounters;
use super::Punt;
use crate::net::batch::{self, Transmit, UdpTx};
use crate::net::icmp::FRAG_NEEDED_MAX;
use crate::net::packet;
use crate::proto::session::{SessionError, OPEN_BATCH};
use crate::proto::wire::{
    self, put_relayed_header, Datagram, Kind, RELAYED_HEADER_LEN, TRANSPORT_HEADER_LEN,
};
use crossbeam_channel::Sender;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
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
/// where to hand what the workers do not handle: the owner's inbox, which
/// takes a `Punt`.
pub struct Path<'a, M> {
    pub table: &'a PeerTable,
    pub to_control: &'a Sender<M>,
    pub counters: &'a DataplaneCounters,
    pub now: Instant,
}

impl<M: From<Punt>> Path<'_, M> {
    fn to_control(&self, punt: Punt) {
        if self.to_control.try_send(punt.into()).is_err() {
            self.counters.control_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The TUN packets in `slots` (each at `PAYLOAD_AT`): sealed in place
    /// and queued where they have a route, counters reserved once per run
    /// of packets to one peer; handed to the control thread if for the
    /// tunnel (or a captured DNS query) without one. `tx` must have room
    /// (its capacity is the reader's slot count).
    pub fn outbound(&self, reader: &mut TunReader, tx: &mut UdpTx<Sent>, slots: Range<usize>) {
        let table = self.table;
        let dest = |reader: &mut TunReader, i: usize| {
            let (slot, n) = reader.slot_mut(i);
            packet::destination(&slot[PAYLOAD_AT..PAYLOAD_AT + n])
        };
        let mut i = slots.start;
        while i < slots.end {
            let dst = match dest(reader, i) {
                Some(IpAddr::V4(dst)) => dst,
                // IPv6 only ever goes to the control thread as a captured
                // DNS query; the rest (router solicitations) is dropped.
                Some(v6 @ IpAddr::V6(_)) if table.resolvers.contains(&v6) => {
                    self.to_control(Punt::Tun(reader.packet(i).to_vec()));
                    i += 1;
                    continue;
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            // A virtual IP, or a LAN behind a gateway (subnet routes).
            let hop = table.next_hop(dst);
            let Some(route) = hop.and_then(|h| table.by_vip.get(&h)) else {
                if hop.is_some() || table.resolvers.contains(&IpAddr::V4(dst)) {
                    self.to_control(Punt::Tun(reader.packet(i).to_vec()));
                } else {
                    self.counters.tx_no_route.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                continue;
            };
            if !self.fits(reader, i, route) {
                i += 1;
                continue;
            }
            let mut end = i + 1;
            while end < slots.end
                && dest(reader, end) == Some(IpAddr::V4(dst))
                && self.fits(reader, end, route)
            {
                end += 1;
            }
            match route.session.reserve(end - i) {
                Ok(first) => {
                    for (j, slot) in (i..end).enumerate() {
                        self.seal(reader, tx, slot, route, first + j as u64);
                    }
                }
                Err(e) => debug!(error = %e, "seal failed"),
            }
            i = end;
        }
    }

    /// Fits slot `i` to the path MTU of `route` (`dataplane::mtu`): a SYN's
    /// MSS is clamped in place; false if the packet is too big, in which
    /// case the ICMP answer goes to the control thread to be written into
    /// the TUN (rare: each sender hears it once per destination).
    fn fits(&self, reader: &mut TunReader, i: usize, route: &TxRoute) -> bool {
        let (slot, n) = reader.slot_mut(i);
        let mut answer = [0u8; FRAG_NEEDED_MAX];
        match mtu::fit(
            &mut slot[PAYLOAD_AT..PAYLOAD_AT + n],
            route.mtu,
            &mut answer,
        ) {
            Fit::Send => true,
            Fit::TooBig(len) => {
                self.counters.tx_too_big.fetch_add(1, Ordering::Relaxed);
                self.to_control(Punt::TooBig(answer[..len].to_vec()));
                false
            }
        }
    }

    /// Seals slot `i` for `route` with a reserved `counter` and queues it.
    fn seal(
        &self,
        reader: &mut TunReader,
        tx: &mut UdpTx<Sent>,
        i: usize,
        route: &TxRoute,
        counter: u64,
    ) {
        let (slot, n) = reader.slot_mut(i);
        let len =
            match route
                .session
                .seal_at(counter, Kind::Data, &mut slot[RELAYED_HEADER_LEN..], n)
            {
                Ok(len) => len,
                Err(e) => {
                    debug!(error = %e, "seal failed");
                    return;
                }
            };
        // Relayed records carry the relay's 8-byte header in front; the
        // slot keeps room for it so nothing is copied.
        let (start, to) = match route.endpoint {
            Endpoint::Direct(a) => (RELAYED_HEADER_LEN, a),
            Endpoint::Relay { relay, sid } => {
                put_relayed_header(slot, sid);
                (0, relay)
            }
        };
        let queued = tx.push(Transmit {
            buf: i,
            start,
            len: RELAYED_HEADER_LEN + len - start,
            to,
            meta: Sent {
                vip: route.virtual_ip,
                bytes: n,
            },
        });
        if !queued {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
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

    /// A datagram from the network, or a UDP GRO train of `stride`-byte
    /// datagrams (`RecvMeta::stride`). Runs of records for one session
    /// are opened as a batch (`Session::open_batch`); IPv4 payloads are
    /// queued on `writer`, which the caller keeps from filling up (at least
    /// `batch::segments(..).count()` free, see `TunWriter::room`).
    pub fn inbound(
        &self,
        train: &mut [u8],
        stride: usize,
        from: SocketAddr,
        writer: &mut TunWriter,
    ) {
        let mut recs: [Range<usize>; OPEN_BATCH] = std::array::from_fn(|_| 0..0);
        let mut out: [Result<Range<usize>, SessionError>; OPEN_BATCH] =
            std::array::from_fn(|_| Err(SessionError::Malformed));
        let mut segs = batch::segments(train.len(), stride).peekable();
        while let Some(first) = segs.next() {
            let key = match record_key(&train[first.clone()]) {
                Ok(key) => key,
                Err(()) => {
                    // The control thread would only drop it too.
                    self.counters.rx_malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let route = key.and_then(|(_, index)| self.table.by_index.get(&index));
            let (Some((sid, _)), Some(route)) = (key, route) else {
                self.to_control(Punt::Udp {
                    from,
                    bytes: train[first].to_vec(),
                });
                continue;
            };
            let skip = if sid.is_some() { RELAYED_HEADER_LEN } else { 0 };
            recs[0] = first.start + skip..first.end;
            let mut n = 1;
            while n < OPEN_BATCH {
                match segs.peek() {
                    Some(r) if record_key(&train[r.clone()]) == Ok(key) => {
                        recs[n] = r.start + skip..r.end;
                        n += 1;
                        segs.next();
                    }
                    _ => break,
                }
            }
            route.session.open_batch(train, &recs[..n], &mut out[..n]);
            let seen = match sid {
                Some(sid) => Endpoint::Relay { relay: from, sid },
                None => Endpoint::Direct(from),
            };
            for r in &out[..n] {
                match r {
                    Ok(payload) => self.admit(route, &train[payload.clone()], seen, writer),
                    Err(e) => {
                        let counter = match e {
                            SessionError::Replay(_) => &self.counters.rx_replayed,
                            _ => &self.counters.rx_auth_failed,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        debug!(%from, error = %e, "record dropped");
                    }
                }
            }
        }
    }

    /// An opened record's payload from `seen`, by the rule both callers
    /// share (`classify_opened`): queued for the TUN if it is an IPv4
    /// packet from the peer to us, handed to the control thread if it is a
    /// control message or shows the peer at a new endpoint.
    fn admit(&self, route: &RxRoute, payload: &[u8], seen: Endpoint, writer: &mut TunWriter) {
        let index = route.session.local_index;
        let peer = RxPeer {
            virtual_ip: route.virtual_ip,
            endpoint: Some(route.endpoint),
            unconfirmed: route.unconfirmed,
            stats: &route.stats,
        };
        let table = self.table;
        let opened = classify_opened(payload, seen, peer, table.local_ip, &table.routes, self.now);
        if opened.endpoint_seen {
            self.to_control(Punt::EndpointSeen { index, from: seen });
        }
        match opened.payload {
            Opened::Keepalive => {}
            Opened::Packet(packet) => {
                if !writer.push(packet) {
                    debug!(len = packet.len(), "packet dropped: the TUN batch is full");
                }
            }
            Opened::Spoofed => {
                self.counters.rx_spoofed.fetch_add(1, Ordering::Relaxed);
            }
            Opened::Control(payload) => self.to_control(Punt::PeerControl {
                index,
                from: seen,
                payload: payload.to_vec(),
            }),
        }
    }
}

/// What decides whether datagrams can be opened in one batch: the relay
/// session they came through (None: direct) and our session index; None
/// for anything that is not a data record, and an error for one that
/// claims to be a data record (direct or relayed) but is malformed.
fn record_key(dgram: &[u8]) -> Result<Option<(Option<u32>, u32)>, ()> {
    let (sid, record) = match wire::parse(dgram) {
        Ok(Datagram::Relayed { sid, inner }) => (Some(sid), inner),
        _ => (None, dgram),
    };
    match wire::parse(record) {
        Ok(Datagram::Record(h)) if h.kind == Kind::Data => Ok(Some((sid, h.receiver))),
        Err(_) if Kind::Data.starts(record) => Err(()),
        _ => Ok(None),
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
