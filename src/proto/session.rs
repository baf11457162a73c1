//! A transport session: the two directional AES-256-GCM keys a handshake
//! produced, the send counter, and the receive replay window.
//!
//! A session is shared by the workers (data) and the control thread
//! (keepalives, status), so the mutable parts are atomics or a short lock.

use super::aead::{Aead, Backend, Cipher};
use super::replay::ReplayWindow;
use super::wire::{TransportHeader, TAG_LEN, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// After this many records a session refuses to send; rekeying long before
/// keeps a nonce from ever repeating.
pub const REJECT_AFTER_MESSAGES: u64 = 1 << 60;

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
        kind: u8,
        record: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, SessionError> {
        let total = payload_len + TRANSPORT_OVERHEAD;
        if record.len() < total {
            return Err(SessionError::BufferTooSmall);
        }
        let counter = self.send_counter.fetch_add(1, Ordering::Relaxed);
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Exhausted);
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
    pub fn seal_to_vec(&self, kind: u8, payload: &[u8]) -> Result<Vec<u8>, SessionError> {
        let mut record = vec![0u8; payload.len() + TRANSPORT_OVERHEAD];
        record[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + payload.len()].copy_from_slice(payload);
        self.seal(kind, &mut record, payload.len())?;
        Ok(record)
    }

    /// Authenticates and decrypts a record in place. On success returns the
    /// range of `record` that holds the plaintext payload.
    pub fn open(&self, record: &mut [u8]) -> Result<Range<usize>, SessionError> {
        let header = TransportHeader::decode(record).map_err(|_| SessionError::Malformed)?;
        if header.receiver != self.local_index {
            return Err(SessionError::WrongSession);
        }
        // Cheap rejection before the AEAD; the window only moves after the
        // tag verified, so forgeries cannot push it forward.
        if !self.replay_lock().check(header.counter) {
            return Err(SessionError::Replay(header.counter));
        }
        let body_end = record.len() - TAG_LEN;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&record[body_end..]);
        let (aad, rest) = record.split_at_mut(TRANSPORT_HEADER_LEN);
        if !self.recv.open(
            header.counter,
            aad,
            &mut rest[..body_end - TRANSPORT_HEADER_LEN],
            &tag,
        ) {
            return Err(SessionError::Auth);
        }
        if !self.replay_lock().accept(header.counter) {
            return Err(SessionError::Replay(header.counter));
        }
        Ok(TRANSPORT_HEADER_LEN..body_end)
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
    use crate::proto::wire::DATA;

    fn pair() -> (Session, Session) {
        let a = Session::new(1, 2, &[1; 32], &[2; 32]);
        let b = Session::new(2, 1, &[2; 32], &[1; 32]);
        (a, b)
    }

    #[test]
    fn roundtrip_and_replay() {
        let (a, b) = pair();
        let rec = a.seal_to_vec(DATA, b"payload").unwrap();
        let mut copy = rec.clone();
        let r = b.open(&mut copy).unwrap();
        assert_eq!(&copy[r], b"payload");
        let mut again = rec.clone();
        assert_eq!(b.open(&mut again), Err(SessionError::Replay(0)));
    }

    #[test]
    fn rejects_tampering_truncation_and_wrong_session() {
        let (a, b) = pair();
        let rec = a.seal_to_vec(DATA, b"payload").unwrap();
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
                    let mut rec = a.seal_to_vec(DATA, &payload).unwrap();
                    let r = b.open(&mut rec).unwrap();
                    assert_eq!(&rec[r], &payload[..], "{sb} -> {rb}");
                    let mut back = b.seal_to_vec(DATA, &payload).unwrap();
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
    fn empty_payload_is_a_keepalive() {
        let (a, b) = pair();
        let mut rec = a.seal_to_vec(DATA, &[]).unwrap();
        assert_eq!(rec.len(), TRANSPORT_OVERHEAD);
        assert_eq!(b.open(&mut rec).unwrap().len(), 0);
    }
}
