//! The node's name side: DNS queries captured from the TUN (answered after
//! asking the DC, or forwarded unchanged to the real resolver), packets for
//! virtual addresses with no tunnel yet, and questions to the DC.

use super::core::{
    Forward, NodeCore, PendingResolve, DNS_WAIT, FORWARD_LIMIT, FORWARD_TIMEOUT, ORPHAN_LIMIT,
};
use super::counters::bump;
use super::dns::{DnsAction, DnsInterceptor, Resolution as DnsResolution, ResolveTarget};
use super::output::Output;
use super::peer::DnsWaiter;
use crate::net::packet;
use crate::proto::name::{self, NodeName};
use crate::proto::signal::{FederatedDomain, Target, ToDc};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{debug, warn};

impl NodeCore {
    /// A packet from the TUN that the workers handed over: a DNS query to a
    /// captured resolver, or a packet for a virtual IP (or a LAN behind a
    /// gateway) with no tunnel yet.
    pub fn handle_tun(&mut self, pkt: Vec<u8>, now: Instant) {
        if let Some((src, dst, payload)) = packet::parse_udp(&pkt) {
            if dst.port() == 53 && self.dns.is_some() && self.is_resolver(&dst.ip()) {
                let (client, resolver, query) = (src, dst, payload.to_vec());
                self.handle_dns(client, resolver, &query, now);
                return;
            }
        }
        let Some(IpAddr::V4(dst)) = packet::destination(&pkt) else {
            return;
        };
        // A LAN address behind a gateway goes to that gateway's virtual IP:
        // the same tunnel set-up as for a virtual IP without a tunnel.
        let federated = self.federated.iter().any(|f| f.prefix.contains(&dst));
        let dst = if federated || self.prefix.is_some_and(|p| p.contains(&dst)) {
            dst
        } else {
            match self.routes.gateway(dst) {
                Some(gateway) => gateway,
                None => return,
            }
        };
        if let Some(key) = self.by_vip.get(&dst).copied() {
            self.with_peer(key, now, |p, env| p.send_or_queue(pkt, env));
            return;
        }
        // Unknown address (the app cached DNS): ask the DC, hold the packet.
        if self.orphans.len() >= ORPHAN_LIMIT && !self.orphans.contains_key(&dst) {
            bump(&self.counters.orphan_full);
            return;
        }
        let q = self.orphans.entry(dst).or_default();
        if q.len() >= super::peer::QUEUE_LIMIT {
            q.pop_front();
            bump(&self.counters.orphan_full);
        }
        q.push_back(pkt);
        self.resolve(Target::Address(dst), true, None, now);
    }

    pub(super) fn is_resolver(&self, ip: &IpAddr) -> bool {
        self.dns_addresses().contains(ip)
    }

    pub(super) fn handle_dns(
        &mut self,
        client: SocketAddr,
        resolver: SocketAddr,
        query: &[u8],
        now: Instant,
    ) {
        let Some(dns) = &self.dns else { return };
        // Our domain's interceptor first, then the federated domains'; the
        // one that does not forward is the zone of the name.
        let mut action = dns.classify(query);
        let mut zone = dns;
        for fed in &self.fed_dns {
            if !matches!(action, DnsAction::Forward) {
                break;
            }
            action = fed.classify(query);
            zone = fed;
        }
        match action {
            DnsAction::Forward => self.forward_dns(client, resolver, query, now),
            DnsAction::Reply(bytes) => {
                self.counters.dns_answered.fetch_add(1, Ordering::Relaxed);
                self.write_dns(client, resolver, &bytes);
            }
            DnsAction::Resolve { pending, target } => {
                let waiter = DnsWaiter {
                    pending,
                    client,
                    resolver,
                    deadline: now + DNS_WAIT,
                };
                let (target, direct) = match target {
                    ResolveTarget::Name(label) => {
                        let name = NodeName::qualified(label, zone.zone().clone());
                        (Target::Name(self.dc_name(name)), true)
                    }
                    ResolveTarget::Address(a) => (Target::Address(a), false),
                };
                self.answer_or_resolve(target, direct, waiter, now);
            }
        }
    }

    /// How this node asks its DC about `name` and names the peer, for a DNS
    /// question and `ntmtun ping` alike: bare in our own domain, qualified
    /// (`label.domain`) in a federated one.
    fn dc_name(&self, name: NodeName) -> String {
        match &self.dc.registered {
            Some(reg) => name.relative_to(&reg.domain),
            None => name,
        }
        .to_string()
    }

