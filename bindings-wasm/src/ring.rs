//! Placement: `ringkv_core::ring::Ring` for JavaScript.

use ringkv_core::request::DEFAULT_MAX_KEY_BYTES;
use ringkv_core::ring::{
    key_position, Member, PartitionId, Ring as CoreRing, RingConfig, Strategy, MAX_TARGET_N,
};
use ringkv_core::NodeId;
use wasm_bindgen::prelude::*;

use crate::interop::{
    self, ids, KeyDoc, MemberDoc, MemberSpec, MoveReport, PartitionDoc, RingDoc, StrategyMove,
};
use crate::Error;

/// Tokens per unit of capacity of the tokens ring a move is compared with (when this ring does
/// not use tokens itself).
pub const COMPARISON_TOKENS: u32 = 16;
/// Most keys a move comparison samples.
pub const MAX_SAMPLE: u32 = 1_000_000;
/// Longest bucket name or key the layer hashes: a node's key limit.
const MAX_KEY_BYTES: usize = DEFAULT_MAX_KEY_BYTES;

/// The placement of the key space on a membership (immutable).
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct Ring {
    pub(crate) ring: CoreRing,
}

fn strategy(name: &str, tokens_per_capacity: u32) -> Result<Strategy, Error> {
    Strategy::named(name, tokens_per_capacity).map_err(|e| Error::invalid(e.to_string()))
}

fn members(specs: Vec<MemberSpec>) -> Result<Vec<Member>, Error> {
    specs
        .into_iter()
        .map(|spec| {
            Ok(Member::from_spec(
                &spec.id,
                spec.capacity,
                spec.zone.as_deref(),
            )?)
        })
        .collect()
}

