//! Frames spoken with a Relay Server (docs/protocol.md, "Relay").
//!
//! Nodes bind to a relay session with a DC ticket, then wrap their usual
//! node <-> node datagrams (handshakes, data records) in an 8-byte Kind::Relayed
//! header. The relay forwards those bytes unchanged to the other side: it
//! never holds a key that could open them.

use super::ticket::{mac, mac_eq, MAC_LEN, TICKET_LEN};
use super::wire::Kind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const ADDR_LEN: usize = 19;
pub const BIND_LEN: usize = 4 + 8 + TICKET_LEN + MAC_LEN;
pub const BIND_ACK_LEN: usize = 4 + 4 + 8 + ADDR_LEN + MAC_LEN;
pub const PROBE_LEN: usize = 4 + 8;
pub const PROBE_REPLY_LEN: usize = 4 + 8 + ADDR_LEN;
pub const PING_LEN: usize = 4 + 8 + MAC_LEN;

fn put_addr(out: &mut [u8], a: SocketAddr) {
    out[..ADDR_LEN].fill(0);
    out[1..3].copy_from_slice(&a.port().to_le_bytes());
    match a.ip() {
        IpAddr::V4(v4) => {
            out[0] = 4;
            out[3..7].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out[0] = 6;
            out[3..19].copy_from_slice(&v6.octets());
        }
    }
}

fn get_addr(b: &[u8]) -> Option<SocketAddr> {
    let b = b.get(..ADDR_LEN)?;
    let port = u16::from_le_bytes([b[1], b[2]]);
    let ip = match b[0] {
        4 => IpAddr::V4(Ipv4Addr::new(b[3], b[4], b[5], b[6])),
        6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[3..19]).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// A parsed Kind::RelayBind (the MAC is checked by `verify` once the secret is known).
pub struct Bind<'a> {
    pub side: u8,
    pub timestamp: u64,
    pub ticket: &'a [u8],
    bytes: &'a [u8],
}

