//! How a simulated cluster is built: [`SimConfig`] and its checks.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::bucket::{BucketProps, QuorumError, QuorumValue, RequestOptions};
use crate::id::{Millis, NodeId};
use crate::ring::{Member, Ring, RingConfig, RingError, Strategy};
use crate::version::ConflictMode;

/// How a simulated cluster is built and how its network and disks behave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Number of nodes, named `n1`, `n2`, ...
    pub nodes: usize,
    /// Replication factor of the default bucket.
    pub n: u32,
    /// Read quorum of the default bucket.
    pub r: QuorumValue,
    /// Write quorum of the default bucket.
    pub w: QuorumValue,
    /// Durable-write quorum of the default bucket.
    pub dw: QuorumValue,
    /// Conflict mode of the default bucket.
    pub conflict_mode: ConflictMode,
    /// The seed of every random choice of the run.
    pub seed: u64,
    /// Q, the number of partitions.
    pub partitions: u32,
    /// Placement strategy.
    pub strategy: Strategy,
    /// Shortest one-way message delay.
    pub min_delay_ms: Millis,
    /// Longest one-way message delay (delays are uniform in between, which reorders messages).
    pub max_delay_ms: Millis,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Longest time a storage operation takes (uniform from 0).
    pub max_disk_latency_ms: Millis,
    /// Coordinators' default request timeout.
    pub request_timeout_ms: Millis,
    /// Whether a crash loses the writes a node never fsynced (a power loss rather than a process
    /// crash).
    pub lose_unsynced_on_crash: bool,
    /// Version-vector entries kept per object before the oldest are truncated.
    pub max_clock_entries: usize,
    /// How often each node starts an anti-entropy exchange.
    pub anti_entropy_interval_ms: Millis,
    /// How often each node gossips (and so how fast failures are detected).
    pub gossip_interval_ms: Millis,
    /// Whether [`random_run`] also adds nodes and makes nodes leave (membership churn, with
    /// transfers under the other faults).
    pub churn: bool,
    /// Each node's clock runs ahead of the simulation's by a fixed random amount up to this:
    /// clock skew, seen in write timestamps (last-writer-wins, truncation) and deadlines.
    pub max_clock_skew_ms: Millis,
    /// When set, [`random_run`] runs a session workload: half its puts carry a time to live of
    /// up to this many ms, and a fifth of its writes are conditional (`If-None-Match: *` or
    /// `If-Match` with the client's last context).
    #[serde(default)]
    pub write_ttl_ms: Option<Millis>,
    /// The zones (failure domains: racks, data centres) the nodes are placed in, round-robin in
    /// node order: `n1` in `zones[0]`, `n2` in `zones[1]`, ..., `n{k}` in `zones[(k - 1) % len]`,
    /// and nodes that join later go on with the round ([`Sim::join`](super::Sim::join)). Each
    /// node's ring member (hence its view entry) carries its zone, so replicas spread over zones.
    /// Empty (the default): no zones, and every message takes a LAN delay, so runs without zones
    /// draw exactly what they drew before zones existed.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Shortest one-way delay of a message between nodes of different zones (a WAN link); with
    /// zones, `min_delay_ms`..=`max_delay_ms` is the delay inside a zone (a LAN). Unused without
    /// zones.
    #[serde(default = "default_wan_min_delay_ms")]
    pub wan_min_delay_ms: Millis,
    /// Longest one-way delay of a message between nodes of different zones.
    #[serde(default = "default_wan_max_delay_ms")]
    pub wan_max_delay_ms: Millis,
    /// Replicas per zone, e.g. `{"a": 2, "b": 2, "c": 2}`: of the ring
    /// ([`RingConfig::replicas_per_zone`]) and of the default bucket
    /// ([`BucketProps::n_per_zone`]); `n` must then be their sum. Empty (the default): `n`
    /// replicas anywhere, spread over the zones where they allow.
    #[serde(default)]
    pub n_per_zone: BTreeMap<String, u32>,
    /// Whether each node's store keeps the view the node persists (true, the default: a
    /// restarted node starts from it, as a real host does). False keeps an empty record in its
    /// place (the write is still made and acknowledged, with the same latency): a restarted node
    /// then starts from the initial members. For large runs without restarts, where the persisted
    /// copies (tens of bytes a member, per node) would be most of the memory.
    #[serde(default = "default_keep_persisted_views")]
    pub keep_persisted_views: bool,
}

