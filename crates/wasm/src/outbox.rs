//! The bounded queue of messages waiting for a connection.

use std::collections::VecDeque;

/// gotalk.js's default bound, kept so pages behave as they did.
pub const DEFAULT_LIMIT: usize = 100;

/// Messages written while the socket is not open, sent in order once it is.
///
/// Bounded, so a page that keeps writing to a server that is gone for good fails fast with an
/// error instead of growing without end. A limit of 0 turns queueing off: every write while
/// disconnected fails at once.
#[derive(Debug)]
pub struct Outbox<T> {
    items: VecDeque<T>,
    limit: usize,
}

/// The queue already holds `limit` messages; the rejected one is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<T> {
    /// The bound that was hit.
    pub limit: usize,
    /// The message that did not fit.
    pub item: T,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox::new(DEFAULT_LIMIT)
    }
}

impl<T> Outbox<T> {
    /// An empty queue holding at most `limit` messages.
    pub fn new(limit: usize) -> Self {
        Outbox { items: VecDeque::new(), limit }
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Changes the bound. Messages already queued stay, even past a lower bound; only new
    /// ones are refused until the queue drains below it.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The queued messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// Queues `item` behind the others.
    ///
    /// # Errors
    /// [`Full`] with the item when the queue is at its bound.
    pub fn push(&mut self, item: T) -> Result<(), Full<T>> {
        if self.items.len() >= self.limit {
            return Err(Full { limit: self.limit, item });
        }
        self.items.push_back(item);
        Ok(())
    }

    /// Takes every queued message, oldest first, leaving the queue empty.
    pub fn take_all(&mut self) -> VecDeque<T> {
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_empties_on_take() {
        let mut q = Outbox::new(3);
        for n in 1..=3 {
            q.push(n).unwrap();
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.take_all().into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert!(q.is_empty());
        q.push(4).unwrap();
        assert_eq!(q.take_all().into_iter().collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn the_default_bound_is_100_and_the_101st_is_refused() {
        let mut q = Outbox::default();
        assert_eq!(q.limit(), 100);
        for n in 0..100 {
            q.push(n).unwrap();
        }
        assert_eq!(q.push(100), Err(Full { limit: 100, item: 100 }));
        assert_eq!(q.len(), 100);
        // Draining frees the room again.
        q.take_all();
        q.push(101).unwrap();
    }

    #[test]
    fn a_zero_limit_refuses_everything() {
        let mut q = Outbox::new(0);
        assert_eq!(q.push('a'), Err(Full { limit: 0, item: 'a' }));
        assert!(q.is_empty());
    }

    #[test]
    fn lowering_the_limit_keeps_what_is_queued() {
        let mut q = Outbox::new(5);
        for n in 0..4 {
            q.push(n).unwrap();
        }
        q.set_limit(2);
        assert_eq!(q.len(), 4);
        assert!(q.push(9).is_err());
        assert_eq!(q.take_all().len(), 4);
        q.push(9).unwrap();
        q.push(10).unwrap();
        assert!(q.push(11).is_err());
    }
}
