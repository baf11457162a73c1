//! The TUN offload code both ways: the read split (`vnet::TunReader`: an
//! arbitrary virtio header and packet) and our GRO for writes
//! (`gro::Coalescer`: sequences of raw packets, or of TCP/UDP segments
//! built from fuzzer fields with right checksums and fuzzer twists).
//!
//! Invariants: no panic; every split segment of a super-packet is a valid
//! IP packet (lengths, IPv4 header checksum, transport checksum); every
//! written super-packet has a consistent virtio header; and splitting what
//! the coalescer wrote gives back exactly the packets it took (as a
//! multiset: order within a flow is the unit proptest's job).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::dataplane::gro::{self, Coalescer};
use ntmtun::dataplane::vnet::{TunReader, MAX_PACKET, VNET_HDR_LEN};
use ntmtun::net::packet::internet_checksum;
use ntmtun_fuzz::Reader;

/// Most packets per input (a TUN write batch is 128).
const MAX_PACKETS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    match r.u8() % 3 {
        0 => split_one(r.rest()),
        1 => {
            let uso = r.u8() & 1 == 1;
            let mut pkts = Vec::new();
            while !r.is_empty() && pkts.len() < MAX_PACKETS {
                let n = usize::from(r.u16()) % 2048;
                pkts.push(r.take(n).to_vec());
            }
            round_trip(&pkts, uso);
        }
        _ => {
            let uso = r.u8() & 1 == 1;
            round_trip(&segments(&mut r), uso);
        }
    }
});

/// TCP/UDP segments of four flows from fuzzer fields: each step picks a
/// flow, a payload length and a twist (PSH, a sequence or ID skip, TTL,
/// TOS, options, a bad checksum, a byte edit), mostly following on.
fn segments(r: &mut Reader) -> Vec<Vec<u8>> {
    let mut state: [gro::Spec; 4] = std::array::from_fn(|f| gro::Spec {
        v6: f & 1 == 1,
        udp: f & 2 == 2,
        flow: f as u8,
        flags: 0x10,
        ttl: 64,
        ..gro::Spec::default()
    });
    let mut pkts = Vec::new();
    while !r.is_empty() && pkts.len() < MAX_PACKETS {
        let pick = r.u8();
        let f = usize::from(pick & 3);
        let len = usize::from(r.u16()) % 1500;
        let mut s = state[f];
        match pick >> 2 {
            0 => s.flags |= 0x08,
            1 => s.seq = s.seq.wrapping_add(r.u32()),
            2 => s.id = s.id.wrapping_add(r.u16()),
            3 => s.ttl = r.u8(),
            4 => s.tos = r.u8(),
            5 => s.options = r.u8() % 11,
            6 => s.bad_checksum = true,
            7 => s.flags = r.u8(),
            _ => {}
        }
        let payload: Vec<u8> = (0..len).map(|i| (i as u8) ^ pick).collect();
        let mut p = Vec::new();
        gro::build(&s, &payload, &mut p);
        if pick >> 2 == 8 {
            let at = usize::from(r.u16()) % p.len();
            p[at] ^= r.u8() | 1;
        }
        pkts.push(p);
        state[f].seq = s.seq.wrapping_add(len as u32);
        state[f].id = s.id.wrapping_add(1);
        state[f].options = s.options;
    }
    pkts
}

/// Splits one TUN read (virtio header + packet) and checks the segments.
fn split_one(read: &[u8]) {
    let mut reader = TunReader::new(true, VNET_HDR_LEN, 0, MAX_PACKETS);
    let mut buf = read.to_vec();
    let need = reader.plan(&mut buf);
    if need == 0 {
        return;
    }
    let got = reader.place_from(&mut buf, 0);
    assert!(got == 0 || got == need, "planned {need}, placed {got}");
    let segs: Vec<Vec<u8>> = (0..got).map(|i| reader.packet(i).to_vec()).collect();
    if got > 1 {
        for s in &segs {
            check_segment(s);
        }
        // Back through the coalescer and split again: the same segments.
        round_trip(&segs, true);
    }
}

/// A segment the split made: lengths right, checksums right.
fn check_segment(p: &[u8]) {
    assert!(p.len() <= MAX_PACKET);
    let (l3, proto, addrs) = match p[0] >> 4 {
        4 => {
            let l3 = usize::from(p[0] & 0x0f) * 4;
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            assert_eq!(internet_checksum(&p[..l3]), 0, "IPv4 header checksum");
            (l3, p[9], &p[12..20])
        }
        6 => {
            assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
            (40, p[6], &p[8..40])
        }
        v => panic!("split made an IPv{v} packet"),
    };
    assert!(p.len() >= l3 + 8);
    if matches!(proto, 6 | 17) {
        let mut sum = addrs.to_vec();
        sum.extend_from_slice(&[0, proto]);
        sum.extend_from_slice(&((p.len() - l3) as u16).to_be_bytes());
        sum.extend_from_slice(&p[l3..]);
        assert_eq!(internet_checksum(&sum), 0, "transport checksum");
    }
}

/// Coalesces `pkts`, checks what would be written, splits it and checks
/// every packet came back.
fn round_trip(pkts: &[Vec<u8>], uso: bool) {
    let mut c = Coalescer::new(MAX_PACKETS, true, uso);
    let mut taken: Vec<Vec<u8>> = Vec::new();
    for p in pkts {
        if c.push(p) {
            taken.push(p.clone());
        } else {
            assert!(p.is_empty() || p.len() > MAX_PACKET || c.room() == 0);
        }
    }
    assert!(c.len() <= taken.len());
    c.finish();
    let mut back: Vec<Vec<u8>> = Vec::new();
    let mut reader = TunReader::new(true, VNET_HDR_LEN, 0, MAX_PACKETS);
    for i in 0..c.len() {
        let w = c.packet(i);
        assert!(w.len() > VNET_HDR_LEN && w.len() <= VNET_HDR_LEN + MAX_PACKET);
        let gso = w[1];
        if gso == 0 {
            assert_eq!(w[..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
            back.push(w[VNET_HDR_LEN..].to_vec());
            continue;
        }
        assert!(matches!(gso, 1 | 4 | 5), "GSO type {gso}");
        let hdr_len = usize::from(u16::from_ne_bytes([w[2], w[3]]));
        let gso_size = usize::from(u16::from_ne_bytes([w[4], w[5]]));
        let pkt_len = w.len() - VNET_HDR_LEN;
        assert!(
            gso_size > 0 && hdr_len + gso_size < pkt_len,
            "a super-packet of one segment"
        );
        let mut buf = w.to_vec();
        let need = reader.plan(&mut buf);
        assert!(need > 1, "the reader refused a super-packet");
        assert_eq!(reader.place_from(&mut buf, 0), need);
        for k in 0..need {
            check_segment(reader.packet(k));
            back.push(reader.packet(k).to_vec());
        }
    }
    taken.sort();
    back.sort();
    assert!(
        taken == back,
        "split(coalesce(packets)) differs from the packets"
    );
}
