//! X25519 static keys: generation, base64 text form, public-key derivation.
//!
//! Keys travel through config files and the CLI as base64 of 32 bytes (the
//! same text form WireGuard uses), so operators can move them with copy/paste.

use base64::{engine::general_purpose::STANDARD, Engine};
use std::fmt;

/// Length of an X25519 key in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key string was rejected; the message says what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not valid base64 ({0}); expected base64 of 32 bytes")]
    Base64(String),
    #[error("decodes to {0} bytes; expected exactly 32")]
    Length(usize),
}

fn decode32(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| KeyError::Base64(e.to_string()))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// A node's or DC's static private key. Debug output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

/// A static public key: a node's identity once it has enrolled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PrivateKey {
    /// A fresh random key from the OS RNG, clamped as X25519 expects.
    pub fn generate() -> Self {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        PrivateKey(secret.to_bytes())
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(PrivateKey)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(PublicKey)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Short form for logs: the first 8 base64 characters.
    pub fn short(&self) -> String {
        let mut s = self.to_base64();
        s.truncate(8);
        s
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_derivation_is_stable() {
        let k = PrivateKey::generate();
        let again = PrivateKey::from_base64(&k.to_base64()).unwrap();
        assert_eq!(k, again);
        assert_eq!(k.public_key(), again.public_key());
        assert_ne!(k.public_key().0, *k.as_bytes());
    }

    #[test]
    fn rejects_bad_text_with_reason() {
        assert!(matches!(
            PrivateKey::from_base64("!!"),
            Err(KeyError::Base64(_))
        ));
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
    }

    #[test]
    fn matches_rfc7748_vector() {
        // RFC 7748 section 6.1: Alice's private and public key.
        let sk = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let pk = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(PrivateKey(sk).public_key().0, pk);
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
