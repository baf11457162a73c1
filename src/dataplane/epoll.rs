//! The poll(2) shell: each wake-up drains a bounded batch from the TUN
//! (one `read` per packet or super-packet) and from the socket (recvmmsg),
//! sends with sendmmsg and writes the TUN through our GRO (`gro`), one
//! `write` per coalesced packet. Works on every kernel; `uring` is the
//! faster shell.

use super::path::Path;
use super::worker::{Buffers, Worker, IDLE_WAKE};
use super::Punt;
use crate::net::batch::{self, UdpRx};
use crate::net::poll;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use tracing::{debug, warn};

/// TUN reads per wake-up before looking at the socket.
const TUN_READS: usize = 64;
/// Datagrams (or GRO trains) per recvmmsg.
const RX_MSGS: usize = 32;
/// recvmmsg calls per wake-up before looking at the TUN.
const RX_CALLS: usize = 4;

pub fn run<M: From<Punt>>(w: &Worker<M>, bufs: &mut Buffers) {
    let fds = [w.tun.as_raw_fd(), w.udp.as_raw_fd()];
    let mut rx = UdpRx::new(RX_MSGS);
    while !w.stop.load(Ordering::Relaxed) {
        let ready = match poll::readable(&fds, IDLE_WAKE) {
            Ok(r) => r,
            Err(e) => {
                warn!(worker = w.id, error = %e, "poll failed; worker stops");
                return;
            }
        };
        let table = w.table.load();
        let path = w.path(&table);
        if ready.is(0) {
            tun_batch(w, &path, bufs);
        }
        if ready.is(1) {
            udp_batch(w, &path, bufs, &mut rx);
        }
    }
}

/// Drains up to `TUN_READS` reads from the TUN, seals what has a route
/// and sends the records in batches.
fn tun_batch<M: From<Punt>>(w: &Worker<M>, path: &Path<M>, bufs: &mut Buffers) {
    let mut used = 0;
    for _ in 0..TUN_READS {
        let need = match bufs.reader.read(&w.tun) {
            Ok(0) => continue,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => {
                warn!(worker = w.id, error = %e, "TUN read failed");
                break;
            }
        };
        if used + need > bufs.reader.capacity() {
            flush_tx(w, path, bufs, used);
            used = 0;
        }
        used += bufs.reader.place(used);
    }
    flush_tx(w, path, bufs, used);
}

/// Seals the `used` slots and sends the records.
fn flush_tx<M: From<Punt>>(w: &Worker<M>, path: &Path<M>, bufs: &mut Buffers, used: usize) {
    path.outbound(&mut bufs.reader, &mut bufs.tx, 0..used);
    if bufs.tx.is_empty() {
        return;
    }
    let mut stats = path.tx_counter();
    let dropped = bufs
        .tx
        .flush(w.udp.as_raw_fd(), bufs.reader.slots(), |s| stats.sent(s));
    path.send_dropped(dropped);
}

/// Drains up to `RX_CALLS` recvmmsg batches from the socket, splits GRO
/// trains into datagrams, handles each and writes the packets for the TUN
/// in coalescing batches.
fn udp_batch<M: From<Punt>>(w: &Worker<M>, path: &Path<M>, bufs: &mut Buffers, rx: &mut UdpRx) {
    for _ in 0..RX_CALLS {
        let n = match rx.recv(w.udp.as_raw_fd()) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => {
                // ICMP errors surface here on Linux; not fatal.
                debug!(worker = w.id, error = %e, "UDP receive error");
                break;
            }
        };
        for i in 0..n {
            let Some((meta, data)) = rx.get(i) else {
                continue;
            };
            if bufs.writer.room() < batch::segments(meta.len, meta.stride).count() {
                flush_tun(w, bufs);
            }
            path.inbound(data, meta.stride, meta.from, &mut bufs.writer);
        }
        if n < rx.capacity() {
            break;
        }
    }
    flush_tun(w, bufs);
}

/// Writes the queued packets to the TUN (both shells: coalesced as they
/// were queued, one `write` per packet left).
pub fn flush_tun<M>(w: &Worker<M>, bufs: &mut Buffers) {
    if let Err(e) = bufs.writer.flush(&w.tun) {
        debug!(worker = w.id, error = %e, "TUN write failed");
    }
}
