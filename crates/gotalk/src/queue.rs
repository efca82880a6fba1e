//! Queues bounded in bytes, which is what memory is spent in.
//!
//! Counting messages is not enough when one message may be 16 MiB, so every queue between the
//! read loop, the handlers and the write loop is bounded by the bytes it holds.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::memory::{ConnBudget, Exhausted, OVERHEAD};

/// A budget of bytes that senders wait on. A permit is held while its bytes are queued.
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    capacity: u32,
}

impl ByteBudget {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX).max(1);
        ByteBudget { semaphore: Arc::new(Semaphore::new(capacity as usize)), capacity }
    }

    /// Waits until `len` bytes fit. A message larger than the whole budget waits for all of it
    /// and then goes alone. `None` once the budget is closed.
    ///
    /// Room that is there is taken at once, without going through the await: an awaited
    /// acquire first asks tokio's cooperative budget, and when the task has spent it, yields
    /// before taking its place in line. Concurrent calls in one task (`join`, `buffered`)
    /// would then queue in the order of the task's next turn, not the order they were made,
    /// and their requests go out of order. Taking what is free cannot pass a waiter: the
    /// semaphore hands released room to its waiters first.
    pub(crate) async fn acquire(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let want =
            u32::try_from(len.saturating_add(OVERHEAD)).unwrap_or(u32::MAX).min(self.capacity);
        match self.semaphore.clone().try_acquire_many_owned(want) {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::Closed) => None,
            Err(TryAcquireError::NoPermits) => {
                self.semaphore.clone().acquire_many_owned(want).await.ok()
            }
        }
    }

    /// Wakes every waiter with `None`.
    pub(crate) fn close(&self) {
        self.semaphore.close();
    }

    /// The bytes held by permits now: what is queued, with its per-message overhead.
    pub(crate) fn queued(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.semaphore.available_permits())
    }
}

/// The queue of one stream's parts: unbounded in messages but bounded in bytes, and it never
/// makes the sender wait. Overflow is the receiver's fault and abandons the stream. With a
/// connection budget, each part is charged to it too, from when it is queued until it is
/// read.
pub(crate) fn parts<T>(
    capacity: usize,
    budget: Option<Arc<ConnBudget>>,
) -> (PartsTx<T>, PartsRx<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let buffered = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(PartsShared { buffered, budget });
    (PartsTx { tx, shared: shared.clone(), capacity }, PartsRx { rx, shared })
}

/// What both sides of [`parts`] count.
#[derive(Debug)]
struct PartsShared {
    buffered: Arc<AtomicUsize>,
    budget: Option<Arc<ConnBudget>>,
}

impl PartsShared {
    fn release(&self, len: usize) {
        self.buffered.fetch_sub(len, Ordering::AcqRel);
        if let Some(budget) = &self.budget {
            budget.release(len);
        }
    }
}

/// The sending side of [`parts`].
#[derive(Debug)]
pub(crate) struct PartsTx<T> {
    tx: mpsc::UnboundedSender<(T, usize)>,
    shared: Arc<PartsShared>,
    capacity: usize,
}

/// Why a part was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The bytes waiting would exceed the capacity.
    Overflow,
    /// The part does not fit the memory budget.
    Budget(Exhausted),
    /// The receiver is gone.
    Closed,
}

impl<T> PartsTx<T> {
    /// Queues a part of `len` bytes, charged with the same per-message overhead as a
    /// [`ByteBudget`], so a flood of tiny parts is bounded too. A part always fits into an
    /// empty queue.
    pub(crate) fn push(&self, item: T, len: usize) -> Result<(), PushError> {
        let len = len.saturating_add(OVERHEAD);
        let buffered = &self.shared.buffered;
        let before = buffered.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.capacity {
            buffered.fetch_sub(len, Ordering::AcqRel);
            return Err(PushError::Overflow);
        }
        if let Some(budget) = &self.shared.budget {
            if let Err(exhausted) = budget.try_reserve(len) {
                buffered.fetch_sub(len, Ordering::AcqRel);
                return Err(PushError::Budget(exhausted));
            }
        }
        // The item carries its length, so whoever takes it out (or drops it) gives it back.
        self.tx.send((item, len)).map_err(|_| {
            self.shared.release(len);
            PushError::Closed
        })
    }

