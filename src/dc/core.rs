//! Sans-IO DC logic: datagrams and times in, datagrams out.

use super::store::{EnrollError, NodeRecord, Store};
use crate::keys::{PrivateKey, PublicKey};
use crate::proto::handshake::Responder;
use crate::proto::session::Session;
use crate::proto::signal::{
    self, FromDc, Path, PeerInfo, Register, RegisterReply, Registered, Resolution, Target, ToDc,
};
use crate::proto::wire::{self, TransportHeader};
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How often nodes are told to refresh (re-handshake) their registration.
pub const REFRESH_SECS: u32 = 20;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct DcSettings {
    pub key: PrivateKey,
    pub domain: String,
    pub prefix: Ipv4Net,
    pub auth_keys: Vec<String>,
    pub expiry: Duration,
}

/// A node that is currently registered.
struct Online {
    record: NodeRecord,
    session: Session,
    /// The session replaced by the latest refresh, kept so records the node
    /// sealed before it saw our response still open.
    previous: Option<Session>,
    reflexive: SocketAddr,
    local_endpoints: Vec<SocketAddr>,
    last_seen: Instant,
}

/// Counters for logs and status.
#[derive(Debug, Default, Clone, Copy)]
pub struct DcStats {
    pub registrations: u64,
    pub refused: u64,
    pub resolves: u64,
    pub directions: u64,
    pub dropped: u64,
}

pub struct DcCore {
    settings: DcSettings,
    store: Store,
    online: HashMap<PublicKey, Online>,
    /// Our session index -> node key, for current and previous sessions.
    by_index: HashMap<u32, PublicKey>,
    /// Highest registration timestamp seen per key (replay guard).
    last_timestamp: HashMap<PublicKey, u64>,
    next_index: u32,
    pub stats: DcStats,
}