    /// The peer name (as [`NodeCore::dc_name`] gives it) for a name typed
    /// for `ntmtun ping`: bare (our own domain) or qualified with our
    /// domain or a federated one, in any case.
    pub(super) fn ping_name(&self, text: &str) -> Result<String, String> {
        let name = NodeName::parse(&name::fold(text))
            .map_err(|e| format!("{text:?} is not a node name: {e}"))?;
        if let Some(domain) = name.domain() {
            let own = self.dc.registered.as_ref().map(|r| r.domain.as_str());
            let federated = || {
                self.federated
                    .iter()
                    .any(|f| f.domain.eq_ignore_ascii_case(domain.as_str()))
            };
            if own != Some(domain.as_str()) && !federated() {
                let others: Vec<&str> = self.federated.iter().map(|f| f.domain.as_str()).collect();
                return Err(format!(
                    "{name} is not in this node's domain ({}) or a domain federated with it ({})",
                    own.unwrap_or("unknown until the DC registers this node"),
                    if others.is_empty() {
                        "none".to_string()
                    } else {
                        others.join(", ")
                    }
                ));
            }
        }
        Ok(self.dc_name(name))
    }

    /// Answers from what we know when we can; otherwise asks the DC.
    pub(super) fn answer_or_resolve(
        &mut self,
        target: Target,
        direct: bool,
        waiter: DnsWaiter,
        now: Instant,
    ) {
        if let Some(reg) = &self.dc.registered {
            let own = match &target {
                Target::Name(n) => *n == self.s.name,
                Target::Address(a) => *a == reg.virtual_ip,
            };
            if own {
                let ans = DnsResolution::Found {
                    name: self.s.name.clone(),
                    virtual_ip: reg.virtual_ip,
                };
                self.reply_dns(&waiter, &ans);
                return;
            }
        }
        let known = self.peers.values().find(|p| match &target {
            Target::Name(n) => p.name() == n,
            Target::Address(a) => p.virtual_ip() == *a,
        });
        if let Some(key) = known.map(|p| p.key()) {
            self.with_peer(key, now, |p, env| p.answer_dns(waiter, direct, env));
            return;
        }
        if !self.dc.is_up() {
            // Fail fast and clearly rather than hang the application.
            debug!(?target, "DC unreachable: SERVFAIL");
            self.reply_dns(&waiter, &DnsResolution::Failed);
            return;
        }
        self.resolve(target, direct, Some(waiter), now);
    }

    /// Asks the DC about `target`, joining a question already in flight.
    pub(super) fn resolve(
        &mut self,
        target: Target,
        direct: bool,
        waiter: Option<DnsWaiter>,
        now: Instant,
    ) {
        if let Some(p) = self
            .resolves
            .values_mut()
            .find(|p| p.target == target && p.direct == direct)
        {
            p.dns.extend(waiter);
            return;
        }
        let id = self.next_resolve;
        self.next_resolve += 1;
        self.resolves.insert(
            id,
            PendingResolve {
                target,
                direct,
                sent: now,
                attempts: 0,
                dns: waiter.into_iter().collect(),
            },
        );
        self.send_resolve(id, now);
    }

    pub(super) fn send_resolve(&mut self, id: u64, now: Instant) {
        let Some(p) = self.resolves.get_mut(&id) else {
            return;
        };
        p.sent = now;
        p.attempts += 1;
        let msg = ToDc::Resolve {
            id,
            target: p.target.clone(),
            direct: p.direct,
        };
        if let Some((to, bytes)) = self.dc.seal(&msg) {
            self.sink.out.push_back(Output::Udp { to, bytes });
        }
    }

