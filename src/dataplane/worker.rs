//! One data-plane worker: a TUN queue and a UDP socket, pinned to a core,
//! moving packets run-to-completion through one of two IO shells (`io`):
//! poll(2) + recvmmsg/sendmmsg (`epoll`) or io_uring (`uring`). Both share
//! the per-packet processing of `path`, the TUN offloads of `vnet` and the
//! UDP batches of `net::batch`:
//!
//! Outbound: TUN reads (super-packets split into segments when the TUN has
//! offload) land in preallocated slots with room in front for the relay
//! and record headers; each is sealed in place and the batch leaves as one
//! message per run of records to one destination (UDP GSO trains).
//! Inbound: datagrams (UDP GRO trains split back into records) are opened
//! in place, and the IPv4 payloads written to the TUN in one coalescing
//! batch (`gro`). The per-packet path reuses preallocated buffers; only
//! packets bound for the control thread are copied.

use super::io::Shell;
use super::path::{Path, Sent, PAYLOAD_AT};
use super::table::PeerTable;
use super::vnet::{TunReader, TunWriter};
use super::{epoll, uring, Punt};
use crate::net::batch::{self, UdpTx};
use crate::proto::wire::TAG_LEN;
use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use tun_rs::SyncDevice;

/// Outbound packet slots: one per TUN packet or super-packet segment; the
/// records of a batch are sent when they run out.
pub const TX_SLOTS: usize = 128;
/// Packets per coalescing TUN write batch.
pub const TUN_WRITES: usize = tun_rs::IDEAL_BATCH_SIZE;
/// How often a worker re-checks the stop flag when idle.
pub const IDLE_WAKE: Duration = Duration::from_millis(200);

/// Drop counters of the data plane, shared by all workers.
#[derive(Debug, Default)]
pub struct DataplaneCounters {
    pub rx_auth_failed: AtomicU64,
    /// Records whose counter the replay window refused (replayed, or older
    /// than the window): authentic-looking, so counted apart from forgeries.
    pub rx_replayed: AtomicU64,
    /// Data records too short to hold a header and a tag.
    pub rx_malformed: AtomicU64,
    pub rx_spoofed: AtomicU64,
    pub tx_no_route: AtomicU64,
    pub control_full: AtomicU64,
    pub send_errors: AtomicU64,
    /// Packets larger than the path to their peer, answered with ICMP
    /// fragmentation-needed instead of being sent.
    pub tx_too_big: AtomicU64,
}

/// One worker; `M` is its owner's inbox, which takes what the worker
/// punts (`From<Punt>`).
pub struct Worker<M> {
    pub id: usize,
    /// This worker's TUN queue (queue 0 is shared with the control thread,
    /// which writes DNS answers and first packets through it).
    pub tun: Arc<SyncDevice>,
    pub udp: UdpSocket,
    /// The socket is IPv6 (dual-stack): IPv4 destinations are v4-mapped.
    pub v6: bool,
    pub table: Arc<ArcSwap<PeerTable>>,
    pub to_control: Sender<M>,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<DataplaneCounters>,
    pub core: Option<core_affinity::CoreId>,
    /// The IO shell, chosen once at start (`io::choose`).
    pub shell: Shell,
}

/// The preallocated batch buffers both shells use.
pub struct Buffers {
    pub reader: TunReader,
    pub tx: UdpTx<Sent>,
    pub writer: TunWriter,
}

impl<M: From<Punt>> Worker<M> {
    /// The shared per-packet code over `table` (this wake-up's snapshot).
    pub(super) fn path<'a>(&'a self, table: &'a PeerTable) -> Path<'a, M> {
        Path {
            table,
            to_control: &self.to_control,
            counters: &self.counters,
            now: Instant::now(),
        }
    }

    pub fn run(self) {
        if let Some(core) = self.core {
            let pinned = core_affinity::set_for_current(core);
            debug!(worker = self.id, core = core.id, pinned, "worker started");
        }
        let mut bufs = self.buffers();
        if self.shell == Shell::Uring {
            match uring::run(&self, &mut bufs) {
                Ok(()) => return,
                // The start probe passed, so this is rare (a memory limit on
                // locked pages, say): keep the worker alive on epoll.
                Err(e) => warn!(worker = self.id, error = %e,
                    "io_uring shell failed; this worker continues on epoll"),
            }
        }
        epoll::run(&self, &mut bufs);
    }

    /// Turns on the socket's offloads to match the TUN's and allocates
    /// everything the batches need, once.
    pub fn buffers(&self) -> Buffers {
        let fd = self.udp.as_raw_fd();
        // The TUN has offload (IFF_VNET_HDR) when it was asked for and the
        // kernel agreed; the UDP offloads follow the same switch.
        let offload = self.tun.tcp_gso();
        let gro = offload
            && match batch::enable_gro(fd) {
                Ok(()) => true,
                Err(e) => {
                    warn!(worker = self.id, error = %e, "UDP GRO refused; receiving single datagrams");
                    false
                }
            };
        let gso = offload && batch::gso_supported(fd);
        if offload && !gso {
            warn!(
                worker = self.id,
                "UDP GSO not supported by the kernel; sending one datagram per record"
            );
        }
        if self.id == 0 {
            info!(
                tun_offload = offload,
                tun_uso = self.tun.udp_gso(),
                udp_gso = gso,
                udp_gro = gro,
                "data plane offloads"
            );
        }
        Buffers {
            reader: TunReader::new(offload, PAYLOAD_AT, TAG_LEN, TX_SLOTS),
            tx: UdpTx::new(self.v6, gso, TX_SLOTS),
            writer: TunWriter::new(TUN_WRITES, offload, self.tun.udp_gso()),
        }
    }
}
