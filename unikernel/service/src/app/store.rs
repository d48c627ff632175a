//! The bounded in-memory key-value store.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

/// Keys and their values, ordered by key bytes, within fixed limits.
///
/// The store never evicts: a write that does not fit fails and leaves
/// everything as it was, so an acknowledged write stays readable until it is
/// deleted.
#[derive(Debug)]
pub struct Store {
    entries: BTreeMap<Box<str>, Box<[u8]>>,
    /// Sum of key length plus value length over all entries.
    bytes: usize,
    max_keys: usize,
    max_bytes: usize,
}

/// What a successful [`Store::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The key was new.
    Created,
    /// The key existed; its value was replaced.
    Replaced,
}

/// Why a [`Store::put`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The store already holds its maximum number of keys.
    TooManyKeys,
    /// The entry would take the store past its byte limit.
    Full,
    /// The allocator has no room for the value.
    OutOfMemory,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooManyKeys => "store holds the maximum number of keys",
            Self::Full => "store is full",
            Self::OutOfMemory => "out of memory",
        })
    }
}

impl Store {
    /// An empty store holding at most `max_keys` keys and `max_bytes` bytes of
    /// keys plus values.
    pub fn new(max_keys: usize, max_bytes: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            bytes: 0,
            max_keys,
            max_bytes,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys plus values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(|value| &**value)
    }

    /// Stores `value` under `key`, unless that would exceed a limit.
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<Stored, StoreError> {
        let old_len = self.get(key).map(<[u8]>::len);
        let bytes = match old_len {
            Some(old_len) => self.bytes - old_len + value.len(),
            None if self.entries.len() >= self.max_keys => return Err(StoreError::TooManyKeys),
            None => self.bytes + key.len() + value.len(),
        };
        if bytes > self.max_bytes {
            return Err(StoreError::Full);
        }
        let value = copy_fallibly(value)?;
        self.bytes = bytes;
        if let Some(slot) = self.entries.get_mut(key) {
            *slot = value;
            return Ok(Stored::Replaced);
        }
        self.entries.insert(key.into(), value);
        Ok(Stored::Created)
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove_entry(key) {
            Some((key, value)) => {
                self.bytes -= key.len() + value.len();
                true
            }
            None => false,
        }
    }

    /// Keys in ascending byte order, starting after `after` (exclusive) or at
    /// the first key.
    pub fn keys_after<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a str> + Clone + 'a {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.entries
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(key, _)| &**key)
    }
}

/// Copies `value` to the heap, failing instead of aborting if memory is short.
fn copy_fallibly(value: &[u8]) -> Result<Box<[u8]>, StoreError> {
    let mut copy = Vec::new();
    copy.try_reserve_exact(value.len())
        .map_err(|_| StoreError::OutOfMemory)?;
    copy.extend_from_slice(value);
    Ok(copy.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_replaces_and_removes() {
        let mut store = Store::new(10, 1000);
        assert_eq!(store.put("a", b"1"), Ok(Stored::Created));
        assert_eq!(store.put("a", b"22"), Ok(Stored::Replaced));
        assert_eq!(store.get("a"), Some(&b"22"[..]));
        assert_eq!((store.len(), store.bytes()), (1, 3));
        assert!(store.remove("a"));
        assert!(!store.remove("a"));
        assert_eq!(store.get("a"), None);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn refuses_new_keys_beyond_the_key_limit() {
        let mut store = Store::new(2, 1000);
        store.put("a", b"1").unwrap();
        store.put("b", b"1").unwrap();
        assert_eq!(store.put("c", b"1"), Err(StoreError::TooManyKeys));
        assert_eq!(
            store.put("a", b"2"),
            Ok(Stored::Replaced),
            "replacing is fine"
        );
        assert_eq!(store.keys_after(None).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn counts_keys_and_values_against_the_byte_limit() {
        let mut store = Store::new(10, 10);
        assert_eq!(store.put("key", b"1234567"), Ok(Stored::Created)); // 3 + 7
        assert_eq!(store.put("k", b""), Err(StoreError::Full));
        assert_eq!(store.put("key", b"12345678"), Err(StoreError::Full));
        assert_eq!(store.get("key"), Some(&b"1234567"[..]), "old value kept");
        assert_eq!(store.put("key", b"1"), Ok(Stored::Replaced));
        assert_eq!(store.bytes(), 4);
        assert_eq!(store.put("k", b"12345"), Ok(Stored::Created));
        assert_eq!(store.bytes(), 10);
    }

    #[test]
    fn lists_keys_in_byte_order_after_a_cursor() {
        let mut store = Store::new(10, 1000);
        for key in ["b", "a", "B", "a.b", "_"] {
            store.put(key, b"0").unwrap();
        }
        assert_eq!(
            store.keys_after(None).collect::<Vec<_>>(),
            ["B", "_", "a", "a.b", "b"]
        );
        assert_eq!(
            store.keys_after(Some("a")).collect::<Vec<_>>(),
            ["a.b", "b"]
        );
        assert_eq!(store.keys_after(Some("aa")).collect::<Vec<_>>(), ["b"]);
        assert_eq!(store.keys_after(Some("z")).count(), 0);
    }
}
