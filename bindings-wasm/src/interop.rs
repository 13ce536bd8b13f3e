//! Conversions between the core's types and the plain documents JavaScript receives, and their
//! TypeScript declarations. Nothing else in the crate touches serde-wasm-bindgen.
//!
//! Members and partitions are the server's own documents ([`MemberDoc`] and [`PartitionDoc`]
//! from `ringkv_client::api`), so the page draws a simulated ring and a live one with the same
//! code.

pub use ringkv_client::api::{MemberDoc, PartitionDoc};
use ringkv_core::checker::{FinalReplica, OpKind, OpOutcome, Operation};
use ringkv_core::io::Event;
use ringkv_core::request::Reply;
use ringkv_core::sim::{TraceEntry, TraceKind};
use ringkv_core::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::Error;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A ring member as the page gives it. */
export interface MemberSpec { id: string; capacity?: number; zone?: string | null }
/** A member as drawn: `status` is joining, up, leaving, down or removed; the addresses are
 * empty in the simulator. `drained`: it left and handed everything over. */
export interface MemberDoc {
  id: string; status: string; alive: boolean; zone: string | null; capacity: number;
  partitions: number; http_addr: string; peer_addr: string;
  handoff_partitions: number | null; drained: boolean;
}
/** One of the Q partitions; `start` is a 128-bit position as a decimal string. */
export interface PartitionDoc { id: number; start: string; replicas: string[]; moving_to: string[] }
/** The same shape as the server's `GET /ring`. */
export interface RingDoc {
  version: number | null; partition_count: number; target_n: number; strategy: string;
  members: MemberDoc[]; partitions: PartitionDoc[];
}
/** Where a key lives. `position` is decimal, `position_hex` 32 hex digits, `turn` in [0, 1). */
export interface KeyDoc {
  bucket: string; key: string; position: string; position_hex: string; turn: number;
  partition: number; preference_list: string[]; fallbacks: string[];
}
export interface StrategyMove { keys_moved: number; fraction: number }
/** What a membership change moves: partitions of this ring, and sampled keys for three schemes. */
export interface MoveReport {
  partitions_moved: number; moved_partitions: number[]; replica_fraction: number;
  keys_sampled: number; ring: StrategyMove; modulo: StrategyMove; tokens: StrategyMove;
}
/** Simulator options (all optional; quorums are a count, "one", "quorum" or "all"). */
export interface SimOptions {
  nodes?: number; n?: number; r?: string; w?: string; seed?: number; partitions?: number;
  strategy?: "partitions" | "tokens"; tokens_per_capacity?: number; min_delay_ms?: number;
  max_delay_ms?: number; request_timeout_ms?: number; anti_entropy_interval_ms?: number;
  gossip_interval_ms?: number; conflict_mode?: "siblings" | "lww" | "last_writer_wins";
  /** Zones the nodes are placed in, round-robin (n1 in the first, n2 in the second, ...). */
  zones?: string[]; wan_min_delay_ms?: number; wan_max_delay_ms?: number;
  /** Replicas per zone (n must be their sum), e.g. { a: 2, b: 2, c: 2 }. */
  n_per_zone?: Record<string, number>;
}
/** A client operation and how it ended (`outcome` null while in flight). */
export interface OperationDoc {
  index: number; op: "get" | "put" | "delete"; node: string; bucket: string; key: string;
  value: string | null; invoked_at: number; completed_at: number | null;
  outcome: "ok" | "unavailable" | "failed" | "storage_full" | "precondition_failed" | "rejected" | "refused" | "lost" | null;
  ok: boolean; values: string[]; context: string | null; replicas: string[]; fallbacks: string[];
  dot: string | null; error: string | null;
  /** When the values read expire (virtual ms); null when one never does. */
  expires_at: number | null;
}
/** One trace entry; `detail` is a sentence, the other fields depend on `kind`. */
export interface TraceDoc {
  index: number; at: number; node: string; kind: string; detail: string;
  peer: string | null; partition: number | null; repaired: number | null;
}
export interface SiblingDoc { value: string | null; deleted: boolean; dot: string }
export interface ReplicaDoc { node: string; present: boolean; siblings: SiblingDoc[] }
export interface HintDoc { holder: string; owner: string; bucket: string; key: string }
/** A simulated node: `status` as the cluster's view has it, `up` whether it runs. */
export interface NodeDoc {
  id: string; up: boolean; status: string; capacity: number; partitions: number; hints: number;
  zone: string | null;
}
/** One running node's cluster view: what gossip has told it. */
export interface ViewDoc {
  node: string; digest: string; ring_version: number | null;
  members: { id: string; status: string }[];
}
"#;

