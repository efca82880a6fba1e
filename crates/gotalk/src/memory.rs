//! Memory budgets: every byte a peer makes this process hold, counted before it is held.
//!
//! Each limit of a connection (payload size, requests in flight, streams, queues) bounds one
//! kind of buffer, but a peer can fill all of them at once, and many peers together can fill
//! them on every connection. So every byte held on a peer's behalf is also charged to two
//! budgets: its connection's, and one [`MemoryBudget`] shared by the process. A charge is
//! taken before the bytes are held and given back when they are freed (a charge is
//! released when dropped).
//!
//! What is charged: the payload a message header declares, from the moment the header
//! arrives (so a partial message is paid for in full); requests queued, held and running,
//! until their answer has been written; parts of streaming requests until their handler
//! reads them; results collected or streamed for this side's own calls until read;
//! notifications until their handler returns; the decoded size of JSON parameters while
//! their handler runs.
//!
//! What happens when a budget is spent: backpressure where it can be applied, refusal where
//! it cannot, never an allocation past the budget. The read loop stops reading from the peer
//! until its next message fits (TCP pushes back on the sender); a request that no longer
//! fits is answered with a RetryResult (ErrorResult for peers that cannot take one); a
//! stream part or a result part that does not fit fails that stream; listeners refuse new
//! connections while the process budget is nearly spent.
//!
//! An empty budget takes any one charge, so a message as large as the payload limit can
//! always be received by a connection holding nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

/// The largest default process budget.
pub const DEFAULT_PROCESS_BUDGET: usize = 512 << 20;

/// Bytes every charged message costs on top of its payload, for the bookkeeping around it,
/// so a flood of empty messages is bounded too.
pub(crate) const OVERHEAD: usize = 64;

/// Which budget a charge did not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The connection's own budget.
    Connection,
    /// The budget shared by every connection of the process.
    Process,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Exhausted::Connection => "the connection's memory budget is spent",
            Exhausted::Process => "the server's memory budget is spent",
        })
    }
}

/// The bytes every connection sharing it may hold at once, in sum. Cheap to clone: clones
/// share the count.
///
/// [`Config`](crate::Config) uses [`MemoryBudget::process`] unless given another; give one
/// budget to every config of a process (the gateway's and the TCP server's) so the sum holds
/// across transports.
///
/// ```
/// let budget = gotalk::MemoryBudget::new(256 << 20);
/// let config = gotalk::Config::default().memory_budget(budget.clone()).connection_budget(32 << 20);
/// assert_eq!(config.budget().capacity(), budget.capacity());
/// assert_eq!(budget.used(), 0);
/// ```
#[derive(Clone)]
pub struct MemoryBudget {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    capacity: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    /// How many tasks wait for room, so releases skip the wake-up when none do.
    waiters: AtomicUsize,
    freed: Notify,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("capacity", &self.capacity())
            .field("used", &self.used())
            .field("peak", &self.peak())
            .finish()
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::process().clone()
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (at least 1).
    pub fn new(bytes: usize) -> Self {
        MemoryBudget { pool: Arc::new(Pool::new(bytes.max(1))) }
    }

    /// The budget every [`Config`](crate::Config) shares unless given another: a quarter of
    /// the machine's memory (from `/proc/meminfo`, where there is one), at most
    /// [`DEFAULT_PROCESS_BUDGET`] (512 MiB).
    pub fn process() -> &'static MemoryBudget {
        static PROCESS: OnceLock<MemoryBudget> = OnceLock::new();
        PROCESS.get_or_init(|| MemoryBudget::new(default_process_budget()))
    }

    /// How many bytes may be held at once.
    pub fn capacity(&self) -> usize {
        self.pool.capacity
    }

    /// How many bytes are charged now.
    pub fn used(&self) -> usize {
        self.pool.used.load(Ordering::Acquire)
    }

    /// The most bytes ever charged at once.
    pub fn peak(&self) -> usize {
        self.pool.peak.load(Ordering::Acquire)
    }

    /// True when less than an eighth of the budget is left: listeners refuse new
    /// connections then, so those already open can finish what they hold.
    pub fn nearly_spent(&self) -> bool {
        self.used() > self.capacity() - self.capacity() / 8
    }
}

