//! Values kept with a connection, one per type: each set once and then read without a lock,
//! since an extension may read its own on every message.

use std::any::Any;
use std::sync::{Mutex, OnceLock};

use super::lock;

/// A list that only grows, so a reader walks it while a writer appends.
type Slot = OnceLock<Box<dyn Entry>>;

/// A value and the rest of the list, in one allocation: every connection on a server with
/// the relay keeps one.
struct Node<T> {
    value: T,
    next: Slot,
}

trait Entry: Send + Sync {
    fn value(&self) -> &dyn Any;
    fn next(&self) -> &Slot;
}

impl<T: Any + Send + Sync> Entry for Node<T> {
    fn value(&self) -> &dyn Any {
        &self.value
    }

    fn next(&self) -> &Slot {
        &self.next
    }
}

#[derive(Default)]
pub(super) struct State {
    head: Slot,
    /// Held by writers only: two racing to set the same type cannot both succeed.
    writing: Mutex<()>,
}

impl State {
    /// The value of type `T`, if one was set.
    pub(super) fn get<T: Any>(&self) -> Option<&T> {
        let mut slot = &self.head;
        while let Some(node) = slot.get() {
            if let Some(value) = node.value().downcast_ref::<T>() {
                return Some(value);
            }
            slot = node.next();
        }
        None
    }

    /// Keeps `value`, unless a value of its type is already kept.
    pub(super) fn set<T: Any + Send + Sync>(&self, value: T) -> Result<(), T> {
        let _writing = lock(&self.writing);
        if self.get::<T>().is_some() {
            return Err(value);
        }
        let mut slot = &self.head;
        while let Some(node) = slot.get() {
            slot = node.next();
        }
        // The last slot is empty, and no other writer can fill it while the lock is held.
        let _ = slot.set(Box::new(Node { value, next: OnceLock::new() }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type_each_found_by_its_type() {
        let state = State::default();
        assert_eq!(state.get::<u8>(), None);
        assert_eq!(state.set(1u8), Ok(()));
        assert_eq!(state.set("two"), Ok(()));
        assert_eq!(state.set(3u8), Err(3), "a second u8 is refused");
        assert_eq!(state.get::<u8>(), Some(&1));
        assert_eq!(state.get::<&str>(), Some(&"two"));
        assert_eq!(state.get::<u16>(), None);
    }
}
