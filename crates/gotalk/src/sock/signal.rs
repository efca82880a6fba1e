//! One-way signals kept inside the connection's shared state.
//!
//! What [`CancellationToken`](tokio_util::sync::CancellationToken) does for a connection's
//! own events (closing, terminated, aborted, the peer's `$done`), without its allocations:
//! every connection has four, a token is a node of its own on the heap, and an idle
//! connection pays for them as much as a busy one. Here the four share one flag word and one
//! wait list inside the connection's state; a waiter woken by another signal than its own
//! (at most three times in a connection's life) waits again.

use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// The connection's signals.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    fired: AtomicU8,
    notify: Notify,
}

/// One of the [`Signals`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Signal<'a> {
    signals: &'a Signals,
    bit: u8,
}

impl Signals {
    pub(crate) fn get(&self, which: Which) -> Signal<'_> {
        Signal { signals: self, bit: which as u8 }
    }
}

/// Which signal.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub(crate) enum Which {
    Cancel = 1,
    Terminated = 2,
    Abort = 4,
    PeerDone = 8,
}

impl Signal<'_> {
    /// Fires the signal, waking everyone waiting on it. Later calls do nothing.
    pub(crate) fn cancel(self) {
        let before = self.signals.fired.fetch_or(self.bit, Ordering::AcqRel);
        if before & self.bit == 0 {
            self.signals.notify.notify_waiters();
        }
    }

    pub(crate) fn is_cancelled(self) -> bool {
        self.signals.fired.load(Ordering::Acquire) & self.bit != 0
    }

    /// Completes once the signal has fired.
    pub(crate) async fn cancelled(self) {
        loop {
            let mut notified = pin!(self.signals.notify.notified());
            // Registered before the flag is read: a `cancel` after the read wakes this
            // waiter, one before it is seen in the flag.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Signals, Which};

    #[tokio::test]
    async fn a_signal_wakes_its_waiters_before_and_after_it_fires_and_no_others() {
        let signals = Arc::new(Signals::default());
        let waiting = |which| {
            let signals = signals.clone();
            tokio::spawn(async move { signals.get(which).cancelled().await })
        };
        let cancel: Vec<_> = (0..3).map(|_| waiting(Which::Cancel)).collect();
        let abort = waiting(Which::Abort);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(cancel.iter().all(|waiter| !waiter.is_finished()), "nothing fired yet");

        signals.get(Which::Cancel).cancel();
        signals.get(Which::Cancel).cancel();
        for waiter in cancel {
            tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        }
        assert!(signals.get(Which::Cancel).is_cancelled());
        assert!(!signals.get(Which::Abort).is_cancelled());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!abort.is_finished(), "woken by another signal, it waits again");

        signals.get(Which::Abort).cancel();
        tokio::time::timeout(Duration::from_secs(5), abort).await.unwrap().unwrap();
        let late = signals.get(Which::Cancel).cancelled();
        tokio::time::timeout(Duration::from_secs(5), late).await.unwrap();
    }
}
