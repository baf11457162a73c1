//! Anti-replay sliding window (RFC 6479 style): a ring of 64-bit words so
//! advancing the window clears whole words instead of shifting bits.

/// Number of 64-bit words in the ring; the window covers
/// `(WORDS - 1) * 64` packets behind the highest counter seen.
const WORDS: usize = 64;
const BITS: u64 = 64;
/// Packets behind the newest that are still accepted if not seen before.
pub const WINDOW: u64 = (WORDS as u64 - 1) * BITS;

/// Tracks which counters have been received; rejects duplicates and counters
/// too old to tell.
#[derive(Clone)]
pub struct ReplayWindow {
    ring: [u64; WORDS],
    /// Highest counter accepted so far plus one (0 = nothing yet).
    next: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            ring: [0; WORDS],
            next: 0,
        }
    }
}

impl ReplayWindow {
    /// Checks `counter` without recording it: true if it would be accepted.
    /// Used before decrypting so forged packets cannot move the window.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        if self.next - 1 - counter >= WINDOW {
            return false;
        }
        let (word, bit) = Self::position(counter);
        self.ring[word] & (1 << bit) == 0
    }

    /// Records `counter` after the packet authenticated. Returns false (and
    /// records nothing) for a replay or a counter behind the window.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            let current_word = if self.next == 0 {
                None
            } else {
                Some((self.next - 1) / BITS)
            };
            let new_word = counter / BITS;
            match current_word {
                Some(cur) => {
                    let steps = (new_word - cur).min(WORDS as u64);
                    for i in 1..=steps {
                        self.ring[((cur + i) % WORDS as u64) as usize] = 0;
                    }
                }
                None => self.ring = [0; WORDS],
            }
            self.next = counter + 1;
        }
        let (word, bit) = Self::position(counter);
        self.ring[word] |= 1 << bit;
        true
    }

    fn position(counter: u64) -> (usize, u64) {
        (((counter / BITS) % WORDS as u64) as usize, counter % BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::default();
        for c in 0..5000 {
            assert!(w.accept(c));
            assert!(!w.accept(c), "duplicate {c} accepted");
        }
    }

    #[test]
    fn reordering_inside_window_and_too_old() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(10_000));
        assert!(w.accept(10_000 - 1));
        assert!(w.accept(10_000 - WINDOW + 1));
        assert!(!w.accept(10_000 - WINDOW));
        assert!(!w.accept(0));
        assert!(!w.accept(10_000 - 1));
    }

    #[test]
    fn big_jump_clears_old_bits() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(5));
        assert!(w.accept(5 + 64 * 64 * 3));
        // 5 + 64*64 maps onto the same ring slot as 5; it must count as unseen.
        assert!(w.accept(5 + 64 * 64 * 3 - 64));
        assert!(w.check(5 + 64 * 64 * 3 - 1));
    }

    proptest! {
        /// The window agrees with a model: a counter is accepted iff it is new
        /// and not more than WINDOW behind the highest accepted so far.
        #[test]
        fn matches_model(ops in proptest::collection::vec(0u64..20_000, 1..2000)) {
            let mut w = ReplayWindow::default();
            let mut seen = HashSet::new();
            let mut max: Option<u64> = None;
            for c in ops {
                let expect = !seen.contains(&c) && max.is_none_or(|m| c > m || m - c < WINDOW);
                prop_assert_eq!(w.accept(c), expect, "counter {}", c);
                if expect {
                    seen.insert(c);
                    max = Some(max.map_or(c, |m| m.max(c)));
                }
            }
        }
    }
}
