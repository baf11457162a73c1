//! The transport cipher: AES-256-GCM behind a small trait, with three
//! interchangeable backends that are byte-identical on the wire.
//!
//! | [`Backend`] | crate | Cargo feature | 1400 B seal on the bench VM |
//! |---|---|---|---|
//! | `AwsLc` | aws-lc-rs 1 (AWS-LC assembly) | `aws-lc` (default) | fastest, see docs/performance.md |
//! | `Ring` | ring 0.17 (BoringSSL assembly) | `ring` (default) | second |
//! | `AesGcm` | aes-gcm 0.10 (pure Rust, AES-NI + CLMUL) | always built | slowest |
//!
//! A backend whose feature is off has no [`Backend`] variant at all, so
//! naming it is a compile error rather than a silent fallback at run time;
//! [`Backend::ALL`] lists the ones compiled in and [`Backend::default`] is the
//! fastest of them. [`Cipher`] dispatches with a `match` (no `Box<dyn>`), so
//! the per-packet call is a branch, not a vtable call.
//!
//! The nonce is 4 zero bytes followed by the 64-bit little-endian record
//! counter, for every backend.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use std::fmt;
use std::str::FromStr;

type GcmNonce = Nonce<aes_gcm::aead::consts::U12>;

use super::wire::TAG_LEN;

/// Authenticated encryption of one transport record in place.
pub trait Aead: Send + Sync {
    /// Encrypts `buf` in place and returns the 16-byte tag.
    ///
    /// Sealing cannot fail for any buffer a tunnel handles (the limit is
    /// 64 GiB). Should a backend report an error anyway, `buf` is zeroed and
    /// the tag is all zeros: no plaintext leaves, and the peer drops the
    /// record because the tag does not verify.
    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];
    /// Decrypts `buf` in place; false if the tag does not verify (then the
    /// contents of `buf` are unspecified and must be discarded).
    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool;
}

/// 96-bit nonce bytes: 4 zero bytes then the 64-bit little-endian counter.
#[inline]
fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// The failed-seal outcome documented on [`Aead::seal`].
#[cold]
fn seal_failed(buf: &mut [u8]) -> [u8; TAG_LEN] {
    buf.fill(0);
    [0u8; TAG_LEN]
}

// ---------------------------------------------------------------------------
// Backend selection
// ---------------------------------------------------------------------------

/// Which AES-256-GCM implementation a [`Cipher`] uses.
///
/// Names (for logs, config and [`FromStr`]): `aws-lc`, `ring`, `aes-gcm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// aws-lc-rs `LessSafeKey` with `AES_256_GCM` (feature `aws-lc`).
    #[cfg(feature = "aws-lc")]
    AwsLc,
    /// ring `LessSafeKey` with `AES_256_GCM` (feature `ring`).
    #[cfg(feature = "ring")]
    Ring,
    /// The pure-Rust `aes-gcm` crate; always available.
    AesGcm,
}

impl Backend {
    /// Every backend compiled into this build, fastest first (as measured
    /// in benches/dataplane.rs, group `cipher`).
    pub const ALL: &'static [Backend] = &[
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc,
        #[cfg(feature = "ring")]
        Backend::Ring,
        Backend::AesGcm,
    ];

    /// The fastest backend compiled in: aws-lc-rs, else ring, else aes-gcm.
    pub const DEFAULT: Backend = Backend::ALL[0];

    /// The stable name used in logs and accepted by [`FromStr`].
    pub const fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => "aws-lc",
            #[cfg(feature = "ring")]
            Backend::Ring => "ring",
            Backend::AesGcm => "aes-gcm",
        }
    }
}

