//! UDP segmentation planned without a socket: how a received GRO train is
//! cut back into datagrams (`segments`), and how queued datagrams are
//! grouped into GSO sends (`plan_runs`). Pure functions, so every rule is
//! tested here; `rx` and `tx` only carry the plans out.

use super::Transmit;
use std::ops::Range;

/// The datagrams in a received message of `len` bytes with GRO stride
/// `stride` (its `RecvMeta::stride`): every one is `stride` bytes but the
/// last, which may be shorter. A stride of 0 or of at least `len` means a
/// single datagram; a zero-length datagram is one empty datagram.
pub fn segments(len: usize, stride: usize) -> impl Iterator<Item = Range<usize>> {
    let stride = if stride == 0 || stride > len {
        len.max(1)
    } else {
        stride
    };
    (0..len.max(1))
        .step_by(stride)
        .map(move |start| start..(start + stride).min(len))
}

/// Queued datagrams `first..first + count` leave in one message; with more
/// than one, as a GSO train of `seg`-byte segments (the last may be
/// shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: usize,
    pub count: usize,
    pub seg: usize,
}

/// What one GSO send may hold.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// Datagrams per send; 1 turns GSO off (every datagram alone).
    pub max_segs: usize,
    /// UDP payload bytes per send.
    pub max_bytes: usize,
    /// Largest segment GSO is used for, to IPv4 [0] and IPv6 [1]
    /// destinations (lowered when the kernel refuses a size).
    pub max_seg: [usize; 2],
}

