//! `MemStore`, an in-memory store that answers the node's storage effects, and a small driver that
//! answers them inline. Used by the simulator, the tests and the bindings.
//!
//! `MemStore` models a disk with a volatile cache: writes without `sync` land in the cache, a
//! synced write flushes the cache first (as fsync does), and [`MemStore::crash`] may drop what was
//! never flushed. That lets the simulator test what `dw` promises.

use alloc::collections::BTreeMap;
use alloc::string::ToString;
use alloc::vec::Vec;
use core::ops::Bound;

use crate::io::Output;
use crate::node::Node;
use crate::storage::{
    BatchOp, StorageError, StorageErrorKind, StorageKey, StorageOp, StorageResult,
};

/// An in-memory store with a durable layer and a volatile (unsynced) overlay.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    durable: BTreeMap<StorageKey, Vec<u8>>,
    /// Unsynced changes over `durable`: `None` is an unsynced delete.
    volatile: BTreeMap<StorageKey, Option<Vec<u8>>>,
    /// When set, writes fail with [`StorageErrorKind::Full`] once the stored bytes would exceed it.
    capacity_bytes: Option<usize>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits the bytes stored (keys and records), to simulate a full disk.
    pub fn set_capacity(&mut self, capacity_bytes: Option<usize>) {
        self.capacity_bytes = capacity_bytes;
    }

    /// Performs one operation.
    pub fn apply(&mut self, op: &StorageOp) -> StorageResult {
        match op {
            StorageOp::Get { key } => StorageResult::Record(self.get(key).map(<[u8]>::to_vec)),
            StorageOp::Put { key, record, sync } => self.write(
                &[BatchOp::Put {
                    key: key.clone(),
                    record: record.clone(),
                }],
                *sync,
            ),
            StorageOp::Delete { key } => self.write(&[BatchOp::Delete { key: key.clone() }], false),
            StorageOp::Batch { ops, sync } => self.write(ops, *sync),
            StorageOp::Scan {
                range,
                after,
                limit,
            } => {
                let start = match after {
                    Some(key) if *key >= range.start() => Bound::Excluded(key.clone()),
                    _ => Bound::Included(range.start()),
                };
                let mut items = Vec::new();
                let mut done = true;
                // Records are copied only once they are known to be in range: the first key
                // past an empty partition may be a large one (the persisted view).
                for (key, record) in self.merged_range(start) {
                    if !range.contains(key) {
                        break;
                    }
                    if items.len() == *limit {
                        done = false;
                        break;
                    }
                    items.push((key.clone(), record.clone()));
                }
                StorageResult::Scanned { items, done }
            }
        }
    }

    /// The current record of `key` (unsynced writes included).
    pub fn get(&self, key: &StorageKey) -> Option<&[u8]> {
        match self.volatile.get(key) {
            Some(Some(record)) => Some(record),
            Some(None) => None,
            None => self.durable.get(key).map(Vec::as_slice),
        }
    }

    /// Every key and record, in key order (unsynced writes included).
    pub fn iter(&self) -> impl Iterator<Item = (StorageKey, Vec<u8>)> + '_ {
        self.merged_range(Bound::Unbounded)
            .map(|(key, record)| (key.clone(), record.clone()))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites a stored record's bytes in place, to simulate corruption on disk. Changes
    /// nothing else (unsynced writes stay unsynced).
    pub fn corrupt(&mut self, key: &StorageKey, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let record = match self.volatile.get_mut(key) {
            Some(Some(record)) => Some(record),
            Some(None) => None,
            None => self.durable.get_mut(key),
        };
        match record {
            Some(record) => {
                f(record);
                true
            }
            None => false,
        }
    }

    /// A process crash: with `lose_unsynced`, writes never flushed are gone (a power loss);
    /// without, they survive (the OS had them).
    pub fn crash(&mut self, lose_unsynced: bool) {
        if lose_unsynced {
            self.volatile.clear();
        } else {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (key, change) in core::mem::take(&mut self.volatile) {
            match change {
                Some(record) => {
                    self.durable.insert(key, record);
                }
                None => {
                    self.durable.remove(&key);
                }
            }
        }
    }

    fn stored_bytes(&self) -> usize {
        self.iter()
            .map(|(k, v)| k.bucket.len() + k.key.len() + v.len())
            .sum()
    }

    fn write(&mut self, ops: &[BatchOp], sync: bool) -> StorageResult {
        if let Some(capacity) = self.capacity_bytes {
            let added: usize = ops
                .iter()
                .map(|op| match op {
                    BatchOp::Put { key, record } => key.bucket.len() + key.key.len() + record.len(),
                    BatchOp::Delete { .. } => 0,
                })
                .sum();
            // A full disk still takes deletes (they free space); only growth is refused.
            if added > 0 && self.stored_bytes() + added > capacity {
                return StorageResult::Failed(StorageError {
                    kind: StorageErrorKind::Full,
                    message: "no space left on the simulated disk".to_string(),
                });
            }
        }
        if sync {
            self.flush();
        }
        for op in ops {
            match op {
                BatchOp::Put { key, record } if sync => {
                    self.durable.insert(key.clone(), record.clone());
                }
                BatchOp::Delete { key } if sync => {
                    self.durable.remove(key);
                }
                BatchOp::Put { key, record } => {
                    self.volatile.insert(key.clone(), Some(record.clone()));
                }
                BatchOp::Delete { key } => {
                    self.volatile.insert(key.clone(), None);
                }
            }
        }
        StorageResult::Written { synced: sync }
    }

    fn merged_range(
        &self,
        start: Bound<StorageKey>,
    ) -> impl Iterator<Item = (&StorageKey, &Vec<u8>)> + '_ {
        let mut durable = self
            .durable
            .range((start.clone(), Bound::Unbounded))
            .peekable();
        let mut volatile = self.volatile.range((start, Bound::Unbounded)).peekable();
        core::iter::from_fn(move || loop {
            let take_volatile = match (durable.peek(), volatile.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((dk, _)), Some((vk, _))) => vk <= dk,
            };
            if take_volatile {
                let (key, change) = volatile.next()?;
                if durable.peek().is_some_and(|(dk, _)| *dk == key) {
                    durable.next();
                }
                if let Some(record) = change {
                    return Some((key, record));
                }
            } else {
                return durable.next();
            }
        })
    }
}

