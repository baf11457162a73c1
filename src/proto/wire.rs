//! Outer wire format of every UDP datagram ntmtun sends (docs/protocol.md).
//!
//! The first byte is the message type; the next three are zero (room for
//! flags, and 4-byte alignment of what follows, as in WireGuard). Integers are
//! little-endian.

/// The first byte of every datagram ntmtun sends: which message it is.
///
/// One enum for the outer layer, so a byte value means one thing. (The
/// in-tunnel control messages are another layer with their own enum,
/// `proto::control::ControlKind`: they travel inside a `Data` record.)
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Node -> node handshake initiation (Noise IK message 1).
    HandshakeInit = 0x01,
    /// Node -> node handshake response (Noise IK message 2).
    HandshakeResp = 0x02,
    /// Node <-> node transport record carrying one IP packet (empty =
    /// keepalive) or a control message.
    Data = 0x03,
    /// Node -> node cookie reply (answers `HandshakeInit` under load).
    CookieReply = 0x04,
    /// Node -> DC handshake initiation; its payload is a registration.
    DcHandshakeInit = 0x11,
    /// DC -> node handshake response; its payload is the registration result.
    DcHandshakeResp = 0x12,
    /// Node <-> DC transport record carrying one signaling message.
    DcData = 0x13,
    /// DC -> DC handshake initiation (federation); its payload is a
    /// `FedHello`. A distinct type: it is part of the Noise prologue, so a
    /// node handshake cannot pass for a DC one.
    FedHandshakeInit = 0x14,
    /// DC -> DC handshake response; its payload is a `FedReply`.
    FedHandshakeResp = 0x15,
    /// DC <-> DC transport record carrying one `DcToDc` message.
    FedData = 0x16,
    /// DC -> node cookie reply (answers `DcHandshakeInit`).
    DcCookieReply = 0x17,
    /// DC -> DC cookie reply (answers `FedHandshakeInit`).
    FedCookieReply = 0x18,
    /// Node -> relay: bind one side of a ticketed session to my address.
    RelayBind = 0x21,
    /// Relay -> node: bound; says which address the relay saw.
    RelayBindAck = 0x22,
    /// Node -> relay: which address do you see? (second NAT observer)
    RelayProbe = 0x23,
    RelayProbeReply = 0x24,
    /// Node <-> relay <-> node: a wrapped node-to-node datagram.
    Relayed = 0x25,
    /// DC -> relay liveness check, and its answer.
    RelayPing = 0x26,
    RelayPong = 0x27,
}

impl Kind {
    #[cfg(test)]
    const ALL: [Kind; 19] = [
        Kind::HandshakeInit,
        Kind::HandshakeResp,
        Kind::Data,
        Kind::CookieReply,
        Kind::DcHandshakeInit,
        Kind::DcHandshakeResp,
        Kind::DcData,
        Kind::FedHandshakeInit,
        Kind::FedHandshakeResp,
        Kind::FedData,
        Kind::DcCookieReply,
        Kind::FedCookieReply,
        Kind::RelayBind,
        Kind::RelayBindAck,
        Kind::RelayProbe,
        Kind::RelayProbeReply,
        Kind::Relayed,
        Kind::RelayPing,
        Kind::RelayPong,
    ];

    /// The kind of `datagram`, from its first byte.
    pub fn of(datagram: &[u8]) -> Result<Kind, WireError> {
        Kind::try_from(*datagram.first().ok_or(WireError::Short(0))?)
    }

    /// Whether a datagram starts with this kind.
    pub fn starts(self, datagram: &[u8]) -> bool {
        datagram.first() == Some(&(self as u8))
    }
}

impl TryFrom<u8> for Kind {
    type Error = WireError;

    fn try_from(b: u8) -> Result<Kind, WireError> {
        // A match, not a search: this runs for every datagram received.
        Ok(match b {
            0x01 => Kind::HandshakeInit,
            0x02 => Kind::HandshakeResp,
            0x03 => Kind::Data,
            0x04 => Kind::CookieReply,
            0x11 => Kind::DcHandshakeInit,
            0x12 => Kind::DcHandshakeResp,
            0x13 => Kind::DcData,
            0x14 => Kind::FedHandshakeInit,
            0x15 => Kind::FedHandshakeResp,
            0x16 => Kind::FedData,
            0x17 => Kind::DcCookieReply,
            0x18 => Kind::FedCookieReply,
            0x21 => Kind::RelayBind,
            0x22 => Kind::RelayBindAck,
            0x23 => Kind::RelayProbe,
            0x24 => Kind::RelayProbeReply,
            0x25 => Kind::Relayed,
            0x26 => Kind::RelayPing,
            0x27 => Kind::RelayPong,
            _ => return Err(WireError::UnknownType(b)),
        })
    }
}

