//! Creating the multi-queue TUN device: one queue per worker.

use anyhow::{Context, Result};
use tun_rs::{DeviceBuilder, SyncDevice};

/// MTU of the TUN: a 1500-byte underlay minus IPv6 (40) + UDP (8) + our
/// record overhead (32), the same figure WireGuard uses.
pub const TUN_MTU: u16 = 1420;

/// Creates `name` with `queues` queues (IFF_MULTI_QUEUE), up, no address
/// yet: the address comes from the DC.
pub fn create(name: &str, queues: usize) -> Result<Vec<SyncDevice>> {
    let first = DeviceBuilder::new()
        .name(name)
        .mtu(TUN_MTU)
        .multi_queue(true)
        .build_sync()
        .with_context(|| {
            format!("cannot create TUN interface {name:?} (key `tun`): this needs root or CAP_NET_ADMIN and /dev/net/tun")
        })?;
    first
        .set_nonblocking(true)
        .context("setting the TUN non-blocking")?;
    let mut all = Vec::with_capacity(queues);
    for i in 1..queues {
        let q = first
            .try_clone()
            .with_context(|| format!("opening TUN queue {i} of {name}"))?;
        q.set_nonblocking(true)
            .context("setting the TUN non-blocking")?;
        all.push(q);
    }
    all.insert(0, first);
    Ok(all)
}
