//! One recipient's queue: bounded in bytes, and it never makes a sender wait.
//!
//! Senders push and learn at once whether the message fit; the recipient's connection drains
//! it in a task of its own, started by the first delivery, so the many connections that are
//! never sent anything carry no task for it. A stalled recipient therefore fills only its own
//! mailbox, and its
//! senders get "queue full" (a RetryResult) instead of waiting behind it.
//!
//! The same queue carries what the recipient's [groups](super::Group) publish. Nobody can be
//! told that a group message did not fit, so one that does not marks the mailbox
//! [overflowed](Next::Overflowed): its connection is closed, and the application sees a
//! member leave instead of a member that silently missed messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use gotalk_protocol::Name;
use tokio::sync::Notify;

use crate::memory::{ConnBudget, OVERHEAD};

/// The queue of messages waiting for one recipient. Cheap to clone: clones share the queue.
#[derive(Clone, Debug)]
pub struct Mailbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Wakes [`Mailbox::overflowed`], which the connection awaits even while it is stuck
    /// sending.
    overflow: Notify,
    limit: usize,
    /// Held by the one task that drains the mailbox into a connection, so the connection of
    /// a resumed session starts only once its old connection's task has put back what it
    /// could not send.
    reader: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Next>,
    bytes: usize,
    closed: bool,
    overflowed: bool,
    /// The budget queued deliveries are charged to: the recipient connection's (they are
    /// held for it, and the sum over every mailbox must stay within the process budget), or
    /// while a session is kept for a peer that went away, one of its own on the process
    /// budget.
    budget: Option<Arc<ConnBudget>>,
    /// Starts the recipient connection's drain; taken by the first delivery, or dropped when
    /// the mailbox closes or its connection goes.
    start: Option<Start>,
}

/// What starts a mailbox's drain, given the mailbox.
struct Start(Box<dyn FnOnce(Mailbox) + Send>);

impl std::fmt::Debug for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Start")
    }
}

/// What a mailbox hands its recipient's connection next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A relayed message: the payload of a `$relay` notification.
    Relay(Bytes),
    /// A group's message: a notification of this name.
    Note(Name, Bytes),
    /// A group message did not fit: the recipient has fallen behind.
    Overflowed,
}

impl Next {
    fn len(&self) -> usize {
        match self {
            Next::Relay(payload) | Next::Note(_, payload) => payload.len(),
            Next::Overflowed => 0,
        }
    }
}

/// A message a mailbox held, as [`Mailbox::take_all`] hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A relayed message: the payload of a `$relay` notification.
    Relay(Bytes),
    /// A group's message: a notification of this name.
    Note(Name, Bytes),
}

impl Queue {
    fn charge(&self, len: usize) -> bool {
        self.budget.as_ref().is_none_or(|b| b.try_reserve(len + OVERHEAD).is_ok())
    }

    fn release(&self, len: usize) {
        self.release_bytes(len + OVERHEAD);
    }

    fn release_bytes(&self, n: usize) {
        if let Some(budget) = &self.budget {
            budget.release(n);
        }
    }
}

/// Why a message did not go into a [`Mailbox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The mailbox holds its limit; try again later.
    Full,
    /// The recipient's connection has closed.
    Closed,
}

impl Mailbox {
    /// An empty mailbox holding at most `limit` bytes of payload. An empty mailbox takes any
    /// one message, so a message larger than the limit is slow, never undeliverable.
    pub fn new(limit: usize) -> Self {
        Self::charged(limit, None)
    }