impl Pool {
    fn new(capacity: usize) -> Self {
        Pool {
            capacity,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Takes `n` bytes if they fit, or if nothing is taken at all.
    fn try_take(&self, n: usize) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let after = used.saturating_add(n);
            if used != 0 && after > self.capacity {
                return false;
            }
            match self.used.compare_exchange_weak(used, after, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.peak.fetch_max(after, Ordering::AcqRel);
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::AcqRel);
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

fn default_process_budget() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    });
    match total {
        Some(bytes) => (bytes / 4).clamp(64 << 20, DEFAULT_PROCESS_BUDGET),
        None => DEFAULT_PROCESS_BUDGET,
    }
}

/// The most memory decoding `json` may take, as a bound that needs no decoding: the text
/// itself (strings are copied out of it), plus room for a `serde_json::Value` with its share
/// of a growing container for every value that could start in it. A value starts the text, or
/// follows a `[`, `{`, `,` or `:`; counting those bytes wherever they are (inside strings too)
/// only overestimates. Compact JSON such as `[],[],[]…` decodes to many times its size, which
/// is what this bounds.
pub(crate) fn json_decoded_bound(json: &[u8]) -> usize {
    /// A `Value` (32 bytes) twice over, for a container's spare capacity, plus a map entry's
    /// or a string's own header.
    const PER_VALUE: usize = 2 * 32 + 24;
    let starts = json.iter().filter(|&&b| matches!(b, b'[' | b'{' | b',' | b':')).count();
    json.len().saturating_add((starts + 1).saturating_mul(PER_VALUE))
}

/// One connection's budget, drawing on a process budget.
#[derive(Debug)]
pub(crate) struct ConnBudget {
    own: Pool,
    process: MemoryBudget,
}

impl ConnBudget {
    pub(crate) fn new(capacity: usize, process: MemoryBudget) -> Arc<Self> {
        Arc::new(ConnBudget { own: Pool::new(capacity.max(1)), process })
    }

    pub(crate) fn used(&self) -> usize {
        self.own.used.load(Ordering::Acquire)
    }

    /// Takes `n` bytes from both budgets, or neither.
    pub(crate) fn try_reserve(&self, n: usize) -> Result<(), Exhausted> {
        if !self.own.try_take(n) {
            return Err(Exhausted::Connection);
        }
        if !self.process.pool.try_take(n) {
            self.own.give(n);
            return Err(Exhausted::Process);
        }
        Ok(())
    }

    /// Gives back `n` bytes taken by [`try_reserve`](Self::try_reserve).
    pub(crate) fn release(&self, n: usize) {
        self.own.give(n);
        self.process.pool.give(n);
    }

