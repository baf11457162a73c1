//! Lookups across domains (docs/protocol.md, "DC federation"): a node asks
//! its DC about `bob.y.ntm.internal`; the DC asks Y's DC over the
//! federation channel, which directs the pair as it would a local one; the
//! asking DC adds its relay grants and answers its node. The asking DC's
//! relay carries the pair, so that DC also directs the pair again when the
//! relay dies (a fresh lookup, answered to its node as a direction).

use super::core::{directed, DcCore, Transmit};
use super::direction::{self, View};
use crate::keys::PublicKey;
use crate::proto::name::{self, Domain, Label, NodeName};
use crate::proto::signal::{DcToDc, FromDc, PeerInfo, RemoteNode, Resolution, Target};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// A lookup unanswered by the other DC after this long is answered
/// `Offline` (the node asks again, as for a local lookup).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// A lookup sent to another DC on behalf of one of our nodes.
pub struct FedPending {
    asker: PublicKey,
    /// The node's own request id; `None` for a pair this DC directs again
    /// (the node gets a direction, not an answer).
    asker_id: Option<u64>,
    peer: usize,
    direct: bool,
    pub(super) deadline: Instant,
}

/// A relayed pair across domains, as the DC that granted the relay keeps
/// it: enough to look the remote node up again.
#[derive(Debug, Clone, Copy)]
pub struct FedPair {
    /// Our node.
    local: PublicKey,
    /// The federated DC of the other node, and that node's address.
    peer: usize,
    remote_vip: Ipv4Addr,
}

impl DcCore {
    /// The federated DC that owns `target`, if another domain does: a name
    /// `label.domain` of a federated domain, or an address in its prefix.
    pub(super) fn remote_owner(&self, target: &Target) -> Option<usize> {
        match target {
            Target::Name(n) => self.fed.peer_for_domain(target_name(n)?.domain()?.as_str()),
            Target::Address(ip) if !self.settings.prefix.contains(ip) => {
                self.fed.peer_for_address(*ip)
            }
            Target::Address(_) => None,
        }
    }

    /// A name of our own domain (bare or qualified, any case) is its label,
    /// as the store holds it; anything else stays as it is and is found
    /// nowhere.
    pub(super) fn local_target(&self, target: Target) -> Target {
        match target {
            Target::Name(n) => match target_name(&n) {
                Some(name) if name.is_in(&self.settings.domain) => {
                    Target::Name(name.label().to_string())
                }
                _ => Target::Name(n),
            },
            t => t,
        }
    }

    /// Sends `asker`'s lookup to federated DC `peer`.
    pub(super) fn resolve_remote(
        &mut self,
        asker: PublicKey,
        id: u64,
        target: Target,
        direct: bool,
        peer: usize,
        now: Instant,
    ) -> Vec<Transmit> {
        match self.ask_remote(asker, Some(id), target, direct, peer, now) {
            Some(t) => vec![t],
            None => self
                .send(
                    &asker,
                    &FromDc::Resolved {
                        id,
                        result: Resolution::Offline,
                    },
                )
                .into_iter()
                .collect(),
        }
    }

    /// The relay of a pair across domains died: look the remote node up
    /// again for our node, so both get a new direction with a new grant.
    pub(super) fn redirect_remote(&mut self, pair: FedPair, now: Instant) -> Option<Transmit> {
        info!(node = %pair.local.short(), remote = %pair.remote_vip, domain = self.fed.domain(pair.peer), "relay of a pair across domains died: directing it again");
        let target = Target::Address(pair.remote_vip);
        self.ask_remote(pair.local, None, target, true, pair.peer, now)
    }

    /// Sends a lookup to federated DC `peer` for our node `asker` and
    /// remembers it; `None` if the node or that DC is not reachable.
    fn ask_remote(
        &mut self,
        asker: PublicKey,
        asker_id: Option<u64>,
        target: Target,
        direct: bool,
        peer: usize,
        now: Instant,
    ) -> Option<Transmit> {
        let (Some(node), true) = (self.online.get(&asker), self.fed.is_up(peer)) else {
            debug!(node = %asker.short(), domain = self.fed.domain(peer), "federated DC not reachable");
            return None;
        };
        // The other DC is asked for the bare label (`DcToDc::Lookup`).
        let target = match target {
            Target::Name(n) => match target_name(&n) {
                Some(name) => Target::Name(name.label().to_string()),
                None => Target::Name(n),
            },
            t => t,
        };
        let asker_info = RemoteNode {
            name: format!("{}.{}", node.record.name, self.settings.domain),
            virtual_ip: node.record.virtual_ip,
            public_key: asker.0,
            reflexive: node.reflexive,
            locals: node.local_endpoints.clone(),
            relay_saw: node.relay_saw,
        };
        let fed_id = self.next_fed_id;
        self.next_fed_id += 1;
        let msg = DcToDc::Lookup {
            id: fed_id,
            target,
            direct,
            asker: asker_info,
        };
        let t = self.fed.send(peer, &msg, now)?;
        // Bounded: one entry per node request or moved pair, and they
        // expire.
        self.fed_pending.insert(
            fed_id,
            FedPending {
                asker,
                asker_id,
                peer,
                direct,
                deadline: now + LOOKUP_TIMEOUT,
            },
        );
        Some(t)
    }

