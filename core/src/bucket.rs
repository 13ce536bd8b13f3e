//! Bucket properties and quorum values: what a bucket keeps (N, R, W, DW, conflict mode), what a
//! request may override, and the counts they resolve to.
//!
//! Near the bottom of the crate's module graph (it uses only [`crate::id`] and
//! [`crate::version`]), so configuration, membership (buckets spread by gossip), the coordinators
//! and the bindings all share one definition and one set of checks.

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

use crate::id::Millis;
use crate::version::{ConflictMode, Context};

/// A quorum value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumError {
    /// The value was neither `one`, `quorum`, `all`, `local_one`, `local_quorum`,
    /// `each_quorum` nor a number. Nothing was changed.
    #[error(
        "quorum value {0:?} is not one, quorum, all, local_one, local_quorum, each_quorum or a number"
    )]
    NotANumber(String),
    /// r or w resolved to 0, or any quorum to more than N. Nothing was changed.
    #[error("{name} = {count} is out of range for n = {n}")]
    OutOfRange {
        /// Which quorum (`r`, `w`, `dw`).
        name: String,
        /// The resolved count.
        count: u32,
        /// The replication factor it was checked against.
        n: u32,
    },
    /// N was 0. Nothing was changed.
    #[error("n must be at least 1")]
    ZeroN,
    /// A request asked for more replicas than its bucket keeps. Nothing was changed.
    #[error("n = {requested} is above the bucket's n = {bucket}")]
    NAboveBucket {
        /// N the request asked for.
        requested: u32,
        /// N of the bucket.
        bucket: u32,
    },
    /// A `local_one` or `local_quorum` request reached a node whose zone holds no replica of the
    /// key. Nothing was changed.
    #[error("no replica of this key is in zone {zone:?}, so {name} = {value} cannot be met here")]
    NoLocalReplica {
        /// Which quorum (`r`, `w`, `dw`).
        name: String,
        /// Its value (`local_one`, `local_quorum`).
        value: QuorumValue,
        /// The coordinator's zone (empty for a node without one).
        zone: String,
    },
    /// A bucket's N is not the sum of its `n_per_zone`. Nothing was changed.
    #[error("n = {n} but n_per_zone adds up to {sum}")]
    ZoneSum {
        /// The bucket's N.
        n: u32,
        /// The sum of its per-zone counts.
        sum: u64,
    },
    /// `n_per_zone` names a blank zone or a zone with 0 replicas. Nothing was changed.
    #[error("n_per_zone: zone {zone:?} needs a name and at least 1 replica")]
    BadZoneCount {
        /// The zone.
        zone: String,
    },
}

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
    /// One replica in the coordinator's zone (Cassandra's `LOCAL_ONE`).
    LocalOne,
    /// A majority of the replicas in the coordinator's zone (Cassandra's `LOCAL_QUORUM`): no
    /// round trip to another data centre.
    LocalQuorum,
    /// A majority of the replicas in every zone that holds some (Cassandra's `EACH_QUORUM`).
    EachQuorum,
}

/// Where the replies a quorum counts come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Any replica: the count of [`Quorums`] is all there is.
    #[default]
    Anywhere,
    /// One replica in the coordinator's zone.
    LocalOne,
    /// A majority of the replicas in the coordinator's zone.
    LocalQuorum,
    /// A majority of the replicas in each zone.
    EachQuorum,
}

impl QuorumValue {
    /// The number of replicas this value stands for when the replication factor is `n`. For the
    /// zone values, the fewest it can stand for: 1 for `local_one` and `local_quorum` (a zone
    /// may hold one replica), and `n / 2 + 1` for `each_quorum` (a majority of every zone is a
    /// majority of all); which replicas count is their [`QuorumValue::scope`].
    pub fn resolve(self, n: u32) -> u32 {
        match self {
            QuorumValue::One | QuorumValue::LocalOne | QuorumValue::LocalQuorum => 1,
            QuorumValue::Quorum | QuorumValue::EachQuorum => n / 2 + 1,
            QuorumValue::All => n,
            QuorumValue::Count(c) => c,
        }
    }

    /// Where the replies this value counts come from.
    pub fn scope(self) -> Scope {
        match self {
            QuorumValue::LocalOne => Scope::LocalOne,
            QuorumValue::LocalQuorum => Scope::LocalQuorum,
            QuorumValue::EachQuorum => Scope::EachQuorum,
            QuorumValue::One | QuorumValue::Quorum | QuorumValue::All | QuorumValue::Count(_) => {
                Scope::Anywhere
            }
        }
    }
}

