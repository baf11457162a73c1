//! "No allocation on the per-packet path", checked: a counting global
//! allocator watches the shared per-packet code of both IO shells
//! (`dataplane::path` with the `vnet` and `net::batch` buffers) over many batches after
//! a warm-up, and must see zero allocations:
//!
//! - outbound: TUN reads, plain packets and a USO super-packet, taken by
//!   `TunReader` (GSO split into slots), routed and sealed in place by
//!   `Path::outbound`, sent as GSO trains by `net::batch::UdpTx::flush` (sendmmsg to a
//!   loopback socket);
//! - inbound: a GRO train of records (TCP segments of one flow) split,
//!   opened as a batch, checked and admitted by `Path::inbound` into the
//!   `TunWriter` batch, coalesced there into super-packets by our GRO
//!   (`dataplane::gro`) and written (`TunWriter::flush_to`, to /dev/null
//!   standing in for the TUN: the same `write` per packet).

mod common;

use arc_swap::ArcSwap;
use ntmtun::dataplane::gro;
use ntmtun::dataplane::path::{Path, Sent, PAYLOAD_AT};
use ntmtun::dataplane::table::{Endpoint, PeerStats};
use ntmtun::dataplane::vnet::{TunReader, TunWriter, VNET_HDR_LEN};
use ntmtun::dataplane::worker::DataplaneCounters;
use ntmtun::dataplane::Punt;
use ntmtun::net::batch::{self, UdpTx};
use ntmtun::proto::session::Session;
use ntmtun::proto::wire::{Kind, TAG_LEN, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// Counts allocations made by the current thread while `COUNTING` is set.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: thread-locals may be gone while a thread exits.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: forwards to the system allocator; counting touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(|a| a.get())
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SEGMENTS: usize = 20;
const SEG: usize = 1000;
const PLAIN: usize = 40;

/// IPv4 + UDP headers from `src` to `dst` for `payload` bytes (IP header
/// checksum set).
fn headers(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> [u8; 28] {
    let mut h = [0u8; 28];
    let total = (28 + payload) as u16;
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = 64;
    h[9] = 17;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = h[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h[20..22].copy_from_slice(&4000u16.to_be_bytes());
    h[22..24].copy_from_slice(&5000u16.to_be_bytes());
    h[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    h
}

/// A TUN read on an offload TUN: a USO super-packet of `SEGMENTS` x `SEG`.
fn super_read() -> Vec<u8> {
    let payload = SEGMENTS * SEG;
    let mut r = vec![0u8; VNET_HDR_LEN + 28 + payload];
    tun_rs::VirtioNetHdr {
        flags: 1, // NEEDS_CSUM
        gso_type: tun_rs::VIRTIO_NET_HDR_GSO_UDP_L4,
        hdr_len: 28,
        gso_size: SEG as u16,
        csum_start: 20,
        csum_offset: 6,
    }
    .encode(&mut r)
    .unwrap();
    r[VNET_HDR_LEN..VNET_HDR_LEN + 28].copy_from_slice(&headers(LOCAL, PEER, payload));
    r
}

/// A plain TUN read (all-zero virtio header) of `len` payload bytes.
fn plain_read(len: usize) -> Vec<u8> {
    let mut r = vec![0u8; VNET_HDR_LEN + 28 + len];
    r[VNET_HDR_LEN..VNET_HDR_LEN + 28].copy_from_slice(&headers(LOCAL, PEER, len));
    r
}

#[test]
fn per_packet_path_does_not_allocate() {
    // The counter itself sees allocations.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![0u8; 10]))), 1);
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ours = Arc::new(Session::new(1, 2, &[7; 32], &[9; 32]));
    let theirs = Session::new(2, 1, &[9; 32], &[7; 32]);
    let stats = Arc::new(PeerStats::new(Instant::now()));
    let endpoint = Endpoint::Direct(receiver.local_addr().unwrap());
    let table = common::one_peer_table(LOCAL, PEER, ours.clone(), endpoint, stats.clone());
    let table = ArcSwap::from_pointee(table);
    let (to_control, control) = crossbeam_channel::bounded::<Punt>(16);
    let counters = DataplaneCounters::default();

    // Inputs, made before counting: TUN reads, and a GRO train of records
    // from the peer (inner packets peer -> us).
    let supers = super_read();
    let plains: Vec<Vec<u8>> = (0..PLAIN).map(|i| plain_read(100 + 30 * i)).collect();
    // 64 in-order TCP segments peer -> us of MSS bytes each (`gro::build`
    // makes them 198.18.0.2 -> 198.18.0.1: PEER -> LOCAL).
    const MSS: usize = 1188;
    let inner = MSS + 40;
    let rec_len = inner + TRANSPORT_OVERHEAD;
    let mut train_template = vec![0u8; 64 * rec_len];
    let mut seg = Vec::new();
    for k in 0..64 {
        let spec = gro::Spec {
            id: k as u16,
            seq: (k * MSS) as u32,
            flags: 0x10, // ACK
            ttl: 64,
            ..gro::Spec::default()
        };
        gro::build(&spec, &[k as u8; MSS], &mut seg);
        let rec = &mut train_template[k * rec_len..(k + 1) * rec_len];
        rec[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + inner].copy_from_slice(&seg);
    }
    // /dev/null stands in for the TUN: the write step is the same syscall.
    let sink = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    // The segments coalesce into two super-packets (55 + 9 segments: 64 KiB
    // at most each), written with their virtio headers.
    let fits = (65535 - 40) / MSS;
    assert_eq!(fits, 55);
    let written = 2 * (VNET_HDR_LEN + 40) + 64 * MSS;
    let mut train = train_template.clone();
    let mut read = vec![0u8; supers.len().max(VNET_HDR_LEN + 28 + 100 + 30 * PLAIN)];
    let mut drain = vec![0u8; 65536];
    let mut reader = TunReader::new(true, PAYLOAD_AT, TAG_LEN, 128);
    let mut tx: UdpTx<Sent> = UdpTx::new(false, batch::gso_supported(sender.as_raw_fd()), 128);
    // Records arrive from the endpoint the table has (else the control
    // thread would hear of a new one).
    let from = receiver.local_addr().unwrap();

    let mut batch = |writer: &mut TunWriter, train: &mut Vec<u8>| {
        let snapshot = table.load();
        let path = Path {
            table: &snapshot,
            to_control: &to_control,
            counters: &counters,
            now: Instant::now(),
        };
        // Outbound: one super-packet and the plain packets.
        let mut used = 0;
        for r in std::iter::once(&supers).chain(plains.iter()) {
            let buf = &mut read[..r.len()];
            buf.copy_from_slice(r);
            let need = reader.plan(buf);
            assert!(need > 0 && used + need <= reader.capacity());
            let got = reader.place_from(buf, used);
            assert_eq!(got, need);
            used += got;
        }
        path.outbound(&mut reader, &mut tx, 0..used);
        let mut count = path.tx_counter();
        let dropped = tx.flush(sender.as_raw_fd(), reader.slots(), |s| count.sent(s));
        assert_eq!(dropped, 0);
        while receiver.recv(&mut drain).is_ok() {}
        // Inbound: the peer seals 64 records in place; the train is split
        // and each record opened and queued for the TUN.
        train.copy_from_slice(&train_template);
        for k in 0..64 {
            let rec = &mut train[k * rec_len..(k + 1) * rec_len];
            theirs.seal(Kind::Data, rec, inner).unwrap();
        }
        assert_eq!(batch::segments(train.len(), rec_len).count(), 64);
        path.inbound(train, rec_len, from, writer);
        assert_eq!(writer.room(), 64 - 2, "64 segments coalesced into 2");
        assert_eq!(writer.flush_to(sink.as_raw_fd()).unwrap(), written);
        assert!(writer.is_empty());
    };

    // Warm-up: first use of the cipher, the socket's paths, the table.
    // Then count, the TUN write included.
    const WARM_UP: usize = 10;
    const ROUNDS: usize = 50;
    let mut n = 0;
    let mut writer = TunWriter::new(64, true, true);
    for round in 0..WARM_UP + ROUNDS {
        let made = allocations(|| batch(&mut writer, &mut train));
        if round >= WARM_UP {
            n += made;
        }
    }
    let rounds = ROUNDS;
    let packets = rounds * (SEGMENTS + PLAIN + 64);
    assert_eq!(
        n, 0,
        "{n} allocations over {rounds} batches ({packets} packets) on the per-packet path"
    );
    assert_eq!(
        stats.rx_packets.load(std::sync::atomic::Ordering::Relaxed),
        (WARM_UP + ROUNDS) as u64 * 64
    );
    assert_eq!(
        stats.tx_packets.load(std::sync::atomic::Ordering::Relaxed),
        ((WARM_UP + ROUNDS) * (SEGMENTS + PLAIN)) as u64
    );
    assert!(control.is_empty(), "nothing went to the control thread");
    let c = &counters;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (
            c.rx_auth_failed.load(Relaxed),
            c.rx_spoofed.load(Relaxed),
            c.send_errors.load(Relaxed)
        ),
        (0, 0, 0)
    );
}
