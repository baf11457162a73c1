//! Creating the multi-queue TUN device: one queue per worker.

use anyhow::{Context, Result};
use tracing::{info, warn};
use tun_rs::{DeviceBuilder, SyncDevice};

/// MTU of the TUN: the largest packet every IPv4 path carries on a
/// 1500-byte underlay, relayed ones included: 1500 - IPv4 (20) - UDP (8) -
/// relay header (8) - record overhead (32). A 1400-byte UDP datagram (1428
/// bytes as a packet) crosses unfragmented. Paths that carry less (IPv6:
/// 1420, relayed 1412; anything narrower probing finds) get their own
/// figure per peer (`node::pmtu`): bigger packets are answered with ICMP
/// from the TUN side and TCP SYNs are clamped (`dataplane::mtu`).
pub const TUN_MTU: u16 = 1432;

fn build(name: &str, offload: bool) -> std::io::Result<SyncDevice> {
    DeviceBuilder::new()
        .name(name)
        .mtu(TUN_MTU)
        .multi_queue(true)
        .offload(offload)
        .build_sync()
}

/// Creates `name` with `queues` queues (IFF_MULTI_QUEUE), up, no address
/// yet: the address comes from the DC.
///
/// With `offload`, the TUN gets IFF_VNET_HDR and TSO4/6 (+ USO4/6 where the
/// kernel has them, Linux 6.2+): reads return GSO super-packets of up to
/// 64 KiB and writes may be coalesced; every read and write then carries
/// the 10-byte virtio header (`dataplane::gso`). If the kernel refuses,
/// the TUN is created without and the log says so. Returns the queues and
/// whether offload is on.
pub fn create(name: &str, queues: usize, offload: bool) -> Result<(Vec<SyncDevice>, bool)> {
    // TUNSETIFF on a multi-queue TUN of that name would attach us to it as
    // one more queue: a second node would silently share the first one's
    // device. Any existing interface of that name is a mistake to report.
    if crate::net::host::link::exists(name) {
        anyhow::bail!(
            "interface {name:?} (key `tun`) already exists: another node runs here, or another \
             device has that name; expected a free name: stop that node or set `tun` to another name"
        );
    }
    let context = || {
        format!("cannot create TUN interface {name:?} (key `tun`): this needs root or CAP_NET_ADMIN and /dev/net/tun")
    };
    let first = if offload {
        match build(name, true) {
            Ok(dev) => {
                info!(
                    tun = name,
                    tso = dev.tcp_gso(),
                    uso = dev.udp_gso(),
                    "TUN offload on (IFF_VNET_HDR)"
                );
                dev
            }
            Err(e) => {
                warn!(tun = name, error = %e, "TUN offload refused by the kernel; TUN without offload");
                build(name, false).with_context(context)?
            }
        }
    } else {
        info!(tun = name, "TUN offload off (NTMTUN_OFFLOAD=0)");
        build(name, false).with_context(context)?
    };
    let offload = first.tcp_gso();
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
    Ok((all, offload))
}
