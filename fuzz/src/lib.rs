//! Shared pieces of the ntmtun fuzz targets: a byte reader that never fails
//! (missing bytes read as zeros), the record format the stateful targets
//! use, fixed keys and addresses, and the harnesses of the three sans-IO
//! cores (`node`, `dc`, `relay`), which the targets and the seed generator
//! (`examples/seeds.rs`) share.
//!
//! Stateful targets read their input as a list of records:
//! `[op: u8][len: u16 le][body: len bytes]` (a short last record takes what
//! is left). Each op delivers one datagram, packet or timer tick to the core
//! under test. Besides raw bytes, the harnesses can seal fuzzer bytes with a
//! real session (they play the DC, a peer, or a node with fixed keys), so the
//! fuzzer reaches the code behind the AEAD and the Noise handshakes.

use base64::Engine;
use ntmtun::keys::{PrivateKey, PublicKey};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

pub mod dc;
pub mod node;
pub mod relay;

/// Most records one input may run (keeps each execution short).
pub const MAX_OPS: usize = 64;

/// Reads integers and slices from fuzzer bytes; past the end it yields zeros
/// and empty slices, so every input is valid.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.take(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    /// A length-prefixed (u8) slice.
    pub fn short_bytes(&mut self) -> &'a [u8] {
        let n = self.u8() as usize;
        self.take(n)
    }

    /// The next record: (op, body).
    pub fn record(&mut self) -> Option<(u8, Reader<'a>)> {
        if self.data.is_empty() {
            return None;
        }
        let op = self.u8();
        let len = self.u16() as usize;
        Some((op, Reader::new(self.take(len))))
    }

    /// Any socket address: a family byte, 4 or 16 address bytes, a port.
    pub fn addr(&mut self) -> SocketAddr {
        let ip = if self.u8() & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()))
        };
        SocketAddr::new(ip, self.u16())
    }
}

/// Builds inputs in the record format (for seeds).
#[derive(Default)]
pub struct Records(pub Vec<u8>);

impl Records {
    pub fn new(prefix: &[u8]) -> Self {
        Records(prefix.to_vec())
    }

    pub fn push(&mut self, op: u8, body: &[u8]) -> &mut Self {
        let len = u16::try_from(body.len()).expect("record body over 64 KiB");
        self.0.push(op);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(body);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Encodes an address the way [`Reader::addr`] reads it.
pub fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(v4) => {
            out.push(0);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(1);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&a.port().to_le_bytes());
}

/// A fixed private key: `[n; 32]` (X25519 clamps it).
pub fn key(n: u8) -> PrivateKey {
    keys()[usize::from(n)].0.clone()
}

pub fn public(n: u8) -> PublicKey {
    keys()[usize::from(n)].1
}

/// Keys 0..8, derived once per process (a scalar multiplication each).
fn keys() -> &'static [(PrivateKey, PublicKey)] {
    static KEYS: OnceLock<Vec<(PrivateKey, PublicKey)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..8u8)
            .map(|n| {
                let text = base64::engine::general_purpose::STANDARD.encode([n; 32]);
                let k = PrivateKey::from_base64(&text).expect("32-byte key");
                let p = k.public_key();
                (k, p)
            })
            .collect()
    })
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Wall-clock seconds the harnesses start at.
pub const UNIX_BASE: u64 = 1_700_000_000;

/// Documentation addresses shared by the harnesses.
pub const DC_ADDR: &str = "198.51.100.10:7446";
pub const DC6_ADDR: &str = "[2001:db8:100::10]:7446";
pub const RELAY_ADDR: &str = "198.51.100.20:7447";
pub const RELAY6_ADDR: &str = "[2001:db8:100::20]:7447";
pub const DOMAIN: &str = "ntm.internal";
pub const PREFIX: &str = "198.18.0.0/15";
pub const AUTH: &str = "token";

/// Key numbers (for [`key`]) of the parties.
pub const KEY_NODE_A: u8 = 1;
pub const KEY_DC: u8 = 2;
pub const KEY_NODE_B: u8 = 3;
pub const KEY_RELAY: u8 = 4;
pub const KEY_NODE_C: u8 = 5;

/// Appends the `mac1` trailer an initiation to `responder` must end with
/// (docs/protocol.md), so fuzzer bytes get past it to the Noise parser. The
/// handshake target checks this against `Initiator::start`'s own.
pub fn with_mac1(responder: &PublicKey, body: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ntmtun/1 mac1");
    h.update(responder.0);
    let k: [u8; 32] = h.finalize().into();
    let mut out = body.to_vec();
    out.extend_from_slice(&ntmtun::proto::ticket::mac(&k, body));
    // mac2: none (no cookie).
    out.extend_from_slice(&[0; ntmtun::proto::cookie::MAC2_LEN]);
    out
}
