//! The stateless cookie challenge of handshake initiations (WireGuard's
//! mac2 and cookie reply), and the load detector that switches it on.
//!
//! A responder under load answers an initiation that lacks a valid `mac2`
//! with a 64-byte cookie reply instead of doing any Diffie-Hellman. The
//! cookie is a MAC of the initiator's source address under a secret that
//! rotates every two minutes, so the responder keeps no state per
//! initiator, and only a sender that receives at its source address can
//! learn it. The initiator stores the cookie and sends the initiation again
//! with `mac2 = MAC(cookie, message up to mac2)`; spoofed sources and
//! floods from one address then meet the per-source rate limit, which now
//! counts real senders.
//!
//! The cookie travels sealed with XChaCha20-Poly1305 under a key derived
//! from the responder's public key, with the initiation's `mac1` as
//! associated data: an off-path attacker who never saw the initiation
//! cannot forge a reply that the initiator accepts.

use super::ticket::{mac_eq, MAC_LEN};
use super::wire::Kind;
use crate::keys::PublicKey;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Length of a cookie, and of the `mac2` it keys.
pub const COOKIE_LEN: usize = 16;
pub const MAC2_LEN: usize = MAC_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// type (1) | reserved (3) | receiver index (4) | nonce (24) | sealed cookie (16 + 16).
pub const COOKIE_REPLY_LEN: usize = 8 + NONCE_LEN + COOKIE_LEN + TAG_LEN;
/// The responder's secret changes this often; cookies made under the
/// previous secret are still accepted, so a cookie lives 2 to 4 minutes.
pub const SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// An initiator uses a cookie for this long after receiving it (less than
/// the shortest life of a cookie at the responder).
pub const COOKIE_USE: Duration = Duration::from_secs(110);

pub type Cookie = [u8; COOKIE_LEN];

fn hmac16(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    if let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(key) {
        for p in parts {
            m.update(p);
        }
        out.copy_from_slice(&m.finalize().into_bytes()[..MAC_LEN]);
    }
    out
}

/// The key cookie replies from `responder` are sealed with (public: anyone
/// can open a reply, but only with the right `mac1` as associated data).
fn seal_key(responder: &PublicKey) -> XChaCha20Poly1305 {
    let mut h = Sha256::new();
    h.update(b"ntmtun/1 cookie");
    h.update(responder.0);
    let k: [u8; 32] = h.finalize().into();
    XChaCha20Poly1305::new(&k.into())
}

/// The bytes of an initiation as (everything `mac2` covers, `mac1`, `mac2`).
/// An initiation ends with `mac1 | mac2`, each 16 bytes.
pub fn split_macs(datagram: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let n = datagram.len().checked_sub(MAC2_LEN)?;
    let m1 = n.checked_sub(MAC_LEN)?;
    Some((&datagram[..n], &datagram[m1..n], &datagram[n..]))
}

/// `mac2` for an initiation `datagram` (ending in mac1 and a zeroed mac2):
/// written in place.
pub fn set_mac2(datagram: &mut [u8], cookie: &Cookie) {
    let Some(n) = datagram.len().checked_sub(MAC2_LEN) else {
        return;
    };
    let mac2 = hmac16(cookie, &[&datagram[..n]]);
    datagram[n..].copy_from_slice(&mac2);
}

/// The responder's side: makes cookies for source addresses, checks mac2,
/// builds cookie replies. Holds two secrets and no per-initiator state.
pub struct CookieMaker {
    seal: XChaCha20Poly1305,
    secret: [u8; 32],
    previous: Option<[u8; 32]>,
    born: Instant,
}

impl CookieMaker {
    pub fn new(own: &PublicKey, now: Instant) -> CookieMaker {
        CookieMaker {
            seal: seal_key(own),
            secret: rand::random(),
            previous: None,
            born: now,
        }
    }

    fn rotate(&mut self, now: Instant) {
        if now.saturating_duration_since(self.born) >= SECRET_LIFETIME {
            // Two lifetimes idle: the old secret is as stale as the new one.
            let keep = now.saturating_duration_since(self.born) < 2 * SECRET_LIFETIME;
            self.previous = keep.then_some(self.secret);
            self.secret = rand::random();
            self.born = now;
        }
    }

    fn cookie_with(secret: &[u8; 32], source: SocketAddr) -> Cookie {
        let ip = match source.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        hmac16(secret, &[&ip, &source.port().to_le_bytes()])
    }