    /// A mailbox whose deliveries are charged to a connection's memory budget while queued;
    /// one that does not fit is refused as [`Refused::Full`].
    pub(crate) fn charged(limit: usize, budget: Option<Arc<ConnBudget>>) -> Self {
        Mailbox {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue { budget, ..Queue::default() }),
                ready: Notify::new(),
                overflow: Notify::new(),
                limit,
                reader: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Has `start` called with this mailbox once it has something for its recipient: at
    /// once if it already does (a resumed session's), else at the first delivery or
    /// overflow, unless it closes first. Replaces a start set before.
    pub(crate) fn start_on_first(&self, start: impl FnOnce(Mailbox) + Send + 'static) {
        let mut queue = self.lock();
        if queue.closed {
            return;
        }
        if queue.items.is_empty() && !queue.overflowed {
            let old = queue.start.replace(Start(Box::new(start)));
            // Dropped outside the lock: it may hold a connection.
            drop(queue);
            drop(old);
            return;
        }
        let old = queue.start.take();
        drop(queue);
        drop(old);
        start(self.clone());
    }

    /// Forgets the start set: its connection has gone, and a kept session's mailbox must not
    /// hold that connection alive.
    pub(crate) fn forget_start(&self) {
        let start = self.lock().start.take();
        drop(start);
    }

    /// Wakes the recipient, starting its drain if this is the first thing it is given.
    fn wake(&self) {
        let start = self.lock().start.take();
        if let Some(Start(start)) = start {
            start(self.clone());
        }
        self.inner.ready.notify_one();
    }

    /// Queues a delivery's payload without waiting.
    ///
    /// # Errors
    /// [`Refused::Full`] when it would take the mailbox past its limit, [`Refused::Closed`]
    /// once the recipient has gone.
    pub fn push(&self, payload: Bytes) -> Result<(), Refused> {
        self.queue(Next::Relay(payload))
    }

    /// Queues a group's message, the notification `name`, without waiting. One that does not
    /// fit marks the mailbox overflowed, so its connection closes.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn push_note(&self, name: Name, payload: Bytes) -> Result<(), Refused> {
        let refused = self.queue(Next::Note(name, payload));
        if refused == Err(Refused::Full) {
            self.lock().overflowed = true;
            self.wake();
            self.inner.overflow.notify_one();
        }
        refused
    }

    /// Completes once a group message did not fit.
    pub(crate) async fn overflowed(&self) {
        loop {
            let overflow = self.inner.overflow.notified();
            if self.lock().overflowed {
                return;
            }
            overflow.await;
        }
    }

