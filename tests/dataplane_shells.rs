//! Both IO shells (`uring`, `epoll`) move real packets: one worker on a real
//! offload TUN and a loopback UDP socket, with a test "peer" socket holding
//! the other half of the session. Runs in a network namespace of its own
//! (the test thread unshares one), so nothing leaves it. Needs root.
//!
//! Outbound: an app datagram to the peer's virtual address, and a UDP GSO
//! send of several segments (a USO super-packet on the TUN), arrive at the
//! peer as records that open to the app's packets. Inbound: a record the
//! peer seals arrives at the app socket on the TUN address, and a GSO
//! train of six records (UDP datagrams of one flow, which our GRO writes
//! as one USO super-packet where the TUN has USO) arrives whole and in
//! order. Then the stop flag ends the shell, which returns normally.

mod common;

use arc_swap::ArcSwap;
use ntmtun::dataplane::gro;
use ntmtun::dataplane::io::Shell;
use ntmtun::dataplane::table::{Endpoint, PeerStats};
use ntmtun::dataplane::worker::{DataplaneCounters, Worker};
use ntmtun::dataplane::Punt;
use ntmtun::dataplane::{epoll, uring};
use ntmtun::proto::session::Session;
use ntmtun::proto::wire::Kind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An IPv4/UDP packet (header checksum set, UDP checksum 0 = none).
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = p[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// Receives records on the peer socket until `n` opened, or 5 s of silence.
fn peer_receive(peer: &UdpSocket, session: &Session, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..100 {
        if got.len() >= n {
            break;
        }
        let Ok(len) = peer.recv(&mut buf) else { break };
        let rec = &mut buf[..len];
        if let Ok(r) = session.open(rec) {
            got.push(rec[r].to_vec());
        }
    }
    got
}

fn round_trip(shell: Shell) {
    // SAFETY: unshare on this thread only; it owns nothing shared yet.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        r,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    ip(&["link", "set", "lo", "up"]);
    let (mut queues, offload) = ntmtun::node::tun::create("ntmt0", 1, true).unwrap();
    ip(&["addr", "add", "198.18.0.1/15", "dev", "ntmt0"]);
    ip(&["link", "set", "ntmt0", "up"]);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let worker_addr = udp.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ours = Arc::new(Session::new(1, 2, &[7; 32], &[9; 32]));
    let theirs = Session::new(2, 1, &[9; 32], &[7; 32]);
    let stats = Arc::new(PeerStats::new(Instant::now()));
    let endpoint = Endpoint::Direct(peer.local_addr().unwrap());
    let table = common::one_peer_table(LOCAL, PEER, ours.clone(), endpoint, stats.clone());
    let (to_control, _control) = crossbeam_channel::bounded::<Punt>(64);
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(DataplaneCounters::default());
    let w = Worker {
        id: 0,
        tun: Arc::new(queues.remove(0)),
        udp,
        v6: false,
        table: Arc::new(ArcSwap::from_pointee(table)),
        to_control,
        stop: stop.clone(),
        counters: counters.clone(),
        core: None,
        shell,
    };
    let handle = std::thread::spawn(move || {
        let mut bufs = w.buffers();
        match shell {
            Shell::Uring => uring::run(&w, &mut bufs).map_err(|e| e.to_string()),
            Shell::Epoll => {
                epoll::run(&w, &mut bufs);
                Ok(())
            }
        }
    });

    // Outbound, one datagram.
    let app = UdpSocket::bind((LOCAL, 0)).unwrap();
    app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let app_port = app.local_addr().unwrap().port();
    app.send_to(b"hello, peer", (PEER, 9999)).unwrap();
    let got = peer_receive(&peer, &theirs, 1);
    assert_eq!(got.len(), 1, "{shell:?}: no record from the worker");
    assert!(got[0].ends_with(b"hello, peer"), "{shell:?}: {:?}", got[0]);
    assert_eq!(
        &got[0][16..20],
        &PEER.octets(),
        "{shell:?}: inner destination"
    );

    // Outbound, a GSO send of 5 x 1000 bytes: a USO super-packet on an
    // offload TUN, split into one record per segment.
    let seg: i32 = 1000;
    // SAFETY: `seg` outlives the call; the length matches.
    let r = unsafe {
        libc::setsockopt(
            app.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&seg as *const i32).cast(),
            4,
        )
    };
    assert_eq!(r, 0);
    let big: Vec<u8> = (0..5000u32).map(|i| (i / 1000) as u8).collect();
    app.send_to(&big, (PEER, 9998)).unwrap();
    let got = peer_receive(&peer, &theirs, 5);
    assert_eq!(got.len(), 5, "{shell:?}: segments (offload {offload})");
    for (k, pkt) in got.iter().enumerate() {
        assert_eq!(pkt.len(), 28 + 1000, "{shell:?}: segment {k}");
        assert!(
            pkt[28..].iter().all(|&b| b == k as u8),
            "{shell:?}: segment {k} out of order or mixed"
        );
    }

    // Inbound.
    let pkt = ipv4_udp(PEER, LOCAL, 7777, app_port, b"hello, app");
    let rec = theirs.seal_to_vec(Kind::Data, &pkt).unwrap();
    peer.send_to(&rec, worker_addr).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = app
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{shell:?}: nothing on the TUN address: {e}"));
    assert_eq!(&buf[..n], b"hello, app");
    assert_eq!(from, SocketAddr::from((PEER, 7777)));

    // Inbound, six datagrams of one flow (198.18.0.2:4000 -> :5001, right
    // checksums) sealed into equal records and sent as one GSO train.
    let sink = UdpSocket::bind((LOCAL, 5001)).unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut train = Vec::new();
    let mut rec_len = 0;
    for k in 0..6u8 {
        let spec = gro::Spec {
            udp: true,
            id: u16::from(k),
            ttl: 64,
            ..gro::Spec::default()
        };
        let mut pkt = Vec::new();
        gro::build(&spec, &[k; 1000], &mut pkt);
        let rec = theirs.seal_to_vec(Kind::Data, &pkt).unwrap();
        rec_len = rec.len();
        train.extend_from_slice(&rec);
    }
    let seg = rec_len as i32;
    // SAFETY: `seg` outlives the call; the length matches.
    let r = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&seg as *const i32).cast(),
            4,
        )
    };
    assert_eq!(r, 0);
    peer.send_to(&train, worker_addr).unwrap();
    for k in 0..6u8 {
        let (n, from) = sink
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{shell:?}: datagram {k} of the train missing: {e}"));
        assert_eq!(from, SocketAddr::from((PEER, 4000)));
        assert_eq!(n, 1000, "{shell:?}: datagram {k}");
        assert!(
            buf[..n].iter().all(|&b| b == k),
            "{shell:?}: datagram {k} out of order or mixed"
        );
    }

    stop.store(true, Ordering::Relaxed);
    let result = handle.join().expect("worker panicked");
    assert_eq!(result, Ok(()), "{shell:?} shell failed");
    assert_eq!(counters.rx_auth_failed.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.tx_packets.load(Ordering::Relaxed),
        6,
        "{shell:?}: sent records counted"
    );
    assert_eq!(
        stats.rx_packets.load(Ordering::Relaxed),
        7,
        "{shell:?}: received records counted"
    );
}

/// Runs `round_trip` on a thread of its own (it unshares the thread's
/// network namespace; the namespace goes when the thread and its fds do).
fn in_own_netns(shell: Shell) {
    if common::lab_skipped("dataplane_shells") {
        return;
    }
    let t = std::thread::spawn(move || round_trip(shell));
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn uring_shell_round_trip() {
    assert!(
        ntmtun::dataplane::io::probe().is_ok(),
        "io_uring probe failed on this kernel: {:?}",
        ntmtun::dataplane::io::probe()
    );
    in_own_netns(Shell::Uring);
}

#[test]
fn epoll_shell_round_trip() {
    in_own_netns(Shell::Epoll);
}