/// A document as a JS value (maps as plain objects; integers must fit in 2^53).
pub fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, Error> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| Error::Conversion(e.to_string()))
}

/// A JS value as a document (`what` names the argument in the error).
pub fn from_js<T: DeserializeOwned>(value: JsValue, what: &str) -> Result<T, Error> {
    serde_wasm_bindgen::from_value(value).map_err(|e| Error::invalid(format!("{what}: {e}")))
}

/// A member as the page gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberSpec {
    /// Node id.
    pub id: String,
    /// Ring weight (default 1).
    #[serde(default = "one")]
    pub capacity: u32,
    /// Failure domain.
    #[serde(default)]
    pub zone: Option<String>,
}

fn one() -> u32 {
    1
}

/// A ring: the server's [`ringkv_client::api::RingDoc`] with its members and partitions, but
/// with no cluster or answering node, and a `version` that is null until the simulated cluster
/// has a ring (the server's document exists only once it has one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingDoc {
    pub version: Option<u64>,
    pub partition_count: u32,
    pub target_n: u32,
    pub strategy: String,
    pub members: Vec<MemberDoc>,
    pub partitions: Vec<PartitionDoc>,
}

/// Where a key lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyDoc {
    pub bucket: String,
    pub key: String,
    pub position: String,
    pub position_hex: String,
    /// The position as a fraction of a turn, for drawing.
    pub turn: f64,
    pub partition: u32,
    pub preference_list: Vec<String>,
    pub fallbacks: Vec<String>,
}

/// Keys one placement scheme moves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyMove {
    pub keys_moved: u32,
    pub fraction: f64,
}

/// What a membership change moves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveReport {
    pub partitions_moved: u32,
    pub moved_partitions: Vec<u32>,
    /// Exact fraction of the key space whose replica set (for the ring's `target_n`) changes.
    pub replica_fraction: f64,
    pub keys_sampled: u32,
    /// Sampled keys whose owner changes: this ring, modulo hashing, the tokens strategy.
    pub ring: StrategyMove,
    pub modulo: StrategyMove,
    pub tokens: StrategyMove,
}

/// A client operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationDoc {
    pub index: usize,
    pub op: String,
    pub node: String,
    pub bucket: String,
    pub key: String,
    pub value: Option<String>,
    pub invoked_at: u64,
    pub completed_at: Option<u64>,
    pub outcome: Option<String>,
    pub ok: bool,
    pub values: Vec<String>,
    pub context: Option<String>,
    pub replicas: Vec<String>,
    pub fallbacks: Vec<String>,
    pub dot: Option<String>,
    pub error: Option<String>,
    pub expires_at: Option<u64>,
}

/// One trace entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceDoc {
    pub index: usize,
    pub at: u64,
    pub node: String,
    pub kind: String,
    pub detail: String,
    pub peer: Option<String>,
    pub partition: Option<u32>,
    pub repaired: Option<u32>,
}

/// One version of a value on a replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiblingDoc {
    pub value: Option<String>,
    pub deleted: bool,
    pub dot: String,
}

/// A key's object on one replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaDoc {
    pub node: String,
    pub present: bool,
    pub siblings: Vec<SiblingDoc>,
}

/// A hint: `holder` keeps a write meant for `owner`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintDoc {
    pub holder: String,
    pub owner: String,
    pub bucket: String,
    pub key: String,
}

/// A simulated node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeDoc {
    pub id: String,
    pub up: bool,
    pub status: String,
    pub capacity: u32,
    pub partitions: u32,
    pub hints: u32,
    /// The node's zone (none in a simulation without zones).
    pub zone: Option<String>,
}

