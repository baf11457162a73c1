//! The node's metrics: per-peer traffic from the table the workers use, the
//! data plane's drop counters and the control thread's counters. Read at
//! scrape time from shared atomics, so scraping never touches the control
//! thread or the packet path.

use super::counters::ControlCounters;
use crate::dataplane::table::PeerTable;
use crate::dataplane::worker::DataplaneCounters;
use crate::metrics::sample::Sample;
use crate::metrics::server::Source;
use arc_swap::ArcSwap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub fn source(
    table: Arc<ArcSwap<PeerTable>>,
    counters: Arc<DataplaneCounters>,
    control: Arc<ControlCounters>,
) -> Source {
    Arc::new(move || {
        let t = table.load();
        let mut m = vec![Sample::gauge(
            "ntmtun_node_peers",
            "Peers with a tunnel up.",
            t.by_vip.len() as u64,
        )];
        for r in t.by_vip.values() {
            let peer = |s: Sample| {
                s.label("peer", r.name.clone())
                    .label("virtual_ip", r.virtual_ip.to_string())
                    .label("path", r.path)
            };
            let st = &r.stats;
            let per_peer = [
                (
                    "ntmtun_peer_rx_bytes",
                    "Bytes of IP packets received from a peer.",
                    &st.rx_bytes,
                ),
                (
                    "ntmtun_peer_tx_bytes",
                    "Bytes of IP packets sent to a peer.",
                    &st.tx_bytes,
                ),
                (
                    "ntmtun_peer_rx_packets",
                    "IP packets received from a peer.",
                    &st.rx_packets,
                ),
                (
                    "ntmtun_peer_tx_packets",
                    "IP packets sent to a peer.",
                    &st.tx_packets,
                ),
            ];
            for (name, help, value) in per_peer {
                m.push(peer(Sample::counter(
                    name,
                    help,
                    value.load(Ordering::Relaxed),
                )));
            }
        }
        let drops = [
            ("auth_failed", &counters.rx_auth_failed),
            ("replayed", &counters.rx_replayed),
            ("malformed", &counters.rx_malformed),
            ("spoofed_source", &counters.rx_spoofed),
            ("no_route", &counters.tx_no_route),
            ("control_queue_full", &counters.control_full),
            ("send_error", &counters.send_errors),
            ("too_big_for_path", &counters.tx_too_big),
        ];
        for (reason, c) in drops {
            m.push(
                Sample::counter(
                    "ntmtun_node_dropped_packets",
                    "Packets the data plane dropped, by reason.",
                    c.load(Ordering::Relaxed),
                )
                .label("reason", reason),
            );
        }
        m.extend(control.samples());
        m
    })
}