    /// Queues a final item that carries no bytes, such as an error or the end.
    pub(crate) fn push_final(&self, item: T) -> Result<(), PushError> {
        self.tx.send((item, 0)).map_err(|_| PushError::Closed)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The receiving side of [`parts`].
#[derive(Debug)]
pub(crate) struct PartsRx<T> {
    rx: mpsc::UnboundedReceiver<(T, usize)>,
    shared: Arc<PartsShared>,
}

impl<T> PartsRx<T> {
    pub(crate) async fn recv(&mut self) -> Option<T> {
        let (item, len) = self.rx.recv().await?;
        self.shared.release(len);
        Some(item)
    }
}

impl<T> Drop for PartsRx<T> {
    fn drop(&mut self) {
        // Parts never read still hold their charge; closing first means none can be added
        // after the drain.
        self.rx.close();
        while let Ok((_, len)) = self.rx.try_recv() {
            self.shared.release(len);
        }
    }
}

/// Capacity an empty [`OutQueue`] may keep; beyond it the buffer is given back, so an idle
/// connection holds none.
const KEEP_CAPACITY: usize = 64;

/// The queue from every sender of a connection to its one writer. Unlike a channel, it
/// allocates nothing until something is queued, which matters with many idle connections.
/// Its bound is the [`ByteBudget`] senders take before pushing.
///
/// The writer is one task, so it is woken through one waker slot rather than a wait list:
/// waiting then keeps no list entry in the writer's future, which every idle connection
/// holds. The task may wait on other things of its own through the same slot (see
/// [`register`](Self::register)).
#[derive(Debug)]
pub(crate) struct OutQueue<T> {
    items: Mutex<Option<VecDeque<T>>>,
    task: AtomicWaker,
    /// Set by a push, taken by the wait it ends: a push made before the writer waits is not
    /// lost.
    pushed: AtomicBool,
    /// The writer waits in [`ready`](Self::ready). Only then does a push wake its task: a
    /// writer busy flushing finds what was pushed when it is done, and waking it for each
    /// push would poll its whole connection again for nothing (which also let a relay
    /// recipient's queue fill before its socket did, in `relay.rs`'s stalled-recipient
    /// test).
    waiting: AtomicBool,
}

impl<T> Default for OutQueue<T> {
    fn default() -> Self {
        OutQueue {
            items: Mutex::new(Some(VecDeque::new())),
            task: AtomicWaker::new(),
            pushed: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        }
    }
}

impl<T> OutQueue<T> {
    fn lock(&self) -> MutexGuard<'_, Option<VecDeque<T>>> {
        // Every critical section is one push or pop; a panic cannot leave it half done.
        self.items.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an item for the writer; gives it back once the writer has gone.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        match self.lock().as_mut() {
            Some(items) => items.push_back(item),
            None => return Err(item),
        }
        // Sequentially consistent with the writer's two flags in `Ready::poll`: either this
        // push sees the writer waiting, or the writer sees the push.
        self.pushed.store(true, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            self.task.wake();
        }
        Ok(())
    }

    /// The next item, if any.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut guard = self.lock();
        let items = guard.as_mut()?;
        let item = items.pop_front();
        if items.is_empty() && items.capacity() > KEEP_CAPACITY {
            *items = VecDeque::new();
        }
        item
    }

    /// True when [`pop`](Self::pop) would find nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().as_ref().is_none_or(VecDeque::is_empty)
    }

    /// Waits until an item may have been pushed since the last [`pop`](Self::pop) (or
    /// [`is_empty`](Self::is_empty)) found none. Only the writer's task may wait.
    pub(crate) fn ready(&self) -> Ready<'_, T> {
        Ready { queue: self }
    }

    /// Has [`wake`](Self::wake) wake the writer's task `cx` belongs to, for a wait of its
    /// own: call it before checking what the wait is for.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        self.task.register(cx.waker());
    }

    /// Wakes the writer's task without pushing anything, for what it waits on through
    /// [`register`](Self::register).
    pub(crate) fn wake(&self) {
        self.task.wake();
    }

    /// Refuses further pushes and drops what is queued: the writer is gone.
    pub(crate) fn close(&self) {
        self.lock().take();
    }
}

/// [`OutQueue::ready`].
pub(crate) struct Ready<'a, T> {
    queue: &'a OutQueue<T>,
}

