//! A transport session: the two directional AES-256-GCM keys a handshake
//! produced, the send counter, and the receive replay window.
//!
//! A session is shared by the workers (data) and the control thread
//! (keepalives, status), so the mutable parts are atomics or a short lock.

use super::aead::{Aead, Backend, Cipher};
use super::replay::ReplayWindow;
use super::wire::{TransportHeader, TAG_LEN, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};
use crate::proto::wire::Kind;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// After this many records a session refuses to send; rekeying long before
/// keeps a nonce from ever repeating.
pub const REJECT_AFTER_MESSAGES: u64 = 1 << 60;

/// The most records `Session::open_batch` takes at once (a UDP GRO train
/// holds at most 64 segments).
pub const OPEN_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("record buffer too small")]
    BufferTooSmall,
    #[error("malformed record")]
    Malformed,
    #[error("record for another session")]
    WrongSession,
    #[error("replayed or too old counter {0}")]
    Replay(u64),
    #[error("authentication failed")]
    Auth,
    #[error("session exhausted its counters")]
    Exhausted,
}

pub struct Session {
    /// Index peers put in records sent to us.
    pub local_index: u32,
    /// Index we put in records sent to the peer.
    pub remote_index: u32,
    send: Cipher,
    recv: Cipher,
    send_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
}

impl Session {
    /// A session on the default AES-256-GCM backend ([`Backend::default`]:
    /// the fastest one compiled in).
    pub fn new(
        local_index: u32,
        remote_index: u32,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
    ) -> Self {
        Self::with_backend(
            local_index,
            remote_index,
            send_key,
            recv_key,
            Backend::default(),
        )
    }