fn check_key(bucket: &str, key: &str) -> Result<(), Error> {
    if bucket.len() > MAX_KEY_BYTES || key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(format!(
            "bucket and key are limited to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The 128-bit position of a key as a fraction of a turn.
fn turn(position: u128) -> f64 {
    (position >> 64) as f64 / 18_446_744_073_709_551_616.0
}

/// Owner of a position under modulo hashing over the members sorted by id.
fn modulo_owner(position: u128, members: &[Member]) -> &NodeId {
    &members[(position % members.len() as u128) as usize].id
}

impl Ring {
    /// Wraps a core ring.
    pub fn wrap(ring: CoreRing) -> Ring {
        Ring { ring }
    }

    /// A ring for `members`.
    pub fn create(
        specs: Vec<MemberSpec>,
        partitions: u32,
        target_n: usize,
        strategy_name: &str,
        tokens_per_capacity: u32,
    ) -> Result<Ring, Error> {
        let config = RingConfig {
            partitions,
            strategy: strategy(strategy_name, tokens_per_capacity)?,
            target_n,
            ..RingConfig::default()
        };
        Ok(Ring::wrap(CoreRing::new(config, members(specs)?)?))
    }

    /// The ring for a new membership, moving as few partitions as possible.
    pub fn with_members(&self, specs: Vec<MemberSpec>) -> Result<Ring, Error> {
        Ok(Ring::wrap(self.ring.with_members(members(specs)?)?))
    }

    /// Every member.
    pub fn member_specs(&self) -> Vec<MemberSpec> {
        self.ring
            .members()
            .iter()
            .map(|m| MemberSpec {
                id: m.id.as_str().to_string(),
                capacity: m.capacity,
                zone: m.zone.clone(),
            })
            .collect()
    }

    /// The ring as drawn; every member `up` (the simulator overrides statuses).
    pub fn describe(&self) -> RingDoc {
        let ring = &self.ring;
        let counts = ring.partition_counts();
        let target_n = ring.config().target_n;
        RingDoc {
            version: None,
            partition_count: ring.partition_count(),
            target_n: target_n as u32,
            strategy: ring.config().strategy.to_string(),
            members: ring
                .members()
                .iter()
                .map(|m| MemberDoc {
                    id: m.id.as_str().to_string(),
                    status: "up".to_string(),
                    alive: true,
                    zone: m.zone.clone(),
                    capacity: m.capacity,
                    // A simulated member has no sockets.
                    http_addr: String::new(),
                    peer_addr: String::new(),
                    partitions: counts.get(&m.id).copied().unwrap_or(0),
                    handoff_partitions: None,
                    drained: false,
                })
                .collect(),
            partitions: (0..ring.partition_count())
                .map(|p| PartitionDoc {
                    id: p,
                    start: ring.partition_start(PartitionId(p)).to_string(),
                    replicas: ids(&ring.partition_preference_list(PartitionId(p), target_n)),
                    moving_to: Vec::new(),
                })
                .collect(),
        }
    }

    /// Where a key lives: its position, partition, `n` replicas and the fallbacks after them.
    pub fn locate(&self, bucket: &str, key: &str, n: usize) -> Result<KeyDoc, Error> {
        check_key(bucket, key)?;
        if n == 0 || n > MAX_TARGET_N {
            return Err(Error::invalid(format!(
                "n = {n} is out of range 1..={MAX_TARGET_N}"
            )));
        }
        let position = key_position(bucket.as_bytes(), key.as_bytes());
        let extended = ids(&self.ring.extended_preference_list(position, n));
        let split = n.min(extended.len());
        Ok(KeyDoc {
            bucket: bucket.to_string(),
            key: key.to_string(),
            position: position.to_string(),
            position_hex: format!("{position:032x}"),
            turn: turn(position),
            partition: self.ring.partition_of(position).0,
            preference_list: extended[..split].to_vec(),
            fallbacks: extended[split..].to_vec(),
        })
    }

    /// What moving from this ring to `other` moves: partitions, and how many of `sample` keys
    /// change owner here, under modulo hashing, and under the tokens strategy, for the same
    /// change of membership.
    pub fn compare(&self, other: &Ring, sample: u32) -> Result<MoveReport, Error> {
        if sample == 0 || sample > MAX_SAMPLE {
            return Err(Error::invalid(format!(
                "sample = {sample} is out of range 1..={MAX_SAMPLE}"
            )));
        }
        let (a, b) = (&self.ring, &other.ring);
        let moved_partitions: Vec<u32> = if a.partition_count() == b.partition_count() {
            (0..a.partition_count())
                .filter(|&p| a.partition_owner(PartitionId(p)) != b.partition_owner(PartitionId(p)))
                .collect()
        } else {
            Vec::new()
        };
        let tokens_ring = |ring: &CoreRing| -> Result<CoreRing, Error> {
            let tokens_per_capacity = match ring.config().strategy {
                Strategy::Tokens {
                    tokens_per_capacity,
                } => tokens_per_capacity,
                Strategy::Partitions => COMPARISON_TOKENS,
            };
            let config = RingConfig {
                strategy: Strategy::Tokens {
                    tokens_per_capacity,
                },
                ..ring.config().clone()
            };
            Ok(CoreRing::new(config, ring.members().to_vec())?)
        };
        let (ta, tb) = (tokens_ring(a)?, tokens_ring(b)?);
        let (mut ring_moved, mut modulo_moved, mut tokens_moved) = (0u32, 0u32, 0u32);
        for i in 0..sample {
            let position = key_position(b"sample", format!("key-{i}").as_bytes());
            let owner = |ring: &CoreRing| ring.preference_list(position, 1);
            ring_moved += u32::from(owner(a) != owner(b));
            tokens_moved += u32::from(owner(&ta) != owner(&tb));
            modulo_moved += u32::from(
                modulo_owner(position, a.members()) != modulo_owner(position, b.members()),
            );
        }
        let share = |moved: u32| StrategyMove {
            keys_moved: moved,
            fraction: f64::from(moved) / f64::from(sample),
        };
        Ok(MoveReport {
            partitions_moved: a.partitions_moved(b) as u32,
            moved_partitions,
            replica_fraction: a.moved_fraction(b, a.config().target_n),
            keys_sampled: sample,
            ring: share(ring_moved),
            modulo: share(modulo_moved),
            tokens: share(tokens_moved),
        })
    }
}

#[wasm_bindgen]
impl Ring {
    /// A ring for `members` (`{id, capacity?, zone?}`), `partitions` a power of two, placement
    /// planned for `target_n` replicas, strategy `partitions` or `tokens`.
    #[wasm_bindgen(constructor)]
    pub fn js_new(
        #[wasm_bindgen(unchecked_param_type = "MemberSpec[]")] members: JsValue,
        partitions: u32,
        target_n: u32,
        strategy: String,
        tokens_per_capacity: u32,
    ) -> Result<Ring, JsError> {
        let specs = interop::from_js(members, "members")?;
        Ok(Ring::create(
            specs,
            partitions,
            target_n as usize,
            &strategy,
            tokens_per_capacity,
        )?)
    }

    /// The 128-bit position of a key, as a decimal string.
    #[wasm_bindgen(js_name = position)]
    pub fn js_position(bucket: &str, key: &str) -> String {
        key_position(bucket.as_bytes(), key.as_bytes()).to_string()
    }

    /// The ring for a new membership (the old one is unchanged).
    #[wasm_bindgen(js_name = withMembers)]
    pub fn js_with_members(
        &self,
        #[wasm_bindgen(unchecked_param_type = "MemberSpec[]")] members: JsValue,
    ) -> Result<Ring, JsError> {
        Ok(self.with_members(interop::from_js(members, "members")?)?)
    }

    /// Every member as `{id, capacity, zone}`.
    #[wasm_bindgen(js_name = members, unchecked_return_type = "MemberSpec[]")]
    pub fn js_members(&self) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.member_specs())?)
    }

    /// The ring as drawn (the shape of the server's `GET /ring`).
    #[wasm_bindgen(js_name = describe, unchecked_return_type = "RingDoc")]
    pub fn js_describe(&self) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.describe())?)
    }

    /// Where a key lives, for `n` replicas.
    #[wasm_bindgen(js_name = locate, unchecked_return_type = "KeyDoc")]
    pub fn js_locate(&self, bucket: &str, key: &str, n: u32) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.locate(bucket, key, n as usize)?)?)
    }

    /// What moving to `other` moves, against modulo hashing and tokens, over `sample` keys.
    #[wasm_bindgen(js_name = compare, unchecked_return_type = "MoveReport")]
    pub fn js_compare(&self, other: &Ring, sample: u32) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.compare(other, sample)?)?)
    }

    /// Q.
    #[wasm_bindgen(getter, js_name = partitionCount)]
    pub fn js_partition_count(&self) -> u32 {
        self.ring.partition_count()
    }

    /// Fraction of the key space each member owns, `{id: fraction}`.
    #[wasm_bindgen(js_name = ownership, unchecked_return_type = "Record<string, number>")]
    pub fn js_ownership(&self) -> Result<JsValue, JsError> {
        let shares: std::collections::BTreeMap<String, f64> = self
            .ring
            .ownership()
            .into_iter()
            .map(|(id, share)| (id.as_str().to_string(), share))
            .collect();
        Ok(interop::to_js(&shares)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, capacity: u32, zone: Option<&str>) -> MemberSpec {
        MemberSpec {
            id: id.to_string(),
            capacity,
            zone: zone.map(str::to_string),
        }
    }

    fn five() -> Ring {
        let specs = (1..=5)
            .map(|i| spec(&format!("n{i}"), 1, Some(["a", "b", "c"][i % 3])))
            .collect();
        Ring::create(specs, 64, 3, "partitions", 16).unwrap()
    }

    #[test]
    fn describe_draws_every_partition_with_a_full_preference_list() {
        let doc = five().describe();
        assert_eq!(doc.partition_count, 64);
        assert_eq!(doc.partitions.len(), 64);
        assert_eq!(doc.members.iter().map(|m| m.partitions).sum::<u32>(), 64);
        assert_eq!(doc.partitions[0].start, "0");
        // The last partition starts at 63/64 of 2^128: too big for a JS number, hence a string.
        assert_eq!(doc.partitions[63].start, (63u128 << 122).to_string());
        for p in &doc.partitions {
            assert_eq!(p.replicas.len(), 3);
            let mut distinct = p.replicas.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{p:?}");
        }
    }

    #[test]
    fn locate_gives_position_partition_and_fallbacks() {
        let ring = five();
        let key = ring.locate("carts", "alice", 3).unwrap();
        let position = key_position(b"carts", b"alice");
        assert_eq!(key.position, position.to_string());
        assert_eq!(
            u128::from_str_radix(&key.position_hex, 16).unwrap(),
            position
        );
        assert_eq!(key.partition, (position >> 122) as u32);
        assert!((0.0..1.0).contains(&key.turn));
        assert_eq!(key.preference_list.len(), 3);
        assert_eq!(key.fallbacks.len(), 2);
        assert_eq!(
            key.preference_list,
            ids(&ring.ring.preference_list(position, 3))
        );
        assert_eq!(Ring::js_position("carts", "alice"), key.position);
    }

    #[test]
    fn adding_a_node_moves_few_keys_and_modulo_hashing_moves_most() {
        let ring = five();
        let mut specs = ring.member_specs();
        specs.push(spec("n6", 1, Some("a")));
        let bigger = ring.with_members(specs).unwrap();
        let report = ring.compare(&bigger, 10_000).unwrap();
        assert_eq!(
            report.partitions_moved as usize,
            report.moved_partitions.len()
        );
        assert!(report.partitions_moved > 0);
        assert!(report.ring.fraction < 0.3, "{report:?}");
        assert!(report.tokens.fraction < 0.4, "{report:?}");
        assert!(report.modulo.fraction > 0.7, "{report:?}");
        assert!(report.replica_fraction > 0.0 && report.replica_fraction <= 1.0);
        assert_eq!(bigger.describe().members.len(), 6);
    }

    #[test]
    fn bad_input_is_an_error_with_a_message() {
        let err = Ring::create(vec![spec("a", 1, None)], 60, 3, "partitions", 16).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{err}");
        let err = Ring::create(vec![spec("a", 1, None)], 64, 3, "spiral", 16).unwrap_err();
        assert!(err.to_string().contains("unknown strategy"), "{err}");
        let err = Ring::create(vec![], 64, 3, "partitions", 16).unwrap_err();
        assert!(err.to_string().contains("at least one member"), "{err}");
        let err = Ring::create(vec![spec("", 1, None)], 64, 3, "partitions", 16).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let ring = five();
        assert!(ring.locate("b", "k", 0).is_err());
        assert!(ring.compare(&ring, 0).is_err());
        let err = ring.with_members(vec![spec("a", 0, None)]).unwrap_err();
        assert!(err.to_string().contains("capacity 0"), "{err}");
    }

    #[test]
    fn member_ids_and_zones_are_trimmed_as_in_python() {
        // The core parses member specs for both bindings.
        let ring = Ring::create(
            vec![spec(" a ", 1, Some(" z1 ")), spec("b", 1, Some(""))],
            8,
            2,
            "partitions",
            16,
        )
        .unwrap();
        let specs = ring.member_specs();
        assert_eq!(specs[0].id, "a");
        assert_eq!(specs[0].zone.as_deref(), Some("z1"));
        assert_eq!(specs[1].zone, None);
    }

    #[test]
    fn zones_and_capacity_shape_placement() {
        let ring = Ring::create(
            vec![
                spec("a", 2, Some("z1")),
                spec("b", 1, Some("z2")),
                spec("c", 1, Some("z3")),
            ],
            64,
            3,
            "partitions",
            16,
        )
        .unwrap();
        let doc = ring.describe();
        let a = doc.members.iter().find(|m| m.id == "a").unwrap();
        assert_eq!(a.zone.as_deref(), Some("z1"));
        assert!(a.partitions >= 28, "{a:?}");
        let tokens = Ring::create(ring.member_specs(), 64, 3, "tokens", 8).unwrap();
        assert_eq!(tokens.describe().strategy, "tokens");
    }
}
