//! The initiator's side of a link: one handshake attempt at a time.

use super::backoff::Backoff;
use crate::keys::{PrivateKey, PublicKey};
use crate::proto::cookie::{self, Cookie};
use crate::proto::handshake::{HandshakeError, Initiator};
use crate::proto::session::Session;
use crate::proto::wire::Kind;
use std::time::Instant;

/// An initiation sent and not yet answered.
struct Attempt {
    initiator: Initiator,
    /// The datagram sent: its mac1 opens a cookie reply, and it goes out
    /// again with mac2 once we hold the cookie.
    message: Vec<u8>,
    sent: Instant,
    /// Already resent once because of a cookie reply (never loop on them).
    cookie_retried: bool,
}

/// What a handshake response did to the attempt in flight.
pub enum Response {
    /// It authenticated: the link has a new session and the responder's
    /// payload. The attempt is spent and the backoff reset.
    Done(Box<Session>, Vec<u8>),
    /// Addressed to no attempt of ours.
    NotOurs,
    /// It did not authenticate (forged, or for another key). The attempt
    /// stays in flight: a forgery cannot kill a handshake.
    Rejected(HandshakeError),
}

/// What a cookie reply did.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieOutcome {
    /// A fresh cookie: send this datagram (the attempt with mac2) again.
    Resend(Vec<u8>),
    /// A valid cookie, kept for the next attempt; this one was already
    /// resent with one.
    Kept,
    /// Forged, or no attempt in flight.
    Ignored,
}

/// Both ends dialled at once: the peer's initiation arrived while ours is
/// in flight. Answering both would leave each end sending on its own
/// handshake's session and, at the next handshake, one end dropping the
/// session the other still sends on. One handshake wins, the same one at
/// both ends: the one dialled by the smaller static key.
#[derive(Debug, PartialEq, Eq)]
pub enum Crossing<'a> {
    /// Theirs wins: answer it. Our attempt is dropped (the attempt count
    /// too: this is not a failure).
    Answer,
    /// Ours wins: leave theirs unanswered and send ours again, to where
    /// theirs came from (it just proved that path, and a NAT on it may
    /// have dropped our first copy before the peer's packet opened it).
    Resend(&'a [u8]),
}

/// The initiator's state for one remote static key.
pub struct Dialer {
    init_kind: Kind,
    cookie_kind: Kind,
    remote: PublicKey,
    backoff: Backoff,
    attempt: Option<Attempt>,
    /// Attempts sent since the last success.
    attempts: u32,
    /// The responder's last cookie (it was under load) and when it came.
    cookie: Option<(Cookie, Instant)>,
    last_timestamp: u64,
}

impl Dialer {
    /// A dialer whose initiations are of type `init_kind`, answered under
    /// load by cookie replies of type `cookie_kind`.
    pub fn new(init_kind: Kind, cookie_kind: Kind, remote: PublicKey, backoff: Backoff) -> Dialer {
        Dialer {
            init_kind,
            cookie_kind,
            remote,
            backoff,
            attempt: None,
            attempts: 0,
            cookie: None,
            last_timestamp: 0,
        }
    }

    /// The replay-guard timestamp for the next initiation's payload: the
    /// wall clock, forced to increase strictly (the responder refuses
    /// anything not newer than what it accepted last).
    pub fn timestamp(&mut self, unix_nanos: u64) -> u64 {
        self.last_timestamp = unix_nanos.max(self.last_timestamp + 1);
        self.last_timestamp
    }

    /// Builds a new initiation carrying `payload` under session index
    /// `index`, replacing any attempt in flight, and returns the datagram
    /// to send. A cookie from the responder's last spell under load is
    /// used while it is fresh.
    pub fn start(
        &mut self,
        local: &PrivateKey,
        index: u32,
        payload: &[u8],
        now: Instant,
    ) -> Result<&[u8], HandshakeError> {
        self.attempt = None;
        let (initiator, mut message) =
            Initiator::start(self.init_kind, local, &self.remote, index, payload)?;
        self.cookie = self
            .cookie
            .filter(|(_, at)| now.saturating_duration_since(*at) < cookie::COOKIE_USE);
        if let Some((c, _)) = &self.cookie {
            cookie::set_mac2(&mut message, c);
        }
        self.attempts = self.attempts.saturating_add(1);
        let attempt = self.attempt.insert(Attempt {
            initiator,
            message,
            sent: now,
            cookie_retried: false,
        });
        Ok(&attempt.message)
    }

