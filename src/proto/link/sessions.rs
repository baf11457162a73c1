//! A link's sessions: the current one, the previous one (records still in
//! flight when a new handshake completes), the next one (the peer's, until
//! its first record: key confirmation), and the reject-after bounds.
//!
//! Key confirmation: the initiator's session is confirmed when the
//! authenticated response arrives. The responder's is not: anyone can
//! replay a recorded initiation (after a restart the responder no longer
//! knows its timestamp), so the responder sends on a new session only after
//! the first authentic record on it, and keeps sending on the previous one
//! until then. The initiator sends a record at once (data, or a keepalive)
//! so the wait is half a round trip.
//!
//! Reject-after: a session is never used past `rekey + REJECT_GRACE` (by
//! then a rekey should have replaced it) nor past its counter bound
//! (`session::REJECT_AFTER_MESSAGES`); a link whose rekeys keep failing
//! loses its sessions instead of using old keys forever.

use crate::proto::session::{Session, REJECT_AFTER_MESSAGES};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long past the rekey interval a session may still be used.
pub const REJECT_GRACE: Duration = Duration::from_secs(60);
/// Rekey once a session has sent this many records, long before the
/// counter bound refuses more.
pub const REKEY_AFTER_MESSAGES: u64 = REJECT_AFTER_MESSAGES - (1 << 56);

struct Slot {
    session: Arc<Session>,
    established: Instant,
    we_initiated: bool,
}

/// A link's sessions, in three slots as WireGuard keeps them: `current`
/// (confirmed: we send on it), `previous` (records still in flight on it),
/// and `next` (a session the peer initiated, waiting for its first record).
/// Records are opened on all three.
#[derive(Default)]
pub struct SessionPair {
    current: Option<Slot>,
    previous: Option<Slot>,
    next: Option<Slot>,
}

impl SessionPair {
    /// Installs a new session. An initiator's is confirmed at once: it
    /// becomes current, the current one previous. A responder's waits in
    /// `next` for its first record (`confirm`), replacing any other waiting
    /// there; what we send on does not change until then.
    pub fn install(&mut self, session: Session, now: Instant, we_initiated: bool) -> Arc<Session> {
        let session = Arc::new(session);
        let slot = Slot {
            session: session.clone(),
            established: now,
            we_initiated,
        };
        if we_initiated {
            self.previous = self.current.replace(slot);
        } else {
            self.next = Some(slot);
        }
        session
    }

    /// An authentic record arrived on our session `index`. True if that
    /// confirmed the waiting session just now (it becomes the one we send
    /// on).
    pub fn confirm(&mut self, index: u32) -> bool {
        if !self.awaits_confirmation(index) {
            return false;
        }
        self.previous = self.current.take();
        self.current = self.next.take();
        true
    }

    /// The session to send on: the confirmed current one.
    pub fn sending(&self) -> Option<&Arc<Session>> {
        self.current.as_ref().map(|s| &s.session)
    }

    /// The newest session, confirmed or not.
    pub fn newest(&self) -> Option<&Arc<Session>> {
        self.next
            .as_ref()
            .or(self.current.as_ref())
            .map(|s| &s.session)
    }

    /// Every session records may arrive on (newest first).
    pub fn receiving(&self) -> impl Iterator<Item = &Arc<Session>> {
        [&self.next, &self.current, &self.previous]
            .into_iter()
            .flatten()
            .map(|s| &s.session)
    }

    /// Since when a session the peer initiated waits for its first record.
    pub fn unconfirmed_since(&self) -> Option<Instant> {
        self.next.as_ref().map(|s| s.established)
    }

    /// Whether `index` is the session waiting for its first record.
    pub fn awaits_confirmation(&self, index: u32) -> bool {
        self.next
            .as_ref()
            .is_some_and(|s| s.session.local_index == index)
    }

    /// The session with our index `index`.
    pub fn find(&self, index: u32) -> Option<&Arc<Session>> {
        self.receiving().find(|s| s.local_index == index)
    }

    pub fn owns(&self, index: u32) -> bool {
        self.find(index).is_some()
    }

    /// When the session we send on was established, and whether we
    /// initiated it.
    pub fn established(&self) -> Option<(Instant, bool)> {
        self.current
            .as_ref()
            .map(|s| (s.established, s.we_initiated))
    }

    /// When the newest handshake completed (either side's).
    pub fn last_handshake(&self) -> Option<Instant> {
        self.next
            .as_ref()
            .or(self.current.as_ref())
            .map(|s| s.established)
    }

