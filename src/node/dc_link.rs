//! Sans-IO client side of the node <-> DC channel: registration with
//! backoff while the DC is unreachable, periodic refresh (each refresh is a
//! new Noise handshake, so it also rekeys and updates the reflexive address),
//! and sealing/opening signaling records.

use crate::keys::{PrivateKey, PublicKey};
use crate::proto::link::{Backoff, CookieOutcome, Dialer, IndexAlloc, Response, SessionPair};
use crate::proto::signal::{self, FromDc, Register, RegisterReply, Registered, ToDc};
use crate::proto::wire::Kind;
use crate::proto::wire::{self, TransportHeader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// After a refusal, ask again this often: the operator may fix the DC.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// When an initiation cannot even be built, try again this much later.
const BROKEN_RETRY: Duration = Duration::from_secs(30);

/// Connection state as shown by `ntmtun status` (`dc.state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcState {
    Connecting,
    Registered,
    Refused(String),
}

impl DcState {
    pub fn label(&self) -> &'static str {
        match self {
            DcState::Connecting => "connecting",
            DcState::Registered => "registered",
            DcState::Refused(_) => "refused",
        }
    }
}

/// What happened as a result of a DC handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcEvent {
    Registered(Registered),
    Refused(String),
}

pub struct DcIdentity {
    pub key: PrivateKey,
    pub dc_key: PublicKey,
    pub addrs: Vec<SocketAddr>,
    pub name: String,
    pub auth_key: String,
    /// This process (`Register::incarnation`).
    pub incarnation: u64,
}

pub struct DcLink {
    id: DcIdentity,
    pub state: DcState,
    addr_idx: usize,
    /// The registration handshake (`proto::link`): attempt, cookie, backoff.
    dialer: Dialer,
    /// When the next registration is due while none is in flight (a
    /// refresh, or a retry after a refusal).
    next_attempt: Instant,
    sessions: SessionPair,
    /// Where the DC answered from: where signaling goes.
    dc_addr: Option<SocketAddr>,
    indexes: IndexAlloc,
    pub registered: Option<Registered>,
    registered_at: Option<Instant>,
    /// node.toml `advertise_routes`, sent with every registration.
    pub advertise_routes: Vec<ipnet::Ipv4Net>,
}

impl DcLink {
    /// `index_seed` seeds the random session indexes (from the OS in the
    /// daemon, fixed in tests).
    pub fn new(id: DcIdentity, now: Instant, index_seed: u64) -> Self {
        let dialer = Dialer::new(
            Kind::DcHandshakeInit,
            Kind::DcCookieReply,
            id.dc_key,
            Backoff::COORDINATOR,
        );
        DcLink {
            id,
            state: DcState::Connecting,
            addr_idx: 0,
            dialer,
            next_attempt: now,
            sessions: SessionPair::default(),
            dc_addr: None,
            indexes: IndexAlloc::new(index_seed),
            registered: None,
            registered_at: None,
            advertise_routes: Vec::new(),
        }
    }

    /// The DC address currently in use (for status).
    pub fn address(&self) -> Option<SocketAddr> {
        self.dc_addr
            .filter(|_| self.sessions.newest().is_some())
            .or_else(|| self.id.addrs.get(self.addr_idx).copied())
    }

    /// True while a live session to the DC exists.
    pub fn is_up(&self) -> bool {
        self.sessions.newest().is_some() && self.state == DcState::Registered
    }

    /// Seconds since the last successful registration or refresh.
    pub fn since_registered(&self, now: Instant) -> Option<u64> {
        self.registered_at
            .map(|t| now.saturating_duration_since(t).as_secs())
    }

    /// Refreshes now instead of at the next period: the DC stopped answering
    /// on our session (restarted, say), so prove we are still registered.
    pub fn expedite(&mut self, now: Instant) {
        if !self.dialer.in_flight() && self.next_attempt > now {
            self.next_attempt = now;
        }
    }

    pub fn next_deadline(&self) -> Instant {
        self.dialer.retry_at().unwrap_or(self.next_attempt)
    }

