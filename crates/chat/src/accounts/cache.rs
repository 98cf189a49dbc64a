//! A bounded map for the accounts' caches and throttles. Past its capacity
//! it first drops the entries the caller calls stale, then an arbitrary
//! eighth of the rest: every entry can be rebuilt from the store, so losing
//! one costs a read (or a write), never correctness.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::Mutex;

pub(crate) struct BoundedMap<K, V> {
    map: Mutex<HashMap<K, V>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self { map: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.map.lock().get(key).cloned()
    }

    /// Inserts or replaces; makes room first when full.
    pub fn insert(&self, key: K, value: V, is_stale: impl Fn(&V) -> bool) {
        let mut map = self.map.lock();
        if !map.contains_key(&key) && map.len() >= self.capacity {
            map.retain(|_, v| !is_stale(v));
            if map.len() >= self.capacity {
                // Evicting a batch keeps this O(n) walk rare under pressure.
                let victims: Vec<K> = map.keys().take((self.capacity / 8).max(1)).cloned().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, value);
    }

    /// Changes an entry in place if it is present.
    pub fn update<Q: Hash + Eq + ?Sized>(&self, key: &Q, f: impl FnOnce(&mut V))
    where
        K: Borrow<Q>,
    {
        if let Some(v) = self.map.lock().get_mut(key) {
            f(v);
        }
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        self.map.lock().remove(key);
    }

    /// Keeps the entries for which `keep` is true.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.lock().retain(|k, v| keep(k, v));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity_dropping_stale_entries_first() {
        let m: BoundedMap<u32, bool> = BoundedMap::new(16);
        for i in 0..16 {
            m.insert(i, i % 2 == 0, |_| false);
        }
        assert_eq!(m.len(), 16);
        // Odd values are stale: they make the room.
        m.insert(100, true, |stale| !*stale);
        assert_eq!(m.len(), 9);
        assert_eq!(m.get(&100), Some(true));
        for i in 200..400 {
            m.insert(i, true, |_| false);
            assert!(m.len() <= 16);
        }
        // Replacing an existing key never evicts.
        let before = m.len();
        m.insert(399, false, |_| true);
        assert_eq!(m.len(), before);
        m.update(&399, |v| *v = true);
        assert_eq!(m.get(&399), Some(true));
        m.remove(&399);
        assert_eq!(m.get(&399), None);
    }
}
