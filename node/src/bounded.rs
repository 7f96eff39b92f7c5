//! A map of what strangers can make the node remember (call-out verdicts,
//! refusal counts, names proved by DNS), bounded twice: every entry expires,
//! and the map never holds more than its cap. At the cap the expired go
//! first, then arbitrary entries (random eviction, by hash order): someone
//! filling the map only pushes other entries out early, and each of these
//! maps is a cache whose lost entry costs a DNS look-up, a call-out or a
//! polite reply, never a wrong verdict. Time is the caller's, in Unix ms.

use std::hash::Hash;

use dashmap::DashMap;

pub struct BoundedMap<K, V> {
    entries: DashMap<K, Entry<V>>,
    cap: usize,
}

struct Entry<V> {
    value: V,
    expires_ms: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> BoundedMap<K, V> {
    pub fn new(cap: usize) -> Self {
        BoundedMap { entries: DashMap::new(), cap: cap.max(1) }
    }

    /// The value of `key`, unless it has expired at `now_ms`.
    pub fn get(&self, key: &K, now_ms: u64) -> Option<V> {
        self.entries.get(key).filter(|e| e.expires_ms > now_ms).map(|e| e.value.clone())
    }

    /// Sets `key` to `value` until `expires_ms`, making room first if needed.
    pub fn insert(&self, key: K, value: V, expires_ms: u64, now_ms: u64) {
        if !self.entries.contains_key(&key) {
            self.make_room(now_ms);
        }
        self.entries.insert(key, Entry { value, expires_ms });
    }

    /// Changes `key`'s value in place, starting from `V::default()` when it
    /// is absent or expired, and keeps it until `expires_ms`; what `change`
    /// returns.
    pub fn update<R>(&self, key: K, expires_ms: u64, now_ms: u64, change: impl FnOnce(&mut V) -> R) -> R
    where
        V: Default,
    {
        if !self.entries.contains_key(&key) {
            self.make_room(now_ms);
        }
        let mut entry = self.entries.entry(key).or_insert_with(|| Entry { value: V::default(), expires_ms });
        if entry.expires_ms <= now_ms {
            entry.value = V::default();
        }
        entry.expires_ms = expires_ms;
        change(&mut entry.value)
    }

    /// Changes a live `key` in place, its value and its expiry (Unix ms);
    /// `None` when it is absent or expired at `now_ms`.
    pub fn modify<R>(&self, key: &K, now_ms: u64, change: impl FnOnce(&mut V, &mut u64) -> R) -> Option<R> {
        let mut entry = self.entries.get_mut(key).filter(|e| e.expires_ms > now_ms)?;
        let Entry { value, expires_ms } = &mut *entry;
        Some(change(value, expires_ms))
    }

    pub fn remove(&self, key: &K) {
        self.entries.remove(key);
    }

    /// Forgets what has expired at `now_ms`.
    pub fn sweep(&self, now_ms: u64) {
        self.entries.retain(|_, e| e.expires_ms > now_ms);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// At the cap: the expired go; if that is not enough, an eighth of the
    /// cap goes, whatever it holds (so the sweep and the rebuild are paid
    /// once per cap/8 new keys).
    fn make_room(&self, now_ms: u64) {
        if self.entries.len() < self.cap {
            return;
        }
        self.sweep(now_ms);
        let excess = (self.entries.len() + 1).saturating_sub(self.cap);
        if excess == 0 {
            return;
        }
        let evict = excess.max(self.cap / 8);
        let victims: Vec<K> = self.entries.iter().take(evict).map(|e| e.key().clone()).collect();
        for key in victims {
            self.entries.remove(&key);
        }
        // Removals leave tombstones that would make the table grow anyway:
        // rebuilt at the size it holds, its memory follows the cap alone.
        self.entries.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let map = BoundedMap::new(10);
        map.insert("a", 1, 100, 0);
        assert_eq!(map.get(&"a", 99), Some(1));
        assert_eq!(map.get(&"a", 100), None);
        map.sweep(100);
        assert!(map.is_empty());
    }

    #[test]
    fn update_starts_afresh_after_expiry() {
        let map: BoundedMap<&str, u32> = BoundedMap::new(10);
        assert_eq!(
            map.update("a", 100, 0, |n| {
                *n += 1;
                *n
            }),
            1
        );
        assert_eq!(
            map.update("a", 100, 50, |n| {
                *n += 1;
                *n
            }),
            2
        );
        assert_eq!(
            map.update("a", 200, 100, |n| {
                *n += 1;
                *n
            }),
            1,
            "expired at 100"
        );
    }

    #[test]
    fn a_million_keys_never_hold_more_than_the_cap() {
        let map = BoundedMap::new(10_000);
        let mut largest = 0;
        for key in 0..1_000_000u32 {
            map.insert(key, key, u64::MAX, 0);
            largest = largest.max(map.len());
        }
        assert_eq!(largest, 10_000);
        assert!(map.get(&999_999, 0).is_some(), "the newest is kept");
    }

    #[test]
    fn the_expired_go_before_anything_live() {
        let map = BoundedMap::new(100);
        for key in 0..50u32 {
            map.insert(key, (), 1_000, 0);
        }
        for key in 50..100u32 {
            map.insert(key, (), 10, 0);
        }
        map.insert(100, (), 1_000, 20);
        assert_eq!(map.len(), 51);
        assert!((0..50).all(|k| map.get(&k, 20).is_some()), "the live ones stay");
    }
}