fn default_keep_persisted_views() -> bool {
    true
}

fn default_wan_min_delay_ms() -> Millis {
    20
}

fn default_wan_max_delay_ms() -> Millis {
    80
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 5,
            n: 3,
            r: QuorumValue::Quorum,
            w: QuorumValue::Quorum,
            dw: QuorumValue::Count(0),
            conflict_mode: ConflictMode::Siblings,
            seed: 0,
            partitions: 64,
            strategy: Strategy::Partitions,
            min_delay_ms: 1,
            max_delay_ms: 10,
            loss: 0.0,
            max_disk_latency_ms: 2,
            request_timeout_ms: 1_000,
            lose_unsynced_on_crash: false,
            max_clock_entries: 64,
            anti_entropy_interval_ms: 250,
            gossip_interval_ms: 200,
            max_clock_skew_ms: 0,
            churn: false,
            write_ttl_ms: None,
            zones: Vec::new(),
            wan_min_delay_ms: default_wan_min_delay_ms(),
            wan_max_delay_ms: default_wan_max_delay_ms(),
            n_per_zone: BTreeMap::new(),
            keep_persisted_views: default_keep_persisted_views(),
        }
    }
}

/// Longest delay, latency, interval, timeout or clock skew a simulator configuration may ask for
/// (a day): longer means nothing in a simulated run and keeps clock arithmetic far from overflow.
pub const MAX_SIM_MS: Millis = 24 * 60 * 60 * 1_000;

