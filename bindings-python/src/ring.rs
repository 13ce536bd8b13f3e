//! Placement: [`ringkv_core::ring::Ring`] for Python.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use ringkv_core::ring::{
    key_position, partition_of, Member, PartitionId, Ring, RingConfig, Strategy, MAX_PARTITIONS,
};
use ringkv_core::NodeId;

use crate::errors;

/// A member as Python passes it: `(name, capacity, zone)`.
pub type MemberSpec = (String, u32, Option<String>);

/// The strategy named `partitions` or `tokens`.
fn strategy(name: &str, tokens_per_capacity: u32) -> PyResult<Strategy> {
    Strategy::named(name, tokens_per_capacity).map_err(|e| errors::invalid(e.to_string()))
}

fn members(specs: Vec<MemberSpec>) -> PyResult<Vec<Member>> {
    specs
        .into_iter()
        .map(|(name, capacity, zone)| {
            Member::from_spec(&name, capacity, zone.as_deref())
                .map_err(|e| errors::invalid(format!("invalid ring: {e}")))
        })
        .collect()
}

fn by_name<V>(map: BTreeMap<NodeId, V>) -> BTreeMap<String, V> {
    map.into_iter()
        .map(|(id, value)| (id.as_str().to_string(), value))
        .collect()
}

fn names(ids: Vec<NodeId>) -> Vec<String> {
    ids.into_iter().map(|id| id.as_str().to_string()).collect()
}

/// The partition of `bucket`/`key` in a ring of `partition_count` partitions (a power of two up
/// to `MAX_PARTITIONS`), by the core's own hash: what a client routes by, given only a ring
/// document's partition count.
#[pyfunction]
pub fn key_partition(bucket: &[u8], key: &[u8], partition_count: u32) -> PyResult<u32> {
    if !partition_count.is_power_of_two() || partition_count > MAX_PARTITIONS {
        return Err(errors::invalid(format!(
            "partition count {partition_count} is not a power of two up to {MAX_PARTITIONS}"
        )));
    }
    Ok(partition_of(key_position(bucket, key), partition_count).0)
}

/// The placement of the key space on a membership (immutable).
#[pyclass(module = "ringkv._native", name = "Ring", frozen)]
#[derive(Clone)]
pub struct PyRing {
    pub(crate) ring: Ring,
}

impl PyRing {
    pub fn wrap(ring: Ring) -> PyRing {
        PyRing { ring }
    }
}

#[pymethods]
impl PyRing {
    /// A ring for `members` (`(name, capacity, zone)` triples).
    #[new]
    #[pyo3(signature = (members, partitions = 256, target_n = 3, strategy = "partitions", tokens_per_capacity = 16))]
    fn new(
        members: Vec<MemberSpec>,
        partitions: u32,
        target_n: usize,
        strategy: &str,
        tokens_per_capacity: u32,
    ) -> PyResult<Self> {
        let config = RingConfig {
            partitions,
            strategy: self::strategy(strategy, tokens_per_capacity)?,
            target_n,
            ..RingConfig::default()
        };
        Ring::new(config, self::members(members)?)
            .map(PyRing::wrap)
            .map_err(|e| errors::invalid(format!("invalid ring: {e}")))
    }

    /// The ring for a new membership, moving as few partitions as possible.
    fn with_members(&self, members: Vec<MemberSpec>) -> PyResult<PyRing> {
        self.ring
            .with_members(self::members(members)?)
            .map(PyRing::wrap)
            .map_err(|e| errors::invalid(format!("invalid ring: {e}")))
    }

    /// `(name, capacity, zone)` of every member, sorted by name.
    fn members(&self) -> Vec<MemberSpec> {
        self.ring
            .members()
            .iter()
            .map(|m| (m.id.as_str().to_string(), m.capacity, m.zone.clone()))
            .collect()
    }

    /// Q, the number of partitions.
    #[getter]
    fn partitions(&self) -> u32 {
        self.ring.partition_count()
    }

    /// The replica count placement is planned for.
    #[getter]
    fn target_n(&self) -> usize {
        self.ring.config().target_n
    }

    /// `partitions` or `tokens`.
    #[getter]
    fn strategy(&self) -> &'static str {
        self.ring.config().strategy.name()
    }

    /// Tokens per unit of capacity (tokens strategy), else `None`.
    #[getter]
    fn tokens_per_capacity(&self) -> Option<u32> {
        self.ring.config().strategy.tokens_per_capacity()
    }

    /// The 128-bit ring position of a key (MD5 of the bucket and key).
    #[staticmethod]
    fn position(bucket: &[u8], key: &[u8]) -> u128 {
        key_position(bucket, key)
    }

    /// The partition holding a key.
    fn partition_of(&self, bucket: &[u8], key: &[u8]) -> u32 {
        self.ring.partition_of(key_position(bucket, key)).0
    }

    /// The first `n` distinct nodes for a key.
    fn preference_list(&self, bucket: &[u8], key: &[u8], n: usize) -> Vec<String> {
        names(self.ring.preference_list(key_position(bucket, key), n))
    }

    /// The preference list followed by every other member: the sloppy quorum's fallbacks.
    fn extended_preference_list(&self, bucket: &[u8], key: &[u8], n: usize) -> Vec<String> {
        names(
            self.ring
                .extended_preference_list(key_position(bucket, key), n),
        )
    }

    /// The preference list of a partition.
    fn partition_preference_list(&self, partition: u32, n: usize) -> Vec<String> {
        names(
            self.ring
                .partition_preference_list(PartitionId(partition), n),
        )
    }

    /// The owner of every partition, in ring order.
    fn partition_owners(&self) -> Vec<String> {
        (0..self.ring.partition_count())
            .map(|p| {
                self.ring
                    .partition_owner(PartitionId(p))
                    .as_str()
                    .to_string()
            })
            .collect()
    }

    /// Partitions each member owns (first replica).
    fn partition_counts(&self) -> BTreeMap<String, u32> {
        by_name(self.ring.partition_counts())
    }

    /// Fraction of the key space each member is first replica for.
    fn key_share(&self) -> BTreeMap<String, f64> {
        by_name(self.ring.ownership())
    }

    /// Each member's share of all `n` replicas of the key space.
    fn replica_load(&self, n: usize) -> BTreeMap<String, f64> {
        by_name(self.ring.replica_load(n))
    }

    /// Fraction of the key space whose set of `n` replicas differs in `other`.
    fn moved_fraction(&self, other: &PyRing, n: usize) -> f64 {
        self.ring.moved_fraction(&other.ring, n)
    }

    /// Partitions whose owner differs in `other`.
    fn partitions_moved(&self, other: &PyRing) -> usize {
        self.ring.partitions_moved(&other.ring)
    }

    /// Whether both rings place every key alike (same configuration, members and assignment).
    fn same_as(&self, other: &PyRing) -> bool {
        self.ring == other.ring
    }
}
