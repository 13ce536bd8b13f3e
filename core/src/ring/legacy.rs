//! Rings as views of format 4 and earlier serialized them, before replicas per zone.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use serde::Deserialize;

use super::{Member, Ring, RingConfig, RingError, RingRepr, Strategy};

/// A [`Ring`] as formats before replicas per zone serialized it (views of format 4 and earlier):
/// its configuration had no `replicas_per_zone`. Validated as any ring is.
#[derive(Deserialize)]
#[serde(try_from = "RingReprV4")]
pub(crate) struct LegacyRing(pub(crate) Ring);

#[derive(Deserialize)]
struct RingConfigV4 {
    partitions: u32,
    strategy: Strategy,
    target_n: usize,
}

#[derive(Deserialize)]
struct RingReprV4 {
    config: RingConfigV4,
    members: Vec<Member>,
    assignment: Vec<u32>,
}

impl TryFrom<RingReprV4> for LegacyRing {
    type Error = RingError;

    fn try_from(old: RingReprV4) -> Result<LegacyRing, RingError> {
        let config = RingConfig {
            partitions: old.config.partitions,
            strategy: old.config.strategy,
            target_n: old.config.target_n,
            replicas_per_zone: BTreeMap::new(),
        };
        Ring::try_from(RingRepr {
            config,
            members: old.members,
            assignment: old.assignment,
        })
        .map(LegacyRing)
    }
}
