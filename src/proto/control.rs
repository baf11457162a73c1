//! The in-tunnel layer: what the payload of an opened `Data` record is,
//! and the control messages peers exchange inside records.
//!
//! A payload is empty (a keepalive), an IP packet, or a control message.
//! An IPv4 packet's first nibble is its version, 4; every control kind is
//! below 0x10, so the two never meet. This layer has its own kind enum,
//! apart from the outer `wire::Kind`: the same byte value means different
//! things on the two layers, and the types keep them apart.

/// The first byte of a control message.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Ping = 0x01,
    Pong = 0x02,
    /// Upgrade probe sent straight to a relayed peer's direct candidates,
    /// and its answer. Only the answer moves the prober to the direct
    /// path: it proves both directions work.
    Probe = 0x03,
    ProbeAck = 0x04,
    /// Sent through the relay by a peer whose direct path died: follow it
    /// now rather than after our own timeout.
    Fallback = 0x05,
    /// Path MTU probe, padded to the inner size it tests, and its
    /// acknowledgement.
    MtuProbe = 0x06,
    MtuAck = 0x07,
    /// Sent through the relay by a peer whose data or ping to us went
    /// unanswered on the direct path: ping it straight back. Our own
    /// packet reopens a mapping our NAT let lapse, which nothing the peer
    /// sends can.
    Reprobe = 0x08,
}

impl TryFrom<u8> for ControlKind {
    type Error = u8;

    fn try_from(b: u8) -> Result<ControlKind, u8> {
        Ok(match b {
            0x01 => ControlKind::Ping,
            0x02 => ControlKind::Pong,
            0x03 => ControlKind::Probe,
            0x04 => ControlKind::ProbeAck,
            0x05 => ControlKind::Fallback,
            0x06 => ControlKind::MtuProbe,
            0x07 => ControlKind::MtuAck,
            0x08 => ControlKind::Reprobe,
            _ => return Err(b),
        })
    }
}

/// What an opened payload is: the one rule for it, used by the workers and
/// by the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    Keepalive,
    Ipv4(&'a [u8]),
    /// Anything else: a control message for the control thread (which
    /// drops what does not parse as one).
    Control(&'a [u8]),
}

impl<'a> Payload<'a> {
    pub fn of(payload: &'a [u8]) -> Payload<'a> {
        match payload.first() {
            None => Payload::Keepalive,
            Some(b) if b >> 4 == 4 => Payload::Ipv4(payload),
            Some(_) => Payload::Control(payload),
        }
    }
}

/// Length of a control message: kind, then a 64-bit id.
const LEN: usize = 9;
/// Length of an MTU message: kind, id, then the 16-bit size it tests.
const MTU_LEN: usize = LEN + 2;

/// A control message. `id` pairs an answer with its question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Ping(u64),
    Pong(u64),
    Probe(u64),
    ProbeAck(u64),
    Fallback(u64),
    Reprobe(u64),
    /// A probe of `size` bytes (it is padded to that size).
    MtuProbe {
        id: u64,
        size: u16,
    },
    MtuAck {
        id: u64,
        size: u16,
    },
}

impl Control {
    /// Parses a control payload; None for anything malformed (wrong length
    /// for its kind, an MTU probe whose length is not the size it claims).
    pub fn parse(payload: &[u8]) -> Option<Control> {
        let kind = ControlKind::try_from(*payload.first()?).ok()?;
        let id = u64::from_le_bytes(payload.get(1..LEN)?.try_into().ok()?);
        let size = payload
            .get(LEN..MTU_LEN)
            .map(|b| u16::from_le_bytes([b[0], b[1]]));
        let plain = payload.len() == LEN;
        Some(match kind {
            ControlKind::Ping if plain => Control::Ping(id),
            ControlKind::Pong if plain => Control::Pong(id),
            ControlKind::Probe if plain => Control::Probe(id),
            ControlKind::ProbeAck if plain => Control::ProbeAck(id),
            ControlKind::Fallback if plain => Control::Fallback(id),
            ControlKind::Reprobe if plain => Control::Reprobe(id),
            ControlKind::MtuProbe => {
                let size = size.filter(|&s| usize::from(s) == payload.len())?;
                Control::MtuProbe { id, size }
            }
            ControlKind::MtuAck if payload.len() == MTU_LEN => Control::MtuAck { id, size: size? },
            _ => return None,
        })
    }

    /// Writes the message into `out` and returns its length (`out` holds
    /// at least the size of an MTU probe, else at least 11 bytes).
    pub fn write(&self, out: &mut [u8]) -> usize {
        let (kind, id, size) = match *self {
            Control::Ping(id) => (ControlKind::Ping, id, None),
            Control::Pong(id) => (ControlKind::Pong, id, None),
            Control::Probe(id) => (ControlKind::Probe, id, None),
            Control::ProbeAck(id) => (ControlKind::ProbeAck, id, None),
            Control::Fallback(id) => (ControlKind::Fallback, id, None),
            Control::Reprobe(id) => (ControlKind::Reprobe, id, None),
            Control::MtuProbe { id, size } => (ControlKind::MtuProbe, id, Some(size)),
            Control::MtuAck { id, size } => (ControlKind::MtuAck, id, Some(size)),
        };
        out[0] = kind as u8;
        out[1..LEN].copy_from_slice(&id.to_le_bytes());
        let Some(size) = size else {
            return LEN;
        };
        out[LEN..MTU_LEN].copy_from_slice(&size.to_le_bytes());
        if kind == ControlKind::MtuAck {
            return MTU_LEN;
        }
        let len = usize::from(size).max(MTU_LEN);
        out[MTU_LEN..len].fill(0);
        len
    }

    /// The message as bytes (an MTU probe padded to its size).
    pub fn to_vec(&self) -> Vec<u8> {
        let len = match self {
            Control::MtuProbe { size, .. } => usize::from(*size).max(MTU_LEN),
            _ => MTU_LEN,
        };
        let mut out = vec![0u8; len];
        let n = self.write(&mut out);
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_roundtrip_and_lengths_are_checked() {
        for c in [
            Control::Ping(1),
            Control::Pong(2),
            Control::Probe(3),
            Control::ProbeAck(4),
            Control::Fallback(5),
            Control::Reprobe(8),
            Control::MtuProbe { id: 6, size: 1400 },
            Control::MtuAck { id: 7, size: 1400 },
        ] {
            let b = c.to_vec();
            assert_eq!(Control::parse(&b), Some(c), "{c:?}");
            assert_eq!(Payload::of(&b), Payload::Control(&b));
        }
        let probe = Control::MtuProbe { id: 6, size: 1400 }.to_vec();
        assert_eq!(probe.len(), 1400);
        assert_eq!(Control::parse(&probe[..1399]), None);
        let mut ping = Control::Ping(1).to_vec();
        ping.push(0);
        assert_eq!(Control::parse(&ping), None);
        assert_eq!(Payload::of(&[]), Payload::Keepalive);
        assert_eq!(Payload::of(&[0x45, 0]), Payload::Ipv4(&[0x45, 0]));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_what_parses_writes_back(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(c) = Control::parse(&d) {
                prop_assert_eq!(Control::parse(&c.to_vec()), Some(c));
            }
        }
    }
}