    /// The peer's initiation arrived; `local` is our static key. With no
    /// attempt of ours in flight it is simply answered.
    pub fn on_crossing(&mut self, local: &PublicKey) -> Crossing<'_> {
        if self.attempt.is_none() || *local > self.remote {
            self.reset();
            return Crossing::Answer;
        }
        match &self.attempt {
            Some(a) => Crossing::Resend(&a.message),
            None => Crossing::Answer,
        }
    }

    /// Whether a cookie from the responder is held (tests).
    #[cfg(test)]
    pub fn holds_cookie(&self) -> bool {
        self.cookie.is_some()
    }

    /// The session index of the attempt in flight.
    pub fn index(&self) -> Option<u32> {
        self.attempt.as_ref().map(|a| a.initiator.local_index)
    }

    pub fn in_flight(&self) -> bool {
        self.attempt.is_some()
    }

    /// Attempts sent since the last success (the one in flight included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The datagram of the attempt in flight (to resend it elsewhere).
    pub fn message(&self) -> Option<&[u8]> {
        self.attempt.as_ref().map(|a| a.message.as_slice())
    }

    /// When the attempt in flight has waited long enough for a response
    /// (the backoff after the failures before it).
    pub fn retry_at(&self) -> Option<Instant> {
        let a = self.attempt.as_ref()?;
        Some(a.sent + self.backoff.delay(self.attempts.saturating_sub(1)))
    }

    /// Whether the attempt in flight has gone unanswered for its backoff.
    pub fn timed_out(&self, now: Instant) -> bool {
        self.retry_at().is_some_and(|t| now >= t)
    }

    /// Forgets the attempt in flight (unanswered, or no longer wanted);
    /// returns its index. The attempt count stays, for the backoff.
    pub fn abandon(&mut self) -> Option<u32> {
        self.attempt.take().map(|a| a.initiator.local_index)
    }

    /// Forgets the attempt and the count: the link gave up or was reset.
    pub fn reset(&mut self) {
        self.attempt = None;
        self.attempts = 0;
    }

    /// A handshake response with the responder's index `sender`, addressed
    /// to our index `receiver`.
    pub fn on_response(&mut self, sender: u32, receiver: u32, noise: &[u8]) -> Response {
        let Some(a) = self.attempt.as_mut() else {
            return Response::NotOurs;
        };
        if a.initiator.local_index != receiver {
            return Response::NotOurs;
        }
        match a.initiator.read_response(sender, noise) {
            Ok((session, payload)) => {
                self.attempt = None;
                self.attempts = 0;
                Response::Done(Box::new(session), payload)
            }
            Err(e) => Response::Rejected(e),
        }
    }

    /// A cookie reply (the responder is under load): keeps the cookie and,
    /// once per attempt, asks for the attempt to be sent again with mac2.
    pub fn on_cookie_reply(&mut self, datagram: &[u8], now: Instant) -> CookieOutcome {
        let Some(a) = self.attempt.as_mut() else {
            return CookieOutcome::Ignored;
        };
        if cookie::reply_receiver(datagram) != Some(a.initiator.local_index) {
            return CookieOutcome::Ignored;
        }
        let Some(c) = cookie::open_reply(self.cookie_kind, &self.remote, &a.message, datagram)
        else {
            return CookieOutcome::Ignored;
        };
        self.cookie = Some((c, now));
        if std::mem::replace(&mut a.cookie_retried, true) {
            return CookieOutcome::Kept;
        }
        cookie::set_mac2(&mut a.message, &c);
        CookieOutcome::Resend(a.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cookie::CookieMaker;
    use crate::proto::handshake::{Mac1Key, Responder};
    use crate::proto::wire;
    use std::time::Duration;

    fn pair() -> (PrivateKey, PrivateKey, Dialer) {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let d = Dialer::new(
            Kind::HandshakeInit,
            Kind::CookieReply,
            b.public_key(),
            Backoff::TUNNEL,
        );
        (a, b, d)
    }

    #[test]
    fn a_forged_response_leaves_the_attempt_alive() {
        let (a, b, mut d) = pair();
        let now = Instant::now();
        let m1 = d.start(&a, 42, b"hi", now).unwrap().to_vec();
        let resp = Responder::read(&b, &Mac1Key::for_responder(&b.public_key()), &m1).unwrap();
        let (_, m2) = resp.reply(Kind::HandshakeResp, 9, b"ok").unwrap();
        let (sender, receiver, noise) = wire::decode_resp(&m2).unwrap();
        // Wrong receiver: not ours. Garbage: rejected, attempt kept.
        assert!(matches!(
            d.on_response(sender, 43, noise),
            Response::NotOurs
        ));
        let mut forged = noise.to_vec();
        forged[40] ^= 1;
        assert!(matches!(
            d.on_response(sender, receiver, &forged),
            Response::Rejected(_)
        ));
        assert_eq!(d.index(), Some(42));
        // The real response still completes the handshake.
        match d.on_response(sender, receiver, noise) {
            Response::Done(s, payload) => {
                assert_eq!(payload, b"ok");
                assert_eq!((s.local_index, s.remote_index), (42, 9));
            }
            _ => panic!("the authentic response did not complete"),
        }
        assert!(!d.in_flight());
        assert_eq!(d.attempts(), 0);
    }

    #[test]
    fn timestamps_increase_strictly_and_retries_follow_the_backoff() {
        let a = PrivateKey::generate();
        let mut d = Dialer::new(
            Kind::HandshakeInit,
            Kind::CookieReply,
            PrivateKey::generate().public_key(),
            Backoff::COORDINATOR,
        );
        assert_eq!(d.timestamp(5), 5);
        assert_eq!(d.timestamp(5), 6);
        assert_eq!(d.timestamp(3), 7);
        let t0 = Instant::now();
        d.start(&a, 1, b"", t0).unwrap();
        assert_eq!(d.retry_at(), Some(t0 + Duration::from_secs(1)));
        d.abandon();
        d.start(&a, 2, b"", t0).unwrap();
        assert_eq!(d.retry_at(), Some(t0 + Duration::from_secs(2)));
        assert!(!d.timed_out(t0 + Duration::from_secs(1)));
        assert!(d.timed_out(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_cookie_reply_resends_once_and_the_cookie_is_reused() {
        let (a, b, mut d) = pair();
        let now = Instant::now();
        let m1 = d.start(&a, 5, b"", now).unwrap().to_vec();
        let src = "198.51.100.1:1000".parse().unwrap();
        let mut maker = CookieMaker::new(&b.public_key(), now);
        let reply = maker.reply(Kind::CookieReply, &m1, src, now).unwrap();
        let CookieOutcome::Resend(again) = d.on_cookie_reply(&reply, now) else {
            panic!("no resend");
        };
        assert!(maker.check_mac2(&again, src, now));
        assert_eq!(d.on_cookie_reply(&reply, now), CookieOutcome::Kept);
        // A reply for another index is ignored.
        let mut other = reply.clone();
        other[4] ^= 1;
        assert_eq!(d.on_cookie_reply(&other, now), CookieOutcome::Ignored);
        // The next attempt carries mac2 from the start.
        let m = d.start(&a, 6, b"", now).unwrap().to_vec();
        assert!(maker.check_mac2(&m, src, now));
    }

    #[test]
    fn crossing_handshakes_the_smaller_key_wins_at_both_ends() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let now = Instant::now();
        let mut to_b = Dialer::new(
            Kind::HandshakeInit,
            Kind::CookieReply,
            b.public_key(),
            Backoff::TUNNEL,
        );
        let mut to_a = Dialer::new(
            Kind::HandshakeInit,
            Kind::CookieReply,
            a.public_key(),
            Backoff::TUNNEL,
        );
        // Nothing in flight: always answered.
        assert_eq!(to_b.on_crossing(&a.public_key()), Crossing::Answer);
        let ours_a = to_b.start(&a, 1, b"", now).unwrap().to_vec();
        to_a.start(&b, 2, b"", now).unwrap();
        let (a_wins, b_wins) = (
            to_b.on_crossing(&a.public_key()) != Crossing::Answer,
            to_a.on_crossing(&b.public_key()) != Crossing::Answer,
        );
        assert!(a_wins != b_wins, "exactly one end's handshake wins");
        let (winner, loser) = if a_wins {
            (&to_b, &to_a)
        } else {
            (&to_a, &to_b)
        };
        assert!(winner.in_flight(), "the winner keeps its attempt");
        assert!(
            !loser.in_flight() && loser.attempts() == 0,
            "the loser drops its attempt"
        );
        if a_wins {
            assert_eq!(to_b.on_crossing(&a.public_key()), Crossing::Resend(&ours_a));
        }
    }
}
