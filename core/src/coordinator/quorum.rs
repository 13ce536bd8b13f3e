//! What a coordination must hear, and from which zones: a quorum of [`Quorums`] made concrete
//! for one key's replicas and one coordinator's zone.
//!
//! `local_one` and `local_quorum` count replies from the coordinator's zone only, so a client
//! in one data centre never waits on another's round trip; `each_quorum` needs a majority in
//! every zone holding replicas. A reply counts for the zone of the node that sent it, which is
//! why a sloppy quorum's fallback is chosen in the zone of the owner it stands in for where
//! one is reachable. Nodes without a zone count as one zone together.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::bucket::{QuorumError, QuorumValue, Scope};

/// Replies a quorum needs: `anywhere` from any replicas, and at least the count of each listed
/// zone from that zone's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Need {
    anywhere: u32,
    zones: Vec<(Option<String>, u32)>,
}

impl Need {
    /// A need of `count` replies from anywhere.
    pub(crate) fn anywhere(count: u32) -> Need {
        Need {
            anywhere: count,
            zones: Vec::new(),
        }
    }

    /// The need of a quorum of `count` replies in `scope`, for a coordinator in zone `local`
    /// whose key's replicas are in `replica_zones` (one entry per replica).
    ///
    /// Errors: [`QuorumError::NoLocalReplica`] for a local scope when the coordinator's zone
    /// holds no replica (`name` says which quorum).
    pub(crate) fn new(
        name: &str,
        count: u32,
        scope: Scope,
        local: Option<&str>,
        replica_zones: &[Option<&str>],
    ) -> Result<Need, QuorumError> {
        let in_zone = |zone: Option<&str>| replica_zones.iter().filter(|z| **z == zone).count();
        let local_need = |needed: fn(u32) -> u32, value: QuorumValue| {
            let replicas = in_zone(local) as u32;
            if replicas == 0 {
                return Err(QuorumError::NoLocalReplica {
                    name: name.to_string(),
                    value,
                    zone: local.unwrap_or_default().to_string(),
                });
            }
            Ok(Need {
                anywhere: 0,
                zones: alloc::vec![(local.map(String::from), needed(replicas))],
            })
        };
        match scope {
            Scope::Anywhere => Ok(Need::anywhere(count)),
            Scope::LocalOne => local_need(|_| 1, QuorumValue::LocalOne),
            Scope::LocalQuorum => local_need(|n| n / 2 + 1, QuorumValue::LocalQuorum),
            Scope::EachQuorum => {
                let mut zones: Vec<Option<&str>> = replica_zones.to_vec();
                zones.sort_unstable();
                zones.dedup();
                Ok(Need {
                    anywhere: 0,
                    zones: zones
                        .into_iter()
                        .map(|zone| (zone.map(String::from), in_zone(zone) as u32 / 2 + 1))
                        .collect(),
                })
            }
        }
    }

    /// Whether replies from nodes in `zones` (one entry per replying node) meet the need.
    pub(crate) fn met(&self, zones: &[Option<&str>]) -> bool {
        zones.len() as u32 >= self.anywhere
            && self.zones.iter().all(|(zone, needed)| {
                zones.iter().filter(|z| **z == zone.as_deref()).count() as u32 >= *needed
            })
    }

    /// The replies needed in all, for answers that report it.
    pub(crate) fn total(&self) -> u32 {
        self.anywhere
            .max(self.zones.iter().map(|(_, needed)| needed).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONES: [Option<&str>; 5] = [Some("a"), Some("b"), Some("a"), Some("c"), Some("a")];

    #[test]
    fn local_quorum_counts_the_coordinators_zone_only() {
        let need = Need::new("w", 1, Scope::LocalQuorum, Some("a"), &ZONES).unwrap();
        assert_eq!(need.total(), 2);
        assert!(!need.met(&[Some("a"), Some("b"), Some("c")]));
        assert!(need.met(&[Some("a"), Some("a")]));
        let one = Need::new("r", 1, Scope::LocalOne, Some("b"), &ZONES).unwrap();
        assert!(!one.met(&[Some("a"), Some("a"), Some("a")]));
        assert!(one.met(&[Some("b")]));
    }

    #[test]
    fn a_local_scope_without_a_local_replica_is_refused() {
        for scope in [Scope::LocalOne, Scope::LocalQuorum] {
            assert!(matches!(
                Need::new("w", 1, scope, Some("z"), &ZONES),
                Err(QuorumError::NoLocalReplica { .. })
            ));
        }
    }

    #[test]
    fn each_quorum_needs_a_majority_in_every_zone() {
        let need = Need::new("w", 1, Scope::EachQuorum, Some("a"), &ZONES).unwrap();
        assert_eq!(need.total(), 4);
        assert!(!need.met(&[Some("a"), Some("a"), Some("b")]));
        assert!(need.met(&[Some("a"), Some("b"), Some("a"), Some("c")]));
    }

    #[test]
    fn anywhere_is_a_plain_count_and_zoneless_nodes_are_one_zone() {
        let need = Need::new("r", 2, Scope::Anywhere, None, &ZONES).unwrap();
        assert!(need.met(&[Some("a"), Some("c")]));
        assert!(!need.met(&[Some("a")]));
        let zoneless = Need::new("w", 1, Scope::LocalQuorum, None, &[None, None, None]).unwrap();
        assert!(zoneless.met(&[None, None]));
        assert!(!zoneless.met(&[None]));
    }
}
