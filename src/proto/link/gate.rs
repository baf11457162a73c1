//! The responder's gate: what an initiation must pass before we pay a
//! Diffie-Hellman for it, in one order for every link.
//!
//! 1. mac1 (one hash): garbage and initiations aimed at another key stop.
//! 2. Under load, a direct sender without a valid mac2 gets a cookie reply
//!    and nothing else: it must prove it receives at its source address.
//! 3. The per-source rate limit, which then counts real senders.
//!
//! Only then does the caller run the Noise read (`Responder::read`).

use crate::keys::PrivateKey;
use crate::proto::cookie::{CookieMaker, LoadDetector};
use crate::proto::handshake::Mac1Key;
use crate::proto::ratelimit::RateLimiter;
use crate::proto::wire::Kind;
use std::net::SocketAddr;
use std::time::Instant;

/// What to do with an initiation.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on to the Noise read.
    Proceed,
    /// Send this cookie reply back to the source, and nothing else.
    Cookie(Vec<u8>),
    /// mac1 did not verify.
    BadMac1,
    /// Under load without a mac2, and no reply could be built (malformed).
    NoCookie,
    /// Over the per-source rate limit.
    RateLimited,
}

pub struct Gate {
    mac1: Mac1Key,
    cookies: CookieMaker,
    load: LoadDetector,
    limit: RateLimiter,
}

impl Gate {
    /// A gate for responder `key`: under load above `load_per_sec`
    /// initiations a second; `limit` per source.
    pub fn new(key: &PrivateKey, load_per_sec: u32, limit: RateLimiter, now: Instant) -> Gate {
        let public = key.public_key();
        Gate {
            mac1: Mac1Key::for_responder(&public),
            cookies: CookieMaker::new(&public, now),
            load: LoadDetector::new(load_per_sec, now),
            limit,
        }
    }

    /// The mac1 key, for `Responder::read`.
    pub fn mac1(&self) -> &Mac1Key {
        &self.mac1
    }

    /// Initiations refused by the per-source limit so far.
    pub fn rate_limited(&self) -> u64 {
        self.limit.refused
    }

    /// The IO shell's queue towards the core is (or no longer is) filling
    /// up: count as under load until it drains.
    pub fn set_backlog(&mut self, backlog: bool) {
        self.load.set_backlog(backlog);
    }

    /// Checks an initiation from `source`; `None` for one that came through
    /// a relay session, whose sender the relay's ticket already names (no
    /// address to prove, no source to limit). Cookie replies are of type
    /// `cookie_kind`.
    pub fn check(
        &mut self,
        cookie_kind: Kind,
        datagram: &[u8],
        source: Option<SocketAddr>,
        now: Instant,
    ) -> Verdict {
        if !self.mac1.verify(datagram) {
            return Verdict::BadMac1;
        }
        let Some(source) = source else {
            return Verdict::Proceed;
        };
        if self.load.record(now) && !self.cookies.check_mac2(datagram, source, now) {
            return match self.cookies.reply(cookie_kind, datagram, source, now) {
                Some(reply) => Verdict::Cookie(reply),
                None => Verdict::NoCookie,
            };
        }
        if !self.limit.allow(source.ip(), now) {
            return Verdict::RateLimited;
        }
        Verdict::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cookie;
    use crate::proto::handshake::Initiator;

    #[test]
    fn mac1_then_cookie_under_load_then_the_rate_limit() {
        let b = PrivateKey::generate();
        let now = Instant::now();
        let mut gate = Gate::new(&b, 2, RateLimiter::new(1, 3, 16), now);
        let a = PrivateKey::generate();
        let (_, m1) = Initiator::start(Kind::HandshakeInit, &a, &b.public_key(), 1, b"").unwrap();
        let src: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        // Aimed at another key.
        let (_, other) = Initiator::start(
            Kind::HandshakeInit,
            &a,
            &PrivateKey::generate().public_key(),
            1,
            b"",
        )
        .unwrap();
        assert_eq!(
            gate.check(Kind::CookieReply, &other, Some(src), now),
            Verdict::BadMac1
        );
        assert_eq!(
            gate.check(Kind::CookieReply, &m1, Some(src), now),
            Verdict::Proceed
        );
        assert_eq!(
            gate.check(Kind::CookieReply, &m1, Some(src), now),
            Verdict::Proceed
        );
        // Third in the second: under load, and no mac2.
        let Verdict::Cookie(reply) = gate.check(Kind::CookieReply, &m1, Some(src), now) else {
            panic!("no cookie challenge under load");
        };
        let c = cookie::open_reply(Kind::CookieReply, &b.public_key(), &m1, &reply).unwrap();
        let mut proven = m1.clone();
        cookie::set_mac2(&mut proven, &c);
        // With mac2 it passes on to the rate limit (burst 3: two used).
        assert_eq!(
            gate.check(Kind::CookieReply, &proven, Some(src), now),
            Verdict::Proceed
        );
        assert_eq!(
            gate.check(Kind::CookieReply, &proven, Some(src), now),
            Verdict::RateLimited
        );
        assert_eq!(gate.rate_limited(), 1);
        // A relayed initiation only needs mac1.
        assert_eq!(
            gate.check(Kind::CookieReply, &m1, None, now),
            Verdict::Proceed
        );
    }
}
