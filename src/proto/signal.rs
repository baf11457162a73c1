//! Signaling messages carried inside encrypted node <-> DC records and in
//! handshake payloads. Encoded with postcard (compact, serde-derived, and
//! robust against arbitrary input: decoding returns an error, never panics).

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};

/// Largest signaling message we decode; bounds allocation on hostile input.
pub const MAX_SIGNAL: usize = 1200;

/// Most prefixes one node may advertise (`Register::advertise_routes`), and
/// most grants a DC holds in all: a registration reply lists every granted
/// route of the domain and must fit one message of `MAX_SIGNAL` bytes
/// (checked by the test `registered_at_the_route_limits_fits`).
pub const MAX_ADVERTISED_ROUTES: usize = 16;
pub const MAX_ROUTE_GRANTS: usize = 48;

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
    /// LAN prefixes the node offers to route for (node.toml
    /// `advertise_routes`); the DC grants or refuses each.
    pub advertise_routes: Vec<Ipv4Net>,
    /// The node process's start time (unix nanoseconds): a new value tells
    /// the DC the node restarted and its peers' sessions with it are gone;
    /// a larger one is a later process.
    pub incarnation: u64,
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
    /// Relay addresses to probe: the address a relay sees, compared with
    /// `reflexive`, tells the DC whether our NAT maps per destination.
    pub relays: Vec<SocketAddr>,
    /// Every subnet route granted in the domain right now (ours included),
    /// so a gateway can route a packet for a LAN behind another gateway
    /// without asking first. Pushed again as `FromDc::Routes` on change.
    pub routes: Vec<GrantedRoute>,
    /// Our advertised prefixes the DC refused, and why. Pushed again as
    /// `FromDc::RefusedRoutes` when a reload of the grants changes it.
    pub refused_routes: Vec<RefusedRoute>,
}

/// A LAN prefix and the virtual IP of the gateway node it was granted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantedRoute {
    pub prefix: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// An advertised prefix the DC did not grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRoute {
    pub prefix: Ipv4Net,
    pub reason: RouteRefusal,
}

/// Why a prefix was refused (an enum, not text: `Registered` must stay
/// within `MAX_SIGNAL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteRefusal {
    /// No `[[route_grants]]` entry of this node covers it.
    NotGranted,
    /// It overlaps a prefix granted to another node (the DC's log names it).
    GrantedToAnother,
}

impl std::fmt::Display for RouteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteRefusal::NotGranted => {
                f.write_str("no [[route_grants]] entry for this node in the DC's dc.toml covers it")
            }
            RouteRefusal::GrantedToAnother => {
                f.write_str("it overlaps a prefix the DC granted to another node")
            }
        }
    }
}

/// What a node asks about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    Name(String),
    Address(Ipv4Addr),
}

/// Node -> DC, inside a `DcData` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToDc {
    /// Look up a node; with `direct`, also direct both nodes at each other
    /// (the DNS query or first packet that triggers a tunnel).
    Resolve {
        id: u64,
        target: Target,
        direct: bool,
    },
    /// A relay saw our data socket as `seen_as` (second NAT observer).
    Observed {
        relay: SocketAddr,
        seen_as: SocketAddr,
    },
}

/// DC -> node, inside a `DcData` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromDc {
    Resolved {
        id: u64,
        result: Resolution,
    },
    /// Sent to the other node of a pair: accept handshakes from this peer.
    Direction(PeerInfo),
    /// The domain's granted subnet routes changed (a gateway came, went or
    /// changed its advertisement): the complete new list.
    Routes(Vec<GrantedRoute>),
    /// The other domains this DC federates with (sent after each accepted
    /// registration): names under them are asked of this DC, and their
    /// virtual prefixes are routed into the TUN.
    Federation(Vec<FederatedDomain>),
    /// Sent to a gateway whose own grants changed between registrations
    /// (a `[[route_grants]]` reload): its advertised prefixes the DC
    /// refuses now, the complete list (possibly empty), replacing
    /// `Registered.refused_routes`. The rest are granted and appear in
    /// `Routes`. Added last, so nodes of an earlier build drop it as
    /// undecodable and learn the same at their next refresh.
    RefusedRoutes(Vec<RefusedRoute>),
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
    /// Direct candidate endpoints, best first. Also probed while relayed,
    /// so the pair upgrades to direct when a path opens.
    pub endpoints: Vec<SocketAddr>,
    /// The DC's route decision for this pair.
    pub path: Path,
    /// Whether the receiver of this message starts the handshake (both do
    /// when punching holes).
    pub initiate: bool,
    /// Permission to use a relay: the path itself for `Path::Relay`, the
    /// fallback otherwise.
    pub relay: Option<RelayGrant>,
    /// The peer's process, as it registered (`Register::incarnation`; 0:
    /// unknown). A change means the peer restarted: sessions with it are
    /// gone at its end.
    pub incarnation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Path {
    /// One side is reachable (or both share a NAT): talk directly.
    Direct,
    /// Both behind endpoint-independent NATs: both send at once.
    Punch,
    /// No direct path can work (per-destination NAT, IPv4 vs IPv6).
    Relay,
}

/// One side's share of a relay session (docs/protocol.md, "Relay").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayGrant {
    /// The relay address of our address family.
    pub address: SocketAddr,
    pub sid: u32,
    pub side: u8,
    /// Our side's secret: proves the bind is ours.
    pub secret: [u8; 32],
    /// Sealed for the relay; opaque to nodes.
    pub ticket: Vec<u8>,
    pub expires_unix: u64,
}

/// Payload of a node -> node handshake initiation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    /// Strictly increasing per initiator (unix nanoseconds): replay guard.
    pub timestamp: u64,
    /// The initiator's process (`Register::incarnation`).
    pub incarnation: u64,
}

