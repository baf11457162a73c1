//! Per-source token buckets for expensive messages (handshake initiations
//! cost a Diffie-Hellman, registrations a store lookup): one source can use
//! its own share, never everyone's. Sans-IO: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, (f64, Instant)>,
    /// Messages refused so far (for logs and metrics).
    pub refused: u64,
}

/// The bucket key: an IPv6 source is limited per /64 (one host can own a
/// whole /64 and pick addresses at will).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
    }
}

impl RateLimiter {
    /// `rate` messages per second per source, bursts of `burst`, and at most
    /// `max_sources` sources tracked at once.
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_sources,
            buckets: HashMap::new(),
            refused: 0,
        }
    }

    /// Takes one token for `source`; false (and counted) if it has none.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let k = key(source);
        if !self.buckets.contains_key(&k) && self.buckets.len() >= self.max_sources {
            // Forget sources whose buckets refilled: they are idle.
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, (tokens, last)| {
                *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= self.max_sources {
                self.refused += 1;
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(k).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.rate)
            .min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_source_gets_its_burst_then_its_rate() {
        let mut r = RateLimiter::new(10, 5, 100);
        let t = Instant::now();
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "198.51.100.8".parse().unwrap();
        assert_eq!((0..100).filter(|_| r.allow(a, t)).count(), 5);
        assert!(r.allow(b, t), "another source is not starved");
        let later = t + Duration::from_millis(500);
        assert_eq!((0..100).filter(|_| r.allow(a, later)).count(), 5);
        assert_eq!(r.refused, 190);
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64() {
        let mut r = RateLimiter::new(1, 1, 100);
        let t = Instant::now();
        assert!(r.allow("2001:db8:1::1".parse().unwrap(), t));
        assert!(!r.allow("2001:db8:1::2".parse().unwrap(), t));
        assert!(r.allow("2001:db8:2::1".parse().unwrap(), t));
    }

    #[test]
    fn table_is_bounded_and_idle_sources_are_forgotten() {
        let mut r = RateLimiter::new(10, 2, 3);
        let t = Instant::now();
        for i in 1..=3u8 {
            assert!(r.allow(IpAddr::from([198, 51, 100, i]), t));
        }
        assert!(
            !r.allow(IpAddr::from([198, 51, 100, 9]), t),
            "a full table refuses new sources"
        );
        let later = t + Duration::from_secs(1);
        assert!(
            r.allow(IpAddr::from([198, 51, 100, 9]), later),
            "refilled sources were forgotten"
        );
    }
}