impl Default for Backend {
    fn default() -> Self {
        Backend::DEFAULT
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`Backend::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseBackendError {
    #[error("AES-GCM backend `{0}` is not compiled in (enable Cargo feature `{1}`)")]
    NotCompiled(String, &'static str),
    #[error("unknown AES-GCM backend `{0}` (expected aws-lc, ring or aes-gcm)")]
    Unknown(String),
}

impl FromStr for Backend {
    type Err = ParseBackendError;

    /// Accepts the [`Backend::name`]s, case-insensitively, plus the crate
    /// names `aws-lc-rs` and `aes_gcm`/`rustcrypto`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The canonical name; for a backend behind a feature it is also the
        // feature's name.
        let name = match s.trim().to_ascii_lowercase().as_str() {
            "aws-lc" | "aws-lc-rs" | "aws_lc" | "awslc" => "aws-lc",
            "ring" => "ring",
            "aes-gcm" | "aes_gcm" | "aesgcm" | "rustcrypto" => "aes-gcm",
            _ => return Err(ParseBackendError::Unknown(s.to_string())),
        };
        Backend::ALL
            .iter()
            .copied()
            .find(|b| b.name() == name)
            .ok_or_else(|| ParseBackendError::NotCompiled(s.to_string(), name))
    }
}

// ---------------------------------------------------------------------------
// Enum dispatch
// ---------------------------------------------------------------------------

/// One direction's AES-256-GCM key on the selected backend.
///
/// The variants differ in size (aes-gcm's expanded key schedule and GHASH
/// table are the largest, about 1 KB); boxing one would add a pointer chase
/// per packet to save a few hundred bytes per session, so they stay inline.
#[allow(clippy::large_enum_variant)]
pub enum Cipher {
    #[cfg(feature = "aws-lc")]
    AwsLc(AwsLcGcm),
    #[cfg(feature = "ring")]
    Ring(RingGcm),
    AesGcm(AesGcm),
}

impl Cipher {
    /// A key on `backend`. Never fails: if the backend rejects the key (it
    /// cannot for a 32-byte AES-256 key, but its API is fallible), this logs
    /// a warning and uses aes-gcm; [`Cipher::backend`] tells which one runs.
    pub fn new(backend: Backend, key: &[u8; 32]) -> Self {
        match backend {
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => match AwsLcGcm::try_new(key) {
                Some(c) => Cipher::AwsLc(c),
                None => Self::fallback(backend, key),
            },
            #[cfg(feature = "ring")]
            Backend::Ring => match RingGcm::try_new(key) {
                Some(c) => Cipher::Ring(c),
                None => Self::fallback(backend, key),
            },
            Backend::AesGcm => Cipher::AesGcm(AesGcm::new(key)),
        }
    }

    #[cfg(any(feature = "aws-lc", feature = "ring"))]
    #[cold]
    fn fallback(backend: Backend, key: &[u8; 32]) -> Self {
        tracing::warn!(
            backend = backend.name(),
            "AES-256-GCM backend rejected the key; using aes-gcm instead"
        );
        Cipher::AesGcm(AesGcm::new(key))
    }

    /// The backend actually in use.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "aws-lc")]
            Cipher::AwsLc(_) => Backend::AwsLc,
            #[cfg(feature = "ring")]
            Cipher::Ring(_) => Backend::Ring,
            Cipher::AesGcm(_) => Backend::AesGcm,
        }
    }
}

impl Aead for Cipher {
    #[inline]
    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match self {
            #[cfg(feature = "aws-lc")]
            Cipher::AwsLc(c) => c.seal(counter, aad, buf),
            #[cfg(feature = "ring")]
            Cipher::Ring(c) => c.seal(counter, aad, buf),
            Cipher::AesGcm(c) => c.seal(counter, aad, buf),
        }
    }

    #[inline]
    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        match self {
            #[cfg(feature = "aws-lc")]
            Cipher::AwsLc(c) => c.open(counter, aad, buf, tag),
            #[cfg(feature = "ring")]
            Cipher::Ring(c) => c.open(counter, aad, buf, tag),
            Cipher::AesGcm(c) => c.open(counter, aad, buf, tag),
        }
    }
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// AES-256-GCM from the pure-Rust `aes-gcm` crate (AES-NI + CLMUL at runtime).
pub struct AesGcm(Aes256Gcm);

impl AesGcm {
    pub fn new(key: &[u8; 32]) -> Self {
        AesGcm(Aes256Gcm::new(key.into()))
    }
}

impl Aead for AesGcm {
    #[inline]
    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = GcmNonce::from(nonce_bytes(counter));
        match self.0.encrypt_in_place_detached(&nonce, aad, buf) {
            Ok(tag) => tag.into(),
            Err(_) => seal_failed(buf),
        }
    }

    #[inline]
    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        let nonce = GcmNonce::from(nonce_bytes(counter));
        self.0
            .decrypt_in_place_detached(&nonce, aad, buf, Tag::from_slice(tag))
            .is_ok()
    }
}

/// aws-lc-rs and ring share the `LessSafeKey` API for construction and
/// sealing; one macro writes both backends so they cannot drift apart.
/// Opening differs in how each takes the tag, so it is passed in.
macro_rules! less_safe_key_backend {
    ($feature:literal, $name:ident, $krate:ident, $doc:literal, |$key:ident, $nonce:ident, $aad:ident, $tag:ident, $buf:ident| $open:expr) => {
        #[doc = $doc]
        #[cfg(feature = $feature)]
        pub struct $name($krate::aead::LessSafeKey);

        #[cfg(feature = $feature)]
        impl $name {
            /// `None` only if the crate rejects the key, which it does not
            /// for 32 bytes; [`Cipher::new`] falls back to aes-gcm then.
            pub fn try_new(key: &[u8; 32]) -> Option<Self> {
                use $krate::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
                let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
                Some($name(LessSafeKey::new(key)))
            }
        }

        #[cfg(feature = $feature)]
        impl Aead for $name {
            #[inline]
            fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
                use $krate::aead::{Aad, Nonce};
                let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
                match self
                    .0
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
                {
                    Ok(tag) => {
                        <[u8; TAG_LEN]>::try_from(tag.as_ref()).unwrap_or_else(|_| seal_failed(buf))
                    }
                    Err(_) => seal_failed(buf),
                }
            }

            #[inline]
            fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
                use $krate::aead::{Aad, Nonce};
                let ($key, $nonce, $aad, $tag, $buf) = (
                    &self.0,
                    Nonce::assume_unique_for_key(nonce_bytes(counter)),
                    Aad::from(aad),
                    tag,
                    buf,
                );
                $open
            }
        }
    };
}

less_safe_key_backend!(
    "aws-lc",
    AwsLcGcm,
    aws_lc_rs,
    "AES-256-GCM from aws-lc-rs (AWS-LC's assembly, chosen at run time).",
    |key, nonce, aad, tag, buf| key.open_in_place_separate_tag(nonce, aad, tag, buf).is_ok()
);

less_safe_key_backend!(
    "ring",
    RingGcm,
    ring,
    "AES-256-GCM from ring (BoringSSL-derived assembly, chosen at run time).",
    |key, nonce, aad, tag, buf| key
        .open_in_place_separate_tag(nonce, aad, ring::aead::Tag::from(*tag), buf, 0..)
        .is_ok()
);

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn seal_open_and_tamper() {
        for &b in Backend::ALL {
            let c = Cipher::new(b, &[7u8; 32]);
            assert_eq!(c.backend(), b);
            let mut buf = b"hello tunnel".to_vec();
            let tag = c.seal(5, b"hdr", &mut buf);
            assert_ne!(&buf, b"hello tunnel", "{b}");
            let mut copy = buf.clone();
            assert!(c.open(5, b"hdr", &mut copy, &tag), "{b}");
            assert_eq!(&copy, b"hello tunnel", "{b}");
            let mut wrong_ctr = buf.clone();
            assert!(!c.open(6, b"hdr", &mut wrong_ctr, &tag), "{b}");
            let mut wrong_aad = buf.clone();
            assert!(!c.open(5, b"hdX", &mut wrong_aad, &tag), "{b}");
            buf[0] ^= 1;
            assert!(!c.open(5, b"hdr", &mut buf, &tag), "{b}");
        }
    }

    /// GCM specification (McGrew & Viega) test cases 13 and 14: AES-256,
    /// all-zero key and IV (counter 0 in our nonce layout), no AAD.
    #[test]
    fn known_answer_vectors() {
        for &b in Backend::ALL {
            let c = Cipher::new(b, &[0u8; 32]);
            let mut empty = [0u8; 0];
            let tag = c.seal(0, &[], &mut empty);
            assert_eq!(tag.to_vec(), hex("530f8afbc74536b9a963b4f1c4cb738b"), "{b}");
            let mut block = [0u8; 16];
            let tag = c.seal(0, &[], &mut block);
            assert_eq!(
                block.to_vec(),
                hex("cea7403d4d606b6e074ec5d3baf39d18"),
                "{b}"
            );
            assert_eq!(tag.to_vec(), hex("d0d1c8a799996bf0265b98b5d48ab919"), "{b}");
        }
    }

    /// Every backend seals to the same bytes, and every backend opens what
    /// every other one sealed; tampering with the ciphertext, the AAD, the
    /// tag or the counter fails on every backend.
    #[test]
    fn backends_interoperate_byte_for_byte() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 13 + 1) as u8);
        let aad: [u8; 16] = std::array::from_fn(|i| (0xa0 + i) as u8);
        let ciphers: Vec<Cipher> = Backend::ALL.iter().map(|&b| Cipher::new(b, &key)).collect();
        for len in [0usize, 1, 15, 16, 17, 64, 1400, 1500, 65535] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let counter = 0x0102_0304_0506_0708 ^ len as u64;
            let mut reference: Option<(Vec<u8>, [u8; TAG_LEN])> = None;
            for sealer in &ciphers {
                let mut ct = plain.clone();
                let tag = sealer.seal(counter, &aad, &mut ct);
                match &reference {
                    None => reference = Some((ct.clone(), tag)),
                    Some((rct, rtag)) => {
                        assert_eq!(&ct, rct, "ciphertext {} len {len}", sealer.backend());
                        assert_eq!(&tag, rtag, "tag {} len {len}", sealer.backend());
                    }
                }
                for opener in &ciphers {
                    let who = format!("{} -> {} len {len}", sealer.backend(), opener.backend());
                    let mut pt = ct.clone();
                    assert!(opener.open(counter, &aad, &mut pt, &tag), "{who}");
                    assert_eq!(pt, plain, "{who}");

                    let mut bad_aad = aad;
                    bad_aad[15] ^= 0x80;
                    let mut x = ct.clone();
                    assert!(!opener.open(counter, &bad_aad, &mut x, &tag), "aad {who}");
                    let mut x = ct.clone();
                    assert!(
                        !opener.open(counter, &aad[..15], &mut x, &tag),
                        "aad len {who}"
                    );

                    for i in [0, 7, 15] {
                        let mut bad_tag = tag;
                        bad_tag[i] ^= 1;
                        let mut x = ct.clone();
                        assert!(!opener.open(counter, &aad, &mut x, &bad_tag), "tag {who}");
                    }
                    let mut x = ct.clone();
                    assert!(!opener.open(counter + 1, &aad, &mut x, &tag), "ctr {who}");
                    if len > 0 {
                        let mut x = ct.clone();
                        x[len / 2] ^= 0x10;
                        assert!(!opener.open(counter, &aad, &mut x, &tag), "ct {who}");
                        let mut x = ct[..len - 1].to_vec();
                        assert!(!opener.open(counter, &aad, &mut x, &tag), "trunc {who}");
                    }
                }
            }
        }
    }

    #[test]
    fn backend_names_round_trip() {
        for &b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>(), Ok(b));
            assert_eq!(b.to_string(), b.name());
            assert_eq!(b.name().to_uppercase().parse::<Backend>(), Ok(b));
        }
        assert_eq!(Backend::default(), Backend::ALL[0]);
        assert_eq!("aes_gcm".parse::<Backend>(), Ok(Backend::AesGcm));
        assert!(matches!(
            "chacha".parse::<Backend>(),
            Err(ParseBackendError::Unknown(_))
        ));
        #[cfg(feature = "aws-lc")]
        assert_eq!(Backend::default(), Backend::AwsLc);
        #[cfg(not(feature = "aws-lc"))]
        assert!(matches!(
            "aws-lc".parse::<Backend>(),
            Err(ParseBackendError::NotCompiled(_, "aws-lc"))
        ));
        #[cfg(not(feature = "ring"))]
        assert!(matches!(
            "ring".parse::<Backend>(),
            Err(ParseBackendError::NotCompiled(_, "ring"))
        ));
    }
}
