//! Noise IK handshakes (via `snow`) for both node <-> DC and node <-> node.
//!
//! The initiator knows the responder's static key (the DC's from config, a
//! peer's from the DC's direction). Message 1 carries the initiator's static
//! key and a payload, both encrypted; message 2 completes the exchange. The
//! outer header of message 1 is mixed into the Noise prologue, so a changed
//! sender index fails the handshake instead of misrouting the session.
//! After the handshake both sides derive the two transport keys and run our
//! own record format (`session`), which authenticates the record header.
//!
//! Every initiation ends with a 16-byte `mac1`: an HMAC keyed by a hash of
//! the responder's public key. Checking it costs one hash, so garbage and
//! floods aimed at the wrong key are dropped before any Diffie-Hellman.
//! A 16-byte `mac2` follows it: zero, or keyed by a cookie the responder
//! handed out under load (`cookie`).

use super::cookie::{self, MAC2_LEN};
use super::session::Session;
use super::wire::{self, Kind, INIT_HEADER_LEN};
use crate::keys::{PrivateKey, PublicKey};
use snow::{Builder, HandshakeState};

pub const NOISE_PARAMS: &str = "Noise_IK_25519_AESGCM_SHA256";
const PROLOGUE_LABEL: &[u8] = b"ntmtun/1";
/// Largest handshake datagram we build or accept.
pub const MAX_HANDSHAKE: usize = 1200;

/// Length of the `mac1` trailer of an initiation.
pub const MAC1_LEN: usize = 16;

/// The key a responder's `mac1` is checked with (a hash of its public key,
/// computed once).
#[derive(Clone)]
pub struct Mac1Key([u8; 32]);

