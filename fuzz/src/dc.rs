//! Harness for `DcCore` (with `Store::in_memory()` and one dual-stack
//! relay): three nodes with fixed keys (A "alice", B "bob", C "carol") are
//! played by the harness, so fuzzer bytes can arrive raw, as the payload of
//! a real registration handshake, or sealed with a node's DC session.
//!
//! Input: one setup byte, then records. Setup bits: bit 0 skips registering
//! A, bit 1 skips registering B. Checks: every Kind::DcData the DC sends a node
//! opens and decodes as `FromDc`; every relay grant's ticket opens with the
//! relay's key and carries that side's secret; registration responses finish
//! the node's handshake and decode as `RegisterReply`.

use crate::{key, public, put_addr, sa, Reader, Records, MAX_OPS, UNIX_BASE};
use ntmtun::dc::core::{DcCore, Transmit};
use ntmtun::dc::settings::{DcSettings, RelaySpec};
use ntmtun::dc::store::Store;
use ntmtun::proto::handshake::Initiator;
use ntmtun::proto::relay as frames;
use ntmtun::proto::session::Session;
use ntmtun::proto::signal::{
    self, FromDc, PeerInfo, Register, RegisterReply, Resolution, Target, ToDc,
};
use ntmtun::proto::ticket::TicketKey;
use ntmtun::proto::wire;
use ntmtun::proto::wire::Kind;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Raw datagram: `[source index][bytes]`.
pub const OP_RAW: u8 = 0;
/// Kind::DcData sealed with node k's session: `[k][ToDc bytes]`.
pub const OP_TO_DC: u8 = 1;
/// Registration handshake from node k with this payload: `[k][Register bytes]`.
pub const OP_REGISTER: u8 = 2;
/// Kind::RelayPong MACed with the relay key: `[use last nonce][nonce u64]`.
pub const OP_PONG: u8 = 3;
/// Time passes: `[milliseconds u32]`, then `handle_timeout`.
pub const OP_TIME: u8 = 4;
/// The last datagram sent to the DC again, from `[source index]`.
pub const OP_REPLAY: u8 = 5;

pub const NODES: [(&str, u8, &str); 3] = [
    ("alice", crate::KEY_NODE_A, "192.0.2.2:41641"),
    ("bob", crate::KEY_NODE_B, "203.0.113.7:41641"),
    ("carol", crate::KEY_NODE_C, "[2001:db8:7::7]:41641"),
];

/// The relay's view of the DC-relay key (derived once).
fn relay_key() -> &'static TicketKey {
    static KEY: OnceLock<TicketKey> = OnceLock::new();
    KEY.get_or_init(|| TicketKey::derive(&key(crate::KEY_RELAY), &public(crate::KEY_DC)))
}

pub fn sources() -> [SocketAddr; 6] {
    [
        sa(NODES[0].2),
        sa(NODES[1].2),
        sa(NODES[2].2),
        sa(crate::RELAY_ADDR),
        sa(crate::RELAY6_ADDR),
        sa("192.0.2.99:9999"),
    ]
}

/// Node k's usual registration payload.
pub fn register(k: usize, timestamp: u64) -> Vec<u8> {
    signal::encode(&Register {
        timestamp,
        name: NODES[k].0.into(),
        auth_key: crate::AUTH.into(),
        local_endpoints: vec![sa(NODES[k].2), sa("10.1.0.2:41641")],
        advertise_routes: Vec::new(),
        incarnation: k as u64 + 1,
    })
    .expect("encode")
}

struct Harness {
    dc: DcCore,
    now: Instant,
    unix: u64,
    relay_key: TicketKey,
    sessions: [Option<Session>; 3],
    initiators: [Option<Initiator>; 3],
    next_index: u32,
    last_ping: Option<u64>,
    last_sent: Option<Vec<u8>>,
}

impl Harness {
    fn new() -> Harness {
        let now = Instant::now();
        let dc = DcCore::new(
            DcSettings {
                key: key(crate::KEY_DC),
                domain: crate::DOMAIN.into(),
                prefix: crate::PREFIX.parse().expect("prefix"),
                auth_keys: vec![crate::AUTH.into()],
                expiry: Duration::from_secs(90),
                relays: vec![RelaySpec {
                    public_key: public(crate::KEY_RELAY),
                    addresses: vec![sa(crate::RELAY_ADDR), sa(crate::RELAY6_ADDR)],
                }],
            },
            Store::in_memory().expect("in-memory store"),
            7,
            now,
        );
        Harness {
            dc,
            now,
            unix: UNIX_BASE,
            relay_key: relay_key().clone(),
            sessions: [None, None, None],
            initiators: [None, None, None],
            next_index: 0x100,
            last_ping: None,
            last_sent: None,
        }
    }

