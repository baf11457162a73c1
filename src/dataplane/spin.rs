//! Adaptive busy-polling. On a VM every sleep and wake-up of a worker costs
//! tens of microseconds (an inter-processor interrupt and a halt exit), and
//! a ping through the tunnel takes four of them. After a wake-up that moved
//! packets, a worker therefore keeps polling without sleeping for a short
//! budget (the answer to what it just sent often arrives within it), and
//! blocks again once the budget passes with nothing to do: bounded, and off
//! when idle. `NTMTUN_BUSY_POLL_US` sets the budget (0 turns it off).

use std::time::{Duration, Instant};

/// The budget when `NTMTUN_BUSY_POLL_US` is not set.
pub const DEFAULT_BUDGET: Duration = Duration::from_micros(0);
/// The largest budget accepted: longer spins only burn a shared core.
pub const MAX_BUDGET: Duration = Duration::from_micros(1000);

/// The busy-poll budget from `NTMTUN_BUSY_POLL_US` (microseconds, at most
/// `MAX_BUDGET`); a value that is not a number is an error naming it.
pub fn budget_from_env() -> Result<Duration, String> {
    budget_value(std::env::var("NTMTUN_BUSY_POLL_US").ok().as_deref())
}

fn budget_value(v: Option<&str>) -> Result<Duration, String> {
    let Some(v) = v else {
        return Ok(DEFAULT_BUDGET);
    };
    let us: u64 = v.trim().parse().map_err(|_| {
        format!(
            "NTMTUN_BUSY_POLL_US={v:?} is not a number of microseconds (0 turns busy-polling off)"
        )
    })?;
    Ok(Duration::from_micros(us).min(MAX_BUDGET))
}

/// When a worker may sleep: a pure function of the wake-ups it reports.
#[derive(Debug, Clone)]
pub struct BusyPoll {
    budget: Duration,
    /// Polling without sleeping until then (the last busy wake-up plus the
    /// budget).
    until: Option<Instant>,
}

impl BusyPoll {
    pub fn new(budget: Duration) -> BusyPoll {
        BusyPoll {
            budget,
            until: None,
        }
    }

    /// After a wake-up at `now` that moved packets (`busy`) or not: how long
    /// the next wait may block, zero while polling, `idle` otherwise.
    pub fn next_wait(&mut self, now: Instant, busy: bool, idle: Duration) -> Duration {
        if self.budget.is_zero() {
            return idle;
        }
        if busy {
            self.until = Some(now + self.budget);
        }
        match self.until {
            Some(t) if now < t => Duration::ZERO,
            _ => {
                self.until = None;
                idle
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_millis(200);

    #[test]
    fn polls_for_the_budget_after_traffic_then_sleeps() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut s = BusyPoll::new(us(50));
        // idle from the start: sleeps
        assert_eq!(s.next_wait(t0, false, IDLE), IDLE);
        // traffic: polls, and keeps polling through empty wake-ups in the budget
        assert_eq!(s.next_wait(t0, true, IDLE), Duration::ZERO);
        assert_eq!(s.next_wait(t0 + us(30), false, IDLE), Duration::ZERO);
        // more traffic moves the end of the budget
        assert_eq!(s.next_wait(t0 + us(40), true, IDLE), Duration::ZERO);
        assert_eq!(s.next_wait(t0 + us(80), false, IDLE), Duration::ZERO);
        // the budget passes with nothing to do: sleeps, and stays asleep
        assert_eq!(s.next_wait(t0 + us(90), false, IDLE), IDLE);
        assert_eq!(s.next_wait(t0 + us(91), false, IDLE), IDLE);
    }

    #[test]
    fn zero_budget_never_polls() {
        let mut s = BusyPoll::new(Duration::ZERO);
        assert_eq!(s.next_wait(Instant::now(), true, IDLE), IDLE);
    }

    #[test]
    fn budget_from_the_environment_value() {
        assert_eq!(budget_value(None).unwrap(), DEFAULT_BUDGET);
        assert_eq!(
            budget_value(Some(" 40 ")).unwrap(),
            Duration::from_micros(40)
        );
        assert_eq!(budget_value(Some("0")).unwrap(), Duration::ZERO);
        assert_eq!(budget_value(Some("999999")).unwrap(), MAX_BUDGET);
        let e = budget_value(Some("fast")).unwrap_err();
        assert!(
            e.contains("NTMTUN_BUSY_POLL_US") && e.contains("\"fast\""),
            "{e}"
        );
    }
}
