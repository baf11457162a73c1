//! The optional Prometheus endpoint of every role (`metrics_listen`): GET
//! /metrics on a small HTTP server thread. Each role hands in a function
//! that returns its current samples; prometheus-client writes the
//! exposition format.

use super::sample::{Kind, Sample};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Where samples come from at scrape time.
pub type Source = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

struct Snapshot(Source);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

fn encode_value(s: &Sample, m: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    match s.kind {
        Kind::Counter => ConstCounter::new(s.value).encode(m),
        Kind::Gauge => ConstGauge::new(i64::try_from(s.value).unwrap_or(i64::MAX)).encode(m),
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut samples = (self.0)();
        // One descriptor per family, its label sets after it.
        samples.sort_by(|a, b| a.name.cmp(b.name));
        for family in samples.chunk_by(|a, b| a.name == b.name) {
            let first = &family[0];
            let metric_type = match first.kind {
                Kind::Counter => ConstCounter::new(0u64).metric_type(),
                Kind::Gauge => ConstGauge::new(0i64).metric_type(),
            };
            let mut metric =
                encoder.encode_descriptor(first.name, first.help, None, metric_type)?;
            if family.len() == 1 && first.labels.is_empty() {
                encode_value(first, metric)?;
                continue;
            }
            for s in family {
                encode_value(s, metric.encode_family(&s.labels)?)?;
            }
        }
        Ok(())
    }
}

/// The exposition text for `source`'s current samples.
pub fn render(source: &Source) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(source.clone())));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        warn!(error = %e, "cannot encode metrics");
    }
    out
}

/// Serves GET /metrics on `listen` until `stop` is set.
pub fn serve(
    listen: SocketAddr,
    source: Source,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {listen} (key `metrics_listen`): {e}; \
             expected a free address: stop what uses it, or set another `metrics_listen`"
        )
    })?;
    info!(%listen, "metrics at http://{listen}/metrics");
    // Every role also publishes what its allocator holds.
    let source: Source = Arc::new(move || {
        let mut samples = source();
        samples.extend(super::heap::samples());
        samples
    });
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let req = match server.recv_timeout(Duration::from_millis(500)) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(error = %e, "metrics server failed");
                        return;
                    }
                };
                let response = if req.url() == "/metrics" {
                    let body = render(&source);
                    let ctype = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                    let header =
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes());
                    let r = tiny_http::Response::from_string(body);
                    match header {
                        Ok(h) => r.with_header(h),
                        Err(()) => r,
                    }
                } else {
                    tiny_http::Response::from_string("not found: the only path is /metrics\n")
                        .with_status_code(404)
                };
                let _ = req.respond(response);
            }
        })?;
    Ok(handle)
}

/// Samples a single-threaded loop publishes for the metrics thread: the
/// loop calls `publish` once per wake-up (never per packet).
#[derive(Clone, Default)]
pub struct Published(Arc<std::sync::Mutex<Vec<Sample>>>);

impl Published {
    pub fn publish(&self, samples: Vec<Sample>) {
        if let Ok(mut m) = self.0.lock() {
            *m = samples;
        }
    }

    /// Serves the published samples on `listen`, if one is configured.
    pub fn serve(
        &self,
        listen: Option<SocketAddr>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
        let Some(addr) = listen else { return Ok(None) };
        let shared = self.0.clone();
        let source: Source = Arc::new(move || shared.lock().map(|v| v.clone()).unwrap_or_default());
        serve(addr, source, stop).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_with_labels_render_in_the_exposition_format() {
        let source: Source = Arc::new(|| {
            vec![
                Sample::counter("ntmtun_peer_rx_bytes", "Bytes received from a peer.", 10)
                    .label("peer", "alice"),
                Sample::gauge("ntmtun_dc_nodes_online", "Registered nodes.", 2),
                Sample::counter("ntmtun_peer_rx_bytes", "Bytes received from a peer.", 20)
                    .label("peer", "bob"),
            ]
        });
        let text = render(&source);
        assert!(
            text.contains("# TYPE ntmtun_peer_rx_bytes counter"),
            "{text}"
        );
        assert!(
            text.contains("ntmtun_peer_rx_bytes_total{peer=\"alice\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("ntmtun_peer_rx_bytes_total{peer=\"bob\"} 20"),
            "{text}"
        );
        assert!(text.contains("ntmtun_dc_nodes_online 2"), "{text}");
        assert_eq!(text.matches("# TYPE ntmtun_peer_rx_bytes").count(), 1);
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn serves_over_http() {
        let stop = Arc::new(AtomicBool::new(false));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let source: Source = Arc::new(|| vec![Sample::gauge("ntmtun_test", "A test.", 7)]);
        let h = serve(addr, source, stop.clone()).unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(
            body.contains("200") && body.contains("ntmtun_test 7"),
            "{body}"
        );
        #[cfg(target_env = "gnu")]
        assert!(body.contains("ntmtun_heap_allocated_bytes "), "{body}");
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
}
