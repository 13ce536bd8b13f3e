//! The `[bucket]` section of the config file: properties of buckets nobody configured.

use std::collections::BTreeMap;

use ringkv_core::bucket::{BucketProps, QuorumValue};
use ringkv_core::version::ConflictMode;
use serde::{Deserialize, Serialize};

use super::ServerError;

/// Default properties of buckets nobody configured, as written in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BucketDefaults {
    /// Replication factor.
    pub n: u32,
    /// Read quorum (`one`, `quorum`, `all` or a count).
    pub r: String,
    /// Write quorum.
    pub w: String,
    /// Durable-write quorum.
    pub dw: String,
    /// `siblings` or `lww`.
    pub conflict_mode: String,
    /// Replicas per zone, e.g. `{ dc1 = 3, dc2 = 2 }` (at most the ring's `replicas_per_zone`);
    /// empty: `n` replicas anywhere. With it, `n` is their sum (left at 3, it is set so).
    pub n_per_zone: BTreeMap<String, u32>,
}

impl Default for BucketDefaults {
    fn default() -> Self {
        BucketDefaults {
            n: 3,
            r: "quorum".into(),
            w: "quorum".into(),
            dw: "0".into(),
            conflict_mode: "siblings".into(),
            n_per_zone: BTreeMap::new(),
        }
    }
}

impl BucketDefaults {
    /// The core's bucket properties.
    pub fn to_props(&self) -> Result<BucketProps, ServerError> {
        let quorum = |name: &str, value: &str| {
            value
                .parse::<QuorumValue>()
                .map_err(|e| ServerError::Config(format!("bucket.{name} = {value:?}: {e}")))
        };
        let conflict_mode = self
            .conflict_mode
            .parse::<ConflictMode>()
            .map_err(|e| ServerError::Config(format!("bucket.conflict_mode: {e}")))?;
        let props = BucketProps {
            n: sum_unless_set("bucket.n", self.n, 3, &self.n_per_zone)?,
            r: quorum("r", &self.r)?,
            w: quorum("w", &self.w)?,
            dw: quorum("dw", &self.dw)?,
            conflict_mode,
            limits: Default::default(),
            default_ttl_ms: None,
            n_per_zone: self.n_per_zone.clone(),
        };
        props
            .resolve(&Default::default())
            .map_err(|e| ServerError::Config(format!("bucket defaults: {e}")))?;
        Ok(props)
    }
}

/// A count that per-zone counts fix: their sum when they are given and `value` was left at
/// `default`; `value` itself when it equals the sum or no counts are given; else an error.
pub(super) fn sum_unless_set(
    name: &str,
    value: u32,
    default: u32,
    per_zone: &BTreeMap<String, u32>,
) -> Result<u32, ServerError> {
    if per_zone.is_empty() {
        return Ok(value);
    }
    let sum = per_zone
        .values()
        .fold(0u32, |sum, c| sum.saturating_add(*c));
    if value == sum || value == default {
        Ok(sum)
    } else {
        Err(ServerError::Config(format!(
            "{name} = {value}, but the per-zone counts {per_zone:?} add up to {sum}"
        )))
    }
}