/// A simulator configuration that cannot make a cluster. No simulator is built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimConfigError {
    /// `nodes` is 0.
    #[error("nodes must be at least 1")]
    NoNodes,
    /// N is 0, above the number of nodes (a key cannot have more replicas than there are
    /// nodes) or above [`MAX_TARGET_N`](crate::ring::MAX_TARGET_N).
    #[error("n = {n} is out of range 1..={max} (at most one replica per node, and at most {limit})", limit = crate::ring::MAX_TARGET_N)]
    NOutOfRange {
        /// The configured N.
        n: u32,
        /// The largest N these nodes allow.
        max: usize,
    },
    /// R, W or DW is invalid for N.
    #[error("invalid quorum: {0}")]
    Quorum(#[from] QuorumError),
    /// The shortest message delay is above the longest.
    #[error("min_delay_ms = {min} is above max_delay_ms = {max}")]
    DelayRange {
        /// `min_delay_ms`.
        min: Millis,
        /// `max_delay_ms`.
        max: Millis,
    },
    /// The shortest WAN delay is above the longest.
    #[error("wan_min_delay_ms = {min} is above wan_max_delay_ms = {max}")]
    WanDelayRange {
        /// `wan_min_delay_ms`.
        min: Millis,
        /// `wan_max_delay_ms`.
        max: Millis,
    },
    /// A zone name is empty, too long, or given twice.
    #[error("zone {zone:?}: {reason}")]
    Zone {
        /// The zone as given.
        zone: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A time is out of its range (0, for a timeout or an interval, or above [`MAX_SIM_MS`]).
    #[error("{name} = {value} is out of range {min}..={max}")]
    TimeOutOfRange {
        /// The field.
        name: &'static str,
        /// Its value.
        value: Millis,
        /// The smallest value allowed.
        min: Millis,
        /// The largest value allowed.
        max: Millis,
    },
    /// The loss probability is not between 0 and 1.
    #[error("loss = {0} is not a probability between 0 and 1")]
    Loss(f64),
    /// `max_clock_entries` is 0.
    #[error("max_clock_entries must be at least 1")]
    ZeroClockEntries,
    /// No ring can be made of these nodes with this partition count and strategy.
    #[error("invalid ring: {0}")]
    Ring(#[from] RingError),
}

impl SimConfig {
    /// Checks that the configuration can make a cluster: what [`Sim::try_new`] checks before it
    /// builds one.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        if self.nodes == 0 {
            return Err(SimConfigError::NoNodes);
        }
        let max_n = self.nodes.min(crate::ring::MAX_TARGET_N);
        if self.n == 0 || self.n as usize > max_n {
            return Err(SimConfigError::NOutOfRange {
                n: self.n,
                max: max_n,
            });
        }
        self.default_bucket().resolve(&RequestOptions::default())?;
        if self.min_delay_ms > self.max_delay_ms {
            return Err(SimConfigError::DelayRange {
                min: self.min_delay_ms,
                max: self.max_delay_ms,
            });
        }
        if self.wan_min_delay_ms > self.wan_max_delay_ms {
            return Err(SimConfigError::WanDelayRange {
                min: self.wan_min_delay_ms,
                max: self.wan_max_delay_ms,
            });
        }
        for (i, zone) in self.zones.iter().enumerate() {
            let reason = if zone.trim().is_empty() {
                Some("a zone needs a name")
            } else if zone.trim() != zone {
                Some("a zone name has no leading or trailing blanks")
            } else if zone.len() > crate::membership::view::MAX_STRING_BYTES {
                Some("a zone name is at most 1024 bytes")
            } else if self.zones[..i].contains(zone) {
                Some("the zone is given twice")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(SimConfigError::Zone {
                    zone: zone.clone(),
                    reason,
                });
            }
        }
        for (name, value, min) in [
            ("max_delay_ms", self.max_delay_ms, 0),
            ("wan_max_delay_ms", self.wan_max_delay_ms, 0),
            ("max_disk_latency_ms", self.max_disk_latency_ms, 0),
            ("request_timeout_ms", self.request_timeout_ms, 1),
            ("anti_entropy_interval_ms", self.anti_entropy_interval_ms, 1),
            ("gossip_interval_ms", self.gossip_interval_ms, 1),
            ("max_clock_skew_ms", self.max_clock_skew_ms, 0),
        ] {
            if value < min || value > MAX_SIM_MS {
                return Err(SimConfigError::TimeOutOfRange {
                    name,
                    value,
                    min,
                    max: MAX_SIM_MS,
                });
            }
        }
        // `!contains` rather than `<`/`>`, so that NaN is refused too.
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(SimConfigError::Loss(self.loss));
        }
        if self.max_clock_entries == 0 {
            return Err(SimConfigError::ZeroClockEntries);
        }
        Ring::new(ring_config(self), initial_members(self))?;
        Ok(())
    }

    /// The zone of the `index`-th node placed (0 for `n1`): round-robin over [`SimConfig::zones`],
    /// `None` without zones.
    pub fn zone_at(&self, index: usize) -> Option<&str> {
        if self.zones.is_empty() {
            return None;
        }
        Some(self.zones[index % self.zones.len()].as_str())
    }

    /// The properties of the simulated cluster's default bucket.
    pub fn default_bucket(&self) -> BucketProps {
        BucketProps {
            n: self.n,
            r: self.r,
            w: self.w,
            dw: self.dw,
            conflict_mode: self.conflict_mode,
            limits: Default::default(),
            default_ttl_ms: None,
            n_per_zone: self.n_per_zone.clone(),
        }
    }
}

/// Nodes `n1`, `n2`, ... with capacity 1, placed in the zones round-robin.
pub(super) fn initial_members(config: &SimConfig) -> Vec<Member> {
    (1..=config.nodes)
        .map(|i| {
            let member = Member::new(NodeId::new(format!("n{i}")), 1);
            match config.zone_at(i - 1) {
                Some(zone) => member.in_zone(zone),
                None => member,
            }
        })
        .collect()
}

pub(super) fn ring_config(config: &SimConfig) -> RingConfig {
    RingConfig {
        partitions: config.partitions,
        strategy: config.strategy.clone(),
        target_n: config.n as usize,
        replicas_per_zone: config.n_per_zone.clone(),
    }
}