impl Mac1Key {
    pub fn for_responder(responder: &PublicKey) -> Mac1Key {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"ntmtun/1 mac1");
        h.update(responder.0);
        Mac1Key(h.finalize().into())
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC1_LEN] {
        super::ticket::mac(&self.0, data)
    }

    /// True if `datagram` ends with a valid mac1 for this responder (and
    /// any mac2 after it).
    pub fn verify(&self, datagram: &[u8]) -> bool {
        let Some((covered, tag, _)) = cookie::split_macs(datagram) else {
            return false;
        };
        let body = &covered[..covered.len() - MAC1_LEN];
        super::ticket::mac_eq(&self.mac(body), tag)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed handshake message: {0}")]
    Wire(#[from] wire::WireError),
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    #[error("handshake payload too large")]
    TooLarge,
    #[error("peer sent no static key")]
    NoStatic,
    #[error("bad mac1 (not aimed at our key)")]
    Mac1,
}

fn prologue(init_header: &[u8]) -> Vec<u8> {
    let mut p = PROLOGUE_LABEL.to_vec();
    p.extend_from_slice(init_header);
    p
}

fn builder<'a>(params: &snow::params::NoiseParams) -> Builder<'a> {
    Builder::new(params.clone())
}

fn params() -> Result<snow::params::NoiseParams, HandshakeError> {
    Ok(NOISE_PARAMS.parse()?)
}

/// The initiator's side between sending message 1 and receiving message 2.
pub struct Initiator {
    hs: HandshakeState,
    pub local_index: u32,
    pub remote_key: PublicKey,
}

impl Initiator {
    /// Builds message 1 (header + Noise) of type `kind` carrying `payload`.
    pub fn start(
        kind: Kind,
        local: &PrivateKey,
        remote: &PublicKey,
        local_index: u32,
        payload: &[u8],
    ) -> Result<(Initiator, Vec<u8>), HandshakeError> {
        let header = wire::encode_init_header(kind, local_index);
        let params = params()?;
        let prologue = prologue(&header);
        let mut hs = builder(&params)
            .local_private_key(local.as_bytes())?
            .remote_public_key(&remote.0)?
            .prologue(&prologue)?
            .build_initiator()?;
        let mut out = vec![0u8; MAX_HANDSHAKE];
        out[..INIT_HEADER_LEN].copy_from_slice(&header);
        let n = hs
            .write_message(payload, &mut out[INIT_HEADER_LEN..])
            .map_err(|_| HandshakeError::TooLarge)?;
        out.truncate(INIT_HEADER_LEN + n);
        let mac1 = Mac1Key::for_responder(remote).mac(&out);
        out.extend_from_slice(&mac1);
        // No cookie yet: the caller sets mac2 when it holds one.
        out.extend_from_slice(&[0; MAC2_LEN]);
        Ok((
            Initiator {
                hs,
                local_index,
                remote_key: *remote,
            },
            out,
        ))
    }

    /// Reads message 2 (already split from its header) and returns the
    /// session and the responder's payload. On an error nothing changed
    /// (snow restores its state), so a forged response cannot spend the
    /// attempt: the authentic one can still complete it.
    pub fn read_response(
        &mut self,
        remote_index: u32,
        noise: &[u8],
    ) -> Result<(Session, Vec<u8>), HandshakeError> {
        let mut payload = vec![0u8; MAX_HANDSHAKE];
        let n = self.hs.read_message(noise, &mut payload)?;
        payload.truncate(n);
        let (i2r, r2i) = self.hs.dangerously_get_raw_split();
        Ok((
            Session::new(self.local_index, remote_index, &i2r, &r2i),
            payload,
        ))
    }
}

/// The responder's side after reading message 1: the caller inspects the
/// initiator's key and payload, then replies or drops it.
pub struct Responder {
    hs: HandshakeState,
    pub remote_index: u32,
    pub remote_key: PublicKey,
    pub payload: Vec<u8>,
}

impl Responder {
    /// Reads a whole message-1 datagram (header and macs included); `mac1`
    /// is `Mac1Key::for_responder(&local.public_key())`, computed once.
    pub fn read(
        local: &PrivateKey,
        mac1: &Mac1Key,
        datagram: &[u8],
    ) -> Result<Responder, HandshakeError> {
        if !mac1.verify(datagram) {
            return Err(HandshakeError::Mac1);
        }
        let datagram = &datagram[..datagram.len() - MAC1_LEN - MAC2_LEN];
        let (remote_index, noise) = wire::decode_init(datagram)?;
        if noise.len() > MAX_HANDSHAKE {
            return Err(HandshakeError::TooLarge);
        }
        let params = params()?;
        let prologue = prologue(&datagram[..INIT_HEADER_LEN]);
        let mut hs = builder(&params)
            .local_private_key(local.as_bytes())?
            .prologue(&prologue)?
            .build_responder()?;
        let mut payload = vec![0u8; MAX_HANDSHAKE];
        let n = hs.read_message(noise, &mut payload)?;
        payload.truncate(n);
        let remote = hs.get_remote_static().ok_or(HandshakeError::NoStatic)?;
        let remote_key =
            PublicKey(<[u8; 32]>::try_from(remote).map_err(|_| HandshakeError::NoStatic)?);
        Ok(Responder {
            hs,
            remote_index,
            remote_key,
            payload,
        })
    }

    /// Builds message 2 of type `kind` carrying `payload`; returns the
    /// session and the datagram to send back.
    pub fn reply(
        mut self,
        kind: Kind,
        local_index: u32,
        payload: &[u8],
    ) -> Result<(Session, Vec<u8>), HandshakeError> {
        let header = wire::encode_resp_header(kind, local_index, self.remote_index);
        let mut out = vec![0u8; MAX_HANDSHAKE];
        out[..header.len()].copy_from_slice(&header);
        let n = self
            .hs
            .write_message(payload, &mut out[header.len()..])
            .map_err(|_| HandshakeError::TooLarge)?;
        out.truncate(header.len() + n);
        let (i2r, r2i) = self.hs.dangerously_get_raw_split();
        Ok((
            Session::new(local_index, self.remote_index, &r2i, &i2r),
            out,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_handshake_gives_matching_sessions() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let (mut init, m1) =
            Initiator::start(Kind::HandshakeInit, &a, &b.public_key(), 11, b"hello").unwrap();
        let resp = Responder::read(&b, &Mac1Key::for_responder(&b.public_key()), &m1).unwrap();
        assert_eq!(resp.remote_key, a.public_key());
        assert_eq!(resp.payload, b"hello");
        assert_eq!(resp.remote_index, 11);
        let (sb, m2) = resp.reply(Kind::HandshakeResp, 22, b"welcome").unwrap();
        let (sender, receiver, noise) = wire::decode_resp(&m2).unwrap();
        assert_eq!((sender, receiver), (22, 11));
        let (sa, payload) = init.read_response(sender, noise).unwrap();
        assert_eq!(payload, b"welcome");

        let mut rec = sa.seal_to_vec(Kind::Data, b"ping").unwrap();
        let r = sb.open(&mut rec).unwrap();
        assert_eq!(&rec[r], b"ping");
        let mut back = sb.seal_to_vec(Kind::Data, b"pong").unwrap();
        let r = sa.open(&mut back).unwrap();
        assert_eq!(&back[r], b"pong");
    }

    #[test]
    fn wrong_responder_key_or_tampered_header_fails() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let c = PrivateKey::generate();
        let (_, m1) = Initiator::start(Kind::HandshakeInit, &a, &b.public_key(), 1, b"").unwrap();
        // Aimed at another key: refused by mac1, before any DH.
        assert!(matches!(
            Responder::read(&c, &Mac1Key::for_responder(&c.public_key()), &m1),
            Err(HandshakeError::Mac1)
        ));
        let mut changed = m1.clone();
        changed[4] ^= 1; // sender index is in the prologue
        assert!(Responder::read(&b, &Mac1Key::for_responder(&b.public_key()), &changed).is_err());
        assert!(Responder::read(&b, &Mac1Key::for_responder(&b.public_key()), &m1[..40]).is_err());
    }
}