    fn queue(&self, item: Next) -> Result<(), Refused> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(Refused::Closed);
            }
            let len = item.len();
            let after = queue.bytes.saturating_add(len);
            if queue.bytes > 0 && after > self.inner.limit {
                return Err(Refused::Full);
            }
            if !queue.charge(len) {
                return Err(Refused::Full);
            }
            queue.bytes = after;
            queue.items.push_back(item);
        }
        self.wake();
        Ok(())
    }

    /// The next item, waiting for one; `None` once closed. An overflow comes out ahead of
    /// whatever is queued: the connection it ends cannot use the rest.
    pub(crate) async fn next(&self) -> Option<Next> {
        loop {
            let ready = self.inner.ready.notified();
            {
                let mut queue = self.lock();
                if queue.closed {
                    return None;
                }
                if queue.overflowed {
                    return Some(Next::Overflowed);
                }
                if let Some(item) = queue.items.pop_front() {
                    queue.bytes -= item.len();
                    queue.release(item.len());
                    return Some(item);
                }
            }
            ready.await;
        }
    }

    /// Refuses further pushes and drops what is queued: the recipient has gone.
    pub(crate) fn close(&self) {
        // Dropped outside the lock: the start may hold the recipient's connection.
        let (dropped, _start) = {
            let mut queue = self.lock();
            queue.closed = true;
            queue.bytes = 0;
            let dropped = std::mem::take(&mut queue.items);
            for item in &dropped {
                queue.release(item.len());
            }
            (dropped, queue.start.take())
        };
        drop(dropped);
        self.inner.ready.notify_one();
    }

    /// Puts back at the front an item [`next`](Self::next) gave out that could not be sent,
    /// charged again whether or not it fits: it was held all along.
    pub(crate) fn put_back(&self, item: Next) {
        let mut queue = self.lock();
        if queue.closed || item == Next::Overflowed {
            return;
        }
        queue.bytes += item.len();
        if let Some(budget) = &queue.budget {
            budget.force(item.len() + OVERHEAD);
        }
        queue.items.push_front(item);
        drop(queue);
        // A resumed session's new connection may have found the mailbox empty while this
        // item was out with the old one: its drain starts now.
        self.wake();
    }

    /// Charges what the mailbox holds, and what it takes from now on, to `budget` instead.
    pub(crate) fn rebudget(&self, budget: Option<Arc<ConnBudget>>) {
        let mut queue = self.lock();
        let held = queue.bytes + queue.items.len() * OVERHEAD;
        if let (Some(from), Some(to)) = (&queue.budget, &budget) {
            from.move_to(to, held);
        } else {
            queue.release_bytes(held);
            if let Some(to) = &budget {
                to.force(held);
            }
        }
        queue.budget = budget;
    }

    /// Takes every message the mailbox holds, oldest first, leaving it empty and open: for
    /// a bus that hands a kept session to another instance.
    pub fn take_all(&self) -> Vec<Message> {
        let mut queue = self.lock();
        let items = std::mem::take(&mut queue.items);
        let held = queue.bytes + items.len() * OVERHEAD;
        queue.bytes = 0;
        queue.release_bytes(held);
        items
            .into_iter()
            .filter_map(|item| match item {
                Next::Relay(payload) => Some(Message::Relay(payload)),
                Next::Note(name, payload) => Some(Message::Note(name, payload)),
                Next::Overflowed => None,
            })
            .collect()
    }

    /// Queues messages taken from another instance's mailbox with
    /// [`take_all`](Self::take_all), in their order, past the limit: they were held within
    /// it there.
    pub fn restore(&self, messages: Vec<Message>) -> Result<(), Refused> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(Refused::Closed);
        }
        for message in messages {
            let item = match message {
                Message::Relay(payload) => Next::Relay(payload),
                Message::Note(name, payload) => Next::Note(name, payload),
            };
            if let Some(budget) = &queue.budget {
                budget.force(item.len() + OVERHEAD);
            }
            queue.bytes += item.len();
            queue.items.push_back(item);
        }
        drop(queue);
        self.wake();
        Ok(())
    }

    /// Waits to be the one task that drains this mailbox.
    pub(crate) async fn reader(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.reader.lock().await
    }

    /// True once a group message did not fit.
    pub(crate) fn is_overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every critical section is a few field updates that cannot panic half-way.
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn the_limit_holds_at_its_edge() {
        let mailbox = Mailbox::new(100);
        mailbox.push(bytes(60)).unwrap();
        mailbox.push(bytes(40)).unwrap();
        assert_eq!(mailbox.queued_bytes(), 100);
        assert_eq!(mailbox.push(bytes(1)), Err(Refused::Full));
        let other = Mailbox::new(100);
        other.push(bytes(60)).unwrap();
        assert_eq!(other.push(bytes(41)), Err(Refused::Full));
    }

    #[test]
    fn an_empty_mailbox_takes_one_message_of_any_size() {
        let mailbox = Mailbox::new(10);
        mailbox.push(bytes(11)).unwrap();
        assert_eq!(mailbox.push(bytes(1)), Err(Refused::Full));
    }

    #[tokio::test]
    async fn messages_come_out_in_order_and_free_their_bytes() {
        let mailbox = Mailbox::new(10);
        mailbox.push(Bytes::from_static(b"ab")).unwrap();
        mailbox.push(Bytes::from_static(b"cdefghij")).unwrap();
        assert_eq!(mailbox.push(bytes(1)), Err(Refused::Full));
        assert_eq!(mailbox.next().await.unwrap(), Next::Relay("ab".into()));
        assert_eq!(mailbox.queued_bytes(), 8);
        mailbox.push(bytes(2)).unwrap();
        assert_eq!(mailbox.next().await.unwrap(), Next::Relay("cdefghij".into()));
        assert_eq!(mailbox.next().await.unwrap(), Next::Relay("xx".into()));
    }

    #[tokio::test]
    async fn a_group_message_that_does_not_fit_overflows_the_mailbox() {
        let mailbox = Mailbox::new(10);
        let name = Name::new("room.message").unwrap();
        mailbox.push_note(name.clone(), bytes(10)).unwrap();
        assert_eq!(mailbox.push(bytes(1)), Err(Refused::Full), "a relay is refused, no more");
        assert_eq!(mailbox.next().await.unwrap(), Next::Note(name.clone(), bytes(10)));
        mailbox.push_note(name.clone(), bytes(10)).unwrap();
        assert_eq!(mailbox.push_note(name, bytes(1)), Err(Refused::Full));
        assert_eq!(mailbox.next().await.unwrap(), Next::Overflowed, "ahead of what is queued");
    }

    #[tokio::test]
    async fn closing_refuses_pushes_and_ends_the_reader() {
        let mailbox = Mailbox::new(10);
        mailbox.push(bytes(1)).unwrap();
        let reader = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move {
                let first = mailbox.next().await;
                (first, mailbox.next().await)
            })
        };
        tokio::task::yield_now().await;
        mailbox.close();
        let (_first, second) = reader.await.unwrap();
        assert_eq!(second, None);
        assert_eq!(mailbox.push(bytes(1)), Err(Refused::Closed));
        assert_eq!(mailbox.queued_bytes(), 0);
    }

    /// Which starts ran, in order.
    fn starts(mailbox: &Mailbox, name: &'static str, ran: &Arc<Mutex<Vec<&'static str>>>) {
        let ran = ran.clone();
        mailbox.start_on_first(move |_| ran.lock().unwrap().push(name));
    }

    #[tokio::test]
    async fn the_drain_starts_at_the_first_delivery_once_and_not_after_close() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let mailbox = Mailbox::new(10);
        starts(&mailbox, "first", &ran);
        assert!(ran.lock().unwrap().is_empty(), "nothing delivered yet");
        mailbox.push(bytes(1)).unwrap();
        mailbox.push(bytes(1)).unwrap();
        assert_eq!(*ran.lock().unwrap(), ["first"]);

        let closed = Mailbox::new(10);
        starts(&closed, "never", &ran);
        closed.close();
        assert_eq!(closed.push(bytes(1)), Err(Refused::Closed));
        assert_eq!(*ran.lock().unwrap(), ["first"]);
    }

    /// A resumed session: its new connection found the mailbox empty while the old
    /// connection's drain held an item it then could not send.
    #[tokio::test]
    async fn an_item_put_back_starts_the_next_connections_drain() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let mailbox = Mailbox::new(10);
        starts(&mailbox, "old", &ran);
        mailbox.push(bytes(1)).unwrap();
        let out = mailbox.next().await.unwrap();
        starts(&mailbox, "new", &ran);
        assert_eq!(*ran.lock().unwrap(), ["old"], "empty: the new one waits");
        mailbox.put_back(out.clone());
        assert_eq!(*ran.lock().unwrap(), ["old", "new"]);
        assert_eq!(mailbox.next().await.unwrap(), out);
    }

    #[tokio::test]
    async fn a_start_set_on_a_mailbox_that_holds_something_runs_at_once() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let mailbox = Mailbox::new(10);
        mailbox.push(bytes(1)).unwrap();
        starts(&mailbox, "resumed", &ran);
        assert_eq!(*ran.lock().unwrap(), ["resumed"]);
        let forgotten = Mailbox::new(10);
        starts(&forgotten, "forgotten", &ran);
        forgotten.forget_start();
        forgotten.push(bytes(1)).unwrap();
        assert_eq!(*ran.lock().unwrap(), ["resumed"]);
    }
}