    /// A session on a chosen AES-256-GCM backend. All backends are
    /// byte-identical on the wire, so the peer may use any other.
    pub fn with_backend(
        local_index: u32,
        remote_index: u32,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        backend: Backend,
    ) -> Self {
        Session {
            local_index,
            remote_index,
            send: Cipher::new(backend, send_key),
            recv: Cipher::new(backend, recv_key),
            send_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::default()),
        }
    }

    /// The AES-256-GCM backend in use (for logs). This is the requested one
    /// unless it rejected the key and [`Cipher::new`] fell back to aes-gcm.
    pub fn backend(&self) -> Backend {
        self.send.backend()
    }

    /// Number of records sent so far (the next counter).
    pub fn sent(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed)
    }

    /// Seals the payload at `record[16..16 + payload_len]` in place: writes the
    /// header in front and the tag behind. Returns the record length.
    pub fn seal(
        &self,
        kind: Kind,
        record: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, SessionError> {
        if record.len() < payload_len + TRANSPORT_OVERHEAD {
            return Err(SessionError::BufferTooSmall);
        }
        let counter = self.reserve(1)?;
        self.seal_at(counter, kind, record, payload_len)
    }

    /// Reserves `n` consecutive send counters with one atomic add (a batch
    /// of records to this peer); returns the first. Each must be used by
    /// `seal_at` at most once: a repeated counter repeats a nonce.
    pub fn reserve(&self, n: usize) -> Result<u64, SessionError> {
        let first = self.send_counter.fetch_add(n as u64, Ordering::Relaxed);
        if first.saturating_add(n as u64) > REJECT_AFTER_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        Ok(first)
    }

    /// `seal` with a counter from `reserve`.
    pub fn seal_at(
        &self,
        counter: u64,
        kind: Kind,
        record: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, SessionError> {
        let total = payload_len + TRANSPORT_OVERHEAD;
        if record.len() < total {
            return Err(SessionError::BufferTooSmall);
        }
        let header = TransportHeader {
            kind,
            receiver: self.remote_index,
            counter,
        }
        .encode();
        record[..TRANSPORT_HEADER_LEN].copy_from_slice(&header);
        let body_end = TRANSPORT_HEADER_LEN + payload_len;
        let tag = self.send.seal(
            counter,
            &header,
            &mut record[TRANSPORT_HEADER_LEN..body_end],
        );
        record[body_end..total].copy_from_slice(&tag);
        Ok(total)
    }

    /// Convenience for the control path: a fresh record around `payload`.
    pub fn seal_to_vec(&self, kind: Kind, payload: &[u8]) -> Result<Vec<u8>, SessionError> {
        let mut record = vec![0u8; payload.len() + TRANSPORT_OVERHEAD];
        record[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + payload.len()].copy_from_slice(payload);
        self.seal(kind, &mut record, payload.len())?;
        Ok(record)
    }

    /// Authenticates and decrypts a record in place. On success returns the
    /// range of `record` that holds the plaintext payload.
    pub fn open(&self, record: &mut [u8]) -> Result<Range<usize>, SessionError> {
        let mut out = [Err(SessionError::Malformed)];
        let whole = [Range {
            start: 0,
            end: record.len(),
        }];
        self.open_batch(record, &whole, &mut out);
        let [r] = out;
        r
    }

    /// Opens the records at `recs` (ranges of `buf`, up to `OPEN_BATCH`;
    /// more are left alone) in place, taking the replay window's lock twice
    /// per batch instead of twice per record: once to reject replays before
    /// decrypting, once to record what authenticated. `out[i]` (`out` at
    /// least as long as `recs`) gets the payload range of record `i` in
    /// `buf`, or why it was dropped.
    pub fn open_batch(
        &self,
        buf: &mut [u8],
        recs: &[Range<usize>],
        out: &mut [Result<Range<usize>, SessionError>],
    ) {
        let n = recs.len().min(OPEN_BATCH).min(out.len());
        let mut counters = [0u64; OPEN_BATCH];
        for i in 0..n {
            out[i] = match TransportHeader::decode(&buf[recs[i].clone()]) {
                Err(_) => Err(SessionError::Malformed),
                Ok(h) if h.receiver != self.local_index => Err(SessionError::WrongSession),
                Ok(h) => {
                    counters[i] = h.counter;
                    Ok(0..0)
                }
            };
        }
        // Cheap rejection before the AEAD; the window only moves after the
        // tag verified, so forgeries cannot push it forward.
        {
            let window = self.replay_lock();
            for i in 0..n {
                if out[i].is_ok() && !window.check(counters[i]) {
                    out[i] = Err(SessionError::Replay(counters[i]));
                }
            }
        }
        for i in 0..n {
            if out[i].is_err() {
                continue;
            }
            let record = &mut buf[recs[i].clone()];
            let body_end = record.len() - TAG_LEN;
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(&record[body_end..]);
            let (aad, rest) = record.split_at_mut(TRANSPORT_HEADER_LEN);
            out[i] = if self.recv.open(
                counters[i],
                aad,
                &mut rest[..body_end - TRANSPORT_HEADER_LEN],
                &tag,
            ) {
                let start = recs[i].start;
                Ok(start + TRANSPORT_HEADER_LEN..start + body_end)
            } else {
                Err(SessionError::Auth)
            };
        }
        let mut window = self.replay_lock();
        for i in 0..n {
            if out[i].is_ok() && !window.accept(counters[i]) {
                out[i] = Err(SessionError::Replay(counters[i]));
            }
        }
    }

    fn replay_lock(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        // A poisoned lock only means another thread panicked mid-update of a
        // bitmap; the bitmap is still a valid (conservative) window.
        self.replay.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let a = Session::new(1, 2, &[1; 32], &[2; 32]);
        let b = Session::new(2, 1, &[2; 32], &[1; 32]);
        (a, b)
    }

    #[test]
    fn roundtrip_and_replay() {
        let (a, b) = pair();
        let rec = a.seal_to_vec(Kind::Data, b"payload").unwrap();
        let mut copy = rec.clone();
        let r = b.open(&mut copy).unwrap();
        assert_eq!(&copy[r], b"payload");
        let mut again = rec.clone();
        assert_eq!(b.open(&mut again), Err(SessionError::Replay(0)));
    }

    #[test]
    fn rejects_tampering_truncation_and_wrong_session() {
        let (a, b) = pair();
        let rec = a.seal_to_vec(Kind::Data, b"payload").unwrap();
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x40;
            assert!(b.open(&mut bad).is_err(), "flip at byte {i} accepted");
        }
        let mut short = rec[..rec.len() - 1].to_vec();
        assert!(b.open(&mut short).is_err());
        let mut tiny = rec[..10].to_vec();
        assert_eq!(b.open(&mut tiny), Err(SessionError::Malformed));
        let mut own = rec.clone();
        assert_eq!(a.open(&mut own), Err(SessionError::WrongSession));
        // The genuine record still opens: failures did not move the window.
        let mut good = rec.clone();
        assert!(b.open(&mut good).is_ok());
    }

    #[test]
    fn sessions_on_different_backends_interoperate() {
        for &sb in Backend::ALL {
            for &rb in Backend::ALL {
                let a = Session::with_backend(1, 2, &[1; 32], &[2; 32], sb);
                let b = Session::with_backend(2, 1, &[2; 32], &[1; 32], rb);
                assert_eq!((a.backend(), b.backend()), (sb, rb));
                for i in 0..3u8 {
                    let payload = vec![i; 100 * i as usize];
                    let mut rec = a.seal_to_vec(Kind::Data, &payload).unwrap();
                    let r = b.open(&mut rec).unwrap();
                    assert_eq!(&rec[r], &payload[..], "{sb} -> {rb}");
                    let mut back = b.seal_to_vec(Kind::Data, &payload).unwrap();
                    let r = a.open(&mut back).unwrap();
                    assert_eq!(&back[r], &payload[..], "{rb} -> {sb}");
                }
            }
        }
        assert_eq!(
            Session::new(1, 2, &[1; 32], &[2; 32]).backend(),
            Backend::default()
        );
    }

    #[test]
    fn reserved_counters_are_consecutive_and_each_seals_once() {
        let (a, b) = pair();
        assert_eq!(a.reserve(3), Ok(0));
        assert_eq!(a.reserve(2), Ok(3));
        assert_eq!(a.sent(), 5);
        let mut recs: Vec<Vec<u8>> = Vec::new();
        for c in [4u64, 0, 2] {
            let mut r = vec![0u8; 10 + TRANSPORT_OVERHEAD];
            r[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + 10].fill(c as u8);
            a.seal_at(c, Kind::Data, &mut r, 10).unwrap();
            recs.push(r);
        }
        for (r, c) in recs.iter_mut().zip([4u8, 0, 2]) {
            let range = b.open(r).unwrap();
            assert_eq!(&r[range], &[c; 10]);
        }
        let exhausted = Session::new(1, 2, &[1; 32], &[2; 32]);
        exhausted
            .send_counter
            .store(REJECT_AFTER_MESSAGES - 1, Ordering::Relaxed);
        assert_eq!(exhausted.reserve(2), Err(SessionError::Exhausted));
    }

    /// A batch with good records, a replay inside the batch, a replay of an
    /// earlier batch, a forgery and a record for another session: each gets
    /// the same outcome `open` would give it, in order.
    #[test]
    fn open_batch_matches_open_record_by_record() {
        let (a, b) = pair();
        let early = a.seal_to_vec(Kind::Data, b"early").unwrap();
        assert!(b.open(&mut early.clone()).is_ok());
        let r1 = a.seal_to_vec(Kind::Data, b"one").unwrap();
        let r2 = a.seal_to_vec(Kind::Data, b"two").unwrap();
        let three = a.seal_to_vec(Kind::Data, b"three").unwrap();
        let mut forged = three.clone();
        forged[TRANSPORT_HEADER_LEN] ^= 1;
        let foreign = b.seal_to_vec(Kind::Data, b"to a").unwrap();
        let parts = [&r1, &r2, &r1, &early, &forged, &foreign, &r2[..10].to_vec()];
        let mut buf = Vec::new();
        let mut recs = Vec::new();
        for p in parts {
            recs.push(buf.len()..buf.len() + p.len());
            buf.extend_from_slice(p);
        }
        let mut out: Vec<Result<Range<usize>, SessionError>> =
            vec![Err(SessionError::Malformed); recs.len()];
        b.open_batch(&mut buf, &recs, &mut out);
        assert_eq!(&buf[out[0].clone().unwrap()], b"one");
        assert_eq!(&buf[out[1].clone().unwrap()], b"two");
        assert_eq!(
            out[2],
            Err(SessionError::Replay(1)),
            "replay inside the batch"
        );
        assert_eq!(
            out[3],
            Err(SessionError::Replay(0)),
            "replay of an earlier batch"
        );
        assert_eq!(out[4], Err(SessionError::Auth));
        assert_eq!(out[5], Err(SessionError::WrongSession));
        assert_eq!(out[6], Err(SessionError::Malformed));
        // The forgery did not burn its counter.
        assert!(b.open(&mut three.clone()).is_ok());
    }

    #[test]
    fn empty_payload_is_a_keepalive() {
        let (a, b) = pair();
        let mut rec = a.seal_to_vec(Kind::Data, &[]).unwrap();
        assert_eq!(rec.len(), TRANSPORT_OVERHEAD);
        assert_eq!(b.open(&mut rec).unwrap().len(), 0);
    }
}