    fn send(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.last_sent = Some(bytes.to_vec());
        let mut b = bytes.to_vec();
        let out = self.dc.handle(from, &mut b, self.now, self.unix);
        self.received(out);
    }

    fn register(&mut self, k: usize, payload: &[u8]) {
        self.next_index = self.next_index.wrapping_add(1);
        let Ok((init, bytes)) = Initiator::start(
            Kind::DcHandshakeInit,
            &key(NODES[k].1),
            &public(crate::KEY_DC),
            self.next_index,
            payload,
        ) else {
            return;
        };
        self.initiators[k] = Some(init);
        self.send(sa(NODES[k].2), &bytes);
    }

    fn send_to_dc(&mut self, k: usize, payload: &[u8]) {
        let Some(s) = &self.sessions[k] else { return };
        let Ok(rec) = s.seal_to_vec(Kind::DcData, payload) else {
            return;
        };
        self.send(sa(NODES[k].2), &rec);
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.unix += ms / 1000;
        let out = self.dc.handle_timeout(self.now, self.unix);
        let _ = self.dc.poll_timeout();
        self.received(out);
    }

    fn received(&mut self, out: Vec<Transmit>) {
        for Transmit { to, mut bytes } in out {
            let relay = to == sa(crate::RELAY_ADDR) || to == sa(crate::RELAY6_ADDR);
            if relay && Kind::RelayPing.starts(&bytes) {
                let nonce = frames::parse_ping(Kind::RelayPing, &bytes, &self.relay_key);
                assert!(nonce.is_some(), "the DC sent the relay an unauthentic PING");
                self.last_ping = nonce;
                continue;
            }
            // A node may register from any of the source addresses.
            for k in 0..NODES.len() {
                match Kind::of(&bytes).ok() {
                    Some(Kind::DcHandshakeResp) => {
                        let (sender, receiver, noise) =
                            wire::decode_resp(&bytes).expect("the DC's response header decodes");
                        let Some(mut init) =
                            self.initiators[k].take_if(|i| i.local_index == receiver)
                        else {
                            continue;
                        };
                        let (s, payload) = init
                            .read_response(sender, noise)
                            .expect("the DC's handshake response completes the handshake");
                        let reply = signal::decode::<RegisterReply>(&payload)
                            .expect("the DC's RegisterReply decodes");
                        if matches!(reply, RegisterReply::Accepted(_)) {
                            self.sessions[k] = Some(s);
                        }
                        break;
                    }
                    Some(Kind::DcData) => {
                        let Some(s) = &self.sessions[k] else { continue };
                        let Ok(h) = wire::TransportHeader::decode(&bytes) else {
                            panic!("the DC sent a malformed DC_DATA");
                        };
                        if h.receiver != s.local_index {
                            continue;
                        }
                        let r = s.open(&mut bytes).expect("the DC's record opens");
                        let msg = signal::decode::<FromDc>(&bytes[r])
                            .expect("the DC sealed an undecodable FromDc");
                        self.check(&msg);
                        break;
                    }
                    other => panic!("the DC sent kind {other:?} to {to}"),
                }
            }
        }
    }

    /// A relay grant must be usable: the relay opens the ticket and finds
    /// the secret the node got for its side.
    fn check(&self, msg: &FromDc) {
        let info: &PeerInfo = match msg {
            FromDc::Direction(i) => i,
            FromDc::Resolved {
                result: Resolution::Found(i),
                ..
            } => i,
            FromDc::Resolved { .. }
            | FromDc::Routes(_)
            | FromDc::Federation(_)
            | FromDc::RefusedRoutes(_) => return,
        };
        if let Some(g) = &info.relay {
            let t = self
                .relay_key
                .open(&g.ticket)
                .expect("a relay grant's ticket opens with the relay's key");
            assert_eq!(t.sid, g.sid);
            assert!(g.side <= 1, "grant side {}", g.side);
            assert_eq!(t.secrets[g.side as usize], g.secret);
            assert_eq!(t.expires_unix, g.expires_unix);
        }
    }
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let mut h = Harness::new();
    for k in 0..2 {
        if flags & (1 << k) == 0 {
            h.register(k, &register(k, 1 + k as u64));
            assert!(
                h.sessions[k].is_some(),
                "harness out of date: node {k} did not register"
            );
        }
    }
    let sources = sources();
    for _ in 0..MAX_OPS {
        let Some((op, mut b)) = r.record() else { break };
        match op % 6 {
            OP_RAW => {
                let from = sources[b.u8() as usize % sources.len()];
                h.send(from, b.rest());
            }
            OP_TO_DC => {
                let k = b.u8() as usize % NODES.len();
                h.send_to_dc(k, b.rest());
            }
            OP_REGISTER => {
                let k = b.u8() as usize % NODES.len();
                h.register(k, b.rest());
            }
            OP_PONG => {
                let use_last = b.u8() & 1 == 1;
                let mut nonce = b.u64();
                if use_last {
                    nonce = h.last_ping.unwrap_or(nonce);
                }
                let pong = frames::ping(Kind::RelayPong, nonce, &h.relay_key);
                h.send(sa(crate::RELAY_ADDR), &pong);
            }
            OP_TIME => {
                let ms = u64::from(b.u32()) % 3_600_000;
                h.tick(ms);
            }
            _ => {
                let from = sources[b.u8() as usize % sources.len()];
                if let Some(last) = h.last_sent.clone() {
                    h.send(from, &last);
                }
            }
        }
        let _ = h.dc.online_count();
    }
}

