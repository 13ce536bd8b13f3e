//! Node configuration: everything a [`Node`](crate::node::Node) is built from.
//!
//! Bucket properties and quorum values are [`crate::bucket`]'s; the request size limits are
//! [`crate::request`]'s.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::bucket::BucketProps;
use crate::id::{Millis, NodeId};
use crate::membership::{DetectorConfig, GossipConfig};
use crate::merkle::MerkleConfig;
use crate::request::{
    RequestLimits, DEFAULT_MAX_BUCKET_BYTES, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES,
};
use crate::ring::RingConfig;

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
    /// Percent of a request's timeout after which a replica that has not answered is joined by
    /// the next reachable node of the extended preference list (with a hint naming it), and a
    /// forwarded write whose coordinator has not been heard from since is coordinated here.
    /// A cut that the failure detector has not noticed yet then costs this much, not the whole
    /// timeout. 100 turns it off.
    pub fallback_after_percent: u32,
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
    /// Percent of client gets that ask every replica at once, so that read repair reaches the
    /// replicas a get would not otherwise read. The others ask R (the local replica first, then
    /// owners in this node's zone), and the rest only when one of those fails or has not
    /// answered by the 99th percentile of recent replica reads (a speculative retry). 100 asks
    /// every replica every time; anti-entropy repairs what reads do not.
    #[serde(default = "default_read_all_percent")]
    pub read_all_percent: u32,
    /// How often hints are delivered to their owners (hinted hand-off), taking turns with the
    /// orphan scan.
    pub hint_delivery_interval_ms: Millis,
    /// Hints (or orphaned records) sent per delivery round (the rate limit).
    pub hint_delivery_batch: usize,
    /// Most partition pulls a node runs at once when the ring changes (each has one chunk of
    /// at most a scan page in flight): bounds what a joining node holds in memory, since it
    /// otherwise pulls every partition it gains, from every replica, at once.
    pub max_concurrent_pulls: usize,
    /// How often a node starts an anti-entropy exchange (one partition, one peer at a time).
    pub anti_entropy_interval_ms: Millis,
    /// How often at most one of those exchanges may be with a replica in another zone (a WAN
    /// round trip and, for differing keys, WAN transfer): cross-zone anti-entropy has its own,
    /// smaller budget. Exchanges within the zone go on meanwhile; a partition with no replica
    /// in this zone waits for the next cross-zone turn. Nodes without zones are one zone.
    pub cross_zone_anti_entropy_interval_ms: Millis,
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
    /// enough for hints and transfers holding older versions to arrive (they would resurrect a
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
    /// Watches this node coordinates at most; one more is refused
    /// ([`RequestError::TooManyWatches`](crate::error::RequestError::TooManyWatches)). Each holds
    /// a client connection and a registration on each owner of its key.
    pub max_watches: usize,
    /// Watch registrations this node holds at most as an owner, for all coordinators; one more
    /// is refused, and its coordinator relies on the other owners.
    pub max_watch_registrations: usize,
    /// Listing scans this node serves at once as a replica; more wait their turn in a bounded
    /// queue (and past it are refused, so the coordinator asks another replica). Each scans
    /// one page, so a listing never holds the store for long.
    pub max_list_scans: usize,
}

fn default_read_all_percent() -> u32 {
    10
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
            fallback_after_percent: 20,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_bucket_bytes: DEFAULT_MAX_BUCKET_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_clock_entries: 64,
            read_repair: true,
            read_all_percent: default_read_all_percent(),
            hint_delivery_interval_ms: 1_000,
            hint_delivery_batch: 32,
            max_concurrent_pulls: 8,
            anti_entropy_interval_ms: 5_000,
            cross_zone_anti_entropy_interval_ms: 30_000,
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
            max_watches: 10_000,
            max_watch_registrations: 40_000,
            max_list_scans: 2,
        }
    }

    /// The properties in force for `bucket`.
    pub fn bucket(&self, bucket: &[u8]) -> &BucketProps {
        self.buckets.get(bucket).unwrap_or(&self.default_bucket)
    }

    /// When a request started at `now` with `timeout` turns to fallbacks (see
    /// [`NodeConfig::fallback_after_percent`]).
    pub fn fallback_at(&self, now: Millis, timeout: Millis) -> Millis {
        let percent = u64::from(self.fallback_after_percent.min(100));
        now.saturating_add(timeout.saturating_mul(percent) / 100)
    }

    /// The size limits this node applies to client requests (see [`ClientRequest::check`](crate::request::ClientRequest::check)).
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_key_bytes: self.max_key_bytes,
            max_bucket_bytes: self.max_bucket_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }
}
