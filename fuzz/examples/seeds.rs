//! Writes the seed corpus: `cargo run --example seeds -- fuzz/seeds` (from
//! the repository root: `cd fuzz && cargo run --example seeds -- seeds`).
//! scripts/fuzz.sh passes `fuzz/seeds/<target>` to every run beside the
//! growing corpus in `fuzz/corpus/<target>`.

use ntmtun::net::packet;
use ntmtun::proto::handshake::Initiator;
use ntmtun::proto::relay as frames;
use ntmtun::proto::session::Session;
use ntmtun::proto::signal::{self, FromDc, PeerHello, Register, RegisterReply, Resolution, ToDc};
use ntmtun::proto::ticket::{Ticket, TicketKey};
use ntmtun::proto::wire::{self, Kind};
use ntmtun_fuzz::node::{dns_query, peer_info, registered, vip_packet, NODE_VIP, PEER_VIP};
use ntmtun_fuzz::{key, public, sa, Records, KEY_DC, KEY_NODE_A, KEY_RELAY};
use std::path::Path;

fn write(dir: &Path, target: &str, seeds: &[Vec<u8>]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create seed dir");
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i:02}")), s).expect("write seed");
    }
    println!("{target}: {} seeds", seeds.len());
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let dir = Path::new(&dir);
    let peer = Session::new(2, 1, &[2; 32], &[1; 32]);
    let (_, m1) = Initiator::start(
        Kind::DcHandshakeInit,
        &key(KEY_NODE_A),
        &public(KEY_DC),
        1,
        b"hi",
    )
    .expect("start");

    // wire
    write(
        dir,
        "wire",
        &[
            peer.seal_to_vec(Kind::Data, b"payload").expect("seal"),
            m1.clone(),
            wire::encode_resp_header(Kind::DcHandshakeResp, 5, 6).to_vec(),
        ],
    );

    // session_open: one raw record, then sealed ones delivered, replayed,
    // flipped, truncated, and a jump of the window.
    let mut s = Records::new(&[]);
    s.push(0, &peer.seal_to_vec(Kind::Data, b"raw").expect("seal"));
    s.push(1, b"one").push(1, b"two").push(1, b"");
    s.push(2, &[1, 0, 0, 0])
        .push(2, &[0, 0, 0, 0])
        .push(2, &[0, 0, 0, 0]);
    s.push(2, &[2, 1, 40, 0]).push(2, &[2, 2, 20, 0]);
    s.push(3, &200u16.to_le_bytes())
        .push(1, b"late")
        .push(2, &[3, 0, 0, 0]);
    write(
        dir,
        "session_open",
        &[
            Session::new(2, 1, &[2; 32], &[1; 32])
                .seal_to_vec(Kind::Data, b"x")
                .expect("seal"),
            s.into_bytes(),
        ],
    );

    // handshake: a valid message 1 for the DC's key; a response-shaped one.
    let mut resp = vec![1];
    resp.extend_from_slice(&wire::encode_resp_header(Kind::DcHandshakeResp, 5, 1));
    resp.extend_from_slice(&[0x42; 48]);
    let mut init = vec![0];
    init.extend_from_slice(&m1);
    // Mode 2: the harness appends the mac1 itself.
    let mut bare = vec![2];
    bare.extend_from_slice(
        &m1[..m1.len() - ntmtun::proto::handshake::MAC1_LEN - ntmtun::proto::cookie::MAC2_LEN],
    );
    write(dir, "handshake", &[init, bare, resp, vec![3; 49]]);

    // cookie: a well-formed DC cookie reply (to another initiation: it must
    // not open), and an initiation for the responder side.
    let src = "198.51.100.7:4000".parse().expect("addr");
    let now = std::time::Instant::now();
    let reply = ntmtun::proto::cookie::CookieMaker::new(&public(KEY_DC), now)
        .reply(Kind::DcCookieReply, &m1, src, now)
        .expect("reply");
    let mut as_reply = vec![0];
    as_reply.extend_from_slice(&reply);
    let mut as_init = vec![1];
    as_init.extend_from_slice(&m1);
    write(dir, "cookie", &[as_reply, as_init]);

    // signal
    let e = |v: Vec<u8>| v;
    write(
        dir,
        "signal",
        &[
            e(signal::encode(&Register {
                timestamp: 1,
                name: "alice".into(),
                auth_key: "token".into(),
                local_endpoints: vec![sa("192.0.2.2:41641"), sa("[2001:db8::2]:41641")],
                advertise_routes: vec!["192.0.2.128/27".parse().expect("prefix")],
            })
            .expect("encode")),
            e(signal::encode(&RegisterReply::Accepted(registered())).expect("encode")),
            e(signal::encode(&RegisterReply::Refused {
                reason: "no".into(),
            })
            .expect("encode")),
            e(signal::encode(&ToDc::Resolve {
                id: 1,
                target: signal::Target::Name("bob".into()),
                direct: true,
            })
            .expect("encode")),
            e(signal::encode(&ToDc::Observed {
                relay: sa(ntmtun_fuzz::RELAY_ADDR),
                seen_as: sa("203.0.113.7:1"),
            })
            .expect("encode")),
            e(signal::encode(&FromDc::Direction(peer_info(true))).expect("encode")),
            e(signal::encode(&FromDc::Resolved {
                id: 1,
                result: Resolution::Found(peer_info(false)),
            })
            .expect("encode")),
            e(signal::encode(&FromDc::Resolved {
                id: 2,
                result: Resolution::Offline,
            })
            .expect("encode")),
            e(signal::encode(&PeerHello { timestamp: 99 }).expect("encode")),
            e(
                signal::encode(&FromDc::RefusedRoutes(vec![signal::RefusedRoute {
                    prefix: "192.0.2.192/27".parse().expect("prefix"),
                    reason: signal::RouteRefusal::NotGranted,
                }]))
                .expect("encode"),
            ),
        ],
    );

    // relay_frames
    let tk_dc = TicketKey::derive(&key(KEY_DC), &public(KEY_RELAY));
    let t = Ticket {
        sid: 5,
        expires_unix: 1_700_000_600,
        rate_bytes: 125_000_000,
        secrets: [[1; 32], [2; 32]],
    };
    let ticket = tk_dc.seal(&t, [9; 12]);
    write(
        dir,
        "relay_frames",
        &[
            frames::bind(0, 1, &ticket, &[1; 32]),
            frames::bind_ack(1, 5, 1, sa("203.0.113.7:41641"), &[2; 32]),
            frames::probe(42),
            frames::probe_reply(42, sa("[2001:db8::7]:41641")),
            {
                let mut b = vec![0u8; 8];
                wire::put_relayed_header(&mut b, 5);
                b.extend_from_slice(b"inner");
                b
            },
            frames::ping(Kind::RelayPing, 7, &tk_dc),
            frames::ping(Kind::RelayPong, 7, &tk_dc),
            ticket.to_vec(),
        ],
    );

    write(dir, "relay_core", &ntmtun_fuzz::relay::seeds());
    write(dir, "dc_core", &ntmtun_fuzz::dc::seeds());
    write(dir, "node_core", &ntmtun_fuzz::node::seeds());

    // dns: [mode][vip bytes][query] for the fixed interceptor, and one
    // with its own domain.
    let mut dns = Vec::new();
    for (name, qtype) in [
        ("bob.ntm.internal", 1u16),
        ("BoB.NTM.internal", 28),
        ("ntm.internal", 6),
        ("ntm.internal", 2),
        ("x.y.ntm.internal", 1),
        ("9.0.18.198.in-addr.arpa", 12),
        ("example.com", 1),
        ("bob.ntm.internal", 255),
    ] {
        let mut b = vec![0, 0, 9];
        b.extend(dns_query(name, qtype));
        dns.push(b);
    }
    let mut own = vec![1, 0, 9, 7];
    own.extend_from_slice(b"corp.lan");
    own.extend_from_slice(&[10, 0, 0, 0, 8]);
    own.extend_from_slice(&60u32.to_le_bytes());
    own.extend(dns_query("bob.corp.lan", 1));
    dns.push(own);
    write(dir, "dns", &dns);

    // packet
    let mut v6 = Vec::new();
    packet::build_ipv6_udp(
        "[2001:db8::2]:5353".parse().expect("v6"),
        "[2001:db8::53]:53".parse().expect("v6"),
        &dns_query("bob.ntm.internal", 28),
        &mut v6,
    );
    write(
        dir,
        "packet",
        &[vip_packet(NODE_VIP, PEER_VIP, b"payload"), v6],
    );

    // gso: a TSO super-packet as the coalescer writes it (for the split),
    // the same segments raw (for the coalescer), and in-order steps of
    // each of the four built flows (TCP/UDP, v4/v6).
    let mut segs = Vec::new();
    let mut w = ntmtun::dataplane::gro::Coalescer::new(8, true, true);
    for k in 0..4u16 {
        let spec = ntmtun::dataplane::gro::Spec {
            id: k,
            seq: u32::from(k) * 1000,
            flags: 0x10,
            ttl: 64,
            ..Default::default()
        };
        let mut p = Vec::new();
        ntmtun::dataplane::gro::build(&spec, &[k as u8; 1000], &mut p);
        assert!(w.push(&p));
        segs.push(p);
    }
    w.finish();
    let mut split = vec![0];
    split.extend_from_slice(w.packet(0));
    let mut raw = vec![1, 1];
    for p in &segs {
        raw.extend_from_slice(&(p.len() as u16).to_le_bytes());
        raw.extend_from_slice(p);
    }
    let mut steps = vec![2, 1];
    for f in 0..4u8 {
        for _ in 0..4 {
            steps.push(0x24 | f); // no twist
            steps.extend_from_slice(&1200u16.to_le_bytes());
        }
    }
    write(dir, "gso", &[split, raw, steps]);

    // config: the documented examples with real keys, and a relay config.
    let k = |n| key(n).to_base64();
    let p = |n| public(n).to_base64();
    let dc = format!(
        "listen = [\"198.51.100.10:7446\", \"[2001:db8:100::10]:7446\"]\n\
         domain = \"ntm.internal\"\nprivate_key = \"{}\"\nvirtual_prefix = \"198.18.0.0/15\"\n\
         state_dir = \"/var/lib/ntmtun/dc\"\nauth_keys = [\"change-me-enrollment-token\"]\n\
         node_expiry_secs = 90\n\n[[relays]]\naddress = \"198.51.100.20:7447\"\npublic_key = \"{}\"\n",
        k(KEY_DC),
        p(KEY_RELAY)
    );
    let node = format!(
        "name = \"alice\"\nprivate_key = \"{}\"\ndc = \"198.51.100.10:7446\"\n\
         dc_public_key = \"{}\"\nauth_key = \"change-me-enrollment-token\"\ntun = \"ntm0\"\n\
         listen_port = 0\ncontrol_socket = \"/run/ntmtun/ntmtun.sock\"\nworkers = 2\n\
         keepalive_secs = 25\nrekey_secs = 120\n\n[dns]\nmode = \"capture\"\n\
         resolvers = [\"198.51.100.53\", \"2001:db8::53\"]\n",
        k(KEY_NODE_A),
        p(KEY_DC)
    );
    let relay = format!(
        "listen = [\"198.51.100.20:7447\", \"[2001:db8:100::20]:7447\"]\n\
         private_key = \"{}\"\ndc_public_key = \"{}\"\nsession_rate_mbps = 100\n",
        k(KEY_RELAY),
        p(KEY_DC)
    );
    write(
        dir,
        "config",
        &[dc.into_bytes(), node.into_bytes(), relay.into_bytes()],
    );
}