/// Payload of a node -> node handshake response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReply {
    /// The responder's process (`Register::incarnation`).
    pub incarnation: u64,
}

/// A domain a DC federates with, as told to its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedDomain {
    pub domain: String,
    pub prefix: Ipv4Net,
}

/// Payload of a DC -> DC handshake initiation (federation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FedHello {
    /// Strictly increasing per DC (unix nanoseconds): replay guard.
    pub timestamp: u64,
    pub domain: String,
    pub prefix: Ipv4Net,
}

/// Payload of a DC -> DC handshake response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FedReply {
    Accepted { domain: String, prefix: Ipv4Net },
    Refused { reason: String },
}

/// A node of the asking DC, as that DC sees it: enough for the answering
/// DC to direct the pair as it would a local one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteNode {
    /// Qualified (`alice.x.ntm.internal`).
    pub name: String,
    pub virtual_ip: Ipv4Addr,
    pub public_key: [u8; 32],
    pub reflexive: SocketAddr,
    pub locals: Vec<SocketAddr>,
    /// How a relay saw the node's data socket (NAT classification).
    pub relay_saw: Option<SocketAddr>,
}

/// DC <-> DC, inside a Kind::FedData record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DcToDc {
    /// Keeps the session (and NAT state on the path) alive.
    Keepalive,
    /// Look up a node of the receiver's domain on behalf of `asker`;
    /// `Target::Name` holds the bare label.
    Lookup {
        id: u64,
        target: Target,
        direct: bool,
        asker: RemoteNode,
    },
    /// The answer to `Lookup` `id`. With `direct`, `for_peer` is what the
    /// answering DC told its node about the asker, and `peer_v4` the
    /// family of that node's reflexive address (for relay grants).
    Answer {
        id: u64,
        result: Resolution,
        for_peer: Option<PeerInfo>,
        peer_v4: bool,
    },
    /// Pass `info` (about a node of the sender's domain) to the receiver's
    /// node `node`: the pair's direction with the sender's relay grant.
    Direction { node: [u8; 32], info: PeerInfo },
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
            incarnation: 9,
            advertise_routes: vec!["192.0.2.128/27".parse().unwrap()],
        };
        assert_eq!(decode::<Register>(&encode(&r).unwrap()).unwrap(), r);
        let m = FromDc::Resolved {
            id: 7,
            result: Resolution::Found(PeerInfo {
                name: "bob".into(),
                virtual_ip: Ipv4Addr::new(198, 18, 0, 2),
                public_key: [9; 32],
                endpoints: vec!["[2001:db8::1]:5".parse().unwrap()],
                path: Path::Relay,
                initiate: true,
                relay: Some(RelayGrant {
                    address: "198.51.100.20:7447".parse().unwrap(),
                    sid: 5,
                    side: 1,
                    secret: [3; 32],
                    ticket: vec![1; crate::proto::ticket::TICKET_LEN],
                    expires_unix: 99,
                }),
                incarnation: 3,
            }),
        };
        assert_eq!(decode::<FromDc>(&encode(&m).unwrap()).unwrap(), m);
        let routes = FromDc::Routes(vec![GrantedRoute {
            prefix: "192.0.2.160/27".parse().unwrap(),
            gateway: Ipv4Addr::new(198, 18, 0, 7),
        }]);
        assert_eq!(decode::<FromDc>(&encode(&routes).unwrap()).unwrap(), routes);
        let refused = FromDc::RefusedRoutes(vec![RefusedRoute {
            prefix: "192.0.2.192/27".parse().unwrap(),
            reason: RouteRefusal::GrantedToAnother,
        }]);
        let bytes = encode(&refused).unwrap();
        // The variant index is its position: 4, after `Federation`.
        assert_eq!(bytes, [4, 1, 192, 0, 2, 192, 27, 1]);
        assert_eq!(decode::<FromDc>(&bytes).unwrap(), refused);
    }

    /// The DC caps grants at `MAX_ROUTE_GRANTS` and nodes advertise at most
    /// `MAX_ADVERTISED_ROUTES`: a registration reply at both limits, with
    /// long refusals and many relays, must still encode.
    #[test]
    fn registered_at_the_route_limits_fits() {
        let reply = RegisterReply::Accepted(Registered {
            virtual_ip: Ipv4Addr::new(198, 19, 255, 254),
            prefix_len: 15,
            domain: "a".repeat(60),
            reflexive: "[2001:db8:ffff::ffff]:65535".parse().unwrap(),
            refresh_secs: 20,
            relays: vec!["[2001:db8:ffff::ffff]:65535".parse().unwrap(); 8],
            routes: (0..MAX_ROUTE_GRANTS as u32)
                .map(|i| GrantedRoute {
                    prefix: Ipv4Net::new(Ipv4Addr::from(0xc000_0200 + (i << 24)), 32).unwrap(),
                    gateway: Ipv4Addr::new(198, 19, 255, 254),
                })
                .collect(),
            refused_routes: (0..MAX_ADVERTISED_ROUTES)
                .map(|_| RefusedRoute {
                    prefix: "203.0.113.0/24".parse().unwrap(),
                    reason: RouteRefusal::GrantedToAnother,
                })
                .collect(),
        });
        let len = encode(&reply).expect("fits in MAX_SIGNAL").len();
        assert!(len <= MAX_SIGNAL, "{len}");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(d in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode::<Register>(&d);
            let _ = decode::<RegisterReply>(&d);
            let _ = decode::<ToDc>(&d);
            let _ = decode::<FromDc>(&d);
            let _ = decode::<PeerHello>(&d);
            let _ = decode::<FedHello>(&d);
            let _ = decode::<FedReply>(&d);
            let _ = decode::<DcToDc>(&d);
        }
    }
}