/// Length of the authenticated header of a transport record.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Length of the AES-GCM tag that ends a transport record.
pub const TAG_LEN: usize = 16;
/// Bytes a transport record adds around its payload.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Header of a handshake initiation: type, reserved, sender index.
pub const INIT_HEADER_LEN: usize = 8;
/// Header of a handshake response: type, reserved, sender and receiver index.
pub const RESP_HEADER_LEN: usize = 12;

/// Why a datagram was not accepted by a parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram too short ({0} bytes)")]
    Short(usize),
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("reserved bytes not zero")]
    Reserved,
}

/// The header of a transport record; the whole 16 bytes are the AEAD's AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportHeader {
    pub kind: Kind,
    pub receiver: u32,
    pub counter: u64,
}

impl TransportHeader {
    pub fn encode(&self) -> [u8; TRANSPORT_HEADER_LEN] {
        let mut h = [0u8; TRANSPORT_HEADER_LEN];
        h[0] = self.kind as u8;
        h[4..8].copy_from_slice(&self.receiver.to_le_bytes());
        h[8..16].copy_from_slice(&self.counter.to_le_bytes());
        h
    }

    /// Parses the header of a record that must also hold at least a tag.
    pub fn decode(datagram: &[u8]) -> Result<Self, WireError> {
        if datagram.len() < TRANSPORT_OVERHEAD {
            return Err(WireError::Short(datagram.len()));
        }
        if datagram[1..4] != [0, 0, 0] {
            return Err(WireError::Reserved);
        }
        Ok(TransportHeader {
            kind: Kind::try_from(datagram[0])?,
            receiver: u32::from_le_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]),
            counter: u64::from_le_bytes([
                datagram[8],
                datagram[9],
                datagram[10],
                datagram[11],
                datagram[12],
                datagram[13],
                datagram[14],
                datagram[15],
            ]),
        })
    }
}

/// Header of a handshake initiation, followed by the Noise message.
pub fn encode_init_header(kind: Kind, sender: u32) -> [u8; INIT_HEADER_LEN] {
    let mut h = [0u8; INIT_HEADER_LEN];
    h[0] = kind as u8;
    h[4..8].copy_from_slice(&sender.to_le_bytes());
    h
}

/// Returns (sender index, Noise message) of a handshake initiation.
pub fn decode_init(datagram: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if datagram.len() < INIT_HEADER_LEN {
        return Err(WireError::Short(datagram.len()));
    }
    if datagram[1..4] != [0, 0, 0] {
        return Err(WireError::Reserved);
    }
    let sender = u32::from_le_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    Ok((sender, &datagram[INIT_HEADER_LEN..]))
}

/// Header of a handshake response, followed by the Noise message.
pub fn encode_resp_header(kind: Kind, sender: u32, receiver: u32) -> [u8; RESP_HEADER_LEN] {
    let mut h = [0u8; RESP_HEADER_LEN];
    h[0] = kind as u8;
    h[4..8].copy_from_slice(&sender.to_le_bytes());
    h[8..12].copy_from_slice(&receiver.to_le_bytes());
    h
}

/// Returns (sender index, receiver index, Noise message) of a response.
pub fn decode_resp(datagram: &[u8]) -> Result<(u32, u32, &[u8]), WireError> {
    if datagram.len() < RESP_HEADER_LEN {
        return Err(WireError::Short(datagram.len()));
    }
    if datagram[1..4] != [0, 0, 0] {
        return Err(WireError::Reserved);
    }
    let sender = u32::from_le_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    let receiver = u32::from_le_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    Ok((sender, receiver, &datagram[RESP_HEADER_LEN..]))
}

