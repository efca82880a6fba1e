//! How long a request of the page's is sent again after RetryResults: until its own deadline,
//! not a number of times.
//!
//! A server at its request limit answers with a RetryResult and a wait, and a burst of calls
//! can be turned away many times in a row before each finds a free slot (20 calls against a
//! limit of 2 with short waits take dozens of RetryResults). A count cuts such a burst short
//! while the server is making progress; a deadline gives up only on a server that stays busy.

/// The default time (ms) from a request being made to its deadline: six of the longest
/// waits our server asks for (5 s), and far more of the short ones Go's limits use.
pub const DEFAULT_RETRY_TIMEOUT_MS: f64 = 30_000.0;

/// When a request stops being sent again, as a time in ms (the clock `Date.now()` reads).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Deadline(f64);

impl Deadline {
    /// The deadline of a request made at `made`, given `timeout` ms of retrying.
    pub fn new(made: f64, timeout: f64) -> Deadline {
        Deadline(made + timeout)
    }

    /// Whether a RetryResult that arrived at `now` asking for `wait` ms may be honoured: the
    /// request would go again by its deadline. One that would not fails at once, rather than
    /// after a wait that cannot end in an answer.
    pub fn allows(self, now: f64, wait: f64) -> bool {
        now + wait <= self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_that_goes_out_by_the_deadline_is_allowed_and_one_past_it_is_not() {
        let d = Deadline::new(1_000.0, DEFAULT_RETRY_TIMEOUT_MS);
        assert!(d.allows(1_010.0, 50.0));
        // Sent again exactly at the deadline: still allowed.
        assert!(d.allows(30_000.0, 1_000.0));
        // One millisecond past it: not.
        assert!(!d.allows(30_000.0, 1_001.0));
        assert!(!d.allows(31_000.0, 1.0));
    }

    #[test]
    fn no_count_limits_the_retries() {
        // A server answering every 10 ms with a 10 ms wait is honoured all the way to the
        // deadline: 1,500 times in 30 s.
        let d = Deadline::new(0.0, DEFAULT_RETRY_TIMEOUT_MS);
        let mut now = 0.0;
        let mut retries = 0;
        while d.allows(now + 10.0, 10.0) {
            now += 20.0;
            retries += 1;
        }
        assert_eq!(retries, 1_500);
    }

    #[test]
    fn a_zero_timeout_honours_only_a_zero_wait_at_once() {
        let d = Deadline::new(500.0, 0.0);
        assert!(d.allows(500.0, 0.0));
        assert!(!d.allows(500.0, 1.0));
        assert!(!d.allows(501.0, 0.0));
    }

    #[test]
    fn an_enormous_wait_fails_at_once() {
        let d = Deadline::new(0.0, DEFAULT_RETRY_TIMEOUT_MS);
        assert!(!d.allows(1.0, f64::from(u32::MAX)));
    }
}
