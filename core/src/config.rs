//! Node configuration, bucket properties and quorum values.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

use crate::error::QuorumError;
use crate::id::NodeId;
use crate::membership::{DetectorConfig, GossipConfig};
use crate::merkle::MerkleConfig;
use crate::ring::RingConfig;
use crate::version::ConflictMode;

/// Milliseconds since an epoch the host picks. The core never reads a clock: every `now` is an input.
pub type Millis = u64;

/// Largest key accepted, in bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest bucket name accepted, in bytes.
pub const DEFAULT_MAX_BUCKET_BYTES: usize = 1024;
/// Largest value accepted, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;

/// A quorum as a client or a bucket states it: a count, or a name resolved against N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumValue {
    /// One replica.
    One,
    /// A majority of N: `N / 2 + 1`.
    Quorum,
    /// All N replicas.
    All,
    /// An explicit number of replicas.
    Count(u32),
}

impl QuorumValue {
    /// The number of replicas this value stands for when the replication factor is `n`.
    pub fn resolve(self, n: u32) -> u32 {
        match self {
            QuorumValue::One => 1,
            QuorumValue::Quorum => n / 2 + 1,
            QuorumValue::All => n,
            QuorumValue::Count(c) => c,
        }
    }
}

impl FromStr for QuorumValue {
    type Err = QuorumError;

    /// Parses `one`, `quorum`, `all` (any case) or a decimal count.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(QuorumValue::One),
            "quorum" => Ok(QuorumValue::Quorum),
            "all" => Ok(QuorumValue::All),
            other => other
                .parse::<u32>()
                .map(QuorumValue::Count)
                .map_err(|_| QuorumError::NotANumber(String::from(s))),
        }
    }
}

impl fmt::Display for QuorumValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuorumValue::One => f.write_str("one"),
            QuorumValue::Quorum => f.write_str("quorum"),
            QuorumValue::All => f.write_str("all"),
            QuorumValue::Count(c) => write!(f, "{c}"),
        }
    }
}

/// Replication and conflict settings of a bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Replication factor N.
    pub n: u32,
    /// Replies a get waits for.
    pub r: QuorumValue,
    /// Acknowledgements a put waits for.
    pub w: QuorumValue,
    /// Of those, how many replicas must have made the write durable (fsynced) first; 0 by default.
    pub dw: QuorumValue,
    /// Siblings (keep concurrent writes) or last-writer-wins (lose all but one concurrent write).
    pub conflict_mode: ConflictMode,
}

impl Default for BucketProps {
    fn default() -> Self {
        BucketProps {
            n: 3,
            r: QuorumValue::Quorum,
            w: QuorumValue::Quorum,
            dw: QuorumValue::Count(0),
            conflict_mode: ConflictMode::Siblings,
        }
    }
}

/// Per-request overrides of a bucket's properties; `None` keeps the bucket's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOptions {
    /// Replication factor for this request (at most the bucket's N).
    pub n: Option<u32>,
    /// Read quorum.
    pub r: Option<QuorumValue>,
    /// Write quorum.
    pub w: Option<QuorumValue>,
    /// Durable-write quorum.
    pub dw: Option<QuorumValue>,
    /// Time the coordinator waits for the quorum, in milliseconds.
    pub timeout_ms: Option<Millis>,
}

/// Quorums resolved to counts for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorums {
    /// Replication factor.
    pub n: u32,
    /// Read quorum.
    pub r: u32,
    /// Write quorum.
    pub w: u32,
    /// Durable-write quorum.
    pub dw: u32,
}

impl Quorums {
    /// Whether a read after an acknowledged write is guaranteed to see it (`r + w > n`).
    pub fn read_your_writes(&self) -> bool {
        self.r + self.w > self.n
    }
}

impl BucketProps {
    /// Resolves this bucket's quorums with a request's overrides.
    ///
    /// `r + w <= n` is accepted (and reported by [`Quorums::read_your_writes`]); zero, or more than
    /// N, for r or w, more than N for dw, or an N above the bucket's are errors.
    pub fn resolve(&self, options: &RequestOptions) -> Result<Quorums, QuorumError> {
        if self.n == 0 {
            return Err(QuorumError::ZeroN);
        }
        let n = match options.n {
            None => self.n,
            Some(0) => return Err(QuorumError::ZeroN),
            Some(n) if n > self.n => {
                return Err(QuorumError::NAboveBucket {
                    requested: n,
                    bucket: self.n,
                })
            }
            Some(n) => n,
        };
        let check = |name: &'static str, value: QuorumValue, min: u32| {
            let count = value.resolve(n);
            if count < min || count > n {
                Err(QuorumError::OutOfRange {
                    name: String::from(name),
                    count,
                    n,
                })
            } else {
                Ok(count)
            }
        };
        Ok(Quorums {
            n,
            r: check("r", options.r.unwrap_or(self.r), 1)?,
            w: check("w", options.w.unwrap_or(self.w), 1)?,
            dw: check("dw", options.dw.unwrap_or(self.dw), 0)?,
        })
    }
}

