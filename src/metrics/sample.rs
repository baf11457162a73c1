//! One metric sample, as the cores report them: a leaf with no
//! dependencies, so a sans-IO core can say what it counts without reaching
//! the HTTP server that publishes it (`server`). Every metric name starts
//! with `ntmtun_`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One value of one metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Full name, `ntmtun_...` (counters without the `_total` suffix, which
    /// the encoder adds).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(String, String)>,
    pub value: u64,
}

impl Sample {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Sample {
        Sample {
            name,
            help,
            kind: Kind::Counter,
            labels: Vec::new(),
            value,
        }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> Sample {
        Sample {
            name,
            help,
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, key: &str, value: impl Into<String>) -> Sample {
        self.labels.push((key.to_string(), value.into()));
        self
    }
}
