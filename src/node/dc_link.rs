//! Sans-IO client side of the node <-> DC channel: registration with
//! backoff while the DC is unreachable, periodic refresh (each refresh is a
//! new Noise handshake, so it also rekeys and updates the reflexive address),
//! and sealing/opening signaling records.

use crate::keys::{PrivateKey, PublicKey};
use crate::proto::cookie::{self, Cookie};
use crate::proto::handshake::Initiator;
use crate::proto::session::Session;
use crate::proto::signal::{self, FromDc, Register, RegisterReply, Registered, ToDc};
use crate::proto::wire::{self, TransportHeader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// After a refusal, ask again this often: the operator may fix the DC.
const REFUSED_RETRY: Duration = Duration::from_secs(60);

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
}

pub struct DcLink {
    id: DcIdentity,
    pub state: DcState,
    addr_idx: usize,
    failures: u32,
    next_attempt: Instant,
    /// The registration handshake in flight, and the datagram we sent.
    attempt: Option<Initiator>,
    attempt_message: Vec<u8>,
    /// The DC's last cookie (it was under load), when it came, and whether
    /// the attempt in flight was already resent with it.
    cookie: Option<(Cookie, Instant)>,
    cookie_retried: bool,
    session: Option<(Session, SocketAddr)>,
    previous: Option<Session>,
    pub registered: Option<Registered>,
    registered_at: Option<Instant>,
    last_timestamp: u64,
    index_seed: u32,
    /// node.toml `advertise_routes`, sent with every registration.
    pub advertise_routes: Vec<ipnet::Ipv4Net>,
}

impl DcLink {
    pub fn new(id: DcIdentity, now: Instant, index_seed: u32) -> Self {
        DcLink {
            id,
            state: DcState::Connecting,
            addr_idx: 0,
            failures: 0,
            next_attempt: now,
            attempt: None,
            attempt_message: Vec::new(),
            cookie: None,
            cookie_retried: false,
            session: None,
            previous: None,
            registered: None,
            registered_at: None,
            last_timestamp: 0,
            index_seed,
            advertise_routes: Vec::new(),
        }
    }

    /// The DC address currently in use (for status).
    pub fn address(&self) -> Option<SocketAddr> {
        self.session
            .as_ref()
            .map(|(_, a)| *a)
            .or_else(|| self.id.addrs.get(self.addr_idx).copied())
    }

    /// True while a live session to the DC exists.
    pub fn is_up(&self) -> bool {
        self.session.is_some() && self.state == DcState::Registered
    }

    /// Seconds since the last successful registration or refresh.
    pub fn since_registered(&self, now: Instant) -> Option<u64> {
        self.registered_at
            .map(|t| now.saturating_duration_since(t).as_secs())
    }

    pub fn owns_index(&self, index: u32) -> bool {
        self.attempt
            .as_ref()
            .is_some_and(|a| a.local_index == index)
            || self
                .session
                .as_ref()
                .is_some_and(|(s, _)| s.local_index == index)
            || self
                .previous
                .as_ref()
                .is_some_and(|s| s.local_index == index)
    }

    /// Refreshes now instead of at the next period: the DC stopped answering
    /// on our session (restarted, say), so prove we are still registered.
    pub fn expedite(&mut self, now: Instant) {
        if self.attempt.is_none() && self.next_attempt > now {
            self.next_attempt = now;
        }
    }

    pub fn next_deadline(&self) -> Instant {
        self.next_attempt
    }

