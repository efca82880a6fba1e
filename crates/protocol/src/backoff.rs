//! The reconnect schedule: exponential backoff with jitter, as a pure function.
//!
//! Without jitter every client of a restarted server retries at the same instants, so the
//! server meets its whole population at once, again and again. Each delay here is drawn from
//! a band below the exponential curve, so a crowd that lost its server together spreads out
//! over the band and stays spread on every later attempt.

/// How long to wait between reconnect attempts.
///
/// Attempt `n` (counting from zero) waits `base(n) × (1 − jitter × r)` milliseconds, where
/// `base(n) = min(max, min × factorⁿ)` and `r` is uniform in `[0, 1)`. So the delay never
/// exceeds `max`, and `jitter` is the fraction of each step that is randomised: 0 waits the
/// exact curve (as gotalk.js does), 1 draws anywhere in `(0, base]` ("full jitter").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The first delay, in milliseconds.
    pub min_ms: f64,
    /// The largest delay, in milliseconds.
    pub max_ms: f64,
    /// How much each failed attempt multiplies the delay by.
    pub factor: f64,
    /// The randomised fraction of each delay, in `[0, 1]`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 500 ms doubling to 5 s, as gotalk.js, with half of each step randomised.
    fn default() -> Self {
        Backoff { min_ms: 500.0, max_ms: 5_000.0, factor: 2.0, jitter: 0.5 }
    }
}

/// Why a [`Backoff`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidBackoff {
    /// `min` is not a positive, finite number of milliseconds.
    Min,
    /// `max` is below `min` or not finite.
    Max,
    /// `factor` is below 1 or not finite.
    Factor,
    /// `jitter` is outside `[0, 1]`.
    Jitter,
}

impl InvalidBackoff {
    /// A message for the page's developer.
    pub fn message(self) -> &'static str {
        match self {
            InvalidBackoff::Min => "backoff min must be a positive number of milliseconds",
            InvalidBackoff::Max => "backoff max must be a number of milliseconds at least min",
            InvalidBackoff::Factor => "backoff factor must be a number at least 1",
            InvalidBackoff::Jitter => "backoff jitter must be between 0 and 1",
        }
    }
}