    /// Lookups the other DC did not answer in time: `Offline` to the node.
    /// Follows a `[[federation]]` reload (`renumber`: old peer number ->
    /// new, `None` for a removed domain): lookups sent to a removed DC are
    /// answered `Offline` now, and its relayed pairs are no longer directed
    /// again by this DC (their relay session runs out with its ticket).
    pub(super) fn renumber_fed_peers(&mut self, renumber: &[Option<usize>]) -> Vec<Transmit> {
        let mut out = Vec::new();
        let mut removed = Vec::new();
        for (id, p) in self.fed_pending.iter_mut() {
            match renumber.get(p.peer).copied().flatten() {
                Some(i) => p.peer = i,
                None => removed.push(*id),
            }
        }
        for id in removed {
            let Some(p) = self.fed_pending.remove(&id) else {
                continue;
            };
            if let Some(asker_id) = p.asker_id {
                out.extend(self.send(
                    &p.asker,
                    &FromDc::Resolved {
                        id: asker_id,
                        result: Resolution::Offline,
                    },
                ));
            }
        }
        self.pairs.retain(|_, pair| match &mut pair.remote {
            Some(remote) => match renumber.get(remote.peer).copied().flatten() {
                Some(i) => {
                    remote.peer = i;
                    true
                }
                None => false,
            },
            None => true,
        });
        out
    }

    pub(super) fn expire_fed_lookups(&mut self, now: Instant) -> Vec<Transmit> {
        let late: Vec<u64> = self
            .fed_pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in late {
            if let Some((p, asker_id)) = self
                .fed_pending
                .remove(&id)
                .and_then(|p| Some((p.asker, p.asker_id?)))
            {
                out.extend(self.send(
                    &p,
                    &FromDc::Resolved {
                        id: asker_id,
                        result: Resolution::Offline,
                    },
                ));
            }
        }
        out
    }

    pub(super) fn on_fed_message(
        &mut self,
        peer: usize,
        msg: DcToDc,
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        match msg {
            DcToDc::Keepalive => Vec::new(),
            DcToDc::Lookup {
                id,
                target,
                direct,
                asker,
            } => self.answer_lookup(peer, id, target, direct, asker, now),
            DcToDc::Answer {
                id,
                result,
                for_peer,
                peer_v4,
            } => self.on_answer(
                peer,
                id,
                result,
                for_peer.map(|f| (f, peer_v4)),
                now,
                unix_now,
            ),
            DcToDc::Direction { node, info } => {
                if !self.belongs_to(peer, &info) {
                    warn!(domain = self.fed.domain(peer), name = %info.name, vip = %info.virtual_ip, "federated DC sent a direction outside its domain or prefix: dropped");
                    return Vec::new();
                }
                self.send(&PublicKey(node), &FromDc::Direction(info))
                    .into_iter()
                    .collect()
            }
        }
    }

    /// Whether `info` describes a node of federated DC `peer`'s domain.
    fn belongs_to(&self, peer: usize, info: &PeerInfo) -> bool {
        let (Some(domain), Some(prefix)) = (self.fed.domain(peer), self.fed.prefix(peer)) else {
            return false;
        };
        prefix.contains(&info.virtual_ip)
            && NodeName::parse(&info.name)
                .is_ok_and(|n| n.domain().is_some_and(|d| d.as_str() == domain))
    }