impl<'a> Bind<'a> {
    pub fn parse(b: &'a [u8]) -> Option<Bind<'a>> {
        if b.len() != BIND_LEN || !Kind::RelayBind.starts(b) || b[1] > 1 {
            return None;
        }
        Some(Bind {
            side: b[1],
            timestamp: u64_at(b, 4)?,
            ticket: &b[12..12 + TICKET_LEN],
            bytes: b,
        })
    }

    /// True if the MAC was made with this side's secret.
    pub fn verify(&self, secret: &[u8; 32]) -> bool {
        let (body, tag) = self.bytes.split_at(BIND_LEN - MAC_LEN);
        mac_eq(&mac(secret, body), tag)
    }
}

pub fn bind(side: u8, timestamp: u64, ticket: &[u8; TICKET_LEN], secret: &[u8; 32]) -> Vec<u8> {
    let mut b = vec![0u8; BIND_LEN];
    b[0] = Kind::RelayBind as u8;
    b[1] = side;
    b[4..12].copy_from_slice(&timestamp.to_le_bytes());
    b[12..12 + TICKET_LEN].copy_from_slice(ticket);
    let tag = mac(secret, &b[..BIND_LEN - MAC_LEN]);
    b[BIND_LEN - MAC_LEN..].copy_from_slice(&tag);
    b
}

pub fn bind_ack(
    side: u8,
    sid: u32,
    timestamp: u64,
    observed: SocketAddr,
    secret: &[u8; 32],
) -> Vec<u8> {
    let mut b = vec![0u8; BIND_ACK_LEN];
    b[0] = Kind::RelayBindAck as u8;
    b[1] = side;
    b[4..8].copy_from_slice(&sid.to_le_bytes());
    b[8..16].copy_from_slice(&timestamp.to_le_bytes());
    put_addr(&mut b[16..], observed);
    let tag = mac(secret, &b[..BIND_ACK_LEN - MAC_LEN]);
    b[BIND_ACK_LEN - MAC_LEN..].copy_from_slice(&tag);
    b
}

/// Parses and authenticates a Kind::RelayBindAck: (side, sid, timestamp, observed).
pub fn parse_bind_ack(
    b: &[u8],
    secret_for: impl Fn(u32, u8) -> Option<[u8; 32]>,
) -> Option<(u8, u32, u64, SocketAddr)> {
    if b.len() != BIND_ACK_LEN || !Kind::RelayBindAck.starts(b) {
        return None;
    }
    let side = b[1];
    let sid = u32::from_le_bytes(b[4..8].try_into().ok()?);
    let secret = secret_for(sid, side)?;
    let (body, tag) = b.split_at(BIND_ACK_LEN - MAC_LEN);
    if !mac_eq(&mac(&secret, body), tag) {
        return None;
    }
    Some((side, sid, u64_at(b, 8)?, get_addr(&b[16..])?))
}

pub fn probe(nonce: u64) -> Vec<u8> {
    let mut b = vec![0u8; PROBE_LEN];
    b[0] = Kind::RelayProbe as u8;
    b[4..12].copy_from_slice(&nonce.to_le_bytes());
    b
}

pub fn parse_probe(b: &[u8]) -> Option<u64> {
    (b.len() == PROBE_LEN && Kind::RelayProbe.starts(b)).then(|| u64_at(b, 4))?
}

pub fn probe_reply(nonce: u64, observed: SocketAddr) -> Vec<u8> {
    let mut b = vec![0u8; PROBE_REPLY_LEN];
    b[0] = Kind::RelayProbeReply as u8;
    b[4..12].copy_from_slice(&nonce.to_le_bytes());
    put_addr(&mut b[12..], observed);
    b
}

/// (nonce, observed address) of a Kind::RelayProbeReply.
pub fn parse_probe_reply(b: &[u8]) -> Option<(u64, SocketAddr)> {
    if b.len() != PROBE_REPLY_LEN || !Kind::RelayProbeReply.starts(b) {
        return None;
    }
    Some((u64_at(b, 4)?, get_addr(&b[12..])?))
}

/// Kind::RelayPing or Kind::RelayPong carrying `nonce`, MACed with the DC-relay key.
pub fn ping(kind: Kind, nonce: u64, key: &super::ticket::TicketKey) -> Vec<u8> {
    let mut b = vec![0u8; PING_LEN];
    b[0] = kind as u8;
    b[4..12].copy_from_slice(&nonce.to_le_bytes());
    let tag = key.mac(&b[..PING_LEN - MAC_LEN]);
    b[PING_LEN - MAC_LEN..].copy_from_slice(&tag);
    b
}

/// The nonce of an authentic Kind::RelayPing/Kind::RelayPong of type `kind`.
pub fn parse_ping(kind: Kind, b: &[u8], key: &super::ticket::TicketKey) -> Option<u64> {
    if b.len() != PING_LEN || !kind.starts(b) {
        return None;
    }
    let (body, tag) = b.split_at(PING_LEN - MAC_LEN);
    mac_eq(&key.mac(body), tag).then(|| u64_at(b, 4))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use crate::proto::ticket::TicketKey;
    use proptest::prelude::*;

    #[test]
    fn frames_roundtrip_and_macs_bind_them() {
        let secret = [5u8; 32];
        let ticket = [7u8; TICKET_LEN];
        let b = bind(1, 99, &ticket, &secret);
        let p = Bind::parse(&b).unwrap();
        assert_eq!((p.side, p.timestamp, p.ticket), (1, 99, &ticket[..]));
        assert!(p.verify(&secret));
        assert!(!p.verify(&[6u8; 32]));
        let obs: SocketAddr = "[2001:db8::5]:4000".parse().unwrap();
        let ack = bind_ack(1, 42, 99, obs, &secret);
        assert_eq!(
            parse_bind_ack(&ack, |_, _| Some(secret)),
            Some((1, 42, 99, obs))
        );
        assert_eq!(parse_bind_ack(&ack, |_, _| Some([0; 32])), None);
        let v4: SocketAddr = "198.51.100.7:1234".parse().unwrap();
        assert_eq!(parse_probe_reply(&probe_reply(3, v4)), Some((3, v4)));
        assert_eq!(parse_probe(&probe(3)), Some(3));
        let k = TicketKey::derive(
            &PrivateKey::generate(),
            &PrivateKey::generate().public_key(),
        );
        assert_eq!(
            parse_ping(Kind::RelayPing, &ping(Kind::RelayPing, 5, &k), &k),
            Some(5)
        );
        assert_eq!(
            parse_ping(Kind::RelayPong, &ping(Kind::RelayPing, 5, &k), &k),
            None
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(d in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Bind::parse(&d);
            let _ = parse_bind_ack(&d, |_, _| Some([0; 32]));
            let _ = parse_probe(&d);
            let _ = parse_probe_reply(&d);
        }
    }
}
