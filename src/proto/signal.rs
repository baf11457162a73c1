//! Signaling messages carried inside encrypted node <-> DC records and in
//! handshake payloads. Encoded with postcard (compact, serde-derived, and
//! robust against arbitrary input: decoding returns an error, never panics).

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};

/// Largest signaling message we decode; bounds allocation on hostile input.
pub const MAX_SIGNAL: usize = 1200;

/// Payload of a node's handshake initiation to the DC: join or refresh.
/// Each refresh is a new handshake, which also rekeys the channel and shows
/// the DC the node's current reflexive address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Strictly increasing per node (unix nanoseconds); a replayed or
    /// reordered initiation carries an old value and is ignored.
    pub timestamp: u64,
    pub name: String,
    pub auth_key: String,
    /// Addresses the node's data socket is bound on (for peers on the same
    /// network or behind the same NAT).
    pub local_endpoints: Vec<SocketAddr>,
}

/// Payload of the DC's handshake response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterReply {
    Accepted(Registered),
    Refused { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub virtual_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub domain: String,
    /// The node's address as the DC saw it.
    pub reflexive: SocketAddr,
    /// Refresh (re-handshake) at least this often, or be expired.
    pub refresh_secs: u32,
}

/// What a node asks about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    Name(String),
    Address(Ipv4Addr),
}

/// Node -> DC, inside a DC_DATA record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToDc {
    /// Look up a node; with `direct`, also direct both nodes at each other
    /// (the DNS query or first packet that triggers a tunnel).
    Resolve {
        id: u64,
        target: Target,
        direct: bool,
    },
}

/// DC -> node, inside a DC_DATA record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromDc {
    Resolved {
        id: u64,
        result: Resolution,
    },
    /// Sent to the other node of a pair: accept handshakes from this peer.
    Direction(PeerInfo),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    Found(PeerInfo),
    /// No node of that name or address in the domain.
    NotFound,
    /// Known, but not currently registered.
    Offline,
}

/// Everything a node needs to reach a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub virtual_ip: Ipv4Addr,
    pub public_key: [u8; 32],
    /// Candidate endpoints, best first (reflexive, then local addresses).
    pub endpoints: Vec<SocketAddr>,
    /// Route decision for this pair (issue: route direction grows here).
    pub path: Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Path {
    Direct,
}

/// Payload of a node -> node handshake initiation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    /// Strictly increasing per initiator (unix nanoseconds): replay guard.
    pub timestamp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("signaling message too large ({0} bytes)")]
    TooLarge(usize),
    #[error("undecodable signaling message: {0}")]
    Decode(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, SignalError> {
    let v = postcard::to_stdvec(msg)?;
    if v.len() > MAX_SIGNAL {
        return Err(SignalError::TooLarge(v.len()));
    }
    Ok(v)
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, SignalError> {
    if bytes.len() > MAX_SIGNAL {
        return Err(SignalError::TooLarge(bytes.len()));
    }
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrips() {
        let r = Register {
            timestamp: 42,
            name: "alice".into(),
            auth_key: "tok".into(),
            local_endpoints: vec!["198.51.100.11:4000".parse().unwrap()],
        };
        assert_eq!(decode::<Register>(&encode(&r).unwrap()).unwrap(), r);
        let m = FromDc::Resolved {
            id: 7,
            result: Resolution::Found(PeerInfo {
                name: "bob".into(),
                virtual_ip: Ipv4Addr::new(198, 18, 0, 2),
                public_key: [9; 32],
                endpoints: vec!["[2001:db8::1]:5".parse().unwrap()],
                path: Path::Direct,
            }),
        };
        assert_eq!(decode::<FromDc>(&encode(&m).unwrap()).unwrap(), m);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(d in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode::<Register>(&d);
            let _ = decode::<RegisterReply>(&d);
            let _ = decode::<ToDc>(&d);
            let _ = decode::<FromDc>(&d);
            let _ = decode::<PeerHello>(&d);
        }
    }
}