/// A member as one node's view has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewMemberDoc {
    pub id: String,
    pub status: String,
}

/// One running node's cluster view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewDoc {
    pub node: String,
    pub digest: String,
    pub ring_version: Option<u64>,
    pub members: Vec<ViewMemberDoc>,
}

/// Ids as strings.
pub fn ids(ids: &[NodeId]) -> Vec<String> {
    ids.iter().map(|id| id.as_str().to_string()).collect()
}

/// Bytes shown as text (lossy UTF-8).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An operation of the history (its name, outcome and error text are the core's).
pub fn operation(op: &Operation) -> OperationDoc {
    let value = match &op.kind {
        OpKind::Put { value, .. } => Some(text(value)),
        _ => None,
    };
    let (fallbacks, dot) = match &op.outcome {
        Some(OpOutcome::Replied(Reply::Got { fallbacks, .. })) => (ids(fallbacks), None),
        Some(OpOutcome::Replied(Reply::Written { fallbacks, dot, .. })) => {
            (ids(fallbacks), Some(dot.to_string()))
        }
        _ => (Vec::new(), None),
    };
    OperationDoc {
        index: op.index,
        op: op.kind.name().to_string(),
        node: op.node.as_str().to_string(),
        bucket: text(&op.bucket),
        key: text(&op.key),
        value,
        invoked_at: op.invoked_at,
        completed_at: op.completed_at,
        outcome: op.outcome.as_ref().map(|o| o.name().to_string()),
        ok: op.is_ok(),
        values: op.values().iter().map(|v| text(v)).collect(),
        // After a failed condition, the key's current context: the one to retry with.
        context: match &op.outcome {
            Some(OpOutcome::Replied(Reply::PreconditionFailed { context, .. })) => {
                Some(context.to_base64())
            }
            _ => op.context().map(|c| c.to_base64()),
        },
        replicas: ids(&op.replicas()),
        fallbacks,
        dot,
        error: op.error(),
        expires_at: match &op.outcome {
            Some(OpOutcome::Replied(Reply::Got { expires_at, .. })) => *expires_at,
            _ => None,
        },
    }
}

/// A trace entry (its kind and line of text are the core's).
pub fn trace(index: usize, entry: &TraceEntry) -> TraceDoc {
    let (mut peer, mut partition, mut repaired) = (None, None, None);
    match &entry.kind {
        TraceKind::Event(
            Event::MessageDropped { from: p, .. }
            | Event::PeerDown { peer: p }
            | Event::PeerUp { peer: p }
            | Event::DownAlert { peer: p, .. }
            | Event::AntiEntropyAbandoned { peer: p, .. },
        )
        | TraceKind::Dropped { to: p, .. } => peer = Some(p.as_str().to_string()),
        TraceKind::Event(Event::AntiEntropy {
            partition: part,
            peer: p,
            repaired: r,
            ..
        }) => {
            peer = Some(p.as_str().to_string());
            partition = Some(part.0);
            repaired = Some(*r);
        }
        _ => {}
    }
    if let TraceKind::Event(Event::AntiEntropyAbandoned {
        partition: part, ..
    }) = &entry.kind
    {
        partition = Some(part.0);
    }
    TraceDoc {
        index,
        at: entry.at,
        node: entry.node.as_str().to_string(),
        kind: entry.kind.name().to_string(),
        detail: entry.to_string(),
        peer,
        partition,
        repaired,
    }
}

/// A key's object on one replica.
pub fn replica(replica: &FinalReplica) -> ReplicaDoc {
    ReplicaDoc {
        node: replica.node.as_str().to_string(),
        present: replica.object.is_some(),
        siblings: replica
            .object
            .iter()
            .flat_map(|object| object.siblings())
            .map(|sibling| SiblingDoc {
                value: sibling.value().map(text),
                deleted: sibling.content.is_tombstone(),
                dot: format!("{}:{}", sibling.dot.actor.as_str(), sibling.dot.counter),
            })
            .collect(),
    }
}