/// Seeds: typical conversations.
pub fn seeds() -> Vec<Vec<u8>> {
    let resolve = |id, name: &str, direct| {
        signal::encode(&ToDc::Resolve {
            id,
            target: Target::Name(name.into()),
            direct,
        })
        .expect("encode")
    };
    let mut out = Vec::new();
    // alice asks for bob, both directions.
    let mut s = Records::new(&[0]);
    let mut body = vec![0];
    body.extend(resolve(1, "bob", true));
    s.push(OP_TO_DC, &body);
    let mut body = vec![1];
    body.extend(resolve(2, "alice", false));
    s.push(OP_TO_DC, &body);
    out.push(s.into_bytes());
    // Reverse lookup, Observed, unknown names.
    let mut s = Records::new(&[0]);
    let mut body = vec![0];
    body.extend(
        signal::encode(&ToDc::Resolve {
            id: 3,
            target: Target::Address("198.18.0.3".parse().expect("ip")),
            direct: true,
        })
        .expect("encode"),
    );
    s.push(OP_TO_DC, &body);
    let mut body = vec![1];
    body.extend(
        signal::encode(&ToDc::Observed {
            relay: sa(crate::RELAY_ADDR),
            seen_as: sa("203.0.113.7:50000"),
        })
        .expect("encode"),
    );
    s.push(OP_TO_DC, &body);
    let mut body = vec![0];
    body.extend(resolve(4, "nobody", true));
    s.push(OP_TO_DC, &body);
    out.push(s.into_bytes());
    // carol registers (v6), relays ping, time passes, refreshes and replays.
    let mut s = Records::new(&[0]);
    let mut body = vec![2];
    body.extend(register(2, 5));
    s.push(OP_REGISTER, &body);
    s.push(OP_REPLAY, &[2]);
    let mut body = vec![2];
    body.extend(resolve(5, "alice", true));
    s.push(OP_TO_DC, &body);
    s.push(OP_TIME, &5000u32.to_le_bytes());
    s.push(OP_PONG, &[1]);
    s.push(OP_TIME, &100_000u32.to_le_bytes());
    let mut body = vec![0];
    body.extend(register(0, 9));
    s.push(OP_REGISTER, &body);
    out.push(s.into_bytes());
    // Bad registrations: wrong auth key, taken name, invalid name.
    let mut s = Records::new(&[2]);
    for (name, auth) in [
        ("bob", "wrong"),
        ("alice", crate::AUTH),
        ("Bad_Name", crate::AUTH),
    ] {
        let mut body = vec![1];
        body.extend(
            signal::encode(&Register {
                timestamp: 7,
                name: name.into(),
                auth_key: auth.into(),
                local_endpoints: Vec::new(),
                advertise_routes: Vec::new(),
                incarnation: 1,
            })
            .expect("encode"),
        );
        s.push(OP_REGISTER, &body);
    }
    out.push(s.into_bytes());
    // Raw garbage from a node address.
    let mut s = Records::new(&[0]);
    let mut body = vec![0];
    body.extend_from_slice(&[
        Kind::DcData as u8,
        0,
        0,
        0,
        1,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    s.push(OP_RAW, &body);
    let mut body = vec![3];
    put_addr(&mut body, sa(crate::RELAY_ADDR));
    s.push(OP_RAW, &body);
    out.push(s.into_bytes());
    out
}