/// Groups consecutive datagrams into GSO runs: one destination, all the
/// size of the first but the last (which may be shorter), within `lim`.
/// Greedy: a run ends only where the next datagram cannot join it.
pub fn plan_runs<M>(queue: &[Transmit<M>], lim: RunLimits, out: &mut Vec<Run>) {
    out.clear();
    let mut i = 0;
    while i < queue.len() {
        let head = &queue[i];
        let seg = head.len;
        let (mut count, mut bytes) = (1, seg);
        if lim.max_segs > 1 && seg <= lim.max_seg[usize::from(head.to.is_ipv6())] {
            while i + count < queue.len() && count < lim.max_segs {
                let t = &queue[i + count];
                if t.to != head.to || t.len > seg || bytes + t.len > lim.max_bytes {
                    break;
                }
                count += 1;
                bytes += t.len;
                if t.len < seg {
                    break;
                }
            }
        }
        out.push(Run {
            first: i,
            count,
            seg,
        });
        i += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::batch::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
    use proptest::prelude::*;

    fn t(to: &str, len: usize) -> Transmit<()> {
        Transmit {
            buf: 0,
            start: 0,
            len,
            to: to.parse().unwrap(),
            meta: (),
        }
    }

    const A: &str = "198.51.100.1:4000";
    const B: &str = "198.51.100.2:4000";
    const V6: &str = "[2001:db8::1]:4000";

    fn lim() -> RunLimits {
        RunLimits {
            max_segs: GSO_MAX_SEGMENTS,
            max_bytes: GSO_MAX_BYTES,
            max_seg: [usize::MAX; 2],
        }
    }

    fn runs(queue: &[Transmit<()>], l: RunLimits) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        plan_runs(queue, l, &mut out);
        out.iter().map(|r| (r.first, r.count, r.seg)).collect()
    }

    #[test]
    fn segments_split_a_gro_train() {
        let s: Vec<_> = segments(1452 * 3 + 100, 1452).collect();
        assert_eq!(s, vec![0..1452, 1452..2904, 2904..4356, 4356..4456]);
        let s: Vec<_> = segments(1452 * 2, 1452).collect();
        assert_eq!(s, vec![0..1452, 1452..2904]);
        // No stride, or a stride of at least the length: one datagram.
        assert_eq!(segments(500, 0).collect::<Vec<_>>(), vec![0..500]);
        assert_eq!(segments(500, 500).collect::<Vec<_>>(), vec![0..500]);
        assert_eq!(segments(500, 1452).collect::<Vec<_>>(), vec![0..500]);
        assert_eq!(segments(0, 0).collect::<Vec<_>>(), vec![0..0]);
        assert_eq!(segments(0, 1452).collect::<Vec<_>>(), vec![0..0]);
        assert_eq!(segments(3, 1).count(), 3);
    }

    #[test]
    fn runs_group_equal_datagrams_to_one_destination() {
        let q = [t(A, 1452), t(A, 1452), t(A, 1452), t(A, 700)];
        assert_eq!(runs(&q, lim()), vec![(0, 4, 1452)]);
    }

    #[test]
    fn runs_break_on_destination_and_longer_datagrams() {
        let q = [
            t(A, 1452),
            t(A, 1452),
            t(B, 1452),
            t(B, 600),
            t(B, 1452), // longer than the run's last: new run
            t(B, 1452),
            t(A, 100),
        ];
        assert_eq!(
            runs(&q, lim()),
            vec![(0, 2, 1452), (2, 2, 1452), (4, 2, 1452), (6, 1, 100)]
        );
    }

    #[test]
    fn a_shorter_datagram_ends_its_run() {
        let q = [t(A, 1000), t(A, 500), t(A, 500), t(A, 500)];
        assert_eq!(runs(&q, lim()), vec![(0, 2, 1000), (2, 2, 500)]);
    }

    #[test]
    fn runs_respect_segment_and_byte_limits() {
        let q: Vec<_> = (0..100).map(|_| t(A, 1460)).collect();
        // 64 KiB: at most 44 segments of 1460 (65507 / 1460 = 44.8).
        let r = runs(&q, lim());
        assert_eq!(r, vec![(0, 44, 1460), (44, 44, 1460), (88, 12, 1460)]);
        let small: Vec<_> = (0..130).map(|_| t(A, 100)).collect();
        assert_eq!(
            runs(&small, lim()),
            vec![(0, 64, 100), (64, 64, 100), (128, 2, 100)]
        );
    }

    #[test]
    fn without_gso_every_datagram_is_alone() {
        let q = [t(A, 1452), t(A, 1452), t(A, 1452)];
        let l = RunLimits {
            max_segs: 1,
            ..lim()
        };
        assert_eq!(runs(&q, l), vec![(0, 1, 1452), (1, 1, 1452), (2, 1, 1452)]);
    }

    #[test]
    fn refused_sizes_go_alone_per_family() {
        let q = [t(V6, 1460), t(V6, 1460), t(A, 1460), t(A, 1460)];
        let l = RunLimits {
            max_seg: [usize::MAX, 1459],
            ..lim()
        };
        assert_eq!(runs(&q, l), vec![(0, 1, 1460), (1, 1, 1460), (2, 2, 1460)]);
    }

    #[test]
    fn empty_input_plans_nothing() {
        assert!(runs(&[], lim()).is_empty());
    }

    /// Few destinations and sizes, so that runs form and break often.
    fn queue() -> impl Strategy<Value = Vec<Transmit<()>>> {
        let to = prop_oneof![Just(A), Just(B), Just(V6)];
        let len = prop_oneof![Just(1452usize), Just(1400), 0usize..1500];
        proptest::collection::vec((to, len), 0..300)
            .prop_map(|v| v.into_iter().map(|(to, len)| t(to, len)).collect())
    }

    fn limits() -> impl Strategy<Value = RunLimits> {
        (
            1usize..80,
            1usize..70_000,
            prop_oneof![Just(usize::MAX), 0usize..1500],
            prop_oneof![Just(usize::MAX), 0usize..1500],
        )
            .prop_map(|(max_segs, max_bytes, v4, v6)| RunLimits {
                max_segs,
                max_bytes,
                max_seg: [v4, v6],
            })
    }

    /// Whether datagram `next` may follow `run` (planned over `q`) in one
    /// send: the rules `plan_runs` promises, written out once more.
    fn may_join(q: &[Transmit<()>], run: &Run, next: usize, l: RunLimits) -> bool {
        let head = &q[run.first];
        let last = &q[run.first + run.count - 1];
        let bytes: usize = q[run.first..run.first + run.count]
            .iter()
            .map(|t| t.len)
            .sum();
        l.max_segs > 1
            && head.len <= l.max_seg[usize::from(head.to.is_ipv6())]
            && run.count < l.max_segs
            && last.len == run.seg
            && q[next].to == head.to
            && q[next].len <= run.seg
            && bytes + q[next].len <= l.max_bytes
    }

    proptest! {
        #[test]
        fn segments_tile_the_message(len in 0usize..70_000, stride in 0usize..3000) {
            let s: Vec<_> = segments(len, stride).collect();
            prop_assert_eq!(s[0].start, 0);
            prop_assert_eq!(s[s.len() - 1].end, len);
            for w in s.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
            let all_but_last = &s[..s.len() - 1];
            if stride > 0 && stride < len {
                prop_assert_eq!(s.len(), len.div_ceil(stride));
                prop_assert!(all_but_last.iter().all(|r| r.len() == stride));
                prop_assert!(s[s.len() - 1].len() <= stride);
            } else {
                prop_assert_eq!(s.len(), 1);
            }
        }

        #[test]
        fn runs_partition_the_queue_within_the_limits(q in queue(), l in limits()) {
            let mut out = Vec::new();
            plan_runs(&q, l, &mut out);
            let mut next = 0;
            for (k, run) in out.iter().enumerate() {
                prop_assert_eq!(run.first, next, "runs cover the queue in order");
                prop_assert!(run.count >= 1);
                next += run.count;
                let members = &q[run.first..run.first + run.count];
                prop_assert_eq!(run.seg, members[0].len);
                if run.count > 1 {
                    let to = members[0].to;
                    prop_assert!(members.iter().all(|t| t.to == to));
                    let (last, body) = members.split_last().unwrap();
                    prop_assert!(body.iter().all(|t| t.len == run.seg));
                    prop_assert!(last.len <= run.seg);
                    prop_assert!(run.count <= l.max_segs);
                    prop_assert!(members.iter().map(|t| t.len).sum::<usize>() <= l.max_bytes);
                    let family = usize::from(to.is_ipv6());
                    prop_assert!(run.seg <= l.max_seg[family]);
                }
                // Greedy: the next datagram could not have joined.
                if k + 1 < out.len() {
                    prop_assert!(!may_join(&q, run, run.first + run.count, l));
                }
            }
            prop_assert_eq!(next, q.len());
        }
    }
}
