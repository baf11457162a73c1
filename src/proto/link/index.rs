//! Session indexes: the receiver field of every record and response.
//!
//! Drawn from a CSPRNG seeded once from the OS (tests seed it to replay a
//! run): a counter or a fixed stride would let anyone who saw one index
//! predict the next, and aim forged responses or records at it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub struct IndexAlloc {
    rng: StdRng,
}

impl IndexAlloc {
    pub fn new(seed: u64) -> IndexAlloc {
        IndexAlloc {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A fresh random index: never 0 and never one `taken` says is in use.
    pub fn next(&mut self, taken: impl Fn(u32) -> bool) -> u32 {
        loop {
            let i: u32 = self.rng.gen();
            if i != 0 && !taken(i) {
                return i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_skip_zero_and_taken_ones_and_have_no_stride() {
        let mut a = IndexAlloc::new(7);
        let first = a.next(|_| false);
        let mut b = IndexAlloc::new(7);
        assert_ne!(b.next(|i| i == first), first);
        let xs: Vec<u32> = (0..4).map(|_| a.next(|_| false)).collect();
        let strides: Vec<u32> = xs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        assert!(strides.windows(2).any(|s| s[0] != s[1]), "{xs:?}");
    }
}
