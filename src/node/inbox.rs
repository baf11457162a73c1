//! The control thread's inbox: one bounded channel that the workers, the
//! node's IO threads and the control socket all send into. What the workers
//! send is the data plane's `Punt`, wrapped as one variant.

use crate::dataplane::Punt;
use crate::reload::NodeChange;
use crate::status::{PingReport, StatusReport};
use crossbeam_channel::Sender;
use std::net::SocketAddr;

pub enum Inbox {
    /// What a worker does not handle itself (`dataplane::Punt`).
    Punt(Punt),
    /// The host's addresses or routes changed; these are our endpoints now.
    NetworkChanged(Vec<SocketAddr>),
    /// An answer from a real DNS resolver.
    Upstream {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Settings reloaded on SIGHUP.
    Reload(Vec<NodeChange>),
    /// `ntmtun status` asks; the report goes back on the channel.
    Status(Sender<StatusReport>),
    /// `ntmtun ping NAME`: the answer goes back on the channel.
    Ping {
        name: String,
        reply: Sender<PingReport>,
    },
    Shutdown,
}

impl From<Punt> for Inbox {
    fn from(punt: Punt) -> Inbox {
        Inbox::Punt(punt)
    }
}