/// Compares two byte strings in time that depends only on their lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A node name is one DNS label: 1-63 of [a-z0-9-], no leading/trailing '-'.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl DcCore {
    pub fn new(settings: DcSettings, store: Store, index_seed: u32) -> Self {
        DcCore {
            settings,
            store,
            online: HashMap::new(),
            by_index: HashMap::new(),
            last_timestamp: HashMap::new(),
            next_index: index_seed,
            stats: DcStats::default(),
        }
    }

    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    fn alloc_index(&mut self) -> u32 {
        loop {
            self.next_index = self.next_index.wrapping_add(0x9e37_79b9);
            if self.next_index != 0 && !self.by_index.contains_key(&self.next_index) {
                return self.next_index;
            }
        }
    }

    /// Handles one datagram from `from`; `unix_now` is wall-clock seconds.
    pub fn handle(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        match wire::kind(datagram) {
            Ok(wire::DC_HANDSHAKE_INIT) => self.handle_register(from, datagram, now, unix_now),
            Ok(wire::DC_DATA) => self.handle_data(from, datagram, now),
            Ok(k) => {
                debug!(%from, kind = k, "dropping message not meant for the DC");
                self.stats.dropped += 1;
                Vec::new()
            }
            Err(e) => {
                debug!(%from, error = %e, "dropping malformed datagram");
                self.stats.dropped += 1;
                Vec::new()
            }
        }
    }

    fn handle_register(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        let responder = match Responder::read(&self.settings.key, datagram) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, error = %e, "handshake initiation rejected");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        let key = responder.remote_key;
        let reg: Register = match signal::decode(&responder.payload) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, node = %key.short(), error = %e, "bad registration payload");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        if self
            .last_timestamp
            .get(&key)
            .is_some_and(|&t| reg.timestamp <= t)
        {
            debug!(%from, node = %key.short(), "replayed or stale registration ignored");
            self.stats.dropped += 1;
            return Vec::new();
        }
        self.last_timestamp.insert(key, reg.timestamp);

        let reply = match self.admit(&key, &reg, unix_now) {
            Ok(record) => RegisterReply::Accepted(Registered {
                virtual_ip: record.virtual_ip,
                prefix_len: self.settings.prefix.prefix_len(),
                domain: self.settings.domain.clone(),
                reflexive: from,
                refresh_secs: REFRESH_SECS,
            }),
            Err(reason) => {
                warn!(%from, node = %key.short(), name = %reg.name, %reason, "registration refused");
                self.stats.refused += 1;
                RegisterReply::Refused { reason }
            }
        };
        let payload = match signal::encode(&reply) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot encode registration reply");
                return Vec::new();
            }
        };
        let index = self.alloc_index();
        let (session, bytes) = match responder.reply(wire::DC_HANDSHAKE_RESP, index, &payload) {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot build handshake response");
                return Vec::new();
            }
        };
        if let RegisterReply::Accepted(reg_ok) = reply {
            self.stats.registrations += 1;
            let record = match self.store.by_key(&key) {
                Ok(Some(r)) => r,
                _ => return vec![Transmit { to: from, bytes }],
            };
            let previous = match self.online.remove(&key) {
                Some(old) => {
                    if let Some(p) = &old.previous {
                        self.by_index.remove(&p.local_index);
                    }
                    if old.reflexive != from {
                        info!(name = %record.name, old = %old.reflexive, new = %from, "node moved");
                    }
                    Some(old.session)
                }
                None => {
                    info!(name = %record.name, vip = %reg_ok.virtual_ip, %from, "node registered");
                    None
                }
            };
            self.by_index.insert(index, key);
            self.online.insert(
                key,
                Online {
                    record,
                    session,
                    previous,
                    reflexive: from,
                    local_endpoints: reg.local_endpoints.into_iter().take(8).collect(),
                    last_seen: now,
                },
            );
        }
        vec![Transmit { to: from, bytes }]
    }

    /// Enrols or re-admits a node; Err carries a reason for the node's log.
    fn admit(
        &mut self,
        key: &PublicKey,
        reg: &Register,
        unix_now: u64,
    ) -> Result<NodeRecord, String> {
        if !valid_name(&reg.name) {
            return Err(format!(
                "name {:?} is not a valid node name: use 1-63 lowercase letters, digits or '-'",
                reg.name
            ));
        }
        let known = self
            .store
            .by_key(key)
            .map_err(|e| format!("DC store error: {e}"))?
            .is_some();
        // Once enrolled, the static key is the identity; the auth key is
        // only needed to join.
        if !known
            && !self
                .settings
                .auth_keys
                .iter()
                .any(|k| ct_eq(k.as_bytes(), reg.auth_key.as_bytes()))
        {
            return Err("auth key not accepted by the DC: check auth_key in node.toml against auth_keys in dc.toml".into());
        }
        self.store
            .enroll(key, &reg.name, self.settings.prefix, unix_now)
            .map_err(|e| match e {
                EnrollError::NameTaken { name, .. } => format!(
                    "name {name:?} is already held by another node's key in domain {}: choose another name",
                    self.settings.domain
                ),
                other => other.to_string(),
            })
    }

    fn handle_data(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
    ) -> Vec<Transmit> {
        let Ok(header) = TransportHeader::decode(datagram) else {
            self.stats.dropped += 1;
            return Vec::new();
        };
        let Some(key) = self.by_index.get(&header.receiver).copied() else {
            debug!(%from, index = header.receiver, "record for unknown DC session");
            self.stats.dropped += 1;
            return Vec::new();
        };
        let Some(node) = self.online.get_mut(&key) else {
            self.stats.dropped += 1;
            return Vec::new();
        };
        let session = if node.session.local_index == header.receiver {
            &node.session
        } else {
            match &node.previous {
                Some(p) => p,
                None => return Vec::new(),
            }
        };
        let range = match session.open(datagram) {
            Ok(r) => r,
            Err(e) => {
                debug!(%from, error = %e, "DC record rejected");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        node.last_seen = now;
        let msg: ToDc = match signal::decode(&datagram[range]) {
            Ok(m) => m,
            Err(e) => {
                debug!(%from, error = %e, "undecodable signaling message");
                self.stats.dropped += 1;
                return Vec::new();
            }
        };
        match msg {
            ToDc::Resolve { id, target, direct } => self.resolve(key, id, target, direct),
        }
    }

    fn peer_info(&self, node: &Online) -> PeerInfo {
        let mut endpoints = vec![node.reflexive];
        for e in &node.local_endpoints {
            if !endpoints.contains(e) {
                endpoints.push(*e);
            }
        }
        PeerInfo {
            name: node.record.name.clone(),
            virtual_ip: node.record.virtual_ip,
            public_key: node.record.public_key.0,
            endpoints,
            path: Path::Direct,
        }
    }

    fn resolve(
        &mut self,
        asker: PublicKey,
        id: u64,
        target: Target,
        direct: bool,
    ) -> Vec<Transmit> {
        self.stats.resolves += 1;
        let found = match &target {
            Target::Name(n) => self.store.by_name(&n.to_ascii_lowercase()),
            Target::Address(ip) => self.store.by_ip(*ip),
        };
        let result = match found {
            Ok(None) => Resolution::NotFound,
            Err(e) => {
                warn!(error = %e, "DC store lookup failed");
                Resolution::Offline
            }
            Ok(Some(rec)) => match self.online.get(&rec.public_key) {
                None => Resolution::Offline,
                Some(peer) => Resolution::Found(self.peer_info(peer)),
            },
        };
        let mut out = Vec::new();
        if let (true, Resolution::Found(info)) = (direct, &result) {
            let peer_key = PublicKey(info.public_key);
            if peer_key != asker {
                if let (Some(a), Some(b)) = (self.online.get(&asker), self.online.get(&peer_key)) {
                    self.stats.directions += 1;
                    info!(from = %a.record.name, to = %b.record.name, "directing pair: direct path");
                    let msg = FromDc::Direction(self.peer_info(a));
                    out.extend(self.send(&peer_key, &msg));
                }
            }
        }
        debug!(node = %asker.short(), ?target, "resolve answered");
        out.extend(self.send(&asker, &FromDc::Resolved { id, result }));
        out
    }

    fn send(&self, to: &PublicKey, msg: &FromDc) -> Option<Transmit> {
        let node = self.online.get(to)?;
        let payload = signal::encode(msg).ok()?;
        let bytes = node.session.seal_to_vec(wire::DC_DATA, &payload).ok()?;
        Some(Transmit {
            to: node.reflexive,
            bytes,
        })
    }

    /// Expires nodes that stopped refreshing; their addresses stay reserved
    /// in the store.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expiry = self.settings.expiry;
        let expired: Vec<PublicKey> = self
            .online
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.last_seen) > expiry)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(node) = self.online.remove(&key) {
                info!(name = %node.record.name, vip = %node.record.virtual_ip, "node expired (no refresh)");
                self.by_index.remove(&node.session.local_index);
                if let Some(p) = node.previous {
                    self.by_index.remove(&p.local_index);
                }
            }
        }
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.online
            .values()
            .map(|n| n.last_seen + self.settings.expiry)
            .min()
    }
}