    /// True if `datagram` carries a mac2 keyed by a cookie we gave `source`.
    pub fn check_mac2(&mut self, datagram: &[u8], source: SocketAddr, now: Instant) -> bool {
        self.rotate(now);
        let Some((covered, _, mac2)) = split_macs(datagram) else {
            return false;
        };
        [Some(self.secret), self.previous]
            .into_iter()
            .flatten()
            .any(|s| mac_eq(&hmac16(&Self::cookie_with(&s, source), &[covered]), mac2))
    }

    /// The cookie reply of type `kind` to the initiation `datagram` from
    /// `source`; None if it is too short to be one.
    pub fn reply(
        &mut self,
        kind: Kind,
        datagram: &[u8],
        source: SocketAddr,
        now: Instant,
    ) -> Option<Vec<u8>> {
        self.rotate(now);
        let (_, mac1, _) = split_macs(datagram)?;
        let sender = datagram.get(4..8)?;
        let mut cookie = Self::cookie_with(&self.secret, source);
        let nonce: [u8; NONCE_LEN] = rand::random();
        let tag = self
            .seal
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, &mut cookie)
            .ok()?;
        let mut out = Vec::with_capacity(COOKIE_REPLY_LEN);
        out.extend_from_slice(&[kind as u8, 0, 0, 0]);
        out.extend_from_slice(sender);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&cookie);
        out.extend_from_slice(&tag);
        Some(out)
    }
}

/// The receiver index of a cookie reply (the index the initiator chose), if
/// `datagram` is shaped like one.
pub fn reply_receiver(datagram: &[u8]) -> Option<u32> {
    if datagram.len() != COOKIE_REPLY_LEN || datagram[1..4] != [0, 0, 0] {
        return None;
    }
    Some(u32::from_le_bytes(datagram[4..8].try_into().ok()?))
}

/// The initiator's side: opens a cookie reply of type `kind` from
/// `responder` to the initiation `sent` (our own bytes: their mac1 is the
/// associated data). None for anything forged, truncated, or aimed at
/// another initiation.
pub fn open_reply(kind: Kind, responder: &PublicKey, sent: &[u8], reply: &[u8]) -> Option<Cookie> {
    if !kind.starts(reply) {
        return None;
    }
    let receiver = reply_receiver(reply)?;
    if sent.get(4..8) != Some(&receiver.to_le_bytes()[..]) {
        return None;
    }
    let (_, mac1, _) = split_macs(sent)?;
    let nonce = XNonce::from_slice(&reply[8..8 + NONCE_LEN]);
    let mut cookie: Cookie = reply[8 + NONCE_LEN..8 + NONCE_LEN + COOKIE_LEN]
        .try_into()
        .ok()?;
    let tag = Tag::from_slice(&reply[8 + NONCE_LEN + COOKIE_LEN..]);
    seal_key(responder)
        .decrypt_in_place_detached(nonce, mac1, &mut cookie, tag)
        .ok()?;
    Some(cookie)
}

/// Decides when a responder is "under load": more initiations in the last
/// second than it is willing to pay a Diffie-Hellman for without proof of
/// the sender's address, or a backlog its IO shell reports.
pub struct LoadDetector {
    threshold: u32,
    window: Instant,
    this_window: u32,
    last_window: u32,
    backlog: bool,
}

impl LoadDetector {
    /// Under load once more than `per_second` initiations arrive within a
    /// one-second window; it stays so for the next window too.
    pub fn new(per_second: u32, now: Instant) -> LoadDetector {
        LoadDetector {
            threshold: per_second,
            window: now,
            this_window: 0,
            last_window: 0,
            backlog: false,
        }
    }