    pub(super) fn reply_dns(&mut self, w: &DnsWaiter, res: &DnsResolution) {
        let Some(dns) = &self.dns else { return };
        let bytes = match self.fed_dns.iter().find(|d| d.covers(&w.pending)) {
            // Federated peers are named `label.domain`; the zone's
            // interceptor wants the label.
            Some(fed) => {
                let res = match res {
                    DnsResolution::Found { name, virtual_ip } => DnsResolution::Found {
                        name: match NodeName::parse(name) {
                            Ok(n) if n.is_in(fed.domain()) => n.label().to_string(),
                            _ => name.clone(),
                        },
                        virtual_ip: *virtual_ip,
                    },
                    other => other.clone(),
                };
                fed.answer(&w.pending, &res)
            }
            None => dns.answer(&w.pending, res),
        };
        let counter = match res {
            DnsResolution::Failed => &self.counters.dns_failed,
            _ => &self.counters.dns_answered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.write_dns(w.client, w.resolver, &bytes);
    }

    /// The DC told us the domains it federates with: intercept their names
    /// and route their prefixes into the TUN.
    pub(super) fn set_federation(&mut self, domains: Vec<FederatedDomain>) {
        let own = self.prefix;
        let domains: Vec<FederatedDomain> = domains
            .into_iter()
            .filter(|f| {
                let clash = own.is_some_and(|p| crate::dc::federation::overlaps(p, f.prefix));
                if clash {
                    warn!(domain = %f.domain, prefix = %f.prefix, "federated prefix overlaps ours: ignored");
                }
                !clash
            })
            .collect();
        if domains == self.federated {
            return;
        }
        self.fed_dns = if self.s.resolvers.is_empty() {
            Vec::new()
        } else {
            domains
                .iter()
                .filter_map(|f| match DnsInterceptor::new(&f.domain, f.prefix, super::core::DNS_TTL) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        warn!(domain = %f.domain, error = %e, "cannot intercept DNS for this federated domain");
                        None
                    }
                })
                .collect()
        };
        tracing::info!(domains = ?domains.iter().map(|f| f.domain.as_str()).collect::<Vec<_>>(), "federated domains");
        self.sink.out.push_back(Output::FederatedRoutes(
            domains.iter().map(|f| f.prefix).collect(),
        ));
        self.federated = domains;
        self.sink.table_dirty = true;
        self.announce_stub_domains();
    }

    /// Writes a DNS reply into the TUN as if the resolver had sent it.
    pub(super) fn write_dns(&mut self, client: SocketAddr, resolver: SocketAddr, payload: &[u8]) {
        let mut pkt = Vec::with_capacity(payload.len() + 28);
        packet::build_udp(resolver, client, payload, &mut pkt);
        self.sink.out.push_back(Output::Tun(pkt));
    }

    pub(super) fn forward_dns(
        &mut self,
        client: SocketAddr,
        resolver: SocketAddr,
        query: &[u8],
        now: Instant,
    ) {
        if query.len() < 2 {
            return;
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        // A captured query goes where it was headed; the stub forwards to
        // the first configured resolver not on loopback. On a host with
        // systemd-resolved the default (from resolv.conf) is its 127.0.0.53,
        // which sent the query (only names of the zones routed to the stub
        // reach it) and drops it when it comes back: the client would wait
        // out its timeout.
        let to = if self.dns_stub {
            self.s
                .resolvers
                .iter()
                .find(|ip| !ip.is_loopback())
                .map(|&ip| SocketAddr::new(ip, 53))
        } else {
            Some(resolver)
        };
        let to = match to {
            Some(to)
                if self.forwards.len() < FORWARD_LIMIT || self.forwards.contains_key(&(to, id)) =>
            {
                to
            }
            _ => {
                if to.is_some() {
                    debug!("too many DNS queries in flight; answering SERVFAIL");
                    bump(&self.counters.dns_forward_full);
                } else {
                    warn!(
                        "stub mode has no resolver to forward to (loopback ones send the query \
                         back to the stub): set [dns] resolvers to the upstream servers; \
                         answering SERVFAIL"
                    );
                }
                self.counters.dns_failed.fetch_add(1, Ordering::Relaxed);
                if let Some(bytes) = super::dns::servfail_for(query) {
                    self.write_dns(client, resolver, &bytes);
                }
                return;
            }
        };
        self.counters.dns_forwarded.fetch_add(1, Ordering::Relaxed);
        self.forwards.insert(
            (to, id),
            Forward {
                client,
                resolver,
                deadline: now + FORWARD_TIMEOUT,
            },
        );
        self.sink.out.push_back(Output::Upstream {
            to,
            bytes: query.to_vec(),
        });
    }

    /// An answer from a real resolver: back to the application, unchanged.
    pub fn handle_upstream(&mut self, from: SocketAddr, answer: &[u8]) {
        if answer.len() < 2 {
            return;
        }
        let id = u16::from_be_bytes([answer[0], answer[1]]);
        if let Some(f) = self.forwards.remove(&(from, id)) {
            self.write_dns(f.client, f.resolver, answer);
        }
    }
}
