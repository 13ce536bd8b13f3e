//! The storage vocabulary: the keys records are stored under, the operations a node asks its
//! host to perform ([`StorageOp`]) and the host's answers ([`StorageResult`]).
//!
//! Storage is an effect, not a call: the node emits an operation with an id and the host answers
//! it later. These types are all a storage engine (the native host's disk store, [`MemStore`](crate::store::MemStore),
//! the simulator's disks) needs to know of the protocol.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::ring::PartitionId;

/// Which kind of record a storage key names. Data sorts before hints, so a host can keep both in
/// one ordered keyspace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Space {
    /// This node's replica of a key.
    Data,
    /// A replica this node holds for `owner`, which was unreachable when it was written (a hint);
    /// delivered to the owner and deleted once the owner has it.
    Hint {
        /// The preference-list node the write was meant for.
        owner: NodeId,
    },
    /// The node's own metadata (its cluster view), under `key`; bucket and partition unused.
    Meta,
}

/// The key under which a node stores an object: grouped by space then partition, so a
/// partition's keys (or all hints) can be scanned in order. Ordered as its encoding is, so a host
/// that scans encoded keys and [`MemStore`](crate::store::MemStore) agree.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StorageKey {
    /// Data or hint.
    pub space: Space,
    /// The Q-partition of the key.
    pub partition: PartitionId,
    /// Bucket name.
    pub bucket: Vec<u8>,
    /// Key.
    pub key: Vec<u8>,
}

impl StorageKey {
    /// A key of this node's own replica.
    pub fn data(partition: PartitionId, bucket: &[u8], key: &[u8]) -> StorageKey {
        StorageKey {
            space: Space::Data,
            partition,
            bucket: bucket.to_vec(),
            key: key.to_vec(),
        }
    }

    /// Where a node keeps its cluster view.
    pub fn view() -> StorageKey {
        StorageKey {
            space: Space::Meta,
            partition: PartitionId(0),
            bucket: Vec::new(),
            key: b"view".to_vec(),
        }
    }

    /// The same bucket and key in another space.
    pub fn in_space(&self, space: Space) -> StorageKey {
        StorageKey {
            space,
            partition: self.partition,
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        }
    }

    fn order_key(&self) -> (u8, usize, &[u8], PartitionId, usize, &[u8], &[u8]) {
        let (tag, owner): (u8, &[u8]) = match &self.space {
            Space::Data => (0, &[]),
            Space::Hint { owner } => (1, owner.as_str().as_bytes()),
            Space::Meta => (2, &[]),
        };
        (
            tag,
            owner.len(),
            owner,
            self.partition,
            self.bucket.len(),
            &self.bucket,
            &self.key,
        )
    }
}

