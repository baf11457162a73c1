//! Metrics: what each role counts (`sample`, a leaf the cores use), what
//! the allocator holds (`heap`), and the optional Prometheus endpoint that
//! publishes both (`server`, key `metrics_listen`).

pub mod heap;
pub mod sample;
pub mod server;