impl<T> Future for Ready<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let queue = self.queue;
        queue.task.register(cx.waker());
        queue.waiting.store(true, Ordering::SeqCst);
        if queue.pushed.swap(false, Ordering::SeqCst) {
            queue.waiting.store(false, Ordering::SeqCst);
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<T> Drop for Ready<'_, T> {
    /// A wait given up (the writer woke for something else) no longer asks to be woken.
    fn drop(&mut self) {
        self.queue.waiting.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    /// Concurrent calls in one task (`join`, `buffered`) must queue in the order they were
    /// first polled. An awaited acquire stops at tokio's cooperative budget before it takes
    /// its place in line, so a call polled later in a fresh turn of the task could pass it.
    #[tokio::test]
    async fn room_there_is_taken_even_when_the_task_has_spent_its_cooperative_budget() {
        let budget = ByteBudget::new(1000);
        std::future::poll_fn(|cx| {
            loop {
                let mut spend = std::pin::pin!(tokio::task::consume_budget());
                if spend.as_mut().poll(cx).is_pending() {
                    break;
                }
            }
            let mut acquire = std::pin::pin!(budget.acquire(10));
            assert!(acquire.as_mut().poll(cx).is_ready(), "took its room without yielding");
            std::task::Poll::Ready(())
        })
        .await;
    }

    #[tokio::test]
    async fn parts_overflow_only_when_not_empty() {
        let (tx, mut rx) = parts::<u8>(10 + 2 * OVERHEAD, None);
        assert_eq!(tx.push(1, 1000), Ok(()), "a big part fits an empty queue");
        assert_eq!(tx.push(2, 0), Err(PushError::Overflow));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(tx.push(3, 6), Ok(()));
        assert_eq!(tx.push(4, 4), Ok(()), "exactly at capacity fits");
        assert_eq!(tx.push(5, 0), Err(PushError::Overflow), "even an empty part costs");
        assert_eq!(tx.push_final(6), Ok(()), "final items are never refused for size");
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(tx.push(7, 10 + OVERHEAD), Ok(()), "room again once read");
    }

    #[tokio::test]
    async fn tiny_parts_are_bounded_by_their_overhead() {
        let (tx, _rx) = parts::<u8>(64 * 1024, None);
        let accepted = (0..10_000).take_while(|_| tx.push(0, 1).is_ok()).count();
        assert_eq!(accepted, 64 * 1024 / (1 + OVERHEAD));
    }

    #[tokio::test]
    async fn parts_are_charged_until_read_or_dropped() {
        let process = crate::memory::MemoryBudget::new(1 << 20);
        let budget = ConnBudget::new(1000 + 2 * OVERHEAD, process.clone());
        let (tx, mut rx) = parts::<u8>(1 << 20, Some(budget.clone()));
        tx.push(1, 500).unwrap();
        tx.push(2, 500).unwrap();
        assert_eq!(tx.push(3, 0), Err(PushError::Budget(Exhausted::Connection)));
        assert_eq!(process.used(), 1000 + 2 * OVERHEAD);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(budget.used(), 500 + OVERHEAD, "a part read is given back");
        drop(rx);
        assert_eq!((budget.used(), process.used()), (0, 0), "parts never read too");
        assert_eq!(tx.push(4, 1), Err(PushError::Closed));
        assert_eq!(process.used(), 0, "a refused part takes nothing");
    }

    #[tokio::test]
    async fn out_queue_wakes_its_reader_and_refuses_after_close() {
        let queue = Arc::new(OutQueue::default());
        assert_eq!(queue.pop(), None);
        let reader = tokio::spawn({
            let queue = queue.clone();
            async move {
                loop {
                    if let Some(item) = queue.pop() {
                        return item;
                    }
                    queue.ready().await;
                }
            }
        });
        tokio::task::yield_now().await;
        queue.push(7u8).unwrap();
        assert_eq!(reader.await.unwrap(), 7);
        for n in 0..200 {
            queue.push(n).unwrap();
        }
        for n in 0..200 {
            assert_eq!(queue.pop(), Some(n), "in order");
        }
        assert_eq!(queue.lock().as_ref().map(VecDeque::capacity), Some(0), "buffer given back");
        queue.close();
        assert_eq!(queue.push(1), Err(1));
        assert_eq!(queue.pop(), None);
    }

    #[tokio::test]
    async fn a_push_before_the_writer_waits_or_while_it_waits_for_something_else_is_not_lost() {
        let queue = OutQueue::default();
        queue.push(1u8).unwrap();
        within(queue.ready()).await;
        assert_eq!(queue.pop(), Some(1));

        // The writer woke for something else, gave up its wait, then a push came.
        let mut given_up = Box::pin(queue.ready());
        assert!(futures_util::poll!(given_up.as_mut()).is_pending());
        drop(given_up);
        queue.push(2).unwrap();
        within(queue.ready()).await;
        assert_eq!(queue.pop(), Some(2));

        // Nothing pushed: the wait waits.
        let mut idle = Box::pin(queue.ready());
        assert!(futures_util::poll!(idle.as_mut()).is_pending());
    }

    async fn within(wait: impl Future<Output = ()>) {
        tokio::time::timeout(std::time::Duration::from_secs(5), wait).await.unwrap();
    }

    #[tokio::test]
    async fn budget_clamps_large_messages_and_closes() {
        let budget = ByteBudget::new(1000);
        let big = budget.acquire(1 << 30).await.expect("a message over capacity goes alone");
        assert_eq!(big.num_permits(), 1000);
        drop(big);
        let small = budget.acquire(10).await.expect("fits");
        assert_eq!(small.num_permits(), 10 + OVERHEAD);
        budget.close();
        assert!(budget.acquire(1).await.is_none());
    }
}
