//! Control messages inside the tunnel (`proto::control`): pings, path
//! probes, path-MTU probes, the fallback notice and the re-probe request.

use super::{Env, Peer};
use crate::dataplane::table::Endpoint;
use crate::node::output::Output;
use crate::proto::control::Control;
use crate::proto::wire::Kind;
use std::time::Duration;
use tracing::info;

/// Pings older than this are forgotten unanswered.
const PING_MEMORY: Duration = Duration::from_secs(10);

impl Peer {
    /// Pings the peer over the endpoint in use (the answer comes back as
    /// `Output::Pong` with this id); before the tunnel is up, the ping
    /// waits for it.
    pub fn ping(&mut self, id: u64, env: &mut Env) {
        let (Some(s), Some(ep)) = (self.sessions.sending(), self.endpoint) else {
            self.pending_pings.push(id);
            return;
        };
        let now = env.now;
        self.pings
            .retain(|(_, t)| now.saturating_duration_since(*t) < PING_MEMORY);
        self.pings.push((id, now));
        self.stats.record_tx(0, now);
        if let Ok(bytes) = s.seal_to_vec(Kind::Data, &Control::Ping(id).to_vec()) {
            env.send(ep, &bytes);
        }
    }

    /// Answers a control message with `reply` where the message came from.
    fn answer(&self, to: Endpoint, reply: Control, env: &mut Env) {
        let Some(s) = self.sessions.sending() else {
            return;
        };
        if let Ok(bytes) = s.seal_to_vec(Kind::Data, &reply.to_vec()) {
            env.send(to, &bytes);
        }
    }

    /// A control message that arrived on our session `index` from `from`.
    pub fn on_control(&mut self, index: u32, from: Endpoint, msg: Control, env: &mut Env) {
        self.confirm(index, env);
        match msg {
            // Acknowledge where it came from: the probe tested that path.
            Control::MtuProbe { id, size } => self.answer(from, Control::MtuAck { id, size }, env),
            Control::MtuAck { id, size } => {
                // Only acks over the path being probed count.
                if self.endpoint == Some(from) && self.pmtu.on_ack(id, size) {
                    info!(peer = %self.name, mtu = self.pmtu.mtu(), endpoint = %from, "path MTU");
                    env.dirty();
                }
            }
            // Answer where it came from; do not move: the probe proves
            // only the peer-to-us direction.
            Control::Probe(id) => self.answer(from, Control::ProbeAck(id), env),
            Control::Fallback(_) => {
                if self.endpoint != Some(from) {
                    info!(peer = %self.name, relay = %from, "peer lost the direct path; following it to the relay");
                    self.fall_back(from, env);
                }
            }
            Control::Reprobe(_) => {
                if matches!(self.endpoint, Some(Endpoint::Direct(_))) {
                    let id = env.ping_id();
                    self.ping(id, env);
                }
            }
            Control::ProbeAck(_) => {
                let before = self.endpoint;
                self.on_endpoint_seen(index, from, env);
                if self.endpoint != before {
                    info!(peer = %self.name, endpoint = %from, "a better path works both ways: moving to it");
                    // Tell the peer now, not with our next data.
                    self.keepalive(env);
                }
            }
            Control::Ping(id) => {
                self.on_endpoint_seen(index, from, env);
                let (Some(s), Some(ep)) = (self.sessions.sending(), self.endpoint) else {
                    return;
                };
                // A re-probe waits for a pong, and our ping may have gone
                // out before the peer's packet reopened its NAT: ask again.
                let reprobing = self.reprobe_unanswered().is_some();
                self.stats.record_tx(0, env.now);
                if let Ok(bytes) = s.seal_to_vec(Kind::Data, &Control::Pong(id).to_vec()) {
                    env.send(ep, &bytes);
                }
                if reprobing {
                    let id = env.ping_id();
                    self.ping(id, env);
                }
            }
            Control::Pong(id) => {
                self.on_endpoint_seen(index, from, env);
                let Some(i) = self.pings.iter().position(|(pid, _)| *pid == id) else {
                    return;
                };
                self.pong_at = Some(env.now);
                let (_, sent) = self.pings.swap_remove(i);
                let rtt = env.now.saturating_duration_since(sent);
                self.rtt = Some(rtt);
                env.emit(Output::Pong {
                    id,
                    rtt,
                    path: self.path_label(),
                    endpoint: self.endpoint.map(|e| e.to_string()).unwrap_or_default(),
                });
            }
        }
    }
}
