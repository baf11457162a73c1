//! The transport cipher behind a small trait, so the data plane can swap
//! AES-256-GCM implementations (aes-gcm today; ring or aws-lc-rs are
//! candidates measured in benches/) without touching protocol code.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

type GcmNonce = Nonce<aes_gcm::aead::consts::U12>;

/// Authenticated encryption of one transport record in place.
pub trait Aead: Send + Sync {
    /// Encrypts `buf` in place and returns the 16-byte tag.
    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16];
    /// Decrypts `buf` in place; false if the tag does not verify (then the
    /// contents of `buf` are unspecified and must be discarded).
    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool;
}

/// 96-bit nonce: 4 zero bytes then the 64-bit little-endian counter.
fn nonce(counter: u64) -> GcmNonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    GcmNonce::from(n)
}

/// AES-256-GCM from the pure-Rust `aes-gcm` crate (AES-NI + CLMUL at runtime).
pub struct AesGcm(Aes256Gcm);

impl AesGcm {
    pub fn new(key: &[u8; 32]) -> Self {
        AesGcm(Aes256Gcm::new(key.into()))
    }
}

impl Aead for AesGcm {
    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        // Encryption in place with a 12-byte nonce cannot fail for buffers
        // under 64 GiB; a zero tag would simply fail to verify at the peer.
        match self.0.encrypt_in_place_detached(&nonce(counter), aad, buf) {
            Ok(tag) => tag.into(),
            Err(_) => [0u8; 16],
        }
    }

    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        self.0
            .decrypt_in_place_detached(&nonce(counter), aad, buf, Tag::from_slice(tag))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let c = AesGcm::new(&[7u8; 32]);
        let mut buf = b"hello tunnel".to_vec();
        let tag = c.seal(5, b"hdr", &mut buf);
        assert_ne!(&buf, b"hello tunnel");
        let mut copy = buf.clone();
        assert!(c.open(5, b"hdr", &mut copy, &tag));
        assert_eq!(&copy, b"hello tunnel");
        let mut wrong_ctr = buf.clone();
        assert!(!c.open(6, b"hdr", &mut wrong_ctr, &tag));
        let mut wrong_aad = buf.clone();
        assert!(!c.open(5, b"hdX", &mut wrong_aad, &tag));
        buf[0] ^= 1;
        assert!(!c.open(5, b"hdr", &mut buf, &tag));
    }
}
