//! The runtime each async check runs in.

use std::future::Future;
use std::time::Duration;

/// How much virtual time an input may take. Nothing in the harness's handlers waits longer
/// than a few seconds and the sock's own timeouts are set well below this, so reaching it
/// means the connection hung.
pub const VIRTUAL_BUDGET: Duration = Duration::from_secs(15 * 60);

/// Runs `check` on a fresh current-thread runtime with a paused clock: timers fire as soon as
/// every task is idle, so a sock's timeouts cost no real time, and a sock that never finishes
/// fails at [`VIRTUAL_BUDGET`] rather than stalling the fuzzer.
pub fn run<F: Future<Output = ()>>(what: &str, check: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async {
        if tokio::time::timeout(VIRTUAL_BUDGET, check).await.is_err() {
            panic!("{what} did not finish within {VIRTUAL_BUDGET:?} of virtual time");
        }
    });
}
