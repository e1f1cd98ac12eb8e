//! A least-recently-used map bounded by the bytes of its values (image embeddings, low-resolution
//! logits): inserting past the bound drops the entries used longest ago.

use std::collections::{BTreeMap, HashMap};

pub struct Lru<V> {
    entries: HashMap<String, Entry<V>>,
    /// use tick -> key, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
    capacity: usize,
    evictions: u64,
}

struct Entry<V> {
    value: V,
    bytes: usize,
    tick: u64,
}

impl<V: Clone> Lru<V> {
    /// A cache holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            capacity,
            evictions: 0,
        }
    }

    /// The value under `key`, now the most recently used.
    pub fn get(&mut self, key: &str) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.get_mut(key)?;
        self.order.remove(&e.tick);
        e.tick = tick;
        self.order.insert(tick, key.to_string());
        Some(e.value.clone())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Stores `value` (of `bytes`) under `key`, dropping the least recently used entries to stay
    /// within the bound. A value larger than the whole bound is not stored: `false`.
    pub fn insert(&mut self, key: String, value: V, bytes: usize) -> bool {
        self.remove(&key);
        if bytes > self.capacity {
            return false;
        }
        while self.bytes + bytes > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.bytes;
                self.evictions += 1;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                bytes,
                tick: self.tick,
            },
        );
        self.bytes += bytes;
        true
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let e = self.entries.remove(key)?;
        self.order.remove(&e.tick);
        self.bytes -= e.bytes;
        Some(e.value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_least_recently_used_within_the_byte_bound() {
        let mut c = Lru::new(10);
        assert!(c.insert("a".into(), 1, 4));
        assert!(c.insert("b".into(), 2, 4));
        assert_eq!(c.get("a"), Some(1)); // b is now the oldest
        assert!(c.insert("c".into(), 3, 4));
        assert_eq!(c.get("b"), None);
        assert_eq!((c.get("a"), c.get("c")), (Some(1), Some(3)));
        assert_eq!((c.len(), c.bytes(), c.evictions()), (2, 8, 1));
        assert!(!c.insert("huge".into(), 9, 11));
        assert_eq!(c.len(), 2);
        // Replacing a key frees its old bytes.
        assert!(c.insert("a".into(), 5, 6));
        assert_eq!((c.get("a"), c.bytes()), (Some(5), 10));
    }
}