    /// Sends a (re-)registration when it is due. `unix_nanos` feeds the
    /// replay-guard timestamp; it is forced to increase strictly.
    pub fn poll(
        &mut self,
        now: Instant,
        unix_nanos: u64,
        local_endpoints: &[SocketAddr],
    ) -> Option<(SocketAddr, Vec<u8>)> {
        if now < self.next_deadline() {
            return None;
        }
        if self.dialer.in_flight() {
            if self.id.addrs.len() > 1 {
                self.addr_idx = (self.addr_idx + 1) % self.id.addrs.len();
            }
            warn!(
                attempt = self.dialer.attempts(),
                next_dc = ?self.id.addrs.get(self.addr_idx),
                "no answer from the DC; retrying"
            );
            self.dialer.abandon();
        }
        // A registration that stopped refreshing for three periods is gone.
        if let (Some(reg), Some(at)) = (&self.registered, self.registered_at) {
            if self.state == DcState::Registered
                && now.saturating_duration_since(at)
                    > Duration::from_secs(3 * reg.refresh_secs as u64)
            {
                warn!("lost the DC: registration lapsed; existing tunnels keep working");
                self.state = DcState::Connecting;
                self.sessions.clear();
            }
        }
        let to = *self.id.addrs.get(self.addr_idx)?;
        let reg = Register {
            timestamp: self.dialer.timestamp(unix_nanos),
            name: self.id.name.clone(),
            auth_key: self.id.auth_key.clone(),
            local_endpoints: local_endpoints.to_vec(),
            advertise_routes: self.advertise_routes.clone(),
            incarnation: self.id.incarnation,
        };
        let payload = match signal::encode(&reg) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot encode registration");
                self.next_attempt = now + BROKEN_RETRY;
                return None;
            }
        };
        let sessions = &self.sessions;
        let index = self.indexes.next(|i| sessions.owns(i));
        match self.dialer.start(&self.id.key, index, &payload, now) {
            Ok(bytes) => {
                debug!(dc = %to, "registering with the DC");
                Some((to, bytes.to_vec()))
            }
            Err(e) => {
                warn!(error = %e, "cannot start DC handshake");
                self.next_attempt = now + BROKEN_RETRY;
                None
            }
        }
    }

    /// Consumes a Kind::DcCookieReply: the DC is under load. Keeps the cookie
    /// and returns the registration to send again at once, with mac2 (once
    /// per attempt). None for a forged reply or none in flight.
    pub fn handle_cookie_reply(
        &mut self,
        datagram: &[u8],
        now: Instant,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        match self.dialer.on_cookie_reply(datagram, now) {
            CookieOutcome::Resend(bytes) => {
                debug!("the DC is under load: retrying with its cookie");
                Some((*self.id.addrs.get(self.addr_idx)?, bytes))
            }
            CookieOutcome::Kept | CookieOutcome::Ignored => None,
        }
    }

    /// Consumes a Kind::DcHandshakeResp datagram.
    pub fn handle_response(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Option<DcEvent> {
        let (sender, receiver, noise) = wire::decode_resp(datagram).ok()?;
        let (session, payload) = match self.dialer.on_response(sender, receiver, noise) {
            Response::Done(session, payload) => (*session, payload),
            Response::NotOurs => return None,
            Response::Rejected(e) => {
                warn!(%from, error = %e, "DC handshake response rejected (forged, or a wrong dc_public_key?); still waiting for the DC");
                return None;
            }
        };
        let reply: RegisterReply = match signal::decode(&payload) {
            Ok(r) => r,
            Err(e) => {
                warn!(%from, error = %e, "undecodable registration reply");
                self.next_attempt = now + BROKEN_RETRY;
                return None;
            }
        };
        match reply {
            RegisterReply::Accepted(reg) => {
                if self.state != DcState::Registered {
                    info!(vip = %reg.virtual_ip, domain = %reg.domain, reflexive = %reg.reflexive, dc = %from, "registered with the DC");
                }
                self.sessions.install(session, now, true);
                self.dc_addr = Some(from);
                self.state = DcState::Registered;
                self.registered_at = Some(now);
                self.next_attempt = now + Duration::from_secs(reg.refresh_secs.max(1) as u64);
                self.registered = Some(reg.clone());
                Some(DcEvent::Registered(reg))
            }
            RegisterReply::Refused { reason } => {
                warn!(%reason, "the DC refused registration");
                self.state = DcState::Refused(reason.clone());
                self.next_attempt = now + REFUSED_RETRY;
                Some(DcEvent::Refused(reason))
            }
        }
    }

    /// Seals a signaling message for the DC.
    pub fn seal(&self, msg: &ToDc) -> Option<(SocketAddr, Vec<u8>)> {
        let session = self.sessions.sending()?;
        let to = self.dc_addr?;
        let payload = signal::encode(msg).ok()?;
        let bytes = session.seal_to_vec(Kind::DcData, &payload).ok()?;
        Some((to, bytes))
    }

    /// Opens a Kind::DcData record from the DC.
    pub fn open(&self, datagram: &mut [u8]) -> Option<FromDc> {
        let header = TransportHeader::decode(datagram).ok()?;
        let session = self.sessions.find(header.receiver)?;
        let range = session.open(datagram).ok()?;
        signal::decode(&datagram[range]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(addrs: &[&str]) -> DcLink {
        DcLink::new(
            DcIdentity {
                key: PrivateKey::generate(),
                dc_key: PrivateKey::generate().public_key(),
                addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                name: "n".into(),
                auth_key: "t".into(),
                incarnation: 1,
            },
            Instant::now(),
            1,
        )
    }

    /// While the DC never answers, attempts continue forever with doubling
    /// gaps capped at MAX_RETRY, rotating over the configured addresses.
    #[test]
    fn unreachable_dc_backs_off_and_rotates_but_never_gives_up() {
        let mut l = link(&["198.51.100.10:7446", "[2001:db8:100::10]:7446"]);
        let t0 = Instant::now();
        let mut sent = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(300) {
            if let Some((to, _)) = l.poll(now, 1, &[]) {
                sent.push((now - t0, to));
            }
            now += Duration::from_millis(250);
        }
        let gaps: Vec<u64> = sent
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).as_secs())
            .collect();
        assert_eq!(&gaps[..5], &[1, 2, 4, 8, 16], "{gaps:?}");
        assert!(gaps[5..].iter().all(|&g| g == 30), "{gaps:?}");
        assert!(sent.len() > 12, "gave up after {} attempts", sent.len());
        assert_ne!(sent[0].1, sent[1].1, "did not rotate DC addresses");
        assert_eq!(l.state, DcState::Connecting);
    }

    #[test]
    fn timestamps_increase_even_if_the_clock_does_not() {
        let mut l = link(&["198.51.100.10:7446"]);
        let t0 = Instant::now();
        let a = l.poll(t0, 5, &[]).unwrap().1;
        let b = l.poll(t0 + Duration::from_secs(2), 5, &[]).unwrap().1;
        // Same clock, yet a different (later) registration.
        assert_ne!(a, b);
    }
}
