//! Relay tickets: the DC's permission for one pair of nodes to use a relay.
//!
//! The DC and each relay share a key without any extra configuration: the
//! X25519 result of one's static private key and the other's public key (the
//! DC config lists relay public keys; the relay config names the DC's).
//! A ticket is sealed (AES-256-GCM) under that key, so only the relay can
//! read it: it holds the relay session id, an expiry, and one secret per
//! side. Each node gets the ticket plus only its own side's secret, and
//! proves it with an HMAC when it binds; a ticket seen on the wire is
//! therefore useless to anyone else.

use crate::keys::{PrivateKey, PublicKey};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Length of a sealed ticket on the wire.
pub const TICKET_LEN: usize = 12 + PLAIN_LEN + 16;
const PLAIN_LEN: usize = 4 + 8 + 8 + 32 + 32;
/// Length of the truncated HMAC tags on relay control messages.
pub const MAC_LEN: usize = 16;

/// What the relay learns from a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub sid: u32,
    /// Unix seconds after which the relay stops honouring the ticket.
    pub expires_unix: u64,
    /// Bytes per second the pair may send through the relay (both ways).
    pub rate_bytes: u64,
    /// Secret of side 0 (the pair's first node) and side 1.
    pub secrets: [[u8; 32]; 2],
}

/// The key shared by the DC and one relay.
#[derive(Clone)]
pub struct TicketKey {
    aead: Aes256Gcm,
    raw: [u8; 32],
}

impl TicketKey {
    /// Derives the shared key from our private key and the other side's
    /// public key; the DC and the relay arrive at the same value.
    pub fn derive(own: &PrivateKey, other: &PublicKey) -> TicketKey {
        let secret = x25519_dalek::StaticSecret::from(*own.as_bytes());
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(other.0));
        let mut h = Sha256::new();
        h.update(b"ntmtun/1 relay ticket key");
        h.update(shared.as_bytes());
        let raw: [u8; 32] = h.finalize().into();
        TicketKey {
            aead: Aes256Gcm::new(&raw.into()),
            raw,
        }
    }

    pub fn seal(&self, t: &Ticket, nonce: [u8; 12]) -> [u8; TICKET_LEN] {
        let mut out = [0u8; TICKET_LEN];
        out[..12].copy_from_slice(&nonce);
        let body = &mut out[12..12 + PLAIN_LEN];
        body[0..4].copy_from_slice(&t.sid.to_le_bytes());
        body[4..12].copy_from_slice(&t.expires_unix.to_le_bytes());
        body[12..20].copy_from_slice(&t.rate_bytes.to_le_bytes());
        body[20..52].copy_from_slice(&t.secrets[0]);
        body[52..84].copy_from_slice(&t.secrets[1]);
        // Sealing a fixed 84-byte buffer cannot fail; a zero tag would only
        // make the relay reject the ticket.
        if let Ok(tag) = self
            .aead
            .encrypt_in_place_detached(&nonce.into(), b"ntmtun ticket", body)
        {
            out[12 + PLAIN_LEN..].copy_from_slice(&tag);
        }
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Option<Ticket> {
        if sealed.len() != TICKET_LEN {
            return None;
        }
        let nonce: [u8; 12] = sealed[..12].try_into().ok()?;
        let mut body = [0u8; PLAIN_LEN];
        body.copy_from_slice(&sealed[12..12 + PLAIN_LEN]);
        let tag = Tag::from_slice(&sealed[12 + PLAIN_LEN..]);
        self.aead
            .decrypt_in_place_detached(&nonce.into(), b"ntmtun ticket", &mut body, tag)
            .ok()?;
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap_or_default());
        Some(Ticket {
            sid: u32::from_le_bytes(body[0..4].try_into().ok()?),
            expires_unix: u64_at(4),
            rate_bytes: u64_at(12),
            secrets: [body[20..52].try_into().ok()?, body[52..84].try_into().ok()?],
        })
    }

    /// MAC for DC <-> relay liveness messages.
    pub fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        mac(&self.raw, data)
    }
}

/// Truncated HMAC-SHA256.
pub fn mac(key: &[u8; 32], data: &[u8]) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    if let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(key) {
        m.update(data);
        out.copy_from_slice(&m.finalize().into_bytes()[..MAC_LEN]);
    }
    out
}

/// Constant-time comparison of two MACs.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_and_relay_derive_the_same_key_and_tickets_roundtrip() {
        let dc = PrivateKey::generate();
        let relay = PrivateKey::generate();
        let k_dc = TicketKey::derive(&dc, &relay.public_key());
        let k_relay = TicketKey::derive(&relay, &dc.public_key());
        let t = Ticket {
            sid: 7,
            expires_unix: 1000,
            rate_bytes: 5,
            secrets: [[1; 32], [2; 32]],
        };
        let sealed = k_dc.seal(&t, [9; 12]);
        assert_eq!(k_relay.open(&sealed), Some(t));
        let other = TicketKey::derive(&PrivateKey::generate(), &dc.public_key());
        assert_eq!(other.open(&sealed), None);
        for i in 0..TICKET_LEN {
            let mut bad = sealed;
            bad[i] ^= 1;
            assert_eq!(k_relay.open(&bad), None, "flip at {i} accepted");
        }
        assert_eq!(k_relay.mac(b"x"), k_dc.mac(b"x"));
        assert!(mac_eq(&mac(&[1; 32], b"a"), &mac(&[1; 32], b"a")));
        assert!(!mac_eq(&mac(&[1; 32], b"a"), &mac(&[2; 32], b"a")));
    }
}
