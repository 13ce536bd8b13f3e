//! The history checker: judges a recorded run once the cluster has healed and been read back.
//!
//! It asserts, in the spirit of Jepsen's set-full checker:
//! - **No lost acknowledged write.** Every write acknowledged to its client (its dot is in the
//!   reply) is, in the final state of its key, either still a sibling or superseded: some write
//!   was made with a context that had seen its dot. Contexts come only from the system, so a
//!   context that covers a dot proves a client saw that write.
//! - **No phantom read.** Every value a get returned was written by some put.
//! - **Convergence.** After the final read, every replica of every key holds the same object.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::io::Reply;
use crate::sim::{OpKind, OpOutcome, Operation};
use crate::version::{Content, Dot, Object};

/// One replica's stored object after the run (`None`: no record, or one that failed its checks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReplica {
    /// The replica.
    pub node: NodeId,
    /// Its object.
    pub object: Option<Object>,
}

/// An acknowledged write that the final state neither holds nor supersedes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    /// History index of the write.
    pub index: usize,
    /// Its dot.
    pub dot: Dot,
}

/// The checker's findings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Operations in the history.
    pub operations: usize,
    /// Writes acknowledged to their clients.
    pub acknowledged_writes: usize,
    /// Of those, the ones still present as siblings at the end.
    pub present: usize,
    /// Of those, the ones superseded by a later write that saw them.
    pub superseded: usize,
    /// Of those, deletes whose tombstones were reaped (the key is gone from every replica).
    pub reaped: usize,
    /// Acknowledged writes lost.
    pub lost: Vec<LostWrite>,
    /// Gets that returned a value nobody wrote: (history index, value).
    pub phantom_reads: Vec<(usize, Vec<u8>)>,
    /// Keys whose replicas differ at the end, with a description.
    pub divergent: Vec<String>,
    /// Keys whose final R = all read failed.
    pub unreadable: Vec<String>,
    /// Pairs of acknowledged writes (history indices) that were given the same dot: one of them
    /// can be silently dropped by any merge.
    pub reused_dots: Vec<(usize, usize)>,
    /// Hints still held at the end (every hint must be delivered and deleted once the cluster
    /// is healthy).
    pub hints_left: Vec<String>,
}

impl Verdict {
    /// Whether the run passed every check.
    pub fn is_ok(&self) -> bool {
        self.lost.is_empty()
            && self.phantom_reads.is_empty()
            && self.divergent.is_empty()
            && self.unreadable.is_empty()
            && self.hints_left.is_empty()
            && self.reused_dots.is_empty()
    }
}

/// The end state of every key: (bucket, key) → (the final R = all read, each replica's object).
pub type Finals = BTreeMap<(Vec<u8>, Vec<u8>), (Operation, Vec<FinalReplica>)>;

/// Judges `history` against the final read and replica state of every key.
pub fn check(history: &[Operation], finals: &Finals) -> Verdict {
    let mut verdict = Verdict {
        operations: history.len(),
        ..Verdict::default()
    };
    let written: BTreeSet<&[u8]> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Put { value, .. } => Some(value.as_slice()),
            _ => None,
        })
        .collect();
    let final_reads = finals.values().map(|(read, _)| read);
    for op in history.iter().chain(final_reads) {
        for value in op.values() {
            if !written.contains(value.as_slice()) {
                verdict.phantom_reads.push((op.index, value));
            }
        }
    }

    for ((bucket, key), (read, replicas)) in finals {
        let name = format!(
            "{}/{}",
            String::from_utf8_lossy(bucket),
            String::from_utf8_lossy(key)
        );
        if !read.is_ok() {
            verdict
                .unreadable
                .push(format!("{name}: {:?}", read.outcome));
        }
        let mut merged = Object::new();
        for replica in replicas {
            if let Some(object) = &replica.object {
                merged.merge(object, crate::version::ConflictMode::Siblings);
            }
        }
        let first = replicas.first().and_then(|r| r.object.as_ref());
        for replica in replicas {
            if replica.object.as_ref() != first {
                verdict.divergent.push(format!(
                    "{name}: {} differs from {}",
                    replica.node, replicas[0].node
                ));
            }
        }
        let same_key = |op: &&Operation| op.bucket == *bucket && op.key == *key;
        // Contexts of the writes to this key that may have been applied: acknowledged ones, and
        // those that failed their quorum or were cut off by a crash (the coordinator may have
        // stored them). Writes a node refused outright, or failed before storing, never were.
        let contexts: Vec<&crate::version::Context> = history
            .iter()
            .filter(same_key)
            .filter(|op| {
                !matches!(
                    op.outcome,
                    Some(
                        OpOutcome::Rejected(_)
                            | OpOutcome::Refused
                            | OpOutcome::Replied(Reply::Failed { .. })
                            | OpOutcome::Replied(Reply::StorageFull { .. })
                    )
                )
            })
            .filter_map(|op| match &op.kind {
                OpKind::Put { context, .. } | OpKind::Delete { context } => Some(context),
                OpKind::Get => None,
            })
            .collect();
        let mut dots_seen: BTreeMap<&Dot, usize> = BTreeMap::new();
        for op in history.iter().filter(same_key) {
            let Some(OpOutcome::Replied(Reply::Written { dot, .. })) = &op.outcome else {
                continue;
            };
            verdict.acknowledged_writes += 1;
            if let Some(first) = dots_seen.insert(dot, op.index) {
                verdict.reused_dots.push((first, op.index));
            }
            let written = match &op.kind {
                OpKind::Put { value, .. } => Content::Value(value.clone()),
                _ => Content::Tombstone,
            };
            // Present means this write's own sibling: its dot *and* its content, so a dot reused
            // by another write cannot pass for it.
            let reaped = written == Content::Tombstone && merged.is_empty();
            if reaped {
                // A delete whose tombstone every replica held, and then dropped after the grace
                // period: the key is gone, as the delete asked.
                verdict.reaped += 1;
            } else if merged
                .siblings()
                .iter()
                .any(|s| s.dot == *dot && s.content == written)
            {
                verdict.present += 1;
            } else if contexts.iter().any(|c| c.clock().covers(dot)) {
                verdict.superseded += 1;
            } else {
                verdict.lost.push(LostWrite {
                    index: op.index,
                    dot: dot.clone(),
                });
            }
        }
    }
    verdict
}
