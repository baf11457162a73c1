//! Outer wire format of every UDP datagram ntmtun sends (docs/protocol.md).
//!
//! The first byte is the message type; the next three are zero (room for
//! flags, and 4-byte alignment of what follows, as in WireGuard). Integers are
//! little-endian.

/// Node -> node handshake initiation (Noise IK message 1).
pub const HANDSHAKE_INIT: u8 = 1;
/// Node -> node handshake response (Noise IK message 2).
pub const HANDSHAKE_RESP: u8 = 2;
/// Node <-> node transport record carrying one IP packet (empty = keepalive).
pub const DATA: u8 = 3;
/// Node -> DC handshake initiation; its payload is a registration.
pub const DC_HANDSHAKE_INIT: u8 = 0x11;
/// DC -> node handshake response; its payload is the registration result.
pub const DC_HANDSHAKE_RESP: u8 = 0x12;
/// Node <-> DC transport record carrying one signaling message.
pub const DC_DATA: u8 = 0x13;
/// DC -> DC handshake initiation (federation); its payload is a `FedHello`.
/// A distinct type: it is part of the Noise prologue, so a node handshake
/// cannot pass for a DC one.
pub const FED_HANDSHAKE_INIT: u8 = 0x14;
/// DC -> DC handshake response; its payload is a `FedReply`.
pub const FED_HANDSHAKE_RESP: u8 = 0x15;
/// DC <-> DC transport record carrying one `DcToDc` message.
pub const FED_DATA: u8 = 0x16;

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
    pub kind: u8,
    pub receiver: u32,
    pub counter: u64,
}

impl TransportHeader {
    pub fn encode(&self) -> [u8; TRANSPORT_HEADER_LEN] {
        let mut h = [0u8; TRANSPORT_HEADER_LEN];
        h[0] = self.kind;
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
            kind: datagram[0],
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
pub fn encode_init_header(kind: u8, sender: u32) -> [u8; INIT_HEADER_LEN] {
    let mut h = [0u8; INIT_HEADER_LEN];
    h[0] = kind;
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
pub fn encode_resp_header(kind: u8, sender: u32, receiver: u32) -> [u8; RESP_HEADER_LEN] {
    let mut h = [0u8; RESP_HEADER_LEN];
    h[0] = kind;
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

/// The message type of a datagram, if it is one we know.
pub fn kind(datagram: &[u8]) -> Result<u8, WireError> {
    match datagram.first() {
        None => Err(WireError::Short(0)),
        Some(&k)
            if matches!(
                k,
                HANDSHAKE_INIT
                    | HANDSHAKE_RESP
                    | DATA
                    | DC_HANDSHAKE_INIT
                    | DC_HANDSHAKE_RESP
                    | DC_DATA
                    | FED_HANDSHAKE_INIT
                    | FED_HANDSHAKE_RESP
                    | FED_DATA
            ) =>
        {
            Ok(k)
        }
        Some(&k) => Err(WireError::UnknownType(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn transport_header_roundtrip() {
        let h = TransportHeader {
            kind: DATA,
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
        let mut d = encode_init_header(HANDSHAKE_INIT, 7).to_vec();
        d.extend_from_slice(b"noise");
        assert_eq!(decode_init(&d), Ok((7, &b"noise"[..])));
        let mut r = encode_resp_header(HANDSHAKE_RESP, 8, 7).to_vec();
        r.extend_from_slice(b"x");
        assert_eq!(decode_resp(&r), Ok((8, 7, &b"x"[..])));
        assert_eq!(kind(&[9]), Err(WireError::UnknownType(9)));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = TransportHeader::decode(&d);
            let _ = decode_init(&d);
            let _ = decode_resp(&d);
            let _ = kind(&d);
        }
    }
}
