//! A small map on a `Vec`, for the few entries a page keeps in flight.
//!
//! `BTreeMap` costs about 8 KB of wasm per key and value type, and a page has a handful of
//! requests outstanding, so a linear scan is both smaller and fast enough.

/// Entries by key, in no particular order.
#[derive(Debug)]
pub(crate) struct Table<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table { entries: Vec::new() }
    }
}

impl<K: PartialEq + Copy, V> Table<K, V> {
    pub(crate) fn contains(&self, key: K) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    pub(crate) fn get_mut(&mut self, key: K) -> Option<&mut V> {
        self.entries.iter_mut().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Adds or replaces the entry for `key`.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        match self.get_mut(key) {
            Some(slot) => *slot = value,
            None => self.entries.push((key, value)),
        }
    }

    pub(crate) fn remove(&mut self, key: K) -> Option<V> {
        let at = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.swap_remove(at).1)
    }

    /// Removes and returns the first entry whose value matches.
    pub(crate) fn remove_where(&mut self, matches: impl Fn(&V) -> bool) -> Option<V> {
        let at = self.entries.iter().position(|(_, v)| matches(v))?;
        Some(self.entries.swap_remove(at).1)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes and returns every entry.
    pub(crate) fn take(&mut self) -> Vec<(K, V)> {
        std::mem::take(&mut self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn insert_get_replace_remove_take() {
        let mut t = Table::default();
        assert!(t.is_empty());
        t.insert(1, "a");
        t.insert(2, "b");
        t.insert(1, "c");
        assert!(t.contains(1) && t.contains(2) && !t.contains(3));
        assert_eq!(t.get_mut(1).map(|v| *v), Some("c"));
        assert_eq!(t.remove(1), Some("c"));
        assert_eq!(t.remove(1), None);
        t.insert(3, "d");
        assert_eq!(t.remove_where(|v| *v == "d"), Some("d"));
        assert_eq!(t.remove_where(|v| *v == "d"), None);
        assert_eq!(t.take(), vec![(2, "b")]);
        assert!(t.is_empty());
    }
}