impl Backoff {
    /// Checks that the schedule makes sense.
    ///
    /// # Errors
    /// The first setting that is out of range.
    pub fn validate(&self) -> Result<(), InvalidBackoff> {
        if !(self.min_ms.is_finite() && self.min_ms > 0.0) {
            return Err(InvalidBackoff::Min);
        }
        if !(self.max_ms.is_finite() && self.max_ms >= self.min_ms) {
            return Err(InvalidBackoff::Max);
        }
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(InvalidBackoff::Factor);
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(InvalidBackoff::Jitter);
        }
        Ok(())
    }

    /// The top of the band for attempt `attempt`: `min(max, min × factor^attempt)`.
    pub fn base(&self, attempt: u32) -> f64 {
        // Past 64 doublings every sane schedule has long reached max; capping the exponent
        // keeps powi finite.
        let grown = self.min_ms * self.factor.powi(attempt.min(64) as i32);
        grown.min(self.max_ms)
    }

    /// The delay before attempt `attempt`, given `r` uniform in `[0, 1)`.
    pub fn delay(&self, attempt: u32, r: f64) -> f64 {
        let r = r.clamp(0.0, 1.0);
        self.base(attempt) * (1.0 - self.jitter * r)
    }

    /// The delay after the server said it is going away (WebSocket close 1001, a restart or
    /// a deploy): drawn uniformly from `[0, 2 × min)`, whatever the jitter setting.
    ///
    /// Every client of that server hears "going away" in the same instant, so this is the
    /// moment a storm starts; the first attempt is spread over the whole window. The server
    /// is probably back soon, so the window is short.
    pub fn going_away_delay(&self, r: f64) -> f64 {
        2.0 * self.min_ms * r.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the spread tests see the same "clients" each run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn the_curve_grows_by_factor_and_stops_at_max() {
        let b = Backoff::default();
        let bases: Vec<f64> = (0..6).map(|n| b.base(n)).collect();
        assert_eq!(bases, [500.0, 1000.0, 2000.0, 4000.0, 5000.0, 5000.0]);
        assert_eq!(b.base(u32::MAX), 5000.0);
    }

    #[test]
    fn no_jitter_is_the_exact_curve() {
        let b = Backoff { jitter: 0.0, ..Backoff::default() };
        for n in 0..8 {
            assert_eq!(b.delay(n, 0.0), b.base(n));
            assert_eq!(b.delay(n, 0.999), b.base(n));
        }
    }

    #[test]
    fn jitter_bounds_each_delay_to_its_band() {
        let b = Backoff::default();
        for n in 0..10 {
            let top = b.base(n);
            assert_eq!(b.delay(n, 0.0), top);
            let low = b.delay(n, 0.999_999);
            assert!(low > top * 0.5 - 1e-6 && low < top, "attempt {n}: {low}");
        }
        let full = Backoff { jitter: 1.0, ..b };
        assert!(full.delay(3, 0.999_999) < 0.01);
    }

    #[test]
    fn r_outside_the_unit_interval_is_clamped() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, -3.0), 500.0);
        assert_eq!(b.delay(0, 7.0), 250.0);
        assert_eq!(b.going_away_delay(2.0), 1000.0);
    }

    #[test]
    fn going_away_spreads_over_two_minimum_steps() {
        let b = Backoff::default();
        assert_eq!(b.going_away_delay(0.0), 0.0);
        assert!(b.going_away_delay(0.999_999) < 1000.0);
    }

    /// Quantiles of `samples` (sorted in place): the 5th, 50th and 95th percentile.
    fn quantiles(samples: &mut [f64]) -> (f64, f64, f64) {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        (at(0.05), at(0.5), at(0.95))
    }

    #[test]
    fn a_thousand_clients_spread_across_each_band() {
        // A thousand clients lose the server at the same moment; for each of their first
        // attempts, the delays they pick must cover the band, not bunch up.
        let b = Backoff::default();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for attempt in 0..6 {
            let top = b.base(attempt);
            let mut delays: Vec<f64> = (0..1000).map(|_| b.delay(attempt, rng.next())).collect();
            let (p5, p50, p95) = quantiles(&mut delays);
            // The band is (top/2, top]; uniform draws put the quantiles near 0.525, 0.75 and
            // 0.975 of top. Allow a few percent of sampling error.
            assert!((p5 / top - 0.525).abs() < 0.03, "attempt {attempt}: p5 {p5}");
            assert!((p50 / top - 0.75).abs() < 0.03, "attempt {attempt}: p50 {p50}");
            assert!((p95 / top - 0.975).abs() < 0.03, "attempt {attempt}: p95 {p95}");
            // In any 50 ms slice of the band, at most about 50/250 = 20% of the crowd
            // arrives at attempt 0, and less later: no storm.
            let mut worst = 0;
            let mut start = top * 0.5;
            while start < top {
                let n = delays.iter().filter(|d| **d >= start && **d < start + 50.0).count();
                worst = worst.max(n);
                start += 50.0;
            }
            assert!(worst <= 250, "attempt {attempt}: {worst} clients in one 50 ms slice");
        }
    }

    #[test]
    fn a_thousand_clients_told_going_away_spread_over_a_second() {
        let b = Backoff::default();
        let mut rng = XorShift(7);
        let mut delays: Vec<f64> = (0..1000).map(|_| b.going_away_delay(rng.next())).collect();
        let (p5, p50, p95) = quantiles(&mut delays);
        assert!((p5 - 50.0).abs() < 30.0, "p5 {p5}");
        assert!((p50 - 500.0).abs() < 30.0, "p50 {p50}");
        assert!((p95 - 950.0).abs() < 30.0, "p95 {p95}");
    }

    #[test]
    fn validation_rejects_each_bad_setting() {
        let ok = Backoff::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            (Backoff { min_ms: 0.0, ..ok }, InvalidBackoff::Min),
            (Backoff { min_ms: f64::NAN, ..ok }, InvalidBackoff::Min),
            (Backoff { max_ms: 100.0, ..ok }, InvalidBackoff::Max),
            (Backoff { max_ms: f64::INFINITY, ..ok }, InvalidBackoff::Max),
            (Backoff { factor: 0.5, ..ok }, InvalidBackoff::Factor),
            (Backoff { jitter: 1.5, ..ok }, InvalidBackoff::Jitter),
            (Backoff { jitter: -0.1, ..ok }, InvalidBackoff::Jitter),
        ];
        for (b, want) in bad {
            assert_eq!(b.validate(), Err(want), "{b:?}");
        }
        // Equal min and max is a constant delay, which is fine.
        assert_eq!(Backoff { max_ms: 500.0, ..ok }.validate(), Ok(()));
    }
}