    /// Whether the session we send on is due for a rekey: `after` has
    /// passed (later for the responder, so the initiator renews first), or
    /// it sent enough records.
    pub fn rekey_due(&self, now: Instant, after: Duration, responder_delay: Duration) -> bool {
        let Some(s) = &self.current else {
            return false;
        };
        let due = if s.we_initiated {
            after
        } else {
            after + responder_delay
        };
        now.saturating_duration_since(s.established) >= due
            || s.session.sent() >= REKEY_AFTER_MESSAGES
    }

    /// Drops sessions past `rekey + REJECT_GRACE` or their counter bound.
    /// True if one went.
    pub fn expire(&mut self, now: Instant, rekey: Duration) -> bool {
        let limit = rekey + REJECT_GRACE;
        let mut changed = false;
        for slot in [&mut self.previous, &mut self.current, &mut self.next] {
            let dead = slot.as_ref().is_some_and(|s| {
                now.saturating_duration_since(s.established) >= limit
                    || s.session.sent() >= REJECT_AFTER_MESSAGES
            });
            if dead {
                *slot = None;
                changed = true;
            }
        }
        changed
    }

    /// When the next session reaches its age bound.
    pub fn next_expiry(&self, rekey: Duration) -> Option<Instant> {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|s| s.established + rekey + REJECT_GRACE)
            .min()
    }

    pub fn clear(&mut self) {
        *self = SessionPair::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(index: u32) -> Session {
        Session::new(index, index + 100, &[1; 32], &[2; 32])
    }

    #[test]
    fn a_responder_sends_on_a_new_session_only_after_its_first_record() {
        let now = Instant::now();
        let mut p = SessionPair::default();
        p.install(session(1), now, true);
        assert_eq!(p.sending().map(|s| s.local_index), Some(1));
        p.install(session(2), now, false);
        // Unconfirmed: still sending on the old one, receiving on both.
        assert_eq!(p.sending().map(|s| s.local_index), Some(1));
        assert!(p.owns(1) && p.owns(2) && p.unconfirmed_since().is_some());
        assert!(!p.confirm(1));
        assert!(p.confirm(2));
        assert!(!p.confirm(2));
        assert_eq!(p.sending().map(|s| s.local_index), Some(2));
        // A lone responder session sends nothing until confirmed.
        let mut q = SessionPair::default();
        q.install(session(3), now, false);
        assert!(q.sending().is_none());
    }

    #[test]
    fn sessions_expire_after_rekey_plus_grace() {
        let t0 = Instant::now();
        let rekey = Duration::from_secs(120);
        let mut p = SessionPair::default();
        p.install(session(1), t0, true);
        p.install(session(2), t0 + Duration::from_secs(100), true);
        assert_eq!(p.next_expiry(rekey), Some(t0 + rekey + REJECT_GRACE));
        assert!(!p.expire(t0 + Duration::from_secs(179), rekey));
        assert!(p.expire(t0 + Duration::from_secs(180), rekey));
        assert!(!p.owns(1) && p.owns(2));
        assert!(p.expire(t0 + Duration::from_secs(280), rekey));
        assert!(p.sending().is_none() && p.newest().is_none());
    }

    #[test]
    fn the_responder_rekeys_later_than_the_initiator() {
        let t0 = Instant::now();
        let (after, delay) = (Duration::from_secs(120), Duration::from_secs(30));
        let mut p = SessionPair::default();
        p.install(session(1), t0, false);
        assert!(p.confirm(1));
        assert!(!p.rekey_due(t0 + after, after, delay));
        assert!(p.rekey_due(t0 + after + delay, after, delay));
        p.install(session(2), t0, true);
        assert!(p.rekey_due(t0 + after, after, delay));
    }

    #[test]
    fn our_new_session_does_not_drop_the_one_the_peer_may_send_on() {
        let now = Instant::now();
        let mut p = SessionPair::default();
        p.install(session(1), now, true);
        // The peer's crossing handshake, then a rekey of ours.
        p.install(session(2), now, false);
        p.install(session(3), now, true);
        assert!(p.owns(1) && p.owns(2) && p.owns(3));
        assert_eq!(p.sending().map(|s| s.local_index), Some(3));
        // Its first record makes it the one we send on.
        assert!(p.confirm(2));
        assert_eq!(p.sending().map(|s| s.local_index), Some(2));
        assert!(p.owns(3) && !p.owns(1));
    }
}
