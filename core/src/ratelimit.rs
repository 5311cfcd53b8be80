//! A token bucket on the worker's millisecond clock: the exception path's
//! bound on how many packets per second cross into or out of the kernel.
//!
//! Integer arithmetic in thousandths of a packet: `rate` packets per second
//! is exactly `rate` thousandths per millisecond, so refilling is one
//! multiplication and nothing is lost to rounding.

/// Admits at most `rate` packets per second on average, and bursts of up to
/// `burst` packets after a quiet spell.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Thousandths of a packet added per millisecond (= packets/s).
    rate: u64,
    /// Most thousandths the bucket holds.
    capacity: u64,
    tokens: u64,
    last_ms: u32,
}

const ONE: u64 = 1000;

impl TokenBucket {
    /// A full bucket for `rate` packets per second (at least 1) with room
    /// for `burst` packets (at least 1).
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        let capacity = u64::from(burst.max(1)) * ONE;
        TokenBucket { rate: u64::from(rate.max(1)), capacity, tokens: capacity, last_ms: 0 }
    }

    /// The burst lbd uses for a rate: 50 ms worth, at least 8 packets.
    pub fn default_burst(rate: u32) -> u32 {
        (rate / 20).max(8)
    }

    /// Takes one packet's token at `now_ms` (a wrapping millisecond clock
    /// that never runs backwards); false when the bucket is empty.
    #[inline]
    pub fn take(&mut self, now_ms: u32) -> bool {
        let elapsed = u64::from(now_ms.wrapping_sub(self.last_ms));
        if elapsed > 0 {
            self.last_ms = now_ms;
            self.tokens = self.tokens.saturating_add(elapsed.saturating_mul(self.rate)).min(self.capacity);
        }
        if self.tokens >= ONE {
            self.tokens -= ONE;
            true
        } else {
            false
        }
    }

    /// Takes `n` units at once (a packet's bytes in a bucket of bytes);
    /// false, taking nothing, when fewer are left.
    #[inline]
    pub fn take_n(&mut self, now_ms: u32, n: u64) -> bool {
        let elapsed = u64::from(now_ms.wrapping_sub(self.last_ms));
        if elapsed > 0 {
            self.last_ms = now_ms;
            self.tokens = self.tokens.saturating_add(elapsed.saturating_mul(self.rate)).min(self.capacity);
        }
        let need = n.saturating_mul(ONE);
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_burst_then_the_rate() {
        let mut b = TokenBucket::new(1000, 10);
        let first: usize = (0..100).filter(|_| b.take(0)).count();
        assert_eq!(first, 10, "a full bucket admits its burst");
        // 1000/s is one per millisecond.
        let mut admitted = 0;
        for ms in 1..=500u32 {
            admitted += (0..5).filter(|_| b.take(ms)).count();
        }
        assert_eq!(admitted, 500);
    }

    #[test]
    fn slow_rates_accumulate_fractions() {
        // 10/s: one packet every 100 ms, though no single millisecond
        // brings a whole token.
        let mut b = TokenBucket::new(10, 1);
        assert!(b.take(0));
        let admitted = (1..=1000u32).filter(|ms| b.take(*ms)).count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn a_long_pause_refills_only_to_capacity() {
        let mut b = TokenBucket::new(100_000, 4);
        while b.take(0) {}
        let after = (0..100).filter(|_| b.take(60_000)).count();
        assert_eq!(after, 4);
    }

    #[test]
    fn clock_wrap_is_a_short_interval() {
        let mut b = TokenBucket::new(1000, 1);
        assert!(b.take(u32::MAX - 1));
        assert!(!b.take(u32::MAX - 1));
        assert!(b.take(0), "two milliseconds passed across the wrap");
    }
}