    /// Moves `n` bytes charged here to `to`, which takes them whether or not they fit: they
    /// are held already, so refusing them would not free them. Used to hand what a mailbox
    /// holds from one connection to another.
    #[allow(dead_code)]
    pub(crate) fn move_to(&self, to: &ConnBudget, n: usize) {
        self.own.give(n);
        to.own.used.fetch_add(n, Ordering::AcqRel);
        if !Arc::ptr_eq(&self.process.pool, &to.process.pool) {
            self.process.pool.give(n);
            to.process.pool.used.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Takes `n` bytes from both budgets whether or not they fit: for bytes held already,
    /// which refusing would not free. Given back with [`release`](Self::release).
    #[allow(dead_code)]
    pub(crate) fn force(&self, n: usize) {
        self.own.used.fetch_add(n, Ordering::AcqRel);
        self.process.pool.used.fetch_add(n, Ordering::AcqRel);
    }

    /// A charge of `n` bytes if it fits now.
    pub(crate) fn try_charge(self: &Arc<Self>, n: usize) -> Result<Charge, Exhausted> {
        self.try_reserve(n)?;
        Ok(Charge { budget: Some(self.clone()), bytes: n })
    }

    /// A charge of `n` bytes, waiting until it fits. Cancel-safe: dropping the future takes
    /// nothing.
    pub(crate) async fn charge(self: &Arc<Self>, n: usize) -> Charge {
        loop {
            // Registered before trying, so a release between the try and the wait wakes us.
            let own = self.own.freed.notified();
            let process = self.process.pool.freed.notified();
            tokio::pin!(own, process);
            own.as_mut().enable();
            process.as_mut().enable();
            let exhausted = match self.try_charge(n) {
                Ok(charge) => return charge,
                Err(exhausted) => exhausted,
            };
            let pool = match exhausted {
                Exhausted::Connection => &self.own,
                Exhausted::Process => &self.process.pool,
            };
            let _waiting = Waiting::new(pool);
            // Check again now that releases will notify: one may have come in between.
            match self.try_charge(n) {
                Ok(charge) => return charge,
                Err(Exhausted::Connection) => own.await,
                Err(Exhausted::Process) => process.await,
            }
        }
    }
}

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a Pool);

impl<'a> Waiting<'a> {
    fn new(pool: &'a Pool) -> Self {
        pool.waiters.fetch_add(1, Ordering::AcqRel);
        Waiting(pool)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes charged to a connection's budget and the process budget, given back when dropped.
#[derive(Default)]
pub(crate) struct Charge {
    budget: Option<Arc<ConnBudget>>,
    bytes: usize,
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Charge").field(&self.bytes).finish()
    }
}

impl Charge {
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds `n` bytes to this charge if they fit.
    pub(crate) fn grow(&mut self, n: usize) -> Result<(), Exhausted> {
        if let Some(budget) = &self.budget {
            budget.try_reserve(n)?;
            self.bytes += n;
        }
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn charges_fit_both_budgets_or_neither() {
        let process = MemoryBudget::new(1000);
        let a = ConnBudget::new(600, process.clone());
        let b = ConnBudget::new(600, process.clone());
        let a1 = a.try_charge(600).expect("exactly the connection's budget");
        assert_eq!(a.try_charge(1).err(), Some(Exhausted::Connection));
        let b1 = b.try_charge(400).expect("exactly what the process has left");
        assert_eq!(b.try_charge(1).err(), Some(Exhausted::Process));
        assert_eq!(b.used(), 400, "a refused charge takes nothing from the connection");
        assert_eq!((process.used(), process.peak()), (1000, 1000));
        drop(a1);
        assert_eq!(process.used(), 400);
        drop(b1);
        assert_eq!((process.used(), process.peak()), (0, 1000));
    }

    #[test]
    fn an_empty_budget_takes_any_one_charge() {
        let process = MemoryBudget::new(100);
        let conn = ConnBudget::new(10, process.clone());
        let big = conn.try_charge(5000).expect("nothing held, so it goes alone");
        assert_eq!(conn.try_charge(1).err(), Some(Exhausted::Connection));
        drop(big);
        assert_eq!(process.used(), 0);
    }

    #[test]
    fn a_charge_grows_within_the_budget() {
        let process = MemoryBudget::new(100);
        let conn = ConnBudget::new(100, process.clone());
        let mut charge = conn.try_charge(10).unwrap();
        charge.grow(90).expect("fits exactly");
        assert_eq!(charge.grow(1), Err(Exhausted::Connection));
        assert_eq!(charge.bytes(), 100);
        drop(charge);
        assert_eq!((conn.used(), process.used()), (0, 0));
    }

    #[test]
    fn nearly_spent_past_seven_eighths() {
        let process = MemoryBudget::new(800);
        let conn = ConnBudget::new(800, process.clone());
        let _a = conn.try_charge(700).unwrap();
        assert!(!process.nearly_spent(), "exactly seven eighths");
        let _b = conn.try_charge(1).unwrap();
        assert!(process.nearly_spent());
    }

    #[test]
    fn json_bound_covers_what_decoding_takes() {
        assert_eq!(json_decoded_bound(b"1"), 1 + 88);
        assert_eq!(json_decoded_bound(b"[1,2]"), 5 + 3 * 88);
        // Empty arrays cost far more decoded than their three bytes of text.
        let empties = b"[],".repeat(1000);
        assert!(json_decoded_bound(&empties) > 1000 * 2 * 32);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_charge_gets_room_once_it_is_freed() {
        let process = MemoryBudget::new(100);
        let hog = ConnBudget::new(100, process.clone());
        let waiter = ConnBudget::new(100, process.clone());
        let held = hog.try_charge(100).unwrap();
        let wait = tokio::spawn(async move { waiter.charge(50).await.bytes() });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!wait.is_finished(), "no room while the process budget is spent");
        drop(held);
        assert_eq!(wait.await.unwrap(), 50);
    }
}
