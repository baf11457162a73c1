//! Noise IK handshakes (via `snow`) for both node <-> DC and node <-> node.
//!
//! The initiator knows the responder's static key (the DC's from config, a
//! peer's from the DC's direction). Message 1 carries the initiator's static
//! key and a payload, both encrypted; message 2 completes the exchange. The
//! outer header of message 1 is mixed into the Noise prologue, so a changed
//! sender index fails the handshake instead of misrouting the session.
//! After the handshake both sides derive the two transport keys and run our
//! own record format (`session`), which authenticates the record header.

use super::session::Session;
use super::wire::{self, INIT_HEADER_LEN};
use crate::keys::{PrivateKey, PublicKey};
use snow::{Builder, HandshakeState};

pub const NOISE_PARAMS: &str = "Noise_IK_25519_AESGCM_SHA256";
const PROLOGUE_LABEL: &[u8] = b"ntmtun/1";
/// Largest handshake datagram we build or accept.
pub const MAX_HANDSHAKE: usize = 1200;

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
        kind: u8,
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
        Ok((
            Initiator {
                hs,
                local_index,
                remote_key: *remote,
            },
            out,
        ))
    }

    /// Consumes message 2 (already split from its header) and returns the
    /// session and the responder's payload.
    pub fn finish(
        mut self,
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
    /// Reads a whole message-1 datagram (header included).
    pub fn read(local: &PrivateKey, datagram: &[u8]) -> Result<Responder, HandshakeError> {
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
        kind: u8,
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
    use crate::proto::wire::{DATA, HANDSHAKE_INIT, HANDSHAKE_RESP};

    #[test]
    fn full_handshake_gives_matching_sessions() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let (init, m1) =
            Initiator::start(HANDSHAKE_INIT, &a, &b.public_key(), 11, b"hello").unwrap();
        let resp = Responder::read(&b, &m1).unwrap();
        assert_eq!(resp.remote_key, a.public_key());
        assert_eq!(resp.payload, b"hello");
        assert_eq!(resp.remote_index, 11);
        let (sb, m2) = resp.reply(HANDSHAKE_RESP, 22, b"welcome").unwrap();
        let (sender, receiver, noise) = wire::decode_resp(&m2).unwrap();
        assert_eq!((sender, receiver), (22, 11));
        let (sa, payload) = init.finish(sender, noise).unwrap();
        assert_eq!(payload, b"welcome");

        let mut rec = sa.seal_to_vec(DATA, b"ping").unwrap();
        let r = sb.open(&mut rec).unwrap();
        assert_eq!(&rec[r], b"ping");
        let mut back = sb.seal_to_vec(DATA, b"pong").unwrap();
        let r = sa.open(&mut back).unwrap();
        assert_eq!(&back[r], b"pong");
    }

    #[test]
    fn wrong_responder_key_or_tampered_header_fails() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let c = PrivateKey::generate();
        let (_, m1) = Initiator::start(HANDSHAKE_INIT, &a, &b.public_key(), 1, b"").unwrap();
        assert!(Responder::read(&c, &m1).is_err());
        let mut changed = m1.clone();
        changed[4] ^= 1; // sender index is in the prologue
        assert!(Responder::read(&b, &changed).is_err());
        assert!(Responder::read(&b, &m1[..40]).is_err());
    }
}
