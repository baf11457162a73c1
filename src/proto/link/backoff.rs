//! How long an initiator waits for a response before it tries again.

use std::time::Duration;

/// Waits `first`, doubling per failure up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Links to a coordinator (node -> DC, DC -> DC): 1 s doubling to 30 s,
    /// forever, so a DC that comes back is found within half a minute and
    /// a dead one is not hammered.
    pub const COORDINATOR: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(30),
    };
    /// Tunnels between nodes: every second (a user is waiting on the
    /// first packet; the attempt count bounds the effort instead).
    pub const TUNNEL: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(1),
    };

    /// The wait after `failures` unanswered attempts.
    pub fn delay(&self, failures: u32) -> Duration {
        (self.first * 2u32.saturating_pow(failures.min(5))).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::COORDINATOR;
        let secs: Vec<u64> = (0..8).map(|f| b.delay(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(Backoff::TUNNEL.delay(7), Duration::from_secs(1));
    }
}