/// A datagram read by its first byte and header, borrowing its bytes: the
/// one place that says which message a datagram is (as boringtun's
/// `parse_incoming_packet`). The cores dispatch on it; each variant's body
/// is checked further by the module that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A handshake initiation (`HandshakeInit`, `DcHandshakeInit`,
    /// `FedHandshakeInit`): the whole datagram, for mac1, mac2 and Noise.
    Init { kind: Kind, bytes: &'a [u8] },
    /// A handshake response: the indexes and the Noise message.
    Resp {
        kind: Kind,
        sender: u32,
        receiver: u32,
        noise: &'a [u8],
    },
    /// A transport record (`Data`, `DcData`, `FedData`): opened in place
    /// by its session, so only the header is lent out.
    Record(TransportHeader),
    /// A cookie reply (`CookieReply`, `DcCookieReply`, `FedCookieReply`).
    CookieReply { kind: Kind, bytes: &'a [u8] },
    /// A node-to-node datagram wrapped by a relay for session `sid`.
    Relayed { sid: u32, inner: &'a [u8] },
    /// A relay control frame (bind, probe, ping and their answers).
    Relay { kind: Kind, bytes: &'a [u8] },
}

/// Reads what `datagram` is. Errors for an unknown type, a short header or
/// reserved bytes that are not zero.
pub fn parse(datagram: &[u8]) -> Result<Datagram<'_>, WireError> {
    let kind = Kind::of(datagram)?;
    Ok(match kind {
        Kind::HandshakeInit | Kind::DcHandshakeInit | Kind::FedHandshakeInit => {
            decode_init(datagram)?;
            Datagram::Init {
                kind,
                bytes: datagram,
            }
        }
        Kind::HandshakeResp | Kind::DcHandshakeResp | Kind::FedHandshakeResp => {
            let (sender, receiver, noise) = decode_resp(datagram)?;
            Datagram::Resp {
                kind,
                sender,
                receiver,
                noise,
            }
        }
        Kind::Data | Kind::DcData | Kind::FedData => {
            Datagram::Record(TransportHeader::decode(datagram)?)
        }
        Kind::CookieReply | Kind::DcCookieReply | Kind::FedCookieReply => Datagram::CookieReply {
            kind,
            bytes: datagram,
        },
        Kind::Relayed => {
            let (sid, inner) = decode_relayed(datagram)?;
            Datagram::Relayed { sid, inner }
        }
        Kind::RelayBind
        | Kind::RelayBindAck
        | Kind::RelayProbe
        | Kind::RelayProbeReply
        | Kind::RelayPing
        | Kind::RelayPong => Datagram::Relay {
            kind,
            bytes: datagram,
        },
    })
}

/// Length of the header a relay puts in front of a node-to-node datagram.
pub const RELAYED_HEADER_LEN: usize = 8;

/// Writes the `Relayed` header for session `sid` into `out[..8]`.
pub fn put_relayed_header(out: &mut [u8], sid: u32) {
    out[..RELAYED_HEADER_LEN].fill(0);
    out[0] = Kind::Relayed as u8;
    out[4..8].copy_from_slice(&sid.to_le_bytes());
}

/// (sid, inner datagram) of a `Relayed` frame; the inner datagram is not
/// empty.
pub fn decode_relayed(b: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if b.len() <= RELAYED_HEADER_LEN {
        return Err(WireError::Short(b.len()));
    }
    if b[1..4] != [0, 0, 0] {
        return Err(WireError::Reserved);
    }
    if !Kind::Relayed.starts(b) {
        return Err(WireError::UnknownType(b[0]));
    }
    let sid = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    Ok((sid, &b[RELAYED_HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn transport_header_roundtrip() {
        let h = TransportHeader {
            kind: Kind::Data,
            receiver: 0xdead_beef,
            counter: 1 << 40,
        };
        let mut d = h.encode().to_vec();
        d.extend_from_slice(&[0u8; TAG_LEN]);
        assert_eq!(TransportHeader::decode(&d), Ok(h));
        assert_eq!(TransportHeader::decode(&d[..20]), Err(WireError::Short(20)));
        d[2] = 1;
        assert_eq!(TransportHeader::decode(&d), Err(WireError::Reserved));
    }

    #[test]
    fn handshake_headers_roundtrip() {
        let mut d = encode_init_header(Kind::HandshakeInit, 7).to_vec();
        d.extend_from_slice(b"noise");
        assert_eq!(decode_init(&d), Ok((7, &b"noise"[..])));
        let mut r = encode_resp_header(Kind::HandshakeResp, 8, 7).to_vec();
        r.extend_from_slice(b"x");
        assert_eq!(decode_resp(&r), Ok((8, 7, &b"x"[..])));
        assert_eq!(Kind::of(&[9]), Err(WireError::UnknownType(9)));
    }

    #[test]
    fn every_kind_roundtrips_and_parse_tells_them_apart() {
        for k in Kind::ALL {
            assert_eq!(Kind::try_from(k as u8), Ok(k));
        }
        let mut relayed = [0u8; 12];
        put_relayed_header(&mut relayed, 9);
        assert_eq!(
            parse(&relayed),
            Ok(Datagram::Relayed {
                sid: 9,
                inner: &[0; 4]
            })
        );
        assert_eq!(parse(&relayed[..8]), Err(WireError::Short(8)));
        let init = encode_init_header(Kind::FedHandshakeInit, 1);
        assert!(matches!(
            parse(&init),
            Ok(Datagram::Init {
                kind: Kind::FedHandshakeInit,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = TransportHeader::decode(&d);
            let _ = decode_init(&d);
            let _ = decode_resp(&d);
            let _ = parse(&d);
        }
    }
}