impl FromStr for QuorumValue {
    type Err = QuorumError;

    /// Parses `one`, `quorum`, `all` (any case) or a decimal count; surrounding spaces are
    /// ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "one" => Ok(QuorumValue::One),
            "quorum" => Ok(QuorumValue::Quorum),
            "all" => Ok(QuorumValue::All),
            "local_one" => Ok(QuorumValue::LocalOne),
            "local_quorum" => Ok(QuorumValue::LocalQuorum),
            "each_quorum" => Ok(QuorumValue::EachQuorum),
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
            QuorumValue::LocalOne => f.write_str("local_one"),
            QuorumValue::LocalQuorum => f.write_str("local_quorum"),
            QuorumValue::EachQuorum => f.write_str("each_quorum"),
        }
    }
}

/// Replication and conflict settings of a bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Replication factor N (with `n_per_zone`, their sum).
    pub n: u32,
    /// Replies a get waits for.
    pub r: QuorumValue,
    /// Acknowledgements a put waits for.
    pub w: QuorumValue,
    /// Of those, how many replicas must have made the write durable (fsynced) first; 0 by default.
    pub dw: QuorumValue,
    /// Siblings (keep concurrent writes) or last-writer-wins (lose all but one concurrent write).
    pub conflict_mode: ConflictMode,
    /// The bounds a coordinated write must keep its key's object within.
    pub limits: ObjectLimits,
    /// Time to live of a put's value when the put names none (`None`: values do not expire).
    pub default_ttl_ms: Option<Millis>,
    /// Replicas per zone, e.g. `{"dc1": 3, "dc2": 2}` (as Cassandra's NetworkTopologyStrategy);
    /// empty (the default): N replicas anywhere. Needs a ring that places replicas per zone with
    /// at least these counts ([`RingConfig::replicas_per_zone`](crate::ring::RingConfig)).
    #[serde(default)]
    pub n_per_zone: BTreeMap<String, u32>,
}

impl Default for BucketProps {
    fn default() -> Self {
        BucketProps {
            n: 3,
            r: QuorumValue::Quorum,
            w: QuorumValue::Quorum,
            dw: QuorumValue::Count(0),
            conflict_mode: ConflictMode::Siblings,
            limits: ObjectLimits::default(),
            default_ttl_ms: None,
            n_per_zone: BTreeMap::new(),
        }
    }
}

/// Bounds on one key's object, checked where a write is coordinated (as Riak's `warn_siblings`,
/// `max_siblings` and `max_object_size`): past them a write that would grow the object is
/// refused with a clear answer, while one that does not grow it (a put with the context that
/// reconciles the siblings) is always accepted. Replicas merging what a coordinator sent never
/// refuse: the bound is a promise to clients, not a reason for replicas to diverge.
///
/// A node that holds no replica of the key and coordinates a write blind (its owners
/// unreachable) sees only that write: it refuses one that alone makes an object larger than
/// `max_object_bytes` (even one that would replace every sibling, which it cannot know), and
/// cannot count siblings, so `max_siblings` is not checked for such writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLimits {
    /// Past this many siblings a write is reported (an event and a metric); 0: never.
    pub siblings_warn: u32,
    /// A write that would leave more siblings than this, and more than before, is refused.
    pub max_siblings: u32,
    /// A write that would make the object (every sibling, encoded) larger than this, and
    /// larger than before, is refused.
    pub max_object_bytes: u64,
}

/// Object limits that cannot be used: with them a bucket would refuse writes it must take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// `max_siblings` was 0: every write to a new key makes a sibling, so none would pass.
    /// Nothing was changed.
    #[error("max_siblings must be at least 1 (0 would refuse every write of a new key)")]
    ZeroMaxSiblings,
    /// `max_object_bytes` was 0: every object is larger. Nothing was changed.
    #[error("max_object_bytes must be at least 1 (0 would refuse every write that is not the key's only sibling)")]
    ZeroMaxObjectBytes,
}

impl ObjectLimits {
    /// Checks that a bucket with these limits can be written: `max_siblings` and
    /// `max_object_bytes` at least 1 (`siblings_warn` 0 means "never warn").
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_siblings == 0 {
            return Err(LimitsError::ZeroMaxSiblings);
        }
        if self.max_object_bytes == 0 {
            return Err(LimitsError::ZeroMaxObjectBytes);
        }
        Ok(())
    }
}