    /// Another DC asks about one of our nodes for one of its own.
    fn answer_lookup(
        &mut self,
        peer: usize,
        id: u64,
        target: Target,
        direct: bool,
        asker: RemoteNode,
        now: Instant,
    ) -> Vec<Transmit> {
        self.stats.resolves += 1;
        let about_asker = PeerInfo {
            name: asker.name.clone(),
            virtual_ip: asker.virtual_ip,
            public_key: asker.public_key,
            endpoints: Vec::new(),
            path: crate::proto::signal::Path::Direct,
            initiate: false,
            relay: None,
            incarnation: 0,
        };
        let reply = |dc: &mut DcCore, result, for_peer, peer_v4| {
            let msg = DcToDc::Answer {
                id,
                result,
                for_peer,
                peer_v4,
            };
            dc.fed.send(peer, &msg, now).into_iter().collect::<Vec<_>>()
        };
        if !self.belongs_to(peer, &about_asker) {
            warn!(domain = self.fed.domain(peer), name = %asker.name, vip = %asker.virtual_ip, "federated DC asked for a node outside its domain or prefix: refused");
            return reply(self, Resolution::NotFound, None, false);
        }
        let found = match self.local_target(target) {
            Target::Name(n) => self.store.by_name(&n),
            Target::Address(ip) => self.store.by_ip(ip),
        };
        let key = match found {
            Ok(Some(rec)) => rec.public_key,
            Ok(None) => return reply(self, Resolution::NotFound, None, false),
            Err(e) => {
                warn!(error = %e, "DC store lookup failed");
                return reply(self, Resolution::Offline, None, false);
            }
        };
        let Some(node) = self.online.get(&key) else {
            return reply(self, Resolution::Offline, None, false);
        };
        let about_node = Self::lookup_info(node);
        if !direct {
            return reply(self, Resolution::Found(about_node), None, false);
        }
        let asker_view = View {
            reflexive: asker.reflexive,
            nat: direction::classify(asker.reflexive, &asker.locals, asker.relay_saw),
            locals: asker.locals,
        };
        let d = direction::decide(&asker_view, &node.view());
        let peer_v4 = node.reflexive.is_ipv4();
        let (for_asker, for_node) = directed(&d, about_node, about_asker);
        info!(a = %asker.name, b = %for_asker.name, path = ?d.path, "directing a federated pair");
        self.stats.directions += 1;
        let mut out: Vec<Transmit> = self
            .send(&key, &FromDc::Direction(for_node.clone()))
            .into_iter()
            .collect();
        out.extend(reply(
            self,
            Resolution::Found(for_asker),
            Some(for_node),
            peer_v4,
        ));
        out
    }

    /// Another DC answers one of our lookups: add our relay grants, pass the
    /// pair's grant back for its node, answer ours.
    fn on_answer(
        &mut self,
        peer: usize,
        id: u64,
        result: Resolution,
        for_peer: Option<(PeerInfo, bool)>,
        now: Instant,
        unix_now: u64,
    ) -> Vec<Transmit> {
        let Some(p) = self.fed_pending.remove(&id).filter(|p| p.peer == peer) else {
            return Vec::new();
        };
        let domain = self.fed.domain(peer).unwrap_or_default().to_string();
        let mut out = Vec::new();
        let result = match result {
            Resolution::Found(mut info) => {
                // The other DC names its node by its bare label; ours see it
                // qualified with that DC's domain.
                if let (Ok(label), Ok(d)) = (Label::parse(&info.name), Domain::parse(&domain)) {
                    info.name = NodeName::qualified(label, d).to_string();
                }
                if !self.belongs_to(peer, &info) {
                    warn!(%domain, name = %info.name, vip = %info.virtual_ip, "federated DC answered with a name outside its domain or an address outside its prefix: dropped");
                    Resolution::NotFound
                } else {
                    let asker_v4 = self.online.get(&p.asker).map(|n| n.reflexive.is_ipv4());
                    if let (true, Some((mut for_peer, peer_v4)), Some(asker_v4)) =
                        (p.direct, for_peer, asker_v4)
                    {
                        let remote = PublicKey(info.public_key);
                        if let Some((grant_a, grant_b)) =
                            self.grants(p.asker, remote, asker_v4, peer_v4, unix_now)
                        {
                            let key = if p.asker < remote {
                                (p.asker, remote)
                            } else {
                                (remote, p.asker)
                            };
                            if let Some(pair) = self.pairs.get_mut(&key) {
                                pair.remote = Some(FedPair {
                                    local: p.asker,
                                    peer,
                                    remote_vip: info.virtual_ip,
                                });
                            }
                            info.relay = Some(grant_a);
                            for_peer.relay = Some(grant_b);
                            let msg = DcToDc::Direction {
                                node: info.public_key,
                                info: for_peer,
                            };
                            out.extend(self.fed.send(peer, &msg, now));
                        }
                    }
                    Resolution::Found(info)
                }
            }
            other => other,
        };
        let msg = match (p.asker_id, result) {
            (Some(id), result) => FromDc::Resolved { id, result },
            (None, Resolution::Found(info)) => FromDc::Direction(info),
            (None, other) => {
                debug!(node = %p.asker.short(), result = ?other, "pair across domains not directed again");
                return out;
            }
        };
        out.extend(self.send(&p.asker, &msg));
        out
    }
}

/// The node name a `Target::Name` holds, folded (names are
/// case-insensitive); `None` if it is not one.
fn target_name(text: &str) -> Option<NodeName> {
    NodeName::parse(&name::fold(text)).ok()
}