/// Drains `node`'s outputs, answering storage effects from `store` at once, and returns every
/// other output (sends, replies, events) in order. Call after each input.
pub fn drive(node: &mut Node, store: &mut MemStore, now: u64) -> Vec<Output> {
    let mut others = Vec::new();
    while let Some(output) = node.poll_output() {
        match output {
            Output::Storage { op_id, op } => {
                let result = store.apply(&op);
                node.handle_storage(now, op_id, result);
            }
            other => others.push(other),
        }
    }
    others
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::PartitionId;
    use crate::storage::{ScanRange, Space};
    use crate::NodeId;
    use alloc::vec;

    fn key(partition: u32, key: &str) -> StorageKey {
        StorageKey::data(PartitionId(partition), b"b", key.as_bytes())
    }

    fn put(store: &mut MemStore, k: &StorageKey, v: &[u8], sync: bool) {
        let result = store.apply(&StorageOp::Put {
            key: k.clone(),
            record: v.to_vec(),
            sync,
        });
        assert_eq!(result, StorageResult::Written { synced: sync });
    }

    #[test]
    fn crash_loses_only_unsynced_writes() {
        let mut store = MemStore::new();
        put(&mut store, &key(0, "a"), b"1", false);
        put(&mut store, &key(0, "b"), b"2", true); // flushes "a" too
        put(&mut store, &key(0, "c"), b"3", false);
        store.crash(true);
        assert_eq!(store.get(&key(0, "a")), Some(&b"1"[..]));
        assert_eq!(store.get(&key(0, "b")), Some(&b"2"[..]));
        assert_eq!(store.get(&key(0, "c")), None);
    }

    #[test]
    fn scan_pages_one_partition_in_order() {
        let mut store = MemStore::new();
        for (p, k) in [(1, "c"), (0, "z"), (1, "a"), (2, "a"), (1, "b")] {
            put(&mut store, &key(p, k), k.as_bytes(), p == 1 && k == "a");
        }
        store.apply(&StorageOp::Delete { key: key(1, "b") });
        let scan = |after| {
            store.clone().apply(&StorageOp::Scan {
                range: ScanRange::Partition(PartitionId(1)),
                after,
                limit: 1,
            })
        };
        let StorageResult::Scanned { items, done } = scan(None) else {
            panic!()
        };
        assert_eq!(items, vec![(key(1, "a"), b"a".to_vec())]);
        assert!(!done);
        let StorageResult::Scanned { items, done } = scan(Some(key(1, "a"))) else {
            panic!()
        };
        assert_eq!(items, vec![(key(1, "c"), b"c".to_vec())]);
        assert!(done, "nothing of partition 1 follows c");
        let StorageResult::Scanned { items, done } = scan(Some(key(1, "c"))) else {
            panic!()
        };
        assert!(items.is_empty() && done);
    }

    #[test]
    fn full_store_refuses_writes_and_keeps_data() {
        let mut store = MemStore::new();
        put(&mut store, &key(0, "a"), b"1234", true);
        store.set_capacity(Some(10));
        let result = store.apply(&StorageOp::Put {
            key: key(0, "b"),
            record: vec![0; 64],
            sync: false,
        });
        assert!(matches!(
            result,
            StorageResult::Failed(StorageError {
                kind: StorageErrorKind::Full,
                ..
            })
        ));
        assert_eq!(store.get(&key(0, "a")), Some(&b"1234"[..]));
        assert_eq!(store.get(&key(0, "b")), None);
    }

    #[test]
    fn storage_keys_encode_in_order() {
        let hint = |owner: &str, p| {
            key(p, "a").in_space(Space::Hint {
                owner: NodeId::new(owner),
            })
        };
        let keys = [
            key(0, "b"),
            key(1, ""),
            key(1, "a"),
            key(1, "ab"),
            key(256, "a"),
            hint("n1", 0),
            hint("n1", 7),
            hint("n2", 0),
            hint("n10", 0),
            StorageKey::view(),
        ];
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].encode() < pair[1].encode());
        }
        for k in &keys {
            assert_eq!(StorageKey::decode(&k.encode()).as_ref(), Ok(k));
        }
        assert!(StorageKey::decode(&[0, 0, 0, 0, 1, 0, 0, 0, 9, 1]).is_err());
        assert!(StorageKey::decode(&[3, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn hint_scans_skip_data_and_data_scans_skip_hints() {
        let mut store = MemStore::new();
        let hint = key(1, "h").in_space(Space::Hint {
            owner: NodeId::new("n2"),
        });
        put(&mut store, &key(1, "a"), b"data", false);
        put(&mut store, &hint, b"hint", false);
        put(&mut store, &key(2, "a"), b"data", false);
        let scan = |range| {
            store.clone().apply(&StorageOp::Scan {
                range,
                after: None,
                limit: 10,
            })
        };
        assert_eq!(
            scan(ScanRange::Hints),
            StorageResult::Scanned {
                items: vec![(hint.clone(), b"hint".to_vec())],
                done: true
            }
        );
        assert_eq!(
            scan(ScanRange::Partition(PartitionId(1))),
            StorageResult::Scanned {
                items: vec![(key(1, "a"), b"data".to_vec())],
                done: true
            }
        );
    }
}
