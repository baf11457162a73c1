//! The handshake lifecycle, written once for the three links ntmtun runs:
//! node -> DC (registration, `node::dc_link`), DC -> DC (federation,
//! `dc::federation`) and node <-> node (tunnels, `node::tunnel`).
//!
//! - [`Dialer`]: the initiator's side. One attempt in flight, its bytes
//!   kept for a resend with a cookie's mac2, a strictly increasing
//!   timestamp, retries on a [`Backoff`], and a response committed only once
//!   it authenticates (a forged response leaves the attempt alive). When
//!   both ends dial at once, the smaller static key's handshake wins at
//!   both ends ([`Crossing`]).
//! - [`Gate`]: the responder's cheap checks before any Diffie-Hellman, in
//!   one order: mac1, then a cookie challenge under load, then the
//!   per-source rate limit.
//! - [`SessionPair`]: the current, previous and next session of a link,
//!   key confirmation (a responder sends on a new session only after the
//!   first authentic record on it) and the reject-after bounds of age and
//!   count.
//! - [`IndexAlloc`]: session indexes drawn at random, so one observed index
//!   does not predict the next.
//!
//! Everything here is sans-IO: bytes and `Instant`s in, bytes and verdicts
//! out. A rule about the handshake changes here, in one place.

mod backoff;
mod dialer;
mod gate;
mod index;
mod sessions;

pub use backoff::Backoff;
pub use dialer::{CookieOutcome, Crossing, Dialer, Response};
pub use gate::{Gate, Verdict};
pub use index::IndexAlloc;
pub use sessions::{SessionPair, REJECT_GRACE, REKEY_AFTER_MESSAGES};