impl Ord for StorageKey {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl PartialOrd for StorageKey {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A storage key that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed storage key")]
pub struct StorageKeyError;

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], StorageKeyError> {
    if bytes.len() < n {
        return Err(StorageKeyError);
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8]) -> Result<u32, StorageKeyError> {
    let b = take(bytes, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl StorageKey {
    /// Bytes whose lexicographic order is the order of storage keys: space tag (0 data, 1 hint),
    /// for hints the owner's length (u32 BE) and name, then partition (u32 BE), bucket length
    /// (u32 BE), bucket, key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.bucket.len() + self.key.len());
        match &self.space {
            Space::Data => out.push(0),
            Space::Hint { owner } => {
                out.push(1);
                out.extend_from_slice(&(owner.as_str().len() as u32).to_be_bytes());
                out.extend_from_slice(owner.as_str().as_bytes());
            }
            Space::Meta => out.push(2),
        }
        out.extend_from_slice(&self.partition.0.to_be_bytes());
        out.extend_from_slice(&(self.bucket.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.bucket);
        out.extend_from_slice(&self.key);
        out
    }

    /// The inverse of [`StorageKey::encode`].
    pub fn decode(mut bytes: &[u8]) -> Result<StorageKey, StorageKeyError> {
        let input = &mut bytes;
        let space = match take(input, 1)?[0] {
            0 => Space::Data,
            1 => {
                let len = take_u32(input)? as usize;
                let owner = core::str::from_utf8(take(input, len)?).map_err(|_| StorageKeyError)?;
                Space::Hint {
                    owner: NodeId::new(owner),
                }
            }
            2 => Space::Meta,
            _ => return Err(StorageKeyError),
        };
        let partition = PartitionId(take_u32(input)?);
        let bucket_len = take_u32(input)? as usize;
        let bucket = take(input, bucket_len)?.to_vec();
        Ok(StorageKey {
            space,
            partition,
            bucket,
            key: input.to_vec(),
        })
    }
}

/// Which records a scan walks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanRange {
    /// This node's replicas of one partition.
    Partition(PartitionId),
    /// Every hint, whoever it is for.
    Hints,
    /// This node's replicas of one bucket's keys in one partition (a listing's page). Its
    /// keys share a prefix of their encoding, as a partition's do.
    Bucket {
        /// The partition.
        partition: PartitionId,
        /// The bucket.
        bucket: Vec<u8>,
    },
}

impl ScanRange {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &StorageKey) -> bool {
        match self {
            ScanRange::Partition(partition) => {
                key.space == Space::Data && key.partition == *partition
            }
            ScanRange::Hints => matches!(key.space, Space::Hint { .. }),
            ScanRange::Bucket { partition, bucket } => {
                key.space == Space::Data && key.partition == *partition && key.bucket == *bucket
            }
        }
    }

    /// The smallest key of the range.
    pub fn start(&self) -> StorageKey {
        match self {
            ScanRange::Partition(partition) => StorageKey::data(*partition, &[], &[]),
            ScanRange::Bucket { partition, bucket } => StorageKey::data(*partition, bucket, &[]),
            ScanRange::Hints => StorageKey {
                space: Space::Hint {
                    owner: NodeId::new(""),
                },
                partition: PartitionId(0),
                bucket: Vec::new(),
                key: Vec::new(),
            },
        }
    }
}

/// One write of an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOp {
    /// Store a record.
    Put {
        /// Where.
        key: StorageKey,
        /// The encoded object.
        record: Vec<u8>,
    },
    /// Remove a record.
    Delete {
        /// Where.
        key: StorageKey,
    },
}

/// A storage operation the node asks the host to perform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageOp {
    /// Read one record.
    Get {
        /// Which.
        key: StorageKey,
    },
    /// Store one record; with `sync` the host answers only once it is durable (fsynced).
    Put {
        /// Where.
        key: StorageKey,
        /// The encoded object (see [`Object::encode`](crate::version::Object::encode)).
        record: Vec<u8>,
        /// Whether the write must be durable before the answer.
        sync: bool,
    },
    /// Remove one record.
    Delete {
        /// Which.
        key: StorageKey,
    },
    /// Apply all the writes or none.
    Batch {
        /// The writes, applied in order.
        ops: Vec<BatchOp>,
        /// Whether the batch must be durable before the answer.
        sync: bool,
    },
    /// Records of a range in key order, strictly after `after`, at most `limit` of them.
    Scan {
        /// Which records.
        range: ScanRange,
        /// Resume point: the last key of the previous page.
        after: Option<StorageKey>,
        /// Page size.
        limit: usize,
    },
}

/// Why a storage operation failed. More kinds may be added: match with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// No space left; nothing of the operation was applied.
    Full,
    /// Any other I/O failure.
    Io,
}

/// A storage operation that failed; the host guarantees it was not applied (batches are atomic).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("storage {kind:?}: {message}")]
pub struct StorageError {
    /// Class of failure.
    pub kind: StorageErrorKind,
    /// The host's description.
    pub message: String,
}

/// The host's answer to a [`StorageOp`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageResult {
    /// Answer to `Get`: the record, if any.
    Record(Option<Vec<u8>>),
    /// Answer to `Put`, `Delete` and `Batch`: applied; `synced` tells whether it is durable.
    Written {
        /// Whether the write is durable.
        synced: bool,
    },
    /// Answer to `Scan`.
    Scanned {
        /// Keys and records in key order.
        items: Vec<(StorageKey, Vec<u8>)>,
        /// True when the range has no records after the last one returned.
        done: bool,
    },
    /// The operation failed and was not applied.
    Failed(StorageError),
}