/// Everything a [`Node`](crate::node::Node) needs to know about itself and its cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Grows at every start of this node (persisted by the host; a host may use clock milliseconds so
    /// that a node whose data folder was wiped still starts above every earlier incarnation).
    /// It makes this run's version-vector actor new, so a node that lost unsynced writes in a crash,
    /// or its whole disk, can never issue the same dot twice.
    pub incarnation: u64,
    /// Seed of the node's RNG; the host draws it from its own randomness.
    pub seed: u64,
    /// Placement settings (Q, strategy).
    pub ring: RingConfig,
    /// Properties of buckets that have none of their own.
    pub default_bucket: BucketProps,
    /// Buckets with their own properties.
    pub buckets: BTreeMap<Vec<u8>, BucketProps>,
    /// Default time a coordinator waits for a quorum.
    pub request_timeout_ms: Millis,
    /// Largest key accepted.
    pub max_key_bytes: usize,
    /// Largest bucket name accepted.
    pub max_bucket_bytes: usize,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Version-vector entries kept per object before the oldest are dropped.
    pub max_clock_entries: usize,
    /// Whether gets repair stale replicas.
    pub read_repair: bool,
    /// How often hints are handed over to their owners.
    pub handoff_interval_ms: Millis,
    /// Hints sent per hand-over round (the rate limit).
    pub handoff_batch: usize,
    /// How often a node starts an anti-entropy exchange (one partition, one peer at a time).
    pub anti_entropy_interval_ms: Millis,
    /// Shape of the Merkle trees; every node of a cluster must use the same.
    pub merkle: MerkleConfig,
    /// Most tree nodes or segments named in one exchange message.
    pub exchange_max_items: usize,
    /// Most keys one exchange repairs (the rest wait for the next exchange).
    pub repair_batch: usize,
    /// Keys read per page when a tree is built from the store.
    pub tree_build_page: usize,
    /// How old a tree may get before it is rebuilt from the store. Trees follow the node's own
    /// writes, not the disk, so silent corruption of a record nobody reads shows up only in a
    /// rebuilt tree (Riak's AAE rebuilds for the same reason).
    pub tree_rebuild_interval_ms: Millis,
    /// How long a tombstone stays after every replica has it before it is reaped. Long
    /// enough for hints and hand-overs holding older versions to arrive (they would resurrect a
    /// reaped key).
    pub tombstone_grace_ms: Millis,
    /// The cluster's name: views (and so nodes) of different clusters never merge.
    pub cluster: String,
    /// Gossip interval and seed nodes.
    pub gossip: GossipConfig,
    /// Failure detector settings.
    pub detector: DetectorConfig,
    /// A peer down this long raises an alert event (once per outage).
    pub down_alert_ms: Millis,
}

impl NodeConfig {
    /// A configuration with the defaults for node `node_id`.
    pub fn new(node_id: impl Into<NodeId>) -> Self {
        NodeConfig {
            node_id: node_id.into(),
            incarnation: 0,
            seed: 0,
            ring: RingConfig::default(),
            default_bucket: BucketProps::default(),
            buckets: BTreeMap::new(),
            request_timeout_ms: 5_000,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_bucket_bytes: DEFAULT_MAX_BUCKET_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_clock_entries: 64,
            read_repair: true,
            handoff_interval_ms: 1_000,
            handoff_batch: 32,
            anti_entropy_interval_ms: 5_000,
            merkle: MerkleConfig::default(),
            exchange_max_items: 64,
            repair_batch: 256,
            tree_build_page: 256,
            tree_rebuild_interval_ms: 6 * 60 * 60 * 1_000,
            tombstone_grace_ms: 60 * 60 * 1_000,
            cluster: String::from("ringkv"),
            gossip: GossipConfig::default(),
            detector: DetectorConfig::default(),
            down_alert_ms: 60_000,
        }
    }

    /// The properties in force for `bucket`.
    pub fn bucket(&self, bucket: &[u8]) -> &BucketProps {
        self.buckets.get(bucket).unwrap_or(&self.default_bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_names_parse_and_resolve() {
        assert_eq!("QUORUM".parse::<QuorumValue>(), Ok(QuorumValue::Quorum));
        assert_eq!("2".parse::<QuorumValue>(), Ok(QuorumValue::Count(2)));
        assert!(matches!(
            "two".parse::<QuorumValue>(),
            Err(QuorumError::NotANumber(_))
        ));
        assert!("-1".parse::<QuorumValue>().is_err());
        assert_eq!(QuorumValue::Quorum.resolve(3), 2);
        assert_eq!(QuorumValue::Quorum.resolve(4), 3);
        assert_eq!(QuorumValue::All.resolve(5), 5);
    }

    #[test]
    fn resolve_rejects_out_of_range_and_flags_weak_quorums() {
        let props = BucketProps::default();
        let q = props.resolve(&RequestOptions::default()).unwrap();
        assert_eq!((q.n, q.r, q.w, q.dw), (3, 2, 2, 0));
        assert!(q.read_your_writes());
        let weak = RequestOptions {
            r: Some(QuorumValue::One),
            w: Some(QuorumValue::One),
            ..Default::default()
        };
        assert!(!props.resolve(&weak).unwrap().read_your_writes());
        for bad in [
            RequestOptions {
                r: Some(QuorumValue::Count(0)),
                ..Default::default()
            },
            RequestOptions {
                w: Some(QuorumValue::Count(4)),
                ..Default::default()
            },
            RequestOptions {
                dw: Some(QuorumValue::Count(4)),
                ..Default::default()
            },
            RequestOptions {
                n: Some(0),
                ..Default::default()
            },
            RequestOptions {
                n: Some(5),
                ..Default::default()
            },
        ] {
            assert!(props.resolve(&bad).is_err(), "{bad:?} accepted");
        }
        let smaller_n = RequestOptions {
            n: Some(1),
            ..Default::default()
        };
        let q = props.resolve(&smaller_n).unwrap();
        assert_eq!((q.n, q.r, q.w), (1, 1, 1));
    }
}
