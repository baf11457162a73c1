//! Harness for `RelayCore`: datagrams from six source addresses, raw or
//! built by the harness as the DC and the nodes would (tickets sealed with
//! the DC-relay key, BINDs MACed with a side's secret, PINGs MACed with the
//! relay key), so the fuzzer reaches binding and forwarding.
//!
//! Input: one setup byte (the relay's rate ceiling), then records. Checks:
//! only Kind::Relayed frames are forwarded, to a bound address; a reply to a Kind::RelayBind
//! is a Kind::RelayBindAck that authenticates with the bound side's secret; a reply
//! to a Kind::RelayProbe names the sender; a reply to a Kind::RelayPing is an authentic Kind::RelayPong.

use crate::{key, public, sa, Reader, Records, MAX_OPS, UNIX_BASE};
use ntmtun::proto::relay as frames;
use ntmtun::proto::ticket::{Ticket, TicketKey};
use ntmtun::proto::wire::{self, Kind};
use ntmtun::relay::core::{Action, RelayCore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Raw datagram: `[source index][bytes]`.
pub const OP_RAW: u8 = 0;
/// Kind::RelayBind with a sealed ticket:
/// `[source][side][sid u8][expiry delta i16][rate u32][timestamp u64][secret n][flags]`.
/// flags bit 0: corrupt the MAC; bit 1: corrupt the ticket.
pub const OP_BIND: u8 = 1;
/// Kind::Relayed frame: `[source][sid u8][payload]`.
pub const OP_RELAYED: u8 = 2;
/// Kind::RelayPing: `[source][nonce u64][corrupt]`.
pub const OP_PING: u8 = 3;
/// Time passes: `[milliseconds u32]`, then `expire`.
pub const OP_TIME: u8 = 4;

pub fn sources() -> [SocketAddr; 6] {
    [
        sa("192.0.2.2:41641"),
        sa("203.0.113.7:41641"),
        sa("203.0.113.7:41642"),
        sa("[2001:db8:7::7]:41641"),
        sa(crate::DC_ADDR),
        sa("[2001:db8:7::8]:41641"),
    ]
}

/// The relay's and the DC's derivations of their shared key (once).
fn ticket_keys() -> (&'static TicketKey, &'static TicketKey) {
    static KEYS: OnceLock<(TicketKey, TicketKey)> = OnceLock::new();
    let (r, d) = KEYS.get_or_init(|| {
        (
            TicketKey::derive(&key(crate::KEY_RELAY), &public(crate::KEY_DC)),
            TicketKey::derive(&key(crate::KEY_DC), &public(crate::KEY_RELAY)),
        )
    });
    (r, d)
}

fn secret(n: u8) -> [u8; 32] {
    [n % 4; 32]
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let rate = match r.u8() {
        0 => u64::MAX,
        n => u64::from(n) * 1000,
    };
    // The DC's and the relay's views of their shared key agree.
    let (key_relay, key_dc) = ticket_keys();
    let mut relay = RelayCore::new(key_relay.clone(), rate);
    let start = Instant::now();
    let (mut now, mut unix) = (start, UNIX_BASE);
    let sources = sources();
    // (sid, side) -> address bound, per this harness's successful BINDs.
    let mut bound: HashMap<(u32, u8), SocketAddr> = HashMap::new();
    let mut nonce = [0u8; 12];
    for _ in 0..MAX_OPS {
        let Some((op, mut b)) = r.record() else { break };
        let op = op % 5;
        if op == OP_TIME {
            let ms = u64::from(b.u32()) % 3_600_000;
            now += Duration::from_millis(ms);
            unix = UNIX_BASE + now.duration_since(start).as_secs();
            relay.expire(unix);
            let _ = relay.session_count();
            continue;
        }
        let from = sources[b.u8() as usize % sources.len()];
        let dgram = match op {
            OP_RAW => b.rest().to_vec(),
            OP_BIND => {
                let side = b.u8();
                let sid = u32::from(b.u8());
                let delta = b.u16() as i16;
                let rate_bytes = u64::from(b.u32());
                let timestamp = b.u64();
                let sec = b.u8();
                let flags = b.u8();
                let t = Ticket {
                    sid,
                    expires_unix: unix.saturating_add_signed(i64::from(delta)),
                    rate_bytes,
                    secrets: [secret(sec), secret(sec.wrapping_add(1))],
                };
                nonce[0] = nonce[0].wrapping_add(1);
                let mut ticket = key_dc.seal(&t, nonce);
                if flags & 2 != 0 {
                    ticket[20] ^= 1;
                }
                let mut d =
                    frames::bind(side, timestamp, &ticket, &t.secrets[usize::from(side & 1)]);
                if flags & 1 != 0 {
                    if let Some(x) = d.last_mut() {
                        *x ^= 1;
                    }
                }
                d
            }
            OP_RELAYED => {
                let mut d = vec![0u8; wire::RELAYED_HEADER_LEN];
                wire::put_relayed_header(&mut d, u32::from(b.u8()));
                d.extend_from_slice(b.rest());
                d
            }
            _ => {
                let mut d = frames::ping(Kind::RelayPing, b.u64(), key_dc);
                if b.u8() & 1 == 1 {
                    d[5] ^= 1;
                }
                d
            }
        };
        match relay.handle(from, &dgram, now, unix) {
            Action::Forward(to) => {
                let (sid, _) =
                    wire::decode_relayed(&dgram).expect("only Kind::Relayed is forwarded");
                assert!(
                    bound.get(&(sid, 0)) == Some(&from) || bound.get(&(sid, 1)) == Some(&from),
                    "forwarded for an unbound sender"
                );
                assert!(
                    bound.get(&(sid, 0)) == Some(&to) || bound.get(&(sid, 1)) == Some(&to),
                    "forwarded to an unbound address"
                );
            }
            Action::Reply(reply) => match Kind::of(&dgram).ok() {
                Some(Kind::RelayBind) => {
                    let bind = frames::Bind::parse(&dgram).expect("replied to a malformed BIND");
                    let t = key_relay
                        .open(bind.ticket)
                        .expect("replied to a bad ticket");
                    let secret = t.secrets[usize::from(bind.side)];
                    let (side, sid, ts, observed) =
                        frames::parse_bind_ack(&reply, |_, _| Some(secret))
                            .expect("BIND_ACK authenticates with the side's secret");
                    assert_eq!(
                        (side, sid, ts, observed),
                        (bind.side, t.sid, bind.timestamp, from)
                    );
                    assert!(
                        bind.verify(&secret),
                        "replied to a Kind::RelayBind with a bad MAC"
                    );
                    bound.insert((sid, side), from);
                }
                Some(Kind::RelayProbe) => {
                    let (_, seen) = frames::parse_probe_reply(&reply).expect("PROBE_REPLY");
                    assert_eq!(seen, from);
                }
                Some(Kind::RelayPing) => {
                    assert!(frames::parse_ping(Kind::RelayPing, &dgram, key_relay).is_some());
                    assert!(frames::parse_ping(Kind::RelayPong, &reply, key_dc).is_some());
                }
                other => panic!("relay replied to kind {other:?}"),
            },
            Action::Drop(_) => {}
        }
        // Sessions live until expiry; the harness forgets bindings the
        // relay may have dropped only when it says so by count.
        if relay.session_count() == 0 {
            bound.clear();
        }
    }
}

/// Seeds: both sides bind, traffic flows both ways, rebinding from a new
/// address, replays, expiry.
pub fn seeds() -> Vec<Vec<u8>> {
    let bind = |src: u8, side: u8, sid: u8, ts: u64, flags: u8| {
        let mut b = vec![src, side, sid];
        b.extend_from_slice(&600i16.to_le_bytes());
        b.extend_from_slice(&1_000_000u32.to_le_bytes());
        b.extend_from_slice(&ts.to_le_bytes());
        b.push(0);
        b.push(flags);
        b
    };
    let mut out = Vec::new();
    let mut s = Records::new(&[0]);
    s.push(OP_BIND, &bind(0, 0, 5, 1, 0));
    s.push(OP_BIND, &bind(1, 1, 5, 1, 0));
    s.push(OP_RELAYED, &[0, 5, 3, 0, 0, 0, 1, 0, 0, 0, 9, 9]);
    s.push(OP_RELAYED, &[1, 5, 3, 0, 0, 0, 2, 0, 0, 0, 9, 9]);
    s.push(OP_BIND, &bind(2, 1, 5, 2, 0));
    s.push(OP_RELAYED, &[2, 5, 1, 2, 3]);
    s.push(OP_BIND, &bind(1, 1, 5, 2, 0));
    s.push(OP_TIME, &700_000u32.to_le_bytes());
    s.push(OP_RELAYED, &[0, 5, 1, 2, 3]);
    out.push(s.into_bytes());
    let mut s = Records::new(&[1]);
    s.push(OP_BIND, &bind(3, 0, 9, 1, 1));
    s.push(OP_BIND, &bind(3, 0, 9, 1, 2));
    s.push(OP_BIND, &bind(3, 0, 9, 1, 0));
    s.push(OP_BIND, &bind(5, 1, 9, 1, 0));
    let big = |src: u8, fill: u8| {
        let mut b = vec![src, 9];
        b.resize(1200, fill);
        b
    };
    s.push(OP_RELAYED, &big(3, 0xaa));
    s.push(OP_RELAYED, &big(5, 0xbb));
    s.push(OP_PING, &[4, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
    s.push(OP_PING, &[4, 1, 2, 3, 4, 5, 6, 7, 8, 1]);
    let mut probe = vec![0];
    probe.extend(frames::probe(42));
    s.push(OP_RAW, &probe);
    out.push(s.into_bytes());
    out
}