    /// Sends a (re-)registration when it is due. `unix_nanos` feeds the
    /// replay-guard timestamp; it is forced to increase strictly.
    pub fn poll(
        &mut self,
        now: Instant,
        unix_nanos: u64,
        local_endpoints: &[SocketAddr],
    ) -> Option<(SocketAddr, Vec<u8>)> {
        if now < self.next_attempt {
            return None;
        }
        if self.attempt.is_some() {
            self.failures += 1;
            if self.id.addrs.len() > 1 {
                self.addr_idx = (self.addr_idx + 1) % self.id.addrs.len();
            }
            warn!(
                attempt = self.failures,
                next_dc = ?self.id.addrs.get(self.addr_idx),
                "no answer from the DC; retrying"
            );
            self.attempt = None;
        }
        // A registration that stopped refreshing for three periods is gone.
        if let (Some(reg), Some(at)) = (&self.registered, self.registered_at) {
            if self.state == DcState::Registered
                && now.saturating_duration_since(at)
                    > Duration::from_secs(3 * reg.refresh_secs as u64)
            {
                warn!("lost the DC: registration lapsed; existing tunnels keep working");
                self.state = DcState::Connecting;
                self.session = None;
                self.previous = None;
            }
        }
        let to = *self.id.addrs.get(self.addr_idx)?;
        self.last_timestamp = unix_nanos.max(self.last_timestamp + 1);
        let reg = Register {
            timestamp: self.last_timestamp,
            name: self.id.name.clone(),
            auth_key: self.id.auth_key.clone(),
            local_endpoints: local_endpoints.to_vec(),
            advertise_routes: self.advertise_routes.clone(),
        };
        let payload = match signal::encode(&reg) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot encode registration");
                self.next_attempt = now + MAX_RETRY;
                return None;
            }
        };
        self.index_seed = self.index_seed.wrapping_add(0x9e37_79b9) | 1;
        match Initiator::start(
            wire::DC_HANDSHAKE_INIT,
            &self.id.key,
            &self.id.dc_key,
            self.index_seed,
            &payload,
        ) {
            Ok((initiator, mut bytes)) => {
                self.cookie = self
                    .cookie
                    .filter(|(_, at)| now.saturating_duration_since(*at) < cookie::COOKIE_USE);
                if let Some((c, _)) = &self.cookie {
                    cookie::set_mac2(&mut bytes, c);
                }
                self.attempt = Some(initiator);
                self.attempt_message = bytes.clone();
                self.cookie_retried = false;
                let backoff = FIRST_RETRY * 2u32.saturating_pow(self.failures.min(5));
                self.next_attempt = now + backoff.min(MAX_RETRY);
                debug!(dc = %to, "registering with the DC");
                Some((to, bytes))
            }
            Err(e) => {
                warn!(error = %e, "cannot start DC handshake");
                self.next_attempt = now + MAX_RETRY;
                None
            }
        }
    }

    /// Consumes a DC_COOKIE_REPLY: the DC is under load. Keeps the cookie
    /// and returns the registration to send again at once, with mac2 (once
    /// per attempt). None for a forged reply or none in flight.
    pub fn handle_cookie_reply(
        &mut self,
        datagram: &[u8],
        now: Instant,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let attempt = self.attempt.as_ref()?;
        let c = cookie::open_reply(
            cookie::DC_COOKIE_REPLY,
            &self.id.dc_key,
            &self.attempt_message,
            datagram,
        )?;
        debug!(
            index = attempt.local_index,
            "the DC is under load: retrying with its cookie"
        );
        self.cookie = Some((c, now));
        if std::mem::replace(&mut self.cookie_retried, true) {
            return None;
        }
        cookie::set_mac2(&mut self.attempt_message, &c);
        let to = *self.id.addrs.get(self.addr_idx)?;
        Some((to, self.attempt_message.clone()))
    }

    /// Consumes a DC_HANDSHAKE_RESP datagram.
    pub fn handle_response(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Option<DcEvent> {
        let (sender, receiver, noise) = wire::decode_resp(datagram).ok()?;
        let attempt = self.attempt.take_if(|a| a.local_index == receiver)?;
        let (session, payload) = match attempt.finish(sender, noise) {
            Ok(x) => x,
            Err(e) => {
                warn!(%from, error = %e, "DC handshake response rejected (wrong dc_public_key?)");
                return None;
            }
        };
        let reply: RegisterReply = match signal::decode(&payload) {
            Ok(r) => r,
            Err(e) => {
                warn!(%from, error = %e, "undecodable registration reply");
                return None;
            }
        };
        self.failures = 0;
        match reply {
            RegisterReply::Accepted(reg) => {
                if self.state != DcState::Registered {
                    info!(vip = %reg.virtual_ip, domain = %reg.domain, reflexive = %reg.reflexive, dc = %from, "registered with the DC");
                }
                self.previous = self.session.take().map(|(s, _)| s);
                self.session = Some((session, from));
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
        let (session, to) = self.session.as_ref()?;
        let payload = signal::encode(msg).ok()?;
        let bytes = session.seal_to_vec(wire::DC_DATA, &payload).ok()?;
        Some((*to, bytes))
    }

    /// Opens a DC_DATA record from the DC.
    pub fn open(&self, datagram: &mut [u8]) -> Option<FromDc> {
        let header = TransportHeader::decode(datagram).ok()?;
        let session = [
            self.session.as_ref().map(|(s, _)| s),
            self.previous.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find(|s| s.local_index == header.receiver)?;
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
        assert_ne!(a, b);
        assert_eq!(l.last_timestamp, 6);
    }
}