/// Default [`ObjectLimits::siblings_warn`].
pub const DEFAULT_SIBLINGS_WARN: u32 = 25;
/// Default [`ObjectLimits::max_siblings`].
pub const DEFAULT_MAX_SIBLINGS: u32 = 100;
/// Default [`ObjectLimits::max_object_bytes`], 17 MiB: two values of the default largest size
/// (8 MiB, `request::DEFAULT_MAX_VALUE_BYTES`), and 1 MiB for clocks and smaller siblings.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 17 * 1024 * 1024;

impl Default for ObjectLimits {
    fn default() -> Self {
        ObjectLimits {
            siblings_warn: DEFAULT_SIBLINGS_WARN,
            max_siblings: DEFAULT_MAX_SIBLINGS,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
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
    /// A put's time to live, in milliseconds, from the coordinator's clock when it writes
    /// (overrides the bucket's `default_ttl_ms`; puts only).
    pub ttl_ms: Option<Millis>,
    /// What the key must read as for the write to go ahead (puts and deletes).
    pub condition: Option<WriteCondition>,
}

/// Longest time to live a put may ask for: 10 years (365-day years), in milliseconds.
pub const MAX_TTL_MS: Millis = 10 * 365 * 24 * 60 * 60 * 1_000;

/// A time to live that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// 0: the value would be expired when written. Nothing was changed.
    #[error("ttl must be at least 1 ms (0 would expire the value as it is written)")]
    Zero,
    /// Past [`MAX_TTL_MS`]. Nothing was changed.
    #[error("ttl of {0} ms is over the maximum of {MAX_TTL_MS} ms (10 years)")]
    TooLong(Millis),
}

/// Checks a time to live: at least 1 ms, at most [`MAX_TTL_MS`].
pub fn check_ttl(ttl_ms: Millis) -> Result<Millis, TtlError> {
    match ttl_ms {
        0 => Err(TtlError::Zero),
        t if t > MAX_TTL_MS => Err(TtlError::TooLong(t)),
        t => Ok(t),
    }
}

/// What a conditional write requires of the key, checked by the coordinator with a read at R
/// just before it writes. Best effort, as in Riak: two writers checking at once can both pass
/// (and their writes become siblings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteCondition {
    /// The key reads as absent, deleted or expired (HTTP `If-None-Match: *`).
    IfAbsent,
    /// The key's current context equals this one: nothing was written since it was read (HTTP
    /// `If-Match`).
    IfMatch(Context),
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
    /// Where the replies each quorum counts come from; for the zone scopes the counts above
    /// are the fewest replies that can meet them, and the coordinator works out the rest from
    /// the zones of the key's replicas.
    pub scopes: Scopes,
}

/// The scope of each quorum of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes {
    /// Of the read quorum.
    pub r: Scope,
    /// Of the write quorum.
    pub w: Scope,
    /// Of the durable-write quorum.
    pub dw: Scope,
}

impl Quorums {
    /// Whether a read after an acknowledged write is guaranteed to see it: `r + w > n`, or both
    /// `local_quorum` (majorities of one zone's replicas meet, for a reader in the writer's
    /// zone).
    pub fn read_your_writes(&self) -> bool {
        (self.scopes.r == Scope::LocalQuorum && self.scopes.w == Scope::LocalQuorum)
            || self.r + self.w > self.n
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
        if let Some((zone, _)) = self
            .n_per_zone
            .iter()
            .find(|(zone, count)| **count == 0 || zone.trim().is_empty())
        {
            return Err(QuorumError::BadZoneCount { zone: zone.clone() });
        }
        let zone_sum: u64 = self.n_per_zone.values().map(|&c| u64::from(c)).sum();
        if !self.n_per_zone.is_empty() && zone_sum != u64::from(self.n) {
            return Err(QuorumError::ZoneSum {
                n: self.n,
                sum: zone_sum,
            });
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
        let (r, w, dw) = (
            options.r.unwrap_or(self.r),
            options.w.unwrap_or(self.w),
            options.dw.unwrap_or(self.dw),
        );
        Ok(Quorums {
            n,
            r: check("r", r, 1)?,
            w: check("w", w, 1)?,
            dw: check("dw", dw, 0)?,
            scopes: Scopes {
                r: r.scope(),
                w: w.scope(),
                dw: dw.scope(),
            },
        })
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