    fn roll(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.window);
        if age >= Duration::from_secs(1) {
            self.last_window = if age < Duration::from_secs(2) {
                self.this_window
            } else {
                0
            };
            self.this_window = 0;
            self.window = now;
        }
    }

    /// Counts one initiation and says whether we are under load now.
    pub fn record(&mut self, now: Instant) -> bool {
        self.roll(now);
        self.this_window = self.this_window.saturating_add(1);
        self.under_load(now)
    }

    pub fn under_load(&mut self, now: Instant) -> bool {
        self.roll(now);
        self.backlog || self.this_window.max(self.last_window) > self.threshold
    }

    /// The IO shell's queue towards the core is (or no longer is) filling up.
    pub fn set_backlog(&mut self, backlog: bool) {
        self.backlog = backlog;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use crate::proto::handshake::Initiator;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn initiation(responder: &PublicKey, index: u32) -> Vec<u8> {
        Initiator::start(
            Kind::HandshakeInit,
            &PrivateKey::generate(),
            responder,
            index,
            b"",
        )
        .unwrap()
        .1
    }

    #[test]
    fn cookie_from_a_reply_makes_a_mac2_the_responder_accepts() {
        let r = PrivateKey::generate().public_key();
        let t = Instant::now();
        let mut maker = CookieMaker::new(&r, t);
        let src = addr("198.51.100.7:4000");
        let mut m1 = initiation(&r, 77);
        assert!(!maker.check_mac2(&m1, src, t), "no mac2 yet");
        let reply = maker.reply(Kind::CookieReply, &m1, src, t).unwrap();
        assert_eq!(reply.len(), COOKIE_REPLY_LEN);
        assert_eq!(reply_receiver(&reply), Some(77));
        let cookie = open_reply(Kind::CookieReply, &r, &m1, &reply).unwrap();
        set_mac2(&mut m1, &cookie);
        assert!(maker.check_mac2(&m1, src, t));
        // Bound to the source address and port.
        assert!(!maker.check_mac2(&m1, addr("198.51.100.7:4001"), t));
        assert!(!maker.check_mac2(&m1, addr("198.51.100.8:4000"), t));
        // mac2 covers the message: change a byte and it fails.
        let mut changed = m1.clone();
        changed[10] ^= 1;
        assert!(!maker.check_mac2(&changed, src, t));
    }

    #[test]
    fn cookies_survive_one_rotation_not_two() {
        let r = PrivateKey::generate().public_key();
        let t = Instant::now();
        let mut maker = CookieMaker::new(&r, t);
        let src = addr("[2001:db8::7]:4000");
        let mut m1 = initiation(&r, 1);
        let reply = maker.reply(Kind::CookieReply, &m1, src, t).unwrap();
        let cookie = open_reply(Kind::CookieReply, &r, &m1, &reply).unwrap();
        set_mac2(&mut m1, &cookie);
        assert!(maker.check_mac2(&m1, src, t + SECRET_LIFETIME));
        assert!(!maker.check_mac2(&m1, src, t + 2 * SECRET_LIFETIME));
    }

    #[test]
    fn forged_or_misdirected_replies_are_refused() {
        let r = PrivateKey::generate().public_key();
        let t = Instant::now();
        let mut maker = CookieMaker::new(&r, t);
        let src = addr("198.51.100.7:4000");
        let m1 = initiation(&r, 5);
        let reply = maker.reply(Kind::CookieReply, &m1, src, t).unwrap();
        // Every bit flip is refused.
        for i in 0..reply.len() {
            for bit in 0..8 {
                let mut bad = reply.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    open_reply(Kind::CookieReply, &r, &m1, &bad).is_none(),
                    "flip {i}.{bit}"
                );
            }
        }
        // A reply to another initiation (another mac1) does not open.
        let other = initiation(&r, 5);
        assert!(open_reply(Kind::CookieReply, &r, &other, &reply).is_none());
        // Nor does one claiming to come from another responder.
        let q = PrivateKey::generate().public_key();
        assert!(open_reply(Kind::CookieReply, &q, &m1, &reply).is_none());
        // Truncated or padded.
        assert!(open_reply(Kind::CookieReply, &r, &m1, &reply[..reply.len() - 1]).is_none());
        let mut long = reply.clone();
        long.push(0);
        assert!(open_reply(Kind::CookieReply, &r, &m1, &long).is_none());
        // Random bytes of the right shape.
        let mut junk = vec![Kind::CookieReply as u8, 0, 0, 0, 5, 0, 0, 0];
        junk.extend((0..COOKIE_REPLY_LEN - 8).map(|i| i as u8));
        assert!(open_reply(Kind::CookieReply, &r, &m1, &junk).is_none());
    }

    #[test]
    fn load_follows_the_rate_and_the_backlog() {
        let t = Instant::now();
        let mut l = LoadDetector::new(3, t);
        assert!(!l.record(t));
        assert!(!l.record(t));
        assert!(!l.record(t));
        assert!(l.record(t), "the fourth in one second is load");
        let s = Duration::from_secs(1);
        assert!(l.under_load(t + s), "stays for the next window");
        assert!(!l.under_load(t + 2 * s + s / 2), "and ends after it");
        l.set_backlog(true);
        assert!(l.under_load(t + 3 * s));
        l.set_backlog(false);
        assert!(!l.under_load(t + 3 * s));
    }
}
